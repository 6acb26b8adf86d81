/* gaio's C core: the types every engine sees, and the core's functions for
 * the binding (those for the engines are in engine.h).
 *
 * The core owns connections (a slot table with generation numbers), each
 * connection's read and write FIFOs, the deadline heap, the internal
 * buffer and the list of finished requests. It knows nothing of Python: a
 * request is embedded in the binding's own struct (pyreq, binding.h), which
 * alone interprets it. Its files are listed in core_private.h.
 *
 * Threads: the core starts none. I/O happens inside gaio_core_wait(), called
 * by the one thread in wait_io() with the GIL released; a request made while
 * no thread waits starts at once in its own thread (gaio_core_submit). Other
 * threads append to the incoming queue (under core->lock) and wake the engine.
 */
#ifndef GAIO_CORE_H
#define GAIO_CORE_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "alloc.h"

typedef struct gaio_core gaio_core;
typedef struct gaio_conn gaio_conn;
typedef struct gaio_req gaio_req;
typedef struct gaio_addr gaio_addr;
struct gaio_engine_ops;

/* The queue a request waits in: reads and accepts in READ, writes,
 * connects and sendfiles in WRITE (R3: one order per direction). */
enum gaio_kind { GAIO_READ = 0, GAIO_WRITE = 1 };

/* gaio_req.op: what the request does (the numbers are gaio.Op's). */
enum gaio_op {
    GAIO_OP_READ = 0,
    GAIO_OP_WRITE = 1,    /* u.w.vec set: a vectored write */
    GAIO_OP_ACCEPT = 2,
    GAIO_OP_CONNECT = 3,  /* connect() was called by the binding; error says how it went
                           * (EAGAIN with u.c.addr: to be tried again) */
    GAIO_OP_SENDFILE = 4, /* u.w.file: len bytes of a regular file from an offset */
    GAIO_OP_TLS = 5,      /* start_tls (R28), a WRITE kind the engines never see: u.w.tls */
};

/* gaio_req.flags */
enum {
    GAIO_F_REPEAT = 1,  /* standing read or accept: a result per arrival (R20) */
    GAIO_F_QUIET = 2,   /* success delivers nothing (R22) */
    GAIO_F_HELD = 4,    /* standing read stopped by back-pressure (R21) */
    GAIO_F_BACKOFF = 8, /* standing accept waiting after a resource error (R16), or
                         * connect waiting to be tried again (EAGAIN, R17) */
    GAIO_F_RESTART = 16,/* released by back-pressure, in core->released */
    GAIO_F_COUNTING = 32,/* standing read that counts its connection's writes (R21) */
    GAIO_F_FULL = 64,   /* read_full: complete only when done == len */
    GAIO_F_INTERNAL = 128,/* a TLS session's ciphertext read or write (core_tls.c): no result */
};

/* "No deadline" for gaio_req.deadline_ns and gaio_core_wait's until_ns: the
 * one value no clock reading or clamped deadline takes as a time. */
#define GAIO_NO_DEADLINE INT64_MAX

/* The back-offs; the python engine's are ACCEPT_RETRY and CONNECT_RETRY in
 * gaio/_python_accept_connect.py (tests/test_static_checks.py holds them equal).
 * A standing accept that met a resource error tries again no sooner than
 * GAIO_ACCEPT_RETRY_NS; an AF_UNIX connect that found the backlog full
 * (EAGAIN) is tried again every GAIO_CONNECT_RETRY_NS. */
#define GAIO_ACCEPT_RETRY_NS 10000000
#define GAIO_CONNECT_RETRY_NS 10000000

/* gaio_req.error: 0, a positive errno, or one of these. */
enum {
    GAIO_ERR_EOF = -1,      /* end of stream (or of the file, for sendfile) */
    GAIO_ERR_DEADLINE = -2, /* deadline passed (or a standing request's idle limit) */
    GAIO_ERR_CLOSED = -3,   /* free() of the connection (or close of the watcher) */
    GAIO_ERR_TLS = -4,      /* a TLS error: the binding holds its exception (tls_session.c) */
    GAIO_ERR_HANDOVER = -5, /* cancel_reason only: a read's kernel operation is withdrawn
                             * at start_tls, the read stays queued for the session (core_tls.c) */
};

