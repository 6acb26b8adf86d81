/* gaio's C core: the types every engine sees.
 *
 * The core owns connections (a slot table with generation numbers), each
 * connection's read and write FIFOs, the deadline heap, the internal
 * buffer and the list of finished requests. It knows nothing of Python: a
 * request is embedded in the binding's own struct (module.c), which alone
 * interprets it.
 *
 * Threads: the core starts none. I/O happens inside gaio_core_wait(), called
 * by the one thread in wait_io() with the GIL released; a request made while
 * no thread waits starts at once in its own thread (gaio_core_submit). Other
 * threads append to the incoming queue (under core->lock) and wake the engine.
 */
#ifndef GAIO_CORE_H
#define GAIO_CORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "alloc.h"

typedef struct gaio_core gaio_core;
typedef struct gaio_conn gaio_conn;
typedef struct gaio_req gaio_req;
struct gaio_engine_ops;

enum gaio_kind { GAIO_READ = 0, GAIO_WRITE = 1 };

/* "No deadline" for gaio_req.deadline_ns and gaio_core_wait's until_ns: the
 * one value no clock reading or clamped deadline takes as a time. */
#define GAIO_NO_DEADLINE INT64_MAX

/* gaio_req.error: 0, a positive errno, or one of these. */
enum {
    GAIO_ERR_EOF = -1,      /* end of stream */
    GAIO_ERR_DEADLINE = -2, /* deadline passed */
    GAIO_ERR_CLOSED = -3,   /* free() of the connection (or close of the watcher) */
};

/* gaio_req.state */
enum {
    GAIO_REQ_INCOMING = 0, /* in core->incoming, not yet on its connection */
    GAIO_REQ_QUEUED,       /* in its connection's FIFO */
    GAIO_REQ_CANCELLING,   /* head whose engine.cancel() returned 1: waits for gaio_core_finish */
    GAIO_REQ_EXPIRED,      /* behind a CANCELLING head, deadline passed: ends (error set) right
                            * after the head, never before it (it was queued later) */
    GAIO_REQ_DONE,         /* in core->done, waiting to be delivered */
};

/* gaio_core_wait() results */
enum {
    GAIO_WAIT_RESULTS = 1,  /* core->done is not empty */
    GAIO_WAIT_TIMEOUT = 0,  /* time is up, nothing finished */
    GAIO_WAIT_CLOSED = -1,  /* gaio_core_close() was called from another thread */
    GAIO_WAIT_EINTR = -2,   /* a signal arrived: let Python run its handlers, then call again */
};

struct gaio_req {
    gaio_req *next, *prev;      /* FIFO links (incoming, connection queue, done list) */
    gaio_conn *conn;            /* set when the request reaches its connection */
    uint64_t conn_id;           /* slot | gen << 32 of its connection */
    unsigned char *buf;         /* caller's memory; NULL for a read into the internal buffer */
    size_t len;                 /* bytes asked (writes, read_full) or room in buf (read) */
    size_t done;                /* bytes transferred so far */
    int64_t deadline_ns;        /* CLOCK_MONOTONIC; GAIO_NO_DEADLINE: none */
    uint32_t heap_index;        /* position in the deadline heap, UINT32_MAX when absent */
    uint8_t kind;               /* enum gaio_kind */
    uint8_t full;               /* read_full: complete only when done == len */
    uint8_t state;              /* GAIO_REQ_* */
    int error;                  /* 0, errno > 0, or GAIO_ERR_* */
    int cancel_reason;          /* GAIO_ERR_DEADLINE / GAIO_ERR_CLOSED while CANCELLING */
    unsigned char *ibuf_ptr;    /* read without a buffer: where its bytes are */
    /* no engine-private fields: no engine needed one, and an idle
     * connection's pending read is one of these (per-connection memory) */
};

