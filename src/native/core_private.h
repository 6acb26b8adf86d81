/* The core's own state and the helpers its files share (core*.c,
 * backpressure.c, deadline_heap.c, internal_buffer.c, core_lock.c). No other
 * file includes this: engines reach the core through engine.h, the binding
 * through core.h, so neither can depend on a field of struct gaio_core.
 *
 * Which file does what:
 *   core.c                 lifetime (new, close, delete) and the binding's queries
 *   core_conns.c           connections (slots, ids, watch, free) and their FIFOs
 *   core_requests.c        requests in (submit, the incoming list), aborted, progressing
 *   core_results.c         the result array: room, arrivals, completions, take_results
 *   core_accept_connect.c  accept's and connect's outcomes, and their back-offs (R16, R17)
 *   core_datagrams.c       datagram sockets' results, senders and errors (R24-R27)
 *   core_wait.c            gaio_core_wait: the engine's timeout, deadlines expiring, wake-ups
 *   core_tls.c             TLS sessions' side in the core: internal requests, pending list
 */
#ifndef GAIO_CORE_PRIVATE_H
#define GAIO_CORE_PRIVATE_H

#include "backpressure.h"
#include "core_lock.h"
#include "deadline_heap.h"
#include "engine.h"

struct gaio_core {
    pthread_mutex_t lock;       /* protects everything below; never held while taking the GIL */
    const gaio_runtime *runtime;/* NULL: callers hold no runtime lock */
    pthread_cond_t idle;        /* signalled when the waiter leaves or a command was processed */
    const struct gaio_engine_ops *engine;
    void *engine_state;

    /* connections */
    /* slot s is chunks[s / GAIO_CONN_CHUNK][s % GAIO_CONN_CHUNK] (live or
     * not: its gen is bumped when freed); chunks are never moved or freed
     * before gaio_core_delete, so no malloc header and no pointer per
     * connection. The binding reads its own fields of a slot without the
     * lock (gaio_core_slot) while a watch may grow chunks: a grown array
     * is published with a release store and the old one kept (retired) */
    gaio_conn **chunks;
    uint32_t nchunks, cap_chunks;
    gaio_conn **retired[32];    /* chunks arrays replaced by a larger one (doubling) */
    uint32_t nretired;
    uint32_t nslots, cap_slots; /* slots used; room in the per-slot arrays below */
    uint32_t *free_slots;
    uint32_t nfree;

    /* requests on their way in, from any thread */
    gaio_req *incoming_head, *incoming_tail;
    uint64_t *frees;            /* conn ids to free (free() and garbage-collected sockets) */
    uint32_t nfrees, cap_frees;
    uint64_t frees_done;        /* commands processed: lets free() wait for its own */
    uint64_t *released;         /* conn ids whose standing read back-pressure let go (R21);
                                 * room for every connection, like frees */
    uint32_t nreleased;
    uint64_t cancels;           /* engine.cancel() calls that returned 1 */
    uint64_t frees_asked;

    /* deadlines: binary min-heap on deadline_ns */
    gaio_req **heap;
    uint32_t nheap, cap_heap;
    uint32_t heap_promised;     /* incoming requests with a deadline: cap_heap >= nheap + this */

    /* results in completion order; room for the last result of every live
     * request is kept (res_reserved), so finishing one never allocates */
    gaio_result *res;
    uint32_t nres, cap_res, res_reserved;
    uint32_t next_seq;

    /* R21: a standing read holds above write_high, goes on at write_low (0: no limit) */
    size_t write_high, write_low;
    int64_t batch_wait_ns;      /* Watcher(batch_wait=), 0: off (core_wait.c) */
    /* R16: standing accepts in backoff, the earliest retry, a descriptor closed since */
    uint32_t nbackoff;
    int64_t backoff_ns;
    uint8_t fd_closed;
    /* R23: fileno() was asked: the engine's descriptor must show pending work */
    uint8_t notify;
    uint8_t notified;           /* ... and was woken since the last wait began */

    /* internal buffer: chunks of bufsize bytes, filled consecutively within a batch */
    size_t bufsize;
    unsigned char *chunk[GAIO_IBUF_CHUNKS];
    uint32_t chunk_cur;         /* chunk being filled */
    size_t chunk_off;           /* bytes used in it */
    size_t ibuf_out;            /* bytes handed out in this batch (core and engine memory) */
    unsigned char *spill;       /* bufsize bytes: the part of a datagram past a chunk's end
                                 * (gaio_core_ibuf_reserve_datagram), made on first use */
    gaio_landing *landing;      /* datagram_batch.c's, made on first use */

    uint8_t waiting;            /* a thread is inside gaio_core_wait */
    uint8_t sleeping;           /* ... and is (about to be) blocked in the kernel */
    uint8_t woken;              /* wake() sent since it went to sleep */
    uint8_t closing;            /* gaio_core_close() asked the waiter to leave */
    uint8_t closed;
    uint8_t skipped_poll;       /* the last gaio_core_wait returned results without the engine */

    /* TLS sessions (core_tls.c) */
    gaio_tls **tls_of;          /* by slot: the session of a TLS connection */
    uint32_t cap_tls_of;
    gaio_tls *tls_pending;      /* sessions with work for the pass (by next) */
    gaio_tls *tls_later;        /* ... for the next wait's pass (by next) */
    gaio_tls *tls_dead;         /* sessions whose connection is gone (by next_dead) */
    pthread_t pass_owner;       /* the thread running the pass, while in_pass */
    uint8_t in_pass;
    uint8_t tls_queued;         /* the pass gave the engine internal requests */