/* gaio_req.state */
enum {
    GAIO_REQ_INCOMING = 0, /* in core->incoming, not yet on its connection */
    GAIO_REQ_QUEUED,       /* in its connection's FIFO */
    GAIO_REQ_CANCELLING,   /* head whose engine.cancel() returned 1: waits for gaio_core_finish */
    GAIO_REQ_EXPIRED,      /* behind a CANCELLING head, deadline passed: ends (error set) right
                            * after the head, never before it (it was queued later) */
    GAIO_REQ_DONE,         /* its last result is in core->res, waiting to be delivered */
};

/* gaio_core_wait() results */
enum {
    GAIO_WAIT_RESULTS = 1,  /* core->res is not empty */
    GAIO_WAIT_TIMEOUT = 0,  /* time is up, nothing finished */
    GAIO_WAIT_CLOSED = -1,  /* gaio_core_close() was called from another thread */
    GAIO_WAIT_EINTR = -2,   /* a signal arrived: let Python run its handlers, then call again */
    GAIO_WAIT_SLEEPY = -3,  /* asked to stop before sleeping, and about to: guard, call again */
    GAIO_WAIT_TLS = 2,      /* TLS sessions have work (gaio_core_tls_pass_begin): no result yet */
};

/* The standing read whose result view a write (or an item) was made from
 * (R21, backpressure.h): found again by its connection and its seq, so a
 * standing read that ended meanwhile is never touched. */
typedef struct {
    uint64_t conn_id;        /* 0: not made from a view */
    uint32_t seq;
} gaio_answer;

/* A vectored write's items (allocated by the binding with the request). The
 * engines send from iov + cur; a partial send advances iov[cur] in place. */
typedef struct gaio_vec {
    struct msghdr msg;       /* for an engine that hands the kernel a msghdr (io_uring SENDMSG) */
    uint32_t n, cur;         /* items; the first not wholly sent */
    gaio_answer *origin;     /* per item (R21); NULL when no item is made from a view */
    struct iovec iov[];
} gaio_vec;

/* A standing request's idle limit (R20), only when it has one: most
 * standing reads (a server's every connection) have none, and their
 * request is shorter without it. */
typedef struct gaio_idle {
    int64_t until_ns;           /* its deadline (deadline_ns also follows the idle limit) */
    int64_t idle_ns;            /* the idle limit, > 0 */
    int64_t active_ns;          /* its last result (or its release from back-pressure) */
} gaio_idle;

