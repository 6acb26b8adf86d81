/* Datagrams batched by the kernel (R26), for the readiness engines and
 * io_uring's POLL_ADD path: one recvmmsg takes up to
 * GAIO_DATAGRAMS_PER_CALL datagrams of a socket, one sendmmsg sends its
 * queued writes. datagram_io.c comes here first and does one datagram per
 * call when this file declines.
 *
 * Why a landing area: a datagram of up to bufsize bytes must arrive whole
 * (R24) and a batch hands out at most 4 x bufsize (R4), so a recvmmsg
 * straight into the internal buffer could offer only as many bufsize slots
 * as the batch has left: 4 at most. recvmmsg lands here instead, a slot of
 * bufsize per message, and each datagram is then copied to the internal
 * buffer (or a caller's buffer) as the batch takes it. A slot is a small
 * part (packed: the memory small datagrams touch) and the rest in a large
 * area only long datagrams write to (pages never written cost no memory).
 * Datagrams the batch cannot take wait here, for their socket only, and go
 * first at its next read: R24's bound counts views handed out, not slots an
 * engine reserves. While one socket's datagrams wait here, other sockets
 * read one datagram per recvmsg.
 *
 * Only sockets without a peer. A connected socket meets R27's errors (ICMP
 * refusals) through sk_err, which either call would move between datagrams:
 * sendmmsg drops the error a later message met (it returns the count sent),
 * and datagrams taken early would be delivered before an error the python
 * engine's reads would meet first. They keep one call per datagram.
 *
 * Kernel facts relied on:
 *   - recvmmsg on a non-blocking socket returns the datagrams that were
 *     there (at most vlen), -1 EAGAIN for none; an error met after the first
 *     datagram is kept for the next call (Linux __sys_recvmmsg: sk_err);
 *   - sendmmsg returns how many messages went before the first that failed,
 *     whose error the next call meets (EMSGSIZE, EAGAIN, ...), or -1 with
 *     that error when it was the first.
 * Linux >= 3.0 (sendmmsg), FreeBSD >= 11; elsewhere one call per datagram.
 */
#include "readiness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#if defined(__linux__) || defined(__FreeBSD__)

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#define LANDING_SMALL 2048            /* packed part of a slot */
#define LANDING_BYTES ((size_t)4 << 20) /* slots x bufsize at most (address space) */

struct gaio_landing {
    uint64_t owner;                   /* the socket whose datagrams wait (next < n) */
    uint32_t n, next;                 /* received by the last recvmmsg; the next to go */
    uint32_t cap;                     /* messages per call (0: no landing for this bufsize) */
    uint8_t short_call;               /* the last recvmmsg took fewer than it asked: drained */
    size_t bufsize, small;
    unsigned char *small_area, *large_area;
    struct mmsghdr in[GAIO_DATAGRAMS_PER_CALL];
    struct iovec iov[GAIO_DATAGRAMS_PER_CALL][2];
    struct sockaddr_storage from[GAIO_DATAGRAMS_PER_CALL];
    struct mmsghdr out[GAIO_DATAGRAMS_PER_CALL];
    gaio_req *sending[GAIO_DATAGRAMS_PER_CALL];
    struct iovec one[GAIO_DATAGRAMS_PER_CALL];
};

void gaio_landing_free(gaio_landing *l)
{
    if (!l)
        return;
    free(l->small_area);
    free(l->large_area);
    free(l);
}

/* The core's landing area, made on first use; NULL when there is none
 * (out of memory: tried again next time). */
static gaio_landing *landing(gaio_core *core)
{
    gaio_landing **slot = gaio_core_landing(core), *l = *slot;
    if (l)
        return l;
    if (!(l = gaio_calloc(1, sizeof *l)))
        return NULL;
    size_t bs = gaio_core_bufsize(core);
    size_t cap = LANDING_BYTES / bs;
    l->cap = cap < 2 ? 0 : cap > GAIO_DATAGRAMS_PER_CALL ? GAIO_DATAGRAMS_PER_CALL : (uint32_t)cap;
    l->bufsize = bs;
    l->small = bs < LANDING_SMALL ? bs : LANDING_SMALL;
    if (l->cap && (!(l->small_area = gaio_malloc(l->cap * l->small)) ||
                   (bs > l->small && !(l->large_area = gaio_malloc(l->cap * (bs - l->small)))))) {
        gaio_landing_free(l);
        return NULL;
    }
    return *slot = l;
}

/* Datagram i of the landing area, take bytes of it, to dst. */
static void copy_out(const gaio_landing *l, uint32_t i, unsigned char *dst, size_t take)
{
    size_t first = take < l->small ? take : l->small;
    memcpy(dst, l->iov[i][0].iov_base, first);
    if (take > first)
        memcpy(dst + first, l->iov[i][1].iov_base, take - first);
}

/* Hand the landing area's next datagram to head read r; as gaio_recv_datagram. */
static ssize_t deliver(gaio_core *core, gaio_landing *l, gaio_req *r)
{
    uint32_t i = l->next;
    struct msghdr *m = &l->in[i].msg_hdr;
    size_t take = l->in[i].msg_len;
    int truncated = (m->msg_flags & MSG_TRUNC) != 0;
    unsigned char *to = gaio_req_buf(r);
    if (to) {
        if (take > r->len) {
            take = r->len;
            truncated = 1;
        }
    } else {
        int got = gaio_core_ibuf_reserve_exact(core, take, &to);
        if (got == 0)
            return GAIO_RECV_NO_ROOM; /* it waits here for the next batch */
        if (got < 0) {
            gaio_core_datagram(core, r, got, NULL, 0, 0); /* the read ends; the datagram waits */
            return got;
        }
    }
    copy_out(l, i, to, take);
    l->next++;
    gaio_core_datagram(core, r, (ssize_t)take, m->msg_name, m->msg_namelen, truncated);
    return (ssize_t)take;
}

