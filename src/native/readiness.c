/* Non-blocking I/O for the readiness engines; see readiness.h. */
#include "readiness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/sendfile.h>
#elif defined(__FreeBSD__) || defined(__APPLE__)
#include <sys/types.h>
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: engine_kqueue.c sets SO_NOSIGPIPE at watch() */
#endif

void gaio_ready_init(gaio_ready *rd, gaio_core *core)
{
    rd->core = core;
    rd->todo = rd->todo_spare = NULL;
    rd->ntodo = rd->cap_todo = 0;
    rd->rescan = 0;
    rd->flush = NULL;
    rd->nflush = rd->cap_flush = 0;
}

void gaio_ready_free(gaio_ready *rd)
{
    free(rd->todo);
    free(rd->todo_spare);
    free(rd->flush);
    rd->todo = rd->todo_spare = NULL;
    rd->flush = NULL;
}

/* R23: work owed to the next wait must keep fileno() readable, wherever the
 * read was put off: in the engine's wait, or after it (a read released by
 * back-pressure, a request drained by the waiter or made between waits). */
static void owe_wait(gaio_ready *rd)
{
    if (gaio_core_fileno_asked(rd->core) && !rd->ntodo && !rd->rescan && !rd->nflush)
        gaio_core_wake_engine(rd->core);
}

/* Put c's new head write off to the next wait (gaio_ready_start); 0 when
 * it cannot be (no memory for the list): then it is sent now. */
static int flush_later(gaio_ready *rd, gaio_conn *c)
{
    if (c->engine_flags & GAIO_IN_FLUSH)
        return 1;
    if (rd->nflush == rd->cap_flush) {
        uint32_t cap = rd->cap_flush ? rd->cap_flush * 2 : 16;
        uint64_t *f = gaio_realloc(rd->flush, cap * sizeof *f);
        if (!f)
            return 0;
        rd->flush = f;
        rd->cap_flush = cap;
    }
    owe_wait(rd);
    rd->flush[rd->nflush++] = gaio_conn_id(c);
    c->engine_flags |= GAIO_IN_FLUSH;
    return 1;
}

static void flush_writes(gaio_ready *rd)
{
    /* indexed afresh: a callback that put off one more write (realloc) is served too */
    for (uint32_t i = 0; i < rd->nflush; i++) {
        gaio_conn *c = gaio_core_conn(rd->core, rd->flush[i]);
        if (!c)
            continue;
        c->engine_flags &= ~GAIO_IN_FLUSH;
        gaio_ready_writes(rd, c);
    }
    rd->nflush = 0;
}

void gaio_ready_later(gaio_ready *rd, gaio_conn *c)
{
    if (c->engine_flags & GAIO_IN_TODO)
        return;
    owe_wait(rd);
    if (rd->ntodo == rd->cap_todo) {
        uint32_t cap = rd->cap_todo ? rd->cap_todo * 2 : 64;
        uint64_t *t = gaio_realloc(rd->todo, cap * sizeof *t);
        if (t)
            rd->todo = t;
        uint64_t *s = t ? gaio_realloc(rd->todo_spare, cap * sizeof *s) : NULL;
        if (!s) {
            /* No edge may ever come for bytes already waiting: the next
             * retry looks at every connection instead of the list. */
            rd->rescan = 1;
            return;
        }
        rd->todo_spare = s;
        rd->cap_todo = cap;
    }
    rd->todo[rd->ntodo++] = gaio_conn_id(c);
    c->engine_flags |= GAIO_IN_TODO;
}