/* 56 bytes on LP64, so that malloc's chunk is 64: one per idle connection. */
struct gaio_conn {
    int fd;                     /* -1 once free() closed it */
    uint32_t slot, gen;
    uint16_t engine_flags;      /* engine-private */
    uint8_t closing;            /* freed: waiting for the engine to let go */
    uint8_t engine_busy;        /* unwatch() returned 1: wait for gaio_core_conn_idle */
    gaio_req *head[2], *tail[2];/* FIFOs by enum gaio_kind */
    void *engine_data;          /* engine-private */
};
_Static_assert(sizeof(void *) != 8 || sizeof(struct gaio_conn) <= 56,
               "gaio_conn outgrew malloc's 64-byte chunk (per idle connection memory)");

typedef struct gaio_stats {
    uint64_t submitted, completed, bytes_read, bytes_written, timeouts, watched, pending;
    uint64_t ibuf_bytes_batch;  /* internal-buffer bytes handed out in the current batch */
    uint64_t ibuf_chunks;       /* internal-buffer chunks allocated now */
    uint64_t wakeups;           /* engine waits that returned */
} gaio_stats;

#define GAIO_IBUF_CHUNKS 4      /* at most 4 x bufsize of internal buffer per batch */

/* How the binding's threads let their runtime go on while they block (for
 * CPython: release and retake the GIL). A binding thread never blocks on
 * core->lock or core->idle while holding the GIL: it tries the lock, and
 * when that fails calls release(), blocks, does the call's work, drops
 * core->lock and only then calls reacquire(token). So no thread ever takes
 * the GIL while holding core->lock either. */
typedef struct gaio_runtime {
    void *(*release)(void);
    void (*reacquire)(void *token);
} gaio_runtime;

struct gaio_core {
    pthread_mutex_t lock;       /* protects everything below; never held while taking the GIL */
    const gaio_runtime *runtime;/* NULL: callers hold no runtime lock */
    pthread_cond_t idle;        /* signalled when the waiter leaves or a command was processed */
    const struct gaio_engine_ops *engine;
    void *engine_state;

    /* connections */
    gaio_conn **slots;          /* slot -> conn, NULL when free */
    uint32_t *slot_gen;         /* generation of each slot, bumped when freed */
    uint32_t nslots, cap_slots;
    uint32_t *free_slots;
    uint32_t nfree;

    /* requests on their way in, from any thread */
    gaio_req *incoming_head, *incoming_tail;
    uint64_t *frees;            /* conn ids to free (free() and garbage-collected sockets) */
    uint32_t nfrees, cap_frees;
    uint64_t frees_done;        /* commands processed: lets free() wait for its own */
    uint64_t frees_asked;

    /* deadlines: binary min-heap on deadline_ns */
    gaio_req **heap;
    uint32_t nheap, cap_heap;
    uint32_t heap_promised;     /* incoming requests with a deadline: cap_heap >= nheap + this */

    /* finished requests in completion order */
    gaio_req *done_head, *done_tail;

    /* internal buffer: chunks of bufsize bytes, filled consecutively within a batch */
    size_t bufsize;
    unsigned char *chunk[GAIO_IBUF_CHUNKS];
    uint32_t chunk_cur;         /* chunk being filled */
    size_t chunk_off;           /* bytes used in it */
    size_t ibuf_out;            /* bytes handed out in this batch (core and engine memory) */

    uint8_t waiting;            /* a thread is inside gaio_core_wait */
    uint8_t sleeping;           /* ... and is (about to be) blocked in the kernel */
    uint8_t woken;              /* wake() sent since it went to sleep */
    uint8_t closing;            /* gaio_core_close() asked the waiter to leave */
    uint8_t closed;
    uint8_t skipped_poll;       /* the last gaio_core_wait returned results without the engine */

    gaio_stats stats;
};

/* ---- for the binding (module.c) ----
 * Called with the runtime lock (GIL) held, except gaio_core_wait and
 * gaio_core_close, which are called with it released. Any of them may
 * release it meanwhile (see gaio_runtime): the binding keeps the core alive
 * across the call even if another thread closes the watcher. */

/* NULL and a reason in why on failure; runtime may be NULL */
gaio_core *gaio_core_new(const struct gaio_engine_ops *engine, size_t bufsize,
                         const gaio_runtime *runtime, char *why, size_t whylen);
