/* The backend contract: what an engine file (engine_epoll.c, engine_kqueue.c,
 * engine_uring.c) provides to gaio's core.
 *
 * An engine turns the head request of a connection's read or write FIFO into
 * kernel work and the kernel's answers into core callbacks
 * (gaio_core_progress, gaio_core_finish, gaio_core_conn_idle; below). It
 * reaches the core through the functions declared below and nothing else.
 * It fits both shapes of kernel interface:
 *   - readiness (epoll, kqueue): the engine remembers which connections may be
 *     readable/writable and does the non-blocking recv/send itself when the
 *     caller has asked for that kind of I/O (back-pressure: a connection with
 *     no read request is never read);
 *   - completion (io_uring): the engine submits the operation, the kernel
 *     performs it, and the completion arrives later, possibly after the
 *     request's deadline passed or its connection was freed.
 *
 * Rules for every operation but wake():
 *   - called with core->lock held, by one thread at a time (the thread in
 *     wait_io, or a request thread when no thread waits): never concurrently;
 *   - only wait() may drop the lock, with gaio_core_unlock()/gaio_core_lock(),
 *     and only around its blocking syscall;
 *   - the engine works only on heads: the core calls start() when a queue gets
 *     a new head because of something the core did (a request arrived at an
 *     empty queue; a deadline removed the head). When a callback made by the
 *     engine finishes the head (gaio_core_progress returned 1,
 *     gaio_core_finish), the engine itself goes on with gaio_conn_head().
 *   - a connection with conn->closing set or conn->fd == -1 gets no new I/O.
 *   - what a head asks for is in req->op (core.h): READ (standing or not),
 *     ACCEPT, WRITE (one buffer or a gaio_vec), SENDFILE, CONNECT (wait for
 *     writability, then report SO_ERROR). readiness.h has the non-blocking
 *     syscall of each for an engine that learns readiness first.
 * Never touch Python: no GIL is held.
 */
#ifndef GAIO_ENGINE_H
#define GAIO_ENGINE_H

#include <errno.h>
#include <signal.h>

#include "core.h"