/* recvmmsg of up to vlen datagrams into the landing area: their count, or -errno. */
static int receive(gaio_landing *l, int fd, uint32_t vlen)
{
    size_t large = l->bufsize - l->small;
    for (uint32_t i = 0; i < vlen; i++) {
        l->iov[i][0] = (struct iovec){l->small_area + i * l->small, l->small};
        l->iov[i][1] = (struct iovec){large ? l->large_area + i * large : NULL, large};
        struct msghdr *m = &l->in[i].msg_hdr;
        memset(m, 0, sizeof *m);
        m->msg_iov = l->iov[i];
        m->msg_iovlen = large ? 2 : 1;
        m->msg_name = &l->from[i];
        m->msg_namelen = sizeof l->from[i];
    }
    int n;
    do
        n = recvmmsg(fd, l->in, vlen, 0, NULL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return n;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

int gaio_recv_batched(gaio_core *core, gaio_conn *c, gaio_req *r, unsigned taken, ssize_t *res)
{
    gaio_landing *l = *gaio_core_landing(core);
    uint64_t id = gaio_conn_id(c);
    unsigned most = taken < GAIO_DATAGRAMS_PER_PASS ? GAIO_DATAGRAMS_PER_PASS - taken : 0;
    if (l && taken == 0)
        l->short_call = 0; /* a pass begins: edges came since an earlier short call */
    if (l && l->next < l->n) {
        if (l->owner == id) {
            *res = deliver(core, l, r);
            return 1;
        }
        if (gaio_core_conn(core, l->owner))
            return 0; /* another socket's datagrams wait here: one recvmsg */
        l->n = l->next = 0; /* their socket was freed */
    }
    /* a standing read batches; a one-shot read takes one datagram */
    if (c->peer || most < 2 || !(r->flags & GAIO_F_REPEAT) || !gaio_core_waiting(core) ||
        !gaio_core_ibuf_room(core) || !(l = landing(core)) || !l->cap)
        return 0;
    int n = receive(l, c->fd, most < l->cap ? most : l->cap);
    if (n < 0) {
        if (n != -EAGAIN)
            gaio_core_datagram(core, r, n, NULL, 0, 0);
        *res = n;
        return 1;
    }
    gaio_core_datagram_call(core, GAIO_READ);
    l->short_call = (unsigned)n < (most < l->cap ? most : l->cap);
    l->owner = id;
    l->n = (uint32_t)n;
    l->next = 0;
    *res = deliver(core, l, r);
    return 1;
}

int gaio_recv_waiting(gaio_core *core, gaio_conn *c)
{
    gaio_landing *l = *gaio_core_landing(core);
    return l && l->next < l->n && l->owner == gaio_conn_id(c);
}

int gaio_recv_drained(gaio_core *core, gaio_conn *c)
{
    gaio_landing *l = *gaio_core_landing(core);
    return l && l->short_call && l->n && l->next == l->n && l->owner == gaio_conn_id(c);
}

/* The writes that follow head write r on c, r first, as one sendmmsg can
 * take them: plain datagram writes, queued. Returns how many. */
static uint32_t gather_writes(gaio_landing *l, gaio_req *r)
{
    uint32_t n = 0;
    for (; r && n < l->cap && r->op == GAIO_OP_WRITE && r->state == GAIO_REQ_QUEUED; r = r->next) {
        struct msghdr *m = &l->out[n].msg_hdr;
        memset(m, 0, sizeof *m);
        if (r->u.w.to) {
            m->msg_name = &r->u.w.to->sa;
            m->msg_namelen = r->u.w.to->len;
        }
        if (r->u.w.vec) {
            m->msg_iov = r->u.w.vec->iov;
            m->msg_iovlen = r->u.w.vec->n;
        } else {
            l->one[n] = (struct iovec){r->buf, r->len};
            m->msg_iov = &l->one[n];
            m->msg_iovlen = 1;
        }
        l->sending[n++] = r;
    }
    return n;
}

int gaio_send_batched(gaio_core *core, gaio_conn *c, gaio_req *r, ssize_t *res)
{
    gaio_landing *l;
    if (c->peer || !r->next || !(l = landing(core)) || !l->cap)
        return 0;
    uint32_t n = gather_writes(l, r);
    if (n < 2)
        return 0;
    int sent;
    do
        sent = sendmmsg(c->fd, l->out, n, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        *res = -EAGAIN;
        return 1;
    }
    if (sent <= 0)
        return 0; /* the first failed: one sendmsg meets its error, as without batching */
    gaio_core_datagram_call(core, GAIO_WRITE);
    for (int i = 0; i < sent; i++) {
        if (gaio_conn_head(c, GAIO_WRITE) != l->sending[i])
            break; /* cannot happen: nothing else takes c's writes meanwhile */
        gaio_core_datagram_sent(core, l->sending[i], (ssize_t)l->out[i].msg_len);
    }
    *res = (ssize_t)l->out[sent - 1].msg_len;
    return 1;
}

#else /* one call per datagram */

void gaio_landing_free(gaio_landing *l)
{
    (void)l;
}

int gaio_recv_batched(gaio_core *core, gaio_conn *c, gaio_req *r, unsigned taken, ssize_t *res)
{
    return 0;
}

int gaio_recv_waiting(gaio_core *core, gaio_conn *c)
{
    return 0;
}

int gaio_recv_drained(gaio_core *core, gaio_conn *c)
{
    return 0;
}

int gaio_send_batched(gaio_core *core, gaio_conn *c, gaio_req *r, ssize_t *res)
{
    return 0;
}

#endif