/* A non-blocking syscall's outcome: bytes, -EAGAIN (nothing possible now), or -errno. */
static ssize_t io_result(ssize_t n)
{
    if (n >= 0)
        return n;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* eof_error: an errno that an end of stream stands for (gaio_kept_error),
 * or 0; *eof_error_used says it was reported */
static ssize_t recv_head(gaio_core *core, gaio_conn *c, gaio_req *r, int *short_read,
                         int eof_error, int *eof_error_used)
{
    unsigned char *ptr;
    size_t want;
    *short_read = 0;
    if (c->dgram)
        return gaio_recv_datagram(core, c, r, GAIO_DATAGRAMS_PER_PASS - 1); /* just one */
    if ((r->flags & GAIO_F_REPEAT) && !gaio_core_arrival_room(core))
        return GAIO_RECV_NO_ROOM; /* no memory for one more result now */
    if (gaio_req_buf(r)) {
        ptr = r->buf + r->done;
        want = r->len - r->done;
    } else {
        ssize_t room = gaio_core_ibuf_reserve(core, &ptr);
        if (room < 0) {
            /* no memory for the bytes: nothing was read, the request fails */
            gaio_core_progress(core, r, room);
            return room;
        }
        if (room == 0)
            return GAIO_RECV_NO_ROOM;
        want = (size_t)room;
    }
    ssize_t n;
    do
        n = recv(c->fd, ptr, want, 0);
    while (n < 0 && errno == EINTR);
    if ((n = io_result(n)) == -EAGAIN)
        return n;
    if (n == 0 && eof_error) {
        n = -eof_error;
        *eof_error_used = 1;
    }
    *short_read = n > 0 && (size_t)n < want;
    gaio_core_progress(core, r, n);
    return n;
}

ssize_t gaio_recv_head(gaio_core *core, gaio_conn *c, gaio_req *r, int *short_read)
{
    int unused;
    return recv_head(core, c, r, short_read, 0, &unused);
}

ssize_t gaio_accept_head(gaio_core *core, gaio_conn *c, gaio_req *r)
{
    if ((r->flags & GAIO_F_REPEAT) && !gaio_core_arrival_room(core))
        return GAIO_RECV_NO_ROOM;
    int fd;
#if defined(__linux__) || defined(__FreeBSD__)
    do
        fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
    while (fd < 0 && errno == EINTR);
#else
    do
        fd = accept(c->fd, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    int res = (int)io_result(fd);
    if (res == -EAGAIN)
        return res;
    gaio_core_accepted(core, r, res);
    return res;
}

/* A socket whose connect is still going (no error, no peer yet) */
static int connecting(int fd, int *err)
{
    socklen_t len = sizeof *err;
    *err = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len) < 0)
        *err = errno;
    if (*err == EINPROGRESS || *err == EALREADY)
        return 1;
    if (*err)
        return 0;
    struct sockaddr_storage peer;
    len = sizeof peer;
    /* writable before it is connected: the readiness engines start optimistic */
    return getpeername(fd, (struct sockaddr *)&peer, &len) < 0 && errno == ENOTCONN;
}

