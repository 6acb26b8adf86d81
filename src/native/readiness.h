/* What the readiness engines (engine_epoll.c, engine_kqueue.c) share: the
 * non-blocking recv/send done for a connection's head requests once the kernel
 * said it may be ready, and the list of connections whose internal-buffer read
 * waits for room in the next batch.
 *
 * Readiness is remembered in gaio_conn.engine_flags: with edge-triggered
 * events the kernel reports an edge once, and gaio reads a connection only
 * when a read request waits for it (back-pressure), possibly much later.
 * Kernel facts relied on: a short recv/send on a stream socket means the
 * buffer was drained/filled, so a new edge will come and the flag can be
 * cleared; after EOF or an error the socket stays readable forever (HUP).
 */
#ifndef GAIO_READINESS_H
#define GAIO_READINESS_H

#include "engine.h"

#include <errno.h>

/* gaio_conn.engine_flags of a readiness engine */
enum { GAIO_MAY_READ = 1, GAIO_MAY_WRITE = 2, GAIO_HUP = 4, GAIO_IN_TODO = 8, GAIO_IN_FLUSH = 16,
       /* the bits from here up: a stream socket's pending error that someone
        * else read (libkqueue reads SO_ERROR for EV_EOF's fflags, which
        * clears it), or 0. The end of stream recv() then finds is that error
        * instead (gaio_ready_reads). Kept in the flags, not beside them: an
        * errno is small (Linux's largest is 133), so it costs gaio_conn no
        * byte and keeping it cannot fail. */
       GAIO_KEPT_ERROR_SHIFT = 6 };
#define GAIO_KEPT_ERROR_MAX (UINT16_MAX >> GAIO_KEPT_ERROR_SHIFT)

static inline int gaio_kept_error(const gaio_conn *c) { return c->engine_flags >> GAIO_KEPT_ERROR_SHIFT; }

/* Keep err for c's end of stream; one too large for the flags is not kept:
 * the end reads as an end of stream, as libkqueue left it. */
static inline void gaio_keep_error(gaio_conn *c, int err)
{
    if (err < 0 || err > GAIO_KEPT_ERROR_MAX)
        err = 0;
    c->engine_flags = (uint16_t)((c->engine_flags & ((1u << GAIO_KEPT_ERROR_SHIFT) - 1)) |
                                 (unsigned)err << GAIO_KEPT_ERROR_SHIFT);
}

typedef struct gaio_ready {
    gaio_core *core;
    uint64_t *todo, *todo_spare;   /* ids of connections to read again (internal buffer was full) */
    uint32_t ntodo, cap_todo;
    int rescan;                    /* the list could not grow: retry every connection */
    uint64_t *flush;               /* ids of datagram sockets whose new writes wait for the
                                    * next wait, to go out together (sendmmsg) */
    uint32_t nflush, cap_flush;
} gaio_ready;

void gaio_ready_init(gaio_ready *rd, gaio_core *core);
void gaio_ready_free(gaio_ready *rd);
/* One recv() for c's head read r, into r's buffer or the internal buffer,
 * reported to the core (gaio_core_progress). Returns the bytes read (> 0;
 * *short_read when fewer than asked: the socket is drained), 0 at end of
 * stream, -EAGAIN when nothing was there, GAIO_RECV_NO_ROOM when this
 * batch's internal buffer is spent (nothing read), or another -errno (the
 * request failed). Shared with io_uring's readiness (POLL_ADD) path. */
#define GAIO_RECV_NO_ROOM (-ENOSPC)
ssize_t gaio_recv_head(gaio_core *core, gaio_conn *c, gaio_req *r, int *short_read);

/* One accept() for c's head accept r, reported to the core
 * (gaio_core_accepted). Returns the descriptor or -errno reported,
 * -EAGAIN when no connection was waiting, GAIO_RECV_NO_ROOM when there is
 * no room for a standing accept's result now (nothing accepted). */
ssize_t gaio_accept_head(gaio_core *core, gaio_conn *c, gaio_req *r);
/* One send for c's head write r (one buffer, vectored, sendfile) or, for a
 * connect, its outcome (SO_ERROR), reported to the core. Returns the bytes
 * sent or -errno reported (0: a connect's or sendfile's end), -EAGAIN when
 * the socket is full or the connect still going (nothing reported);
 * *short_write when fewer bytes than offered went: the socket is full. */