struct gaio_req {
    gaio_req *next, *prev;      /* FIFO links (incoming, connection queue) */
    union {
        gaio_conn *conn;        /* set when the request reaches its connection */
        uint64_t short_conn_id; /* a short request's connection while it is not on it
                                 * (incoming, or done): read it through gaio_req_conn_id */
    };
    uint32_t seq;               /* submission number (order across queues; answers) */
    /* One 32-bit word, so that a short request (below) ends at 32 bytes.
     * Errnos are below 256 on every platform gaio builds on. */
    unsigned kind : 1;          /* enum gaio_kind */
    unsigned op : 3;            /* enum gaio_op */
    unsigned state : 3;         /* GAIO_REQ_* */
    unsigned flags : 8;         /* GAIO_F_* */
    unsigned owner : 4;         /* the binding's bits, but GAIO_REQ_SHORT, which the core reads */
    signed error : 9;           /* 0, errno > 0, or GAIO_ERR_* */
    signed cancel_reason : 4;   /* GAIO_ERR_DEADLINE / GAIO_ERR_CLOSED / GAIO_ERR_HANDOVER
                                 * while CANCELLING */
    /* A short request ends here (GAIO_REQ_SHORT_SIZE): a standing read
     * without an idle limit or a deadline (a server's every connection).
     * What follows is read through gaio_req_conn_id, gaio_req_buf,
     * gaio_req_deadline, gaio_req_idle (a standing read's count of the
     * writes it answers for is its connection's, gaio_conn.owed; its
     * arrivals' bytes are passed along, not kept in ibuf_ptr; its last
     * result has none). */
    uint64_t conn_id;           /* slot | gen << 32 of its connection */
    union {
        size_t len;             /* bytes asked (writes, read_full, sendfile) or room in buf */
        int64_t retry_ns;       /* accept in GAIO_F_BACKOFF: when to try again */
    };
    union {
        size_t done;            /* bytes transferred so far (not GAIO_F_REPEAT) */
        gaio_idle *idle;        /* GAIO_F_REPEAT: its idle limit (R20), NULL: none (the
                                 * binding's memory) */
    };
    unsigned char *buf;         /* caller's memory; NULL for a read into the internal buffer */
    int64_t deadline_ns;        /* CLOCK_MONOTONIC, the heap's key; GAIO_NO_DEADLINE: none */
    uint32_t heap_index;        /* position in the deadline heap, UINT32_MAX when absent */
    unsigned char *ibuf_ptr;    /* a one-shot read without a buffer: where its bytes are */
    union {
        int64_t reported_ns;    /* standing accept: its last resource-error result */
        int accepted_fd;        /* a one-shot accept's new descriptor, for its result */
        struct {                /* GAIO_OP_CONNECT */
            gaio_req *later;    /* while it is drained */
            /* AF_UNIX, backlog full (error EAGAIN): the address to try again
             * (the binding's memory, freed with the request) and when */
            struct sockaddr *addr;
            socklen_t addrlen;
            int64_t retry_ns;
        } c;
        struct {                /* GAIO_WRITE kind */
            gaio_answer origin; /* a one-buffer write made from a view (R21) */
            gaio_addr *to;      /* GAIO_OP_WRITE on an unconnected datagram socket: where
                                 * (the binding's memory, freed with the request) */
            union {
                gaio_vec *vec;  /* GAIO_OP_WRITE: NULL for one buffer */
                struct {
                    int file_fd;      /* GAIO_OP_SENDFILE: the binding's copy of the descriptor */
                    int64_t file_off; /* ... and the offset of the first byte */
                };
                struct gaio_tls *tls; /* GAIO_OP_TLS: the session it begins */
            };
        } w;
    } u;
};

/* gaio_req.owner's one bit the core reads: the request is allocated up to
 * GAIO_REQ_SHORT_SIZE only (a standing read: no buffer, deadline nor idle
 * limit). The core never touches what follows in it but through these. */
#define GAIO_REQ_SHORT 8u
#define GAIO_REQ_SHORT_SIZE offsetof(gaio_req, conn_id)
static inline int gaio_req_short(const gaio_req *r) { return (r->owner & GAIO_REQ_SHORT) != 0; }
static inline unsigned char *gaio_req_buf(const gaio_req *r)
{
    return gaio_req_short(r) ? NULL : r->buf;
}
static inline int64_t gaio_req_deadline(const gaio_req *r)
{
    return gaio_req_short(r) ? GAIO_NO_DEADLINE : r->deadline_ns;
}
/* a standing request's idle limit (GAIO_F_REPEAT only) */
static inline gaio_idle *gaio_req_idle(const gaio_req *r)
{
    return gaio_req_short(r) ? NULL : r->idle;
}

/* 128 bytes on LP64, allocated by the binding with every request with a
 * buffer. A short one (an idle connection's standing read) is 32, which
 * with the binding's conn and ctx is pymalloc's class of 48. */
_Static_assert(sizeof(void *) != 8 || sizeof(struct gaio_req) <= 128,
               "gaio_req outgrew 128 bytes (per idle connection memory)");
_Static_assert(sizeof(void *) != 8 || GAIO_REQ_SHORT_SIZE <= 32,
               "a short request outgrew 32 bytes (per idle connection memory)");

/* The sender of a datagram (R25), for a read's result on an unconnected
 * datagram socket: allocated by the core (gaio_malloc), freed with free() by
 * whoever disposes of the result (the binding once it made the Python
 * object; gaio_core_close for a result never delivered). */
struct gaio_addr {
    socklen_t len;
    struct sockaddr_storage sa;
};

/* One result for the binding: the last of its request (final), or one
 * arrival of a standing request, which stays queued. */