/* Adopt a non-blocking stream descriptor; returns its id (slot | gen << 32) or
 * 0 and sets *err to an errno (EBADF once the core is closed). */
uint64_t gaio_core_watch(gaio_core *core, int fd, int *err);
/* Queue a filled request (conn_id, buf, len, kind, full, deadline_ns).
 * Returns 0; -1 when the core is closing (the request was not taken); or
 * -ENOMEM when the deadline heap could not grow for it: it was not queued
 * either, and the caller raises MemoryError. Room in the heap is reserved
 * here so that a deadline is never lost later. */
int gaio_core_submit(gaio_core *core, gaio_req *req);
/* Close the connection's descriptor now; its requests finish with ConnClosedError.
 * Waits for a running waiter to do it when there is one (it is woken). */
void gaio_core_free(gaio_core *core, uint64_t conn_id);
/* Same, but need not be done before returning (a garbage-collected socket). */
void gaio_core_release(gaio_core *core, uint64_t conn_id);
/* Called with the GIL released: run the engine until a request finished, the
 * absolute CLOCK_MONOTONIC deadline until_ns passed (GAIO_NO_DEADLINE: none;
 * any other value, negative included, is a time), or close. */
int gaio_core_wait(gaio_core *core, int64_t until_ns);
/* Take the list of finished requests (linked by next), in completion order. */
gaio_req *gaio_core_take_done(gaio_core *core);
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
int64_t gaio_now_ns(void);

/* ---- for engines, called with core->lock held ---- */

/* The live connection with this id, or NULL (stale: freed, reused or closing). */
gaio_conn *gaio_core_conn(gaio_core *core, uint64_t conn_id);
static inline uint64_t gaio_conn_id(const gaio_conn *c) { return c->slot | (uint64_t)c->gen << 32; }
/* The connection with this id while the core holds it, closing ones
 * included (a completion engine finishing a cancel), else NULL. */
gaio_conn *gaio_core_conn_held(gaio_core *core, uint64_t conn_id);
/* Every connection the core holds, closing ones included, by slot:
 *     uint32_t s = 0;
 *     for (gaio_conn *c; (c = gaio_core_next_conn(core, &s));) ...
 * Safe when the loop's body lets the core release connections. */
gaio_conn *gaio_core_next_conn(gaio_core *core, uint32_t *slot);
/* The request at the head of a queue, NULL when empty or when the head is cancelling. */
gaio_req *gaio_conn_head(gaio_conn *conn, int kind);
/* Room in the core's internal buffer for one read: *ptr and the byte count;
 * 0 when this batch's budget (4 x bufsize) is spent, or when no thread is in
 * gaio_core_wait (a request started at once by its own thread: the last
 * batch's views are still out): try again in the next wait. -ENOMEM when a
 * chunk could not be allocated: the engine ends the read with that error
 * (retrying would wait for nothing). */
ssize_t gaio_core_ibuf_reserve(gaio_core *core, unsigned char **ptr);
/* Bytes internal-buffer reads may still take in this batch. */
size_t gaio_core_ibuf_room(gaio_core *core);
/* A kernel result for req: bytes moved (> 0), 0 (end of stream on a read), or
 * -errno. For a read without a buffer, the bytes are where gaio_core_ibuf_reserve
 * said. Returns 1 when the request finished (it left its queue: forget it and
 * look at gaio_conn_head for the next), 0 when it needs more I/O. */
int gaio_core_progress(gaio_core *core, gaio_req *req, ssize_t res);
/* A request for which engine.cancel() returned 1 is over in the kernel: finish it. */
void gaio_core_finish(gaio_core *core, gaio_req *req);
/* A connection for which engine.unwatch() returned 1 has no kernel operation left. */
void gaio_core_conn_idle(gaio_core *core, gaio_conn *conn);
/* Finished requests are waiting: the engine should not block. */
static inline int gaio_core_has_results(const gaio_core *core) { return core->done_head != NULL; }
/* Drop / retake core->lock around the blocking syscall in engine.wait. */
void gaio_core_unlock(gaio_core *core);
void gaio_core_lock(gaio_core *core);

#endif
