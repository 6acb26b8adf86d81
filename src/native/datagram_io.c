/* The datagram syscalls of the readiness engines, and of io_uring's POLL_ADD
 * path (R24-R27): one recvmsg per read, one sendmsg per write. readiness.c's
 * gaio_recv_head and gaio_send_head come here for a datagram socket; what
 * the core makes of it is core_datagrams.c. python engine: _python_datagrams.py.
 *
 * Kernel facts relied on:
 *   - recvmsg on a datagram socket takes exactly one datagram, filling its
 *     iovecs in order; MSG_TRUNC in msg_flags says it was longer than them
 *     (the rest is gone), and MSG_PEEK leaves it queued: a peek into the
 *     room left tells whether the next one fits (MSG_TRUNC as an input flag
 *     is Linux-only);
 *   - sendmsg sends one datagram or nothing (EMSGSIZE, EAGAIN, ...);
 *   - a pending socket error (an ICMP refusal on a connected UDP socket) is
 *     returned, and cleared, by the next recv or send, a peek included. A
 *     UDP send never refuses by itself; an AF_UNIX one does when its peer
 *     is gone.
 */
#include "readiness.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: engine_kqueue.c sets SO_NOSIGPIPE at watch() */
#endif

static ssize_t sys_result(ssize_t n)
{
    if (n >= 0)
        return n;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* 1 when the next datagram fits in room bytes at ptr, 0 when it does not,
 * or -errno (-EAGAIN: none is there). */
static int peek_fits(int fd, unsigned char *ptr, size_t room)
{
    struct iovec io = {ptr, room};
    struct msghdr msg = {0};
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    ssize_t n;
    do
        n = recvmsg(fd, &msg, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (int)sys_result(n);
    return !(msg.msg_flags & MSG_TRUNC);
}

/* Room in the internal buffer for c's next datagram, at *ptr: at most
 * bufsize bytes (a longer datagram is cut there), and never less than the
 * datagram when it is at most bufsize (R24): *spill takes the rest for a
 * fresh chunk, or a peek says whether it fits, or the next batch takes it.
 * 0: the next batch; -ENOMEM; -errno of the peek. */
static ssize_t datagram_room(gaio_core *core, int fd, unsigned char **ptr, unsigned char **spill)
{
    size_t bufsize = gaio_core_bufsize(core);
    for (int fresh = 0;; fresh = 1) {
        ssize_t room = gaio_core_ibuf_reserve_datagram(core, ptr, fresh ? NULL : spill);
        if (room <= 0 || (size_t)room >= bufsize || *spill)
            return room;
        int fits = peek_fits(fd, *ptr, (size_t)room);
        if (fits)
            return fits > 0 ? room : fits;
        if (fresh || gaio_core_ibuf_room(core) <= (size_t)room || !gaio_core_ibuf_next_chunk(core))
            return 0;
    }
}

ssize_t gaio_recv_datagram(gaio_core *core, gaio_conn *c, gaio_req *r, unsigned taken)
{
    if ((r->flags & GAIO_F_REPEAT) && !gaio_core_arrival_room(core))
        return GAIO_RECV_NO_ROOM;
    ssize_t got;
    if (gaio_recv_batched(core, c, r, taken, &got))
        return got;
    unsigned char *ptr = gaio_req_buf(r), *spill = NULL;
    size_t want = ptr ? r->len : 0;
    if (!ptr) {
        ssize_t room = datagram_room(core, c->fd, &ptr, &spill);
        if (room == 0)
            return GAIO_RECV_NO_ROOM;
        if (room == -EAGAIN)
            return room;
        if (room < 0) {
            gaio_core_datagram(core, r, room, NULL, 0, 0); /* the peek met a socket error */
            return room;
        }
        want = (size_t)room;
    }
    struct sockaddr_storage from;
    struct iovec io[2] = {{ptr, want}, {spill, spill ? gaio_core_bufsize(core) - want : 0}};
    struct msghdr msg = {0};
    msg.msg_iov = io;
    msg.msg_iovlen = spill ? 2 : 1;
    if (!c->peer) {
        msg.msg_name = &from;
        msg.msg_namelen = sizeof from;
    }
    ssize_t n;
    do
        n = recvmsg(c->fd, &msg, 0);
    while (n < 0 && errno == EINTR);
    if ((n = sys_result(n)) == -EAGAIN)
        return n;
    if (n > 0 && (size_t)n > want)
        gaio_core_ibuf_unspill(core, want, (size_t)n); /* it goes whole to the fresh chunk */
    if (n >= 0)
        gaio_core_datagram_call(core, GAIO_READ);
    gaio_core_datagram(core, r, n, n >= 0 ? msg.msg_name : NULL, n >= 0 ? msg.msg_namelen : 0,
                       n >= 0 && (msg.msg_flags & MSG_TRUNC));
    return n;
}

ssize_t gaio_send_datagram(gaio_core *core, gaio_conn *c, gaio_req *r)
{
    ssize_t sent;
    if (gaio_send_batched(core, c, r, &sent))
        return sent;
    struct iovec one = {r->buf, r->len};
    struct msghdr msg = {0};
    gaio_vec *v = r->u.w.vec;
    if (r->u.w.to) {
        msg.msg_name = &r->u.w.to->sa;
        msg.msg_namelen = r->u.w.to->len;
    }
    if (v) {
        /* the binding gathered a datagram's items into at most GAIO_IOV_MAX */
        msg.msg_iov = v->iov;
        msg.msg_iovlen = v->n;
    } else {
        msg.msg_iov = &one;
        msg.msg_iovlen = 1;
    }
    for (int first = 1;; first = 0) {
        ssize_t n;
        do
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if ((n = sys_result(n)) == -EAGAIN)
            return n;
        gaio_req *rd;
        if (n == -ECONNREFUSED && first && !c->local && (rd = gaio_conn_head(c, GAIO_READ)) &&
            rd->op == GAIO_OP_READ) {
            /* an earlier datagram's refusal, met by this send before the
             * pending read saw it: the read's (R27); this one goes again */
            gaio_core_datagram(core, rd, n, NULL, 0, 0);
            continue;
        }
        if (n >= 0)
            gaio_core_datagram_call(core, GAIO_WRITE);
        gaio_core_datagram_sent(core, r, n);
        return n;
    }
}

void gaio_ready_datagram_reads(gaio_ready *rd, gaio_conn *c)
{
    gaio_req *r;
    int taken = 0;
    while ((c->engine_flags & GAIO_MAY_READ) && (r = gaio_conn_head(c, GAIO_READ))) {
        if (taken == GAIO_DATAGRAMS_PER_PASS) {
            gaio_ready_later(rd, c); /* a flood on one socket does not hold up the others */
            return;
        }
        ssize_t n = gaio_recv_datagram(rd->core, c, r, taken++);
        if (n == GAIO_RECV_NO_ROOM) {
            gaio_ready_later(rd, c); /* this batch's internal buffer is spent */
            return;
        }
        if (n == -EAGAIN || (n >= 0 && gaio_recv_drained(rd->core, c)))
            c->engine_flags &= ~GAIO_MAY_READ;
    }
}