typedef struct gaio_result {
    gaio_req *req;
    unsigned char *ptr;         /* internal-buffer bytes of a read (a datagram's: even empty) */
    size_t size;
    int error;                  /* as gaio_req.error */
    int fd;                     /* an accepted descriptor, or -1 */
    uint8_t final;              /* the request is over: the binding disposes of it */
    uint8_t silent;             /* a quiet request that succeeded: nothing is delivered */
    uint8_t datagram;           /* a read of a datagram socket: never a view back-pressure counts */
    uint8_t truncated;          /* the datagram was longer than the room it landed in */
    gaio_addr *addr;            /* the sender (unconnected datagram socket), or NULL */
    uint64_t conn_id;           /* req's connection, filled in by gaio_core_take_results under
                                 * the lock: a short request's changes form (gaio_req_conn_id)
                                 * when it ends, which another thread may make it do meanwhile */
} gaio_result;

/* gaio_core_watch's flags: what kind of socket (the binding knows it) */
enum {
    GAIO_CONN_DGRAM = 1,        /* SOCK_DGRAM (R24) */
    GAIO_CONN_PEER = 2,         /* ... connected, or connect() was requested (R25) */
    GAIO_CONN_LOCAL = 4,        /* ... of AF_UNIX */
};

/* 48 bytes on LP64, in the core's slab (core_conns.c): one per idle connection.
 * What an engine keeps for a few connections only lives on its side
 * (io_uring's parked bytes: side_table.h). */
struct gaio_conn {
    int fd;                     /* -1 once free() closed it */
    uint32_t slot, gen;
    uint16_t engine_flags;      /* engine-private */
    uint8_t owner_bits;         /* the binding's (see owner) */
    uint8_t closing : 1;        /* freed: waiting for the engine to let go */
    uint8_t engine_busy : 1;    /* unwatch() returned 1: wait for gaio_core_conn_idle */
    uint8_t dgram : 1;          /* a datagram socket (GAIO_CONN_DGRAM) */
    uint8_t peer : 1;           /* ... that has a peer: its reads say no sender */
    uint8_t local : 1;          /* ... of AF_UNIX */
    uint8_t live : 1;           /* the slot is held (core_conns.c's slab) */
    uint8_t tls : 1;            /* start_tls was queued: its user reads are the TLS layer's */
    uint8_t tls_open : 1;       /* ... and ended: its user writes are too (before: plaintext) */
    gaio_req *head[2];          /* FIFOs by enum gaio_kind (a head's prev is the tail) */
    uintptr_t owner;            /* the binding's: zeroed by gaio_core_watch, never read by the
                                 * core; the binding reads it without the lock (gaio_core_slot) */
    size_t owed;                /* bytes of writes its counting standing read answers for, not
                                 * yet written (R21: backpressure.c's, meaningless without one) */
};
_Static_assert(sizeof(void *) != 8 || sizeof(struct gaio_conn) <= 48,
               "gaio_conn outgrew 48 bytes (per idle connection memory)");

static inline uint64_t gaio_conn_id(const gaio_conn *c) { return c->slot | (uint64_t)c->gen << 32; }

/* A short request names its connection by pointer while it is on it and
 * by id otherwise (incoming, done), in one place; any other has both. */
static inline int gaio_req_on_conn(const gaio_req *r)
{
    return r->state != GAIO_REQ_INCOMING && r->state != GAIO_REQ_DONE;
}
static inline uint64_t gaio_req_conn_id(const gaio_req *r)
{
    if (!gaio_req_short(r))
        return r->conn_id;
    return gaio_req_on_conn(r) ? gaio_conn_id(r->conn) : r->short_conn_id;
}
static inline void gaio_req_set_conn_id(gaio_req *r, uint64_t id)
{
    if (gaio_req_short(r))
        r->short_conn_id = id;
    else
        r->conn_id = id;
}

typedef struct gaio_stats {
    uint64_t submitted, completed, bytes_read, bytes_written, timeouts, watched, pending;
    uint64_t ibuf_bytes_batch;  /* internal-buffer bytes handed out in the current batch */
    uint64_t ibuf_chunks;       /* internal-buffer chunks allocated now */
    uint64_t wakeups;           /* engine waits that returned */
    uint64_t accepted;          /* connections accepted */
    uint64_t quiet_done;        /* quiet requests that succeeded (delivered nothing) */
    uint64_t datagrams_read, datagrams_written;
    /* system calls that carried at least one datagram (recvmsg, recvmmsg; sendmsg, sendmmsg) */
    uint64_t datagram_recv_calls, datagram_send_calls;
    uint64_t tls_handshakes;    /* completed successfully (R31) */
} gaio_stats;