static ssize_t send_file(gaio_conn *c, gaio_req *r, size_t want)
{
    if (want > (1u << 30))
        want = 1u << 30;
    off_t off = (off_t)(r->u.w.file_off + (int64_t)r->done);
#if defined(__linux__)
    return sendfile(c->fd, r->u.w.file_fd, &off, want);
#elif defined(__FreeBSD__)
    off_t sent = 0;
    int rc = sendfile(r->u.w.file_fd, c->fd, off, want, NULL, &sent, 0);
    return sent > 0 ? (ssize_t)sent : rc;
#elif defined(__APPLE__)
    off_t len = (off_t)want;
    int rc = sendfile(r->u.w.file_fd, c->fd, off, &len, NULL, 0);
    return len > 0 ? (ssize_t)len : rc;
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* sendfile(2) has no MSG_NOSIGNAL: to a peer that has gone away it raises
 * SIGPIPE, whose default action kills the process (R6), and Python only
 * ignores it by default. SIGPIPE from a failed write is sent to the writing
 * thread: blocked here, it stays pending on this thread and, when this call
 * made it (EPIPE, and none was pending before), is taken back with sigwait
 * before the mask is restored, so no handler ever sees it. A SIGPIPE pending
 * before the call is someone else's and is left alone. The one sendfile call
 * site: io_uring sends files through gaio_send_head too. */
static ssize_t send_file_nosigpipe(gaio_conn *c, gaio_req *r, size_t want)
{
    sigset_t pipe_only, old, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    int was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    ssize_t n;
    do
        n = send_file(c, r, want);
    while (n < 0 && errno == EINTR);
    int err = errno;
    if (n < 0 && err == EPIPE && !was_pending && sigpending(&pending) == 0 &&
        sigismember(&pending, SIGPIPE) == 1) {
        int sig; /* pending and blocked: sigwait returns at once (sigtimedwait is not on macOS) */
        sigwait(&pipe_only, &sig);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return n;
}

ssize_t gaio_send_head(gaio_core *core, gaio_conn *c, gaio_req *r, int *short_write)
{
    *short_write = 0;
    if (c->dgram && r->op == GAIO_OP_WRITE)
        return gaio_send_datagram(core, c, r);
    if (r->op == GAIO_OP_CONNECT) {
        int err;
        if (connecting(c->fd, &err))
            return -EAGAIN;
        gaio_core_progress(core, r, -err);
        return 0;
    }
    size_t want = r->len - r->done;
    ssize_t n;
    if (r->op == GAIO_OP_SENDFILE) {
        if (!want) {
            gaio_core_progress(core, r, 0); /* nothing after offset: done at once */
            return 0;
        }
        n = send_file_nosigpipe(c, r, want);
    } else if (r->u.w.vec) {
        gaio_vec *v = r->u.w.vec;
        struct msghdr msg = {0};
        msg.msg_iov = v->iov + v->cur;
        msg.msg_iovlen = v->n - v->cur < GAIO_IOV_MAX ? v->n - v->cur : GAIO_IOV_MAX;
        want = 0;
        for (size_t i = 0; i < (size_t)msg.msg_iovlen; i++)
            want += msg.msg_iov[i].iov_len;
        do
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
    } else {
        do
            n = send(c->fd, r->buf + r->done, want, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
    }
    if ((n = io_result(n)) == -EAGAIN)
        return n;
    /* a short sendfile may be the file's end, not a full socket */
    *short_write = n >= 0 && (size_t)n < want && r->op != GAIO_OP_SENDFILE;
    gaio_core_progress(core, r, n);
    return n;
}

void gaio_ready_reads(gaio_ready *rd, gaio_conn *c)
{
    gaio_req *r;
    if (c->dgram) {
        gaio_ready_datagram_reads(rd, c);
        return;
    }
    while ((c->engine_flags & GAIO_MAY_READ) && (r = gaio_conn_head(c, GAIO_READ))) {
        if (r->op == GAIO_OP_ACCEPT) {
            ssize_t n = gaio_accept_head(rd->core, c, r);
            if (n == GAIO_RECV_NO_ROOM) {
                gaio_ready_later(rd, c);
                return;
            }
            if (n == -EAGAIN)
                c->engine_flags &= ~GAIO_MAY_READ;
            continue;
        }
        int short_read, kept_used = 0;
        ssize_t n = recv_head(rd->core, c, r, &short_read, gaio_kept_error(c), &kept_used);
        if (kept_used)
            gaio_keep_error(c, 0);
        if (n == GAIO_RECV_NO_ROOM) {
            gaio_ready_later(rd, c); /* this batch's internal buffer is spent */
            return;
        }
        if (n == -EAGAIN || (short_read && !(c->engine_flags & GAIO_HUP)))
            c->engine_flags &= ~GAIO_MAY_READ;
        else if (n <= 0 && n != -ENOMEM)
            c->engine_flags |= GAIO_HUP; /* end of stream or a socket error */
    }
}

void gaio_ready_writes(gaio_ready *rd, gaio_conn *c)
{
    gaio_req *r;
    while ((c->engine_flags & GAIO_MAY_WRITE) && (r = gaio_conn_head(c, GAIO_WRITE))) {
        int short_write;
        ssize_t n = gaio_send_head(rd->core, c, r, &short_write);
        if (n == -EAGAIN || short_write)
            c->engine_flags &= ~GAIO_MAY_WRITE;
    }
}

int gaio_ready_owed(const gaio_ready *rd)
{
    return rd->ntodo || rd->rescan || rd->nflush;
}

void gaio_ready_start(gaio_ready *rd, gaio_conn *c, int kind)
{
    if (c->closing || c->fd < 0)
        return;
    if (kind == GAIO_READ)
        gaio_ready_reads(rd, c);
    else if (!(c->dgram && !c->peer && flush_later(rd, c)))
        gaio_ready_writes(rd, c);
}

/* gaio_ready_later could not grow the list: every connection whose internal-buffer
 * read waits is tried (only after an allocation failed). */
static void retry_all(gaio_ready *rd)
{
    gaio_core *core = rd->core;
    rd->rescan = 0;
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(core, &s));) {
        gaio_req *r;
        if (!c->closing && c->fd >= 0 && !(c->engine_flags & GAIO_IN_TODO) &&
            (r = gaio_conn_head(c, GAIO_READ)) && (!gaio_req_buf(r) || r->op == GAIO_OP_ACCEPT))
            gaio_ready_reads(rd, c);
        if (rd->rescan || !gaio_core_ibuf_room(core)) {
            rd->rescan = 1; /* the rest at the next retry */
            return;
        }
    }
}

void gaio_ready_retry(gaio_ready *rd)
{
    if (rd->nflush)
        flush_writes(rd);
    if (rd->rescan && gaio_core_ibuf_room(rd->core))
        retry_all(rd);
    if (!rd->ntodo || !gaio_core_ibuf_room(rd->core))
        return;
    uint32_t n = rd->ntodo;
    uint64_t *ids = rd->todo;
    rd->todo = rd->todo_spare;
    rd->todo_spare = ids;
    rd->ntodo = 0;
    for (uint32_t i = 0; i < n; i++) {
        gaio_conn *c = gaio_core_conn(rd->core, ids[i]);
        if (!c)
            continue;
        c->engine_flags &= ~GAIO_IN_TODO;
        gaio_ready_reads(rd, c);
    }
}

int gaio_ready_timeout_ms(gaio_ready *rd, int64_t timeout_ns)
{
    if (gaio_core_has_results(rd->core))
        return 0;
    if (rd->rescan && (timeout_ns < 0 || timeout_ns > 10000000))
        timeout_ns = 10000000; /* a retry is owed (gaio_ready_later failed): come back soon */
    if (timeout_ns < 0)
        return -1;
    if (timeout_ns >= (int64_t)INT_MAX * 1000000)
        return INT_MAX;
    return (int)((timeout_ns + 999999) / 1000000);
}

ssize_t gaio_ready_send_now(void *state, gaio_conn *c, const void *buf, size_t len)
{
    ssize_t n;
    do
        n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n < 0 ? 0 : n; /* full, or an error the request will meet again and report */
}