#define GAIO_IOV_MAX 1024 /* python: IOV_MAX in gaio/_python_requests.py */
ssize_t gaio_send_head(gaio_core *core, gaio_conn *c, gaio_req *r, int *short_write);

/* Datagram sockets (c->dgram; datagram_io.c): gaio_recv_head and
 * gaio_send_head come here for them. One recvmsg, one datagram, reported
 * with gaio_core_datagram; returns as gaio_recv_head (0 is an empty
 * datagram, not an end); taken: the datagrams this readiness pass took
 * already (below). One sendmsg of write r's whole datagram. */
ssize_t gaio_recv_datagram(gaio_core *core, gaio_conn *c, gaio_req *r, unsigned taken);
ssize_t gaio_send_datagram(gaio_core *core, gaio_conn *c, gaio_req *r);
/* Batched by the kernel (datagram_batch.c): the most datagrams one recvmmsg
 * or sendmmsg carries. gaio_recv_batched: c's next datagram for head read r
 * from datagrams a recvmmsg took, one made now when r stands and this pass
 * (which took `taken` already, 0 when it begins; GAIO_DATAGRAMS_PER_PASS at
 * most) may take 2 more or more; returns 1 with *res as gaio_recv_datagram, 0 when
 * it declines (one recvmsg then). gaio_recv_waiting: datagrams recvmmsg took
 * for c wait to be delivered (they need no readiness). gaio_send_batched: one
 * sendmmsg of the writes from head r on; 1 with *res (bytes of the last
 * datagram sent, or -EAGAIN), 0 when it declines (one sendmsg then). */
#define GAIO_DATAGRAMS_PER_CALL 32
int gaio_recv_batched(gaio_core *core, gaio_conn *c, gaio_req *r, unsigned taken, ssize_t *res);
int gaio_recv_waiting(gaio_core *core, gaio_conn *c);
/* c's recvmmsg of this pass took fewer datagrams than it asked (the socket
 * was empty then) and all are delivered: a datagram that came since makes a
 * new edge (a poll would find it), so reading on until EAGAIN would only
 * cost a call. Not across passes: an edge may have been taken meanwhile. */
int gaio_recv_drained(gaio_core *core, gaio_conn *c);
int gaio_send_batched(gaio_core *core, gaio_conn *c, gaio_req *r, ssize_t *res);
/* The most datagrams one readiness pass takes for a connection (python:
 * DATAGRAMS_PER_PASS in gaio/_python_datagrams.py): the rest waits for the
 * next wait, so that a flood on one socket holds up no other. */
#define GAIO_DATAGRAMS_PER_PASS 64
/* gaio_ready_reads of a datagram socket: until EAGAIN, the bound above, or
 * a spent internal buffer. */
void gaio_ready_datagram_reads(gaio_ready *rd, gaio_conn *c);
/* c's reads go on at the start of the next wait (gaio_ready_retry). */
void gaio_ready_later(gaio_ready *rd, gaio_conn *c);

/* engine.send_now: one non-blocking send() of a quiet write, made by the
 * requesting thread (state is unused). */
ssize_t gaio_ready_send_now(void *state, gaio_conn *c, const void *buf, size_t len);

/* Move the head requests of one direction while the connection may be ready. */
void gaio_ready_reads(gaio_ready *rd, gaio_conn *c);
void gaio_ready_writes(gaio_ready *rd, gaio_conn *c);
/* engine.start: a new head is tried at once; a datagram socket without a
 * peer sends its writes at the start of the next wait instead, all those
 * queued by then with one sendmmsg (as the python engine sends every write
 * in the next wait_io()). */
void gaio_ready_start(gaio_ready *rd, gaio_conn *c, int kind);
/* At the start of engine.wait: the datagram writes put off go out, and
 * reads that found the internal buffer spent go on. */
void gaio_ready_retry(gaio_ready *rd);
/* Work is left for the next wait (reads waiting for room): with
 * gaio_core_fileno_asked, the engine wakes itself so that fileno() stays readable. */
int gaio_ready_owed(const gaio_ready *rd);
/* engine.wait's timeout in whole milliseconds, rounded up (wait at least that
 * long); 0 when results are already waiting; -1 for no limit. */
int gaio_ready_timeout_ms(gaio_ready *rd, int64_t timeout_ns);

#endif