/* at most 4 x bufsize of internal buffer per batch (python: ARENA_MULTIPLE) */
#define GAIO_IBUF_CHUNKS 4

/* A technique an engine may use (engine.h, techniques): why is empty when it is used. */
typedef struct gaio_technique {
    char name[32];
    char why[256];
} gaio_technique;

/* How the binding's threads let their runtime go on while they block (for
 * CPython: release and retake the GIL). A binding thread never blocks on
 * core->lock or core->idle while holding the GIL: it tries the lock, and
 * when that fails calls release(), blocks, does the call's work, drops
 * core->lock and only then calls reacquire(token). The one exception is
 * the TLS pass and hold (core_tls.c), which run Python code under core->lock
 * and so take the GIL back while holding it: safe, since no thread waits for
 * core->lock with the GIL held. */
typedef struct gaio_runtime {
    void *(*release)(void);
    void (*reacquire)(void *token);
} gaio_runtime;

/* ---- for the binding (watcher.c, request.c, ...) ----
 * Called with the runtime lock (GIL) held, except gaio_core_wait and
 * gaio_core_close, which are called with it released. Any of them may
 * release it meanwhile (see gaio_runtime): the binding keeps the core alive
 * across the call even if another thread closes the watcher. */

/* NULL and a reason in why on failure; runtime may be NULL */
gaio_core *gaio_core_new(const struct gaio_engine_ops *engine, size_t bufsize, size_t write_high,
                         const gaio_runtime *runtime, char *why, size_t whylen);
/* Watcher(batch_wait=): a wait that slept and has results keeps gathering
 * until batch_wait_ns after it began to sleep (0: off; core_wait.c). Set once,
 * before the core is shared. */
void gaio_core_set_batch_wait(gaio_core *core, int64_t batch_wait_ns);
/* Adopt a non-blocking socket descriptor (flags: GAIO_CONN_*, 0 for a
 * stream); returns its id (slot | gen << 32) or 0 and sets *err to an errno
 * (EBADF once the core is closed, EMFILE past GAIO_MAX_SLOTS connections).
 * A slot is below GAIO_MAX_SLOTS: the binding's map keeps slot + 1 in 32 bits. */
#define GAIO_MAX_SLOTS (1u << 30)
uint64_t gaio_core_watch(gaio_core *core, int fd, unsigned flags, int *err);
/* Queue a filled request (conn_id, buf, len, kind, op, flags, full,
 * deadline_ns, and u for standing requests, vectored writes, sendfile; a
 * connect's error: 0 when connect() succeeded at once, EINPROGRESS, EAGAIN
 * with u.c.addr set (an AF_UNIX backlog was full: the core tries again every
 * GAIO_CONNECT_RETRY_NS), or the errno it failed with, the request then
 * ending at once with it).
 * Returns 0; -1 when the core is closing (the request was not taken);
 * -EALREADY for a second start_tls on a connection (not taken either); or
 * -ENOMEM when the deadline heap or the results could not grow for it: it
 * was not queued either, and the caller raises MemoryError. Room in the heap
 * and for its last result is reserved here so that neither is lost later.
 * A write's u.w.origin (or its vec's origin, per item) may name the standing
 * read whose result view it was made from (R21); the core adds the standing
 * read on its own connection. */
int gaio_core_submit(gaio_core *core, gaio_req *req);
/* A quiet write's fast path: when nothing of the connection's writes is
 * queued (nor any request still incoming), send what the socket takes now.
 * Returns the bytes sent (0: none, full socket or an error left for the
 * request to meet); all of them counts as a quiet request done. */
ssize_t gaio_core_try_send(gaio_core *core, uint64_t conn_id, const void *buf, size_t len);
/* Close the connection's descriptor now; its requests finish with ConnClosedError.
 * Waits for a running waiter to do it when there is one (it is woken). */
void gaio_core_free(gaio_core *core, uint64_t conn_id);
/* Same, but need not be done before returning (a garbage-collected socket). */
void gaio_core_release(gaio_core *core, uint64_t conn_id);
/* Called with the GIL released: run the engine until a request finished, the
 * absolute CLOCK_MONOTONIC deadline until_ns passed (GAIO_NO_DEADLINE: none;
 * any other value, negative included, is a time), or close. With
 * stop_before_sleep, the engine polls once where it would block, and if that
 * brings nothing GAIO_WAIT_SLEEPY is returned instead of blocking: the
 * binding guards a sleep against signals (signals.c) only when there is one.
 * sigmask: the engine's wait() sleeps with it (engine.h). */