typedef struct gaio_engine_ops {
    /* "epoll", "kqueue", "uring": the name wait_io's engine attribute shows. */
    const char *name;

    /* 1: wait() honours its sigmask argument (below). An engine whose kernel
     * wait takes no signal mask (kqueue) says 0 and offers signal_fd. */
    int wait_sigmask;

    /* 1: start() only prepares, the kernel sees the work at the next wait()
     * (io_uring). The TLS pass then polls once (wait(0)) so that the
     * ciphertext it queued goes out while the caller handles the batch. */
    int defers_submit;

    /* Build the engine's private state for core (kept in *state). On failure
     * return -1 with a human reason in why (NUL-terminated, at most whylen
     * bytes): it becomes the EngineUnavailableError message. A failure for
     * want of descriptors or memory (gaio_resource_error) returns that errno
     * instead (> 0): it is raised as the OSError, not as an unavailable
     * engine, and engine="auto" does not move on to a slower engine. */
    int (*create)(gaio_core *core, void **state, char *why, size_t whylen);

    /* Tear down: on return the kernel references no user buffer, no conn and
     * no request any more (a completion engine waits for or cancels what is in
     * flight; it need not call back). The core then releases everything. */
    void (*destroy)(void *state);

    /* Start watching a new connection (conn->fd non-blocking). Return 0 or a
     * negative errno (the request that delegated the socket then fails). */
    int (*watch)(void *state, gaio_conn *conn);

    /* Stop watching: called before the core closes conn->fd (free, garbage
     * collection, close). Return 0 when nothing in the kernel references conn
     * any more, 1 when something still does: the engine then calls
     * gaio_core_conn_idle(core, conn) later, after every request of conn it
     * was cancelling got its gaio_core_finish; conn's memory stays valid. */
    int (*unwatch)(void *state, gaio_conn *conn);

    /* The kind queue (GAIO_READ / GAIO_WRITE) of conn has a new head:
     * gaio_conn_head(conn, kind). A readiness engine may try the I/O now or
     * note it for wait(); a completion engine prepares the operation. The
     * work is done (submitted) by wait() at the latest. */
    void (*start)(void *state, gaio_conn *conn, int kind);

    /* The head request req must end early (its deadline passed, or its conn is
     * being freed). Return 0 if the kernel has nothing of it (the core
     * finishes it now), 1 if an operation is in flight: the engine cancels it
     * and calls gaio_core_finish(core, req) once the kernel is done with its
     * buffer (first gaio_core_progress for bytes the operation moved; if that
     * returned 1 the request is finished and finish is not called). Until
     * then the core keeps req, its buffer and its queue position. Return 2
     * when the engine, trying req once more at once (non-blocking) because
     * nothing of it was in the kernel, finished it itself: gaio_core_progress
     * returned 1 (end of stream, an error, or the last bytes). The core then
     * only starts the next head. Never for a connection being freed. */
    int (*cancel)(void *state, gaio_req *req);

    /* Submit everything prepared, then wait up to timeout_ns (-1: no limit,
     * 0: poll) for the kernel, and report what happened through the core
     * callbacks. Return early when wake() is called. Must not block when
     * gaio_core_has_results(core) is already true. Returns >= 0, -EINTR when
     * a signal interrupted the wait, or another -errno on failure.
     * sigmask (NULL: leave the thread's mask alone): the signal mask to sleep
     * with, set by the kernel wait itself (epoll_pwait, io_uring_enter's
     * EXT_ARG) so that a signal blocked until then is taken - as -EINTR - at
     * the moment the sleep begins, never between a check and the sleep
     * (signals.c). Given only to engines that set wait_sigmask. */
    int (*wait)(void *state, int64_t timeout_ns, const sigset_t *sigmask);

    /* Interrupt a wait() in progress, from any thread, without the lock
     * (eventfd / EVFILT_USER / pipe write). Async-signal-safe is not needed.
     * Also makes fileno()'s descriptor readable until the next wait(). */
    void (*wake)(void *state);

    /* R23: a descriptor that is readable while the kernel has something for
     * wait() (and after wake()); -1 when the engine has none to offer. Once
     * gaio_core_fileno_asked(core) is true, a wait() that leaves work for
     * the next one (reads waiting for internal-buffer room, a retry owed)
     * calls wake() itself before returning. */
    int (*fileno)(void *state);

    /* Optional (NULL: none), for an engine without wait_sigmask. A
     * non-blocking descriptor for CPython's signal.set_wakeup_fd, made on
     * first use (-errno when it cannot be) and kept until destroy: while it
     * is set, a signal makes wait() return -EINTR. */
    int (*signal_fd)(void *state);

    /* Optional (NULL: nothing to do). conn's standing read (the READ head)
     * was just held by back-pressure: gaio_conn_head no longer returns it; an
     * engine with an operation in the kernel that keeps taking bytes
     * (multishot) stops it. start(conn, READ) follows when it is released. */
    void (*pause)(void *state, gaio_conn *conn);

    /* Optional (NULL: none). A quiet write's fast path (gaio_core_try_send):
     * the requesting thread sends what conn's socket takes now, without
     * blocking, nothing of conn's writes being queued. Returns the bytes sent;
     * 0 when none went (a full socket, or an error the request will meet
     * again and report). io_uring offers it only with DEFER_TASKRUN: without
     * it each such send() runs the ring's pending task work on its way out,
     * and the receives it re-issues contend for the socket locks (rr 1 KiB x
     * 500, pinned: 12.7% of the server's CPU in a spin lock's slow path). */
    ssize_t (*send_now)(void *state, gaio_conn *conn, const void *buf, size_t len);

    /* Optional (NULL: none). For tests and benchmarks: the techniques the
     * engine may use, at most max of them, each with an empty why when it
     * is used, else the reason it is not (the kernel lacks it, ...).
     * Returns how many were written. */
    int (*techniques)(void *state, gaio_technique *out, int max);

    /* Optional (NULL: no). Whether wait() gathers for Watcher(batch_wait=)
     * itself (gaio_core_batch_wait_ns): a wait that sleeps and gets
     * completions keeps collecting them until batch_wait after it began, in
     * the same kernel call. The core then does not sleep for it again
     * (core_wait.c's gather). */
    int (*gathers)(void *state);
} gaio_engine_ops;