    gaio_stats stats;
};

/* ---- core_tls.c ---- */

/* 1: start_tls request r, being submitted, is a second one on its
 * connection (R28's ValueError): the connection has a session, or another
 * thread's start_tls for it is still in the incoming list. */
int gaio__tls_again(gaio_core *core, const gaio_req *r);
/* start_tls request r reached its connection c (queued): c is a TLS one. */
void gaio__tls_begin(gaio_core *core, gaio_conn *c, gaio_req *r);
/* start_tls request r ends without its session having begun: the session
 * goes to the binding to dispose of. */
void gaio__tls_orphan(gaio_core *core, gaio_req *r);
/* Something changed for TLS connection c: its session goes to the pass. */
void gaio__tls_mark(gaio_core *core, gaio_conn *c);
/* gaio__req_complete for an internal request, or for a start_tls one. */
void gaio__tls_internal_done(gaio_core *core, gaio_req *r);
void gaio__tls_request_done(gaio_core *core, gaio_req *r, int error);
/* A user write of a TLS connection ends: a record of it on its way counts. */
void gaio__tls_write_ended(gaio_core *core, gaio_req *r);
/* A read withdrawn at start_tls (cancel_reason GAIO_ERR_HANDOVER): bytes
 * it still brought (res > 0, at r->buf + r->done) are the session's
 * (returns 0: the read goes on); its end keeps it queued (returns 1, or 0
 * when its connection is being freed: it ends as usual). */
int gaio__tls_early(gaio_core *core, gaio_req *r, ssize_t res);
int gaio__tls_handover(gaio_core *core, gaio_req *r);
/* c's slot is released: its session is the binding's to dispose of. */
void gaio__tls_conn_gone(gaio_core *core, gaio_conn *c);
/* 1: the engine must not see r (a TLS connection's user request). */
static inline int gaio__tls_hidden(const gaio_conn *c, const gaio_req *r)
{
    return c->tls && !(r->flags & GAIO_F_INTERNAL) &&
           (r->kind == GAIO_READ || c->tls_open || r->op == GAIO_OP_TLS);
}
/* The binding's re-entry from the pass's own thread (see gaio__binding_enter). */
#define GAIO__REENTERED ((void *)1)

/* ---- core_conns.c ---- */

#define GAIO_CONN_CHUNK_SHIFT 8
#define GAIO_CONN_CHUNK (1u << GAIO_CONN_CHUNK_SHIFT)
/* Slot s (< core->nslots) when a connection holds it, else NULL. */
static inline gaio_conn *gaio__slot_conn(const gaio_core *core, uint32_t s)
{
    gaio_conn *c = &core->chunks[s >> GAIO_CONN_CHUNK_SHIFT][s & (GAIO_CONN_CHUNK - 1)];
    return c->live ? c : NULL;
}

/* Append r to its connection's kind queue (r->conn set); put it first
 * (a TLS session's own request); take it out. */
void gaio__queue_append(gaio_conn *c, gaio_req *r);
void gaio__queue_push_front(gaio_conn *c, gaio_req *r);
void gaio__queue_remove(gaio_conn *c, gaio_req *r);
/* The request queued ahead of r on its connection, NULL for a head. */
gaio_req *gaio__queue_prev(const gaio_req *r);
/* Free c's slot once it is closing, the engine let go and its queues are empty. */
void gaio__conn_maybe_release(gaio_core *core, gaio_conn *c);
/* free(): end c's requests, unwatch it, close its descriptor. */
void gaio__conn_close(gaio_core *core, gaio_conn *c);

/* ---- core_results.c ---- */

/* Room for need results: 0, or -1 (out of memory, nothing changed). */
int gaio__res_grow(gaio_core *core, uint64_t need);
void gaio__done_append(gaio_core *core, gaio_req *r);
void gaio__arrival(gaio_core *core, gaio_req *r, unsigned char *ptr, size_t size, int error, int fd);
/* One result of standing request r, never joined to the previous one; NULL
 * when no room could be had (r then ended with ENOMEM). */
gaio_result *gaio__arrival_append(gaio_core *core, gaio_req *r, unsigned char *ptr, size_t size,
                                  int error, int fd);
void gaio__req_complete(gaio_core *core, gaio_req *r, int error);

/* ---- core_requests.c ---- */

void gaio__drain_incoming(gaio_core *core);
void gaio__start_next(gaio_core *core, gaio_conn *c, int kind);
void gaio__req_abort(gaio_core *core, gaio_req *r, int error);

/* ---- core_accept_connect.c ---- */

/* Connect r ended with error (0: connected): its result, then R17's consequences. */
void gaio__connect_finished(gaio_core *core, gaio_req *r, int error);
void gaio__connect_backoff(gaio_core *core, gaio_req *r, int64_t now);
void gaio__serve_backoff(gaio_core *core, int64_t now);

/* ---- core_datagrams.c ---- */

/* A request reaches datagram socket c (before it is queued): an error that
 * came while nothing of c was pending concerned nobody (R27). */
void gaio__datagram_idle(gaio_core *core, gaio_conn *c);
/* Free the senders of results never delivered. */
void gaio__datagram_forget(gaio_result *res, uint32_t n);

/* ---- core_wait.c ---- */

void gaio__notify(gaio_core *core);
void gaio__wake_waiter(gaio_core *core);
/* The earliest deadline or back-off retry; GAIO_NO_DEADLINE when none. */
int64_t gaio__first_deadline(gaio_core *core);

#endif