int gaio_core_wait(gaio_core *core, int64_t until_ns, int stop_before_sleep,
                   const sigset_t *sigmask);
/* Move up to cap results, in completion order, to buf; *left says how many
 * stay (for a larger buf). Never allocates: the binding owns buf. */
uint32_t gaio_core_take_results(gaio_core *core, gaio_result *buf, uint32_t cap, uint32_t *left);
/* The connection in slot (of an id gaio_core_watch returned and the binding
 * has not freed yet), without the lock: for the binding's owner fields, and
 * its slot and gen, which do not change until the binding frees it. */
gaio_conn *gaio_core_slot(const gaio_core *core, uint32_t slot);
/* The descriptor of a live connection (-1: none), to look at it (getsockopt). */
int gaio_core_conn_fd(gaio_core *core, uint64_t conn_id);
/* The earliest deadline (a request's, or a standing accept's retry), as a
 * CLOCK_MONOTONIC time; GAIO_NO_DEADLINE when there is none. */
int64_t gaio_core_next_deadline(gaio_core *core);
/* R23: the engine's descriptor, readable whenever gaio_core_wait has work
 * (from now on the core keeps it so); -1 with errno when there is none. */
int gaio_core_fileno(gaio_core *core);
/* The engine's signal_fd (engine.h): >= 0, or -errno (-ENOSYS: it has none). */
int gaio_core_signal_fd(gaio_core *core);
/* Internal-buffer chunk i (NULL: none now) and the size of every chunk, to
 * find which chunk a result's bytes are in. */
unsigned char *gaio_core_ibuf_chunk(const gaio_core *core, unsigned i, size_t *size);
/* 1: the engine's wait sleeps with a signal mask (engine.h, wait_sigmask);
 * 0: it offers gaio_core_signal_fd instead. */
int gaio_core_wait_sigmask(const gaio_core *core);
/* Start a new batch: the previous batch's views are released. */
void gaio_core_ibuf_reset(gaio_core *core);
/* Hand the chunk's memory over to the caller (to free() later): the core
 * allocates a fresh one when it needs it. */
unsigned char *gaio_core_ibuf_detach(gaio_core *core, unsigned i);
/* Stop: wake and wait out the waiter, close every descriptor, destroy the
 * engine; returns every request not delivered (linked by next) for the binding
 * to release. */
gaio_req *gaio_core_close(gaio_core *core);
void gaio_core_delete(gaio_core *core);
void gaio_core_get_stats(gaio_core *core, gaio_stats *out);
/* The engine's techniques (engine.h); 0 when it tells none or the core is closed. */
int gaio_core_techniques(gaio_core *core, gaio_technique *out, int max);
int64_t gaio_now_ns(void);

/* A standing request's idle limit counts from now (lazily, R20). */
static inline void gaio_standing_touch(gaio_req *r)
{
    gaio_idle *t = gaio_req_idle(r);
    if (t)
        t->active_ns = gaio_now_ns();
}

/* ---- TLS sessions (R28-R31, core_tls.c) ----
 * The engines stay TLS-unaware. A TLS connection's user requests are never
 * a head for the engine (gaio_conn_head), but for the plaintext writes queued
 * before start_tls; the session's own ciphertext requests (rd, wr: flagged
 * GAIO_F_INTERNAL, no result, no deadline) are put at the heads of its
 * queues and done by the engine without the GIL like any read or write.
 * What changes for a session (an internal request ended, a user request
 * queued or ended) lists it as pending; gaio_core_wait then returns
 * GAIO_WAIT_TLS and the binding runs its pass (tls_session.c) with the GIL:
 * the record layer, and the user requests' results through the usual
 * gaio_core_progress. The binding embeds gaio_tls first in its session. */