/* ---- what the core offers engines (core_*.c), called with core->lock held ----
 * An engine reaches the core through these functions only: struct gaio_core
 * is private to the core (core_private.h). */

/* The live connection with this id, or NULL (stale: freed, reused or closing). */
gaio_conn *gaio_core_conn(gaio_core *core, uint64_t conn_id);
/* gaio_conn_id(c): core.h */
/* The connection with this id while the core holds it, closing ones
 * included (a completion engine finishing a cancel), else NULL. */
gaio_conn *gaio_core_conn_held(gaio_core *core, uint64_t conn_id);
/* Every connection the core holds, closing ones included, by slot:
 *     uint32_t s = 0;
 *     for (gaio_conn *c; (c = gaio_core_next_conn(core, &s));) ...
 * Safe when the loop's body lets the core release connections. */
gaio_conn *gaio_core_next_conn(gaio_core *core, uint32_t *slot);
/* The request at the head of a queue for the engine to work on; NULL when
 * empty, when the head is cancelling, held by back-pressure or in an
 * accept's backoff, and for reads while a connect is the write head. */
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
/* A kernel result for req: bytes moved (> 0), 0 (end of stream on a read,
 * end of file on a sendfile, success of a connect), or -errno. For a read
 * without a buffer, the bytes are where gaio_core_ibuf_reserve said. Returns
 * 1 when the request finished (it left its queue: forget it and look at
 * gaio_conn_head for the next), 0 when it needs more I/O. A standing read
 * stays: each call with bytes is one result (appended to the previous one
 * when it continues it in the internal buffer); before reading for it an
 * engine asks gaio_core_arrival_room. A write's progress may release a
 * standing read elsewhere (engine.start of that connection, READ). */
int gaio_core_progress(gaio_core *core, gaio_req *req, ssize_t res);
/* An accept() for head req returned res: a descriptor (>= 0, now the
 * caller's), or -errno. -ECONNABORTED is skipped (returns 0: accept again);
 * a resource error ends a one-shot accept and puts a standing one in
 * backoff (gaio_conn_head NULL until the core restarts it). Returns 1 when
 * req finished, 0 when it stays. Before accepting for a standing accept an
 * engine asks gaio_core_arrival_room. */
int gaio_core_accepted(gaio_core *core, gaio_req *req, int res);
/* ---- datagram sockets (R24-R27, core_datagrams.c): conn->dgram ---- */

/* Datagram reads of the internal buffer: a datagram of up to bufsize bytes
 * is delivered whole (R24). gaio_core_ibuf_reserve_datagram is
 * gaio_core_ibuf_reserve for one datagram: at most bufsize bytes at *ptr;
 * when fewer and a fresh chunk can take the rest, *spill (spill may be NULL:
 * not asked) gets bufsize minus that many bytes where recvmsg puts what
 * does not fit, and gaio_core_ibuf_unspill(core, room, n) then moves the n
 * bytes received into the fresh chunk, where gaio_core_datagram finds
 * them. With *spill NULL and less than bufsize offered, the engine peeks:
 * a datagram that does not fit may go to the next chunk
 * (gaio_core_ibuf_next_chunk: 1, reserve again; 0: there is none, the
 * datagram waits for the next batch). */
ssize_t gaio_core_ibuf_reserve_datagram(gaio_core *core, unsigned char **ptr, unsigned char **spill);
void gaio_core_ibuf_unspill(gaio_core *core, size_t room, size_t n);
int gaio_core_ibuf_next_chunk(gaio_core *core);
/* For head read r of a datagram socket: one datagram of res bytes (>= 0;
 * without a buffer, where gaio_core_ibuf_reserve said), with its sender
 * (addr, addrlen as recvmsg gave them; kept for the result only when the
 * socket has no peer) and MSG_TRUNC (truncated); or a socket error
 * (-errno). Each is one result, never joined to another. A standing read
 * stays, an error included (R27); -ENOMEM ends it (no memory for its bytes).
 * Returns 1 when r finished. */
int gaio_core_datagram(gaio_core *core, gaio_req *r, ssize_t res, const struct sockaddr *addr,
                       socklen_t addrlen, int truncated);
/* A datagram write's sendmsg returned res: the whole datagram (>= 0), or
 * -errno (the write fails whole, R24). As gaio_core_progress. */
int gaio_core_datagram_sent(gaio_core *core, gaio_req *r, ssize_t res);
/* Socket error err of datagram socket c, learnt apart from a recv or send
 * (libkqueue reads it with SO_ERROR): the pending read's result, else the
 * first pending write's; with nothing pending it is dropped (R27). The
 * engine then goes on with the heads of both queues. */
void gaio_core_datagram_error(gaio_core *core, gaio_conn *c, int err);
/* One system call carried datagrams of kind (GAIO_READ: received, GAIO_WRITE:
 * sent) - stats()' datagram_recv_calls and datagram_send_calls. */
void gaio_core_datagram_call(gaio_core *core, int kind);
/* gaio_core_ibuf_reserve for a datagram already received (datagram_batch.c):
 * len contiguous bytes at *ptr, in this chunk or the next. 1; 0 when this
 * batch cannot take them (its bound, or no thread waits); -ENOMEM. */
int gaio_core_ibuf_reserve_exact(gaio_core *core, size_t len, unsigned char **ptr);
/* Where datagram_batch.c keeps its landing area (NULL until it makes one);
 * the core frees it with gaio_landing_free when it is deleted. */
typedef struct gaio_landing gaio_landing;
gaio_landing **gaio_core_landing(gaio_core *core);
void gaio_landing_free(gaio_landing *l);

/* Room for one more result of a standing request: 1, or 0 (out of memory
 * for it now: try again in the next wait, as for a spent internal buffer). */
int gaio_core_arrival_room(gaio_core *core);
/* A request for which engine.cancel() returned 1 is over in the kernel: finish it. */
void gaio_core_finish(gaio_core *core, gaio_req *req);
/* A connection for which engine.unwatch() returned 1 has no kernel operation left. */
void gaio_core_conn_idle(gaio_core *core, gaio_conn *conn);
/* Finished requests are waiting: the engine should not block. */
int gaio_core_has_results(const gaio_core *core);
/* R23: fileno() was asked. A wait() that leaves work for the next one (reads
 * waiting for internal-buffer room, a submission to make) then wakes the
 * engine so that fileno()'s descriptor stays readable. */
int gaio_core_fileno_asked(const gaio_core *core);
/* A thread is inside gaio_core_wait (else a request thread runs the engine). */
int gaio_core_waiting(const gaio_core *core);
/* Watcher(batch_wait=) in ns, 0: off (engine.gathers). */
int64_t gaio_core_batch_wait_ns(const gaio_core *core);
/* The watcher is being closed: destroy() follows and ends what is in flight. */
int gaio_core_closing(const gaio_core *core);
/* The internal buffer's chunk size (Watcher(bufsize=)). */
size_t gaio_core_bufsize(const gaio_core *core);
/* Call the engine's own wake(): for code shared by engines (readiness.c)
 * that does not know the engine's state. */
void gaio_core_wake_engine(gaio_core *core);


/* EMFILE, ENFILE, ENOMEM, ENOBUFS: the process or the system was short of
 * descriptors or memory at that moment; the kernel has the engine. The
 * python engine's are RESOURCE_ERRORS in gaio/_python_accept_connect.py. */
static inline int gaio_resource_error(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS;
}

/* The engines compiled into this module. A platform's engine that cannot be
 * built here is still defined, with a create() that explains why. */
extern const gaio_engine_ops gaio_engine_epoll;
extern const gaio_engine_ops gaio_engine_kqueue;
extern const gaio_engine_ops gaio_engine_uring;

#endif