typedef struct gaio_tls {
    gaio_req rd, wr;            /* the ciphertext requests: buf, len set by the binding */
    struct gaio_tls *next;      /* in core->tls_pending (listed) */
    struct gaio_tls *next_dead; /* in core->tls_dead */
    uint64_t conn_id;
    gaio_req *request;          /* the start_tls request until it ends */
    int request_error;          /* how it ended when the core ended it (deadline, free) */
    uint8_t listed;             /* in core->tls_pending */
    uint8_t rd_busy, wr_busy;   /* queued for the engine */
    uint8_t rd_over, wr_over;   /* ended, not yet looked at: rd.done / wr.done, .error */
    unsigned char *early;       /* bytes a withdrawn read brought after start_tls (gaio_malloc) */
    size_t nearly;              /* ... ciphertext for the session before anything else */
    gaio_req *record_req;       /* the user write whose record wr carries, and its */
    size_t record_plain;        /* plaintext: counted in its size if it ends first (R29) */
} gaio_tls;

/* The pass (binding, GIL held): takes core->lock (the pass's own thread
 * may re-enter the core from Python code run by the session: an SNI
 * callback, a garbage-collected socket) and stands for the waiter. */
void *gaio_core_tls_pass_begin(gaio_core *core);
/* 1 on the thread that runs the pass (or a goodbye), inside it: Python code
 * the session runs (an SNI or msg callback) may not close or free, which
 * would take core->lock it holds, or a connection from under it. */
int gaio_core_tls_in_own_pass(gaio_core *core);
/* The next session with work, NULL when none is left. */
gaio_tls *gaio_core_tls_next(gaio_core *core);
/* After a round of the pass: an engine that submits in wait() (io_uring)
 * gets what the round queued now (a poll, not a sleep). 1 when that gave
 * sessions work again. */
int gaio_core_tls_flush(gaio_core *core);
/* Ends the pass: 1 when results are ready, and the sessions whose
 * connection is gone (linked by next) for the binding to dispose of. */
int gaio_core_tls_pass_end(gaio_core *core, void *token, gaio_tls **dead); /* by next_dead */
/* The session's connection (NULL: freed, closing). */
gaio_conn *gaio_core_tls_conn(gaio_core *core, gaio_tls *t);
/* The first user request of conn's kind queue (skipping rd / wr). */
static inline gaio_req *gaio_core_tls_user_head(gaio_conn *c, int kind)
{
    gaio_req *r = c->head[kind];
    while (r && (r->flags & GAIO_F_INTERNAL))
        r = r->next;
    return r;
}
/* Put rd (GAIO_READ) or wr (GAIO_WRITE) at the head of its queue for the
 * engine: 1; 0 while a read's withdrawal is under way (the session is
 * marked again once it is done); -1 when the connection is going. */
int gaio_core_tls_queue(gaio_core *core, gaio_tls *t, int kind);
/* End user request r with error (a GAIO_ERR_* or errno): its result. */
void gaio_core_tls_end(gaio_core *core, gaio_req *r, int error);
/* The handshake ended: the start_tls request's result (error 0: success). */
void gaio_core_tls_handshake_done(gaio_core *core, gaio_tls *t, int error);
/* Try the session again in the next wait (the internal buffer is spent). */
void gaio_core_tls_later(gaio_core *core, gaio_tls *t);
/* Sessions left once the core is closed (gaio_core_close): the binding's. */
gaio_tls *gaio_core_tls_take_dead(gaio_core *core); /* linked by next_dead */
/* The live session of connection id, or NULL. */
gaio_tls *gaio_core_tls_of(gaio_core *core, uint64_t conn_id);
/* Hold core->lock around one session's calls outside the pass (free()):
 * a session is never run by two threads at once (the SSLObject's methods
 * release the GIL). Re-entry as in the pass. */
void *gaio_core_tls_hold(gaio_core *core);
void gaio_core_tls_unhold(gaio_core *core, void *token);
/* The session of connection id while held (NULL: none, or going). */
gaio_tls *gaio_core_tls_held(gaio_core *core, uint64_t conn_id);
/* While held: send data (close_notify) on t's socket if nothing of its
 * writes is on its way to the kernel and the socket takes it at once. */
void gaio_core_tls_goodbye(gaio_core *core, gaio_tls *t, const void *data, size_t len);

/* Take / drop core->lock: an engine's wait() drops it around its blocking
 * syscall (engine.h); a test of the binding holds it from a thread. */
void gaio_core_lock(gaio_core *core);
void gaio_core_unlock(gaio_core *core);

#endif
