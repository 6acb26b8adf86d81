/* What arrives for the io_uring engine, and the reads waiting for room: the
 * operation a read or accept gets; the bytes of buffer-select receives
 * (one-shot, or multishot for a standing read) and of POLL_ADD + recv();
 * the connections of accepts (one-shot, or multishot for a standing accept).
 *
 * Bytes are copied out of the provided buffer at once (to the core's internal
 * buffer, whose views Python holds until the next wait_io, or to the caller's
 * buffer), so the buffer goes back to the kernel as soon as the kernel has
 * filled it. Bytes no read may take now (this batch's internal buffer is
 * spent, no memory for one more result) are parked on their connection, a
 * copy, and handed out first when its reads go on; no receive is submitted
 * for a connection while bytes are parked, and a multishot one is cancelled:
 * a connection that cannot take more stops taking from the kernel, so the
 * 4 x bufsize bound per batch holds and TCP slows the peer. So does a
 * standing read held by back-pressure (R21). What a multishot operation still
 * brings until its cancellation lands is handed out or parked, never dropped.
 *
 * A multishot receive pays while arrivals are messages: the kernel keeps its
 * poll armed, no SQE per arrival. On a bulk stream it loops over the socket
 * and outruns both the 4 buffers and the batch's budget (ENOBUFS, bytes
 * parked, a cancel and a resubmission each time: on the benchmarks' 4
 * streams, up to a fifth less throughput and a tenth more CPU per byte than a
 * RECV per arrival). So a standing read whose multishot receive ran the ring
 * dry or parked bytes is STREAMING, and so is a connection whose one-shot
 * RECV brought more than bufsize / 8 bytes, and a new one (ur_watch says
 * why). A STREAMING connection's reads wait with POLL_ADD and recv()
 * straight into the internal buffer, as the readiness engines do
 * ("poll-streams"): the copy out of the provided buffer was the stream
 * echo's cost over epoll (its memmove, 8.5% of the server's profile). Small
 * messages keep the RECV: a copy of a few hundred bytes costs less than the
 * recv() syscall. It streams until a piece of at most bufsize / 8 leaves the
 * socket empty (a short recv(), or a RECV's CQE without
 * IORING_CQE_F_SOCK_NONEMPTY). One that starved for room is read with recv()
 * at its turn in the next batch (RESUME), not polled again: a poll per
 * starved connection per batch would cost as many SQEs and CQEs. Without
 * "poll-streams" a STREAMING connection gets a one-shot RECV per arrival.
 *
 * With "multishot-poll" a standing read takes none of the above: one
 * multishot POLL_ADD stays armed and each of its CQEs is a recv() into the
 * internal buffer (gaio__ur_poll_arrival), as epoll's loop does; what a
 * RECV cost per message over epoll's recv() was arming its poll and the
 * copy. Such a poll wakes for new bytes only, never for bytes left in the
 * socket: a read that stops before the socket is empty cancels it and the
 * next one is armed when the read goes on (it completes at once on a
 * readable socket); a wake-up that says the stream ended or failed
 * (POLLRDHUP, POLLHUP, POLLERR) is read until recv() says so, not only until
 * a short piece.
 */
#if defined(__linux__)

#include "uring_engine.h"
#include "readiness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* In st->parked, by connection id (READ_HELD): bytes taken from the kernel
 * that no read could take yet, and, after them, the stream's end if it came
 * too. Few connections ever have some: gaio_conn has no room for them. */
typedef struct {
    size_t len, off;
    int ended;  /* the receive ended after these bytes ... */
    int end;    /* ... with this: 0 (end of stream) or -errno */
    unsigned char data[];
} parked_bytes;

/* Give `len` bytes that arrived for c to its read requests in queue order:
 * a copy in the core's internal buffer for internal-buffer reads, in the
 * caller's buffer for the others. A head being cancelled takes what it can
 * and ends; a standing read held by back-pressure takes them too (they left
 * the kernel already). Returns the bytes taken; the rest waits for room. */
static size_t hand_out(gaio__ur_state *st, gaio_conn *c, const unsigned char *src, size_t len)
{
    gaio_core *core = st->core;
    size_t used = 0;
    gaio_req *r;
    /* on a TLS connection the bytes are ciphertext: only the session's own
     * read takes them (core_tls.c); a receive of a read made before
     * start_tls parks them for it */
    while (used < len && (r = c->head[GAIO_READ]) && r->op == GAIO_OP_READ &&
           (r->state == GAIO_REQ_QUEUED || r->state == GAIO_REQ_CANCELLING) &&
           (!c->tls || (r->flags & GAIO_F_INTERNAL))) {
        if ((r->flags & GAIO_F_REPEAT) && !gaio_core_arrival_room(core))
            break; /* no memory for one more result now */
        unsigned char *dst;
        size_t room;
        if (gaio_req_buf(r)) {
            dst = r->buf + r->done;
            room = r->len - r->done;
        } else {
            ssize_t got = gaio_core_ibuf_reserve(core, &dst);
            if (got == 0)
                break;
            if (got < 0) {
                /* no memory to show them: this request fails and the bytes
                 * stay for the next read (parked), so the stream has no hole */
                if (gaio_core_progress(core, r, got) == 0 && r->state == GAIO_REQ_CANCELLING)
                    gaio_core_finish(core, r);
                continue;
            }
            room = (size_t)got;
        }
        size_t n = len - used < room ? len - used : room;
        memcpy(dst, src + used, n);
        used += n;
        if (gaio_core_progress(core, r, (ssize_t)n) == 0 && r->state == GAIO_REQ_CANCELLING)
            gaio_core_finish(core, r);
    }
    return used;
}

static parked_bytes *parked_of(gaio__ur_state *st, gaio_conn *c)
{
    return (c->engine_flags & READ_HELD) ? gaio_side_get(&st->parked, gaio_conn_id(c)) : NULL;
}

int gaio__ur_has_parked(gaio__ur_state *st, gaio_conn *c) { return parked_of(st, c) != NULL; }

int gaio__ur_read_failed(gaio__ur_state *st, gaio_conn *c)
{
    return (c->engine_flags & READ_HELD) && !parked_of(st, c);
}

/* Keep len bytes of src for c's next reads, after those parked already. */
static int park(gaio__ur_state *st, gaio_conn *c, const unsigned char *src, size_t len)
{
    parked_bytes *old = parked_of(st, c);
    size_t kept = old ? old->len - old->off : 0;
    parked_bytes *p = gaio_malloc(sizeof *p + kept + len);
    if (!p)
        return -1;
    if (gaio_side_put(&st->parked, gaio_conn_id(c), p) != 0) { /* only when there was no old */
        free(p);
        return -1;
    }
    p->len = kept + len;
    p->off = 0;
    p->ended = 0;
    p->end = 0;
    if (kept)
        memcpy(p->data, old->data + old->off, kept);
    if (len)
        memcpy(p->data + kept, src, len);
    free(old);
    c->engine_flags |= READ_HELD;
    return 0;
}

void gaio__ur_drop_parked(gaio__ur_state *st, gaio_conn *c)
{
    if (!(c->engine_flags & READ_HELD))
        return;
    parked_bytes *p = gaio_side_take(&st->parked, gaio_conn_id(c));
    if (p) {
        free(p);
        c->engine_flags &= ~READ_HELD;
    }
}

void gaio__ur_drop_all_parked(gaio__ur_state *st)
{
    uint32_t i = 0;
    for (void *p; (p = gaio_side_next(&st->parked, &i));)
        free(p);
    gaio_side_clear(&st->parked);
}

/* Bytes of c's stream were taken from the kernel and could not be kept (no
 * memory to park them): no later read may go on after the hole, so this one
 * and every later read of c end with ENOMEM. Writes go on. */
void gaio__ur_fail_reads(gaio__ur_state *st, gaio_conn *c)
{
    gaio_req *r;
    gaio__ur_drop_parked(st, c);
    c->engine_flags |= READ_HELD; /* and no entry: the hole */
    while ((r = gaio_conn_head(c, GAIO_READ)))
        gaio_core_progress(st->core, r, -ENOMEM);
}

int gaio__ur_parked_out(gaio__ur_state *st, gaio_conn *c)
{
    parked_bytes *p = parked_of(st, c);
    p->off += hand_out(st, c, p->data + p->off, p->len - p->off);
    if (p->off < p->len) {
        if (gaio_conn_head(c, GAIO_READ))
            gaio__ur_starve(st, c); /* a read waits: retried when the next batch has room */
        return 0;
    }
    if (p->ended) {
        gaio_req *r = gaio_conn_head(c, GAIO_READ);
        if (!r)
            return 0; /* kept for the read that goes on next */
        int end = p->end;
        gaio__ur_drop_parked(st, c);
        gaio_core_progress(st->core, r, end);
        return 1;
    }
    gaio__ur_drop_parked(st, c);
    return 1;
}

/* len bytes arrived for c: to its reads, or parked behind bytes already parked. */
static void take(gaio__ur_state *st, gaio_conn *c, const unsigned char *src, size_t len)
{
    if (c->engine_flags & READ_HELD) {
        if (gaio__ur_read_failed(st, c))
            return; /* the stream has a hole already: nothing after it is kept */
    } else {
        size_t used = hand_out(st, c, src, len);
        src += used;
        len -= used;
    }
    if (len == 0 || c->closing)
        return;
    if (park(st, c, src, len) != 0)
        gaio__ur_fail_reads(st, c);
    else if (gaio_conn_head(c, GAIO_READ))
        gaio__ur_starve(st, c); /* a read waits: retried when the next batch has room */
}

/* c's receive ended with res: 0 (end of stream) or a socket error. The read
 * that takes the next bytes takes it; while bytes are parked, or no read may
 * take it now (none, or held by back-pressure), it waits behind them. */
static void stream_end(gaio__ur_state *st, gaio_conn *c, int32_t res)
{
    gaio_req *r = gaio_conn_head(c, GAIO_READ);
    if (r && !gaio__ur_has_parked(st, c)) {
        gaio_core_progress(st->core, r, res);
        return;
    }
    if (c->closing || gaio__ur_read_failed(st, c) ||
        (!(c->engine_flags & READ_HELD) && park(st, c, NULL, 0) != 0))
        return; /* no memory to keep it: the next receive finds the end again (a reset reads as EOF) */
    parked_bytes *p = parked_of(st, c);
    p->ended = 1;
    p->end = res;
}

void gaio__ur_starve(gaio__ur_state *st, gaio_conn *c)
{
    if (c->engine_flags & STARVED)
        return;
    if (st->nstarved == st->cap_starved &&
        grow((void **)&st->starved, &st->cap_starved, sizeof *st->starved)) {
        st->rescan = 1;
        return;
    }
    c->engine_flags |= STARVED;
    st->starved[st->nstarved++] = gaio_conn_id(c);
}

void gaio__ur_retry_starved(gaio__ur_state *st)
{
    uint32_t n = st->nstarved;
    st->nstarved = 0;
    for (uint32_t i = 0; i < n; i++) {
        gaio_conn *c = gaio_core_conn(st->core, st->starved[i]);
        if (!c)
            continue;
        c->engine_flags &= ~STARVED;
        gaio_req *r = gaio_conn_head(c, GAIO_READ);
        if (!gaio_core_ibuf_room(st->core))
            gaio__ur_starve(st, c);
        else if (!st->use[TECH_PBUF] && !c->dgram && r && r->op == GAIO_OP_READ)
            gaio__ur_ibuf_reads(st, c);
        else {
            /* parked bytes first, then a new operation; a STREAMING read's
             * recv() waits for its turn in the work list too, after the
             * parked bytes of those starved before it */
            if (c->engine_flags & STREAMING)
                c->engine_flags |= RESUME;
            gaio__ur_schedule_start(st, c, GAIO_READ);
        }
    }
}

uint32_t gaio__ur_prep_read(gaio__ur_state *st, struct gaio__io_uring_sqe *sqe, gaio_conn *c,
                            gaio_req *r, uint64_t ud)
{
    int standing = (r->flags & GAIO_F_REPEAT) != 0;
    if (c->dgram) {
        gaio__uring_prep_poll_add(sqe, c->fd, POLLIN, ud); /* then datagram_io.c's recvmsg() */
        return BIT(POLL_IN_FLIGHT, GAIO_READ);
    }
    if (r->op == GAIO_OP_ACCEPT) {
        if (standing && st->use[TECH_ACCEPT_MULTISHOT]) {
            gaio__uring_prep_accept_multishot(sqe, c->fd, SOCK_CLOEXEC, ud);
            return ACCEPTING | MULTISHOT;
        }
        if (st->use[TECH_ACCEPT]) {
            gaio__uring_prep_accept(sqe, c->fd, SOCK_CLOEXEC, ud);
            return ACCEPTING;
        }
        gaio__uring_prep_poll_add(sqe, c->fd, POLLIN, ud); /* then readiness.c's accept4() */
        return BIT(POLL_IN_FLIGHT, GAIO_READ);
    }
    if (gaio_req_buf(r)) {
        gaio__uring_prep_recv(sqe, c->fd, r->buf + r->done, op_len(r->len - r->done), ud);
        return 0;
    }
    if (standing && st->use[TECH_POLL_MULTISHOT]) {
        gaio__uring_prep_poll_multishot(sqe, c->fd, POLLIN | POLLRDHUP, ud); /* gaio__ur_poll_arrival */
        return READ_IS_IBUF | MULTISHOT | BIT(POLL_IN_FLIGHT, GAIO_READ) | DRAINED;
    }
    if (!st->use[TECH_PBUF]) {
        gaio__uring_prep_poll_add(sqe, c->fd, POLLIN, ud); /* then recv() into the internal buffer */
        return READ_IS_IBUF;
    }
    if ((c->engine_flags & STREAMING) && st->use[TECH_POLL_STREAMS]) {
        gaio__uring_prep_poll_add(sqe, c->fd, POLLIN, ud); /* the same, a provided buffer spared */
        return READ_IS_IBUF | BIT(POLL_IN_FLIGHT, GAIO_READ);
    }
    if (standing && st->use[TECH_RECV_MULTISHOT] && !(c->engine_flags & STREAMING)) {
        gaio__uring_prep_recv_multishot(sqe, c->fd, st->bufs[RING_MULTISHOT].group, ud);
        return READ_IS_IBUF | MULTISHOT;
    }
    struct gaio__uring_bufring *bufs = &st->bufs[RING_ONESHOT];
    gaio__uring_prep_recv_select(sqe, c->fd, bufs->size, bufs->group, ud);
    if (st->use[TECH_RECV_POLL_FIRST] && (c->engine_flags & DRAINED))
        sqe->ioprio |= GAIO__IORING_RECVSEND_POLL_FIRST;
    return READ_IS_IBUF;
}

int gaio__ur_recv_in_place(gaio__ur_state *st, gaio_conn *c, int to_the_end)
{
    gaio_req *r;
    while ((r = gaio_conn_head(c, GAIO_READ)) && !gaio_req_buf(r) && r->op == GAIO_OP_READ) {
        int short_read;
        ssize_t n = gaio_recv_head(st->core, c, r, &short_read);
        if (n == GAIO_RECV_NO_ROOM) {
            c->engine_flags &= ~DRAINED;
            gaio__ur_starve(st, c); /* this batch's internal buffer is spent */
            return -1;
        }
        if (short_read && (size_t)n <= gaio_core_bufsize(st->core) / 8)
            c->engine_flags &= ~STREAMING; /* a small piece emptied the socket: messages again */
        if (n == -EAGAIN || (short_read && !to_the_end)) {
            c->engine_flags |= DRAINED;
            break; /* drained: poll before the next read */
        }
    }
    return 0;
}

void gaio__ur_poll_arrival(gaio__ur_state *st, gaio_conn *c, int32_t mask)
{
    /* A short recv() says the socket is empty, but not that the end of
     * stream (or an error) behind the bytes has been seen, and the wake-up
     * that brought it may have been this one: none would follow. */
    if (!c->closing && c->fd >= 0)
        gaio__ur_recv_in_place(st, c, (mask & (POLLRDHUP | POLLHUP | POLLERR)) != 0);
    /* It wakes only for what arrives: a read that stopped before the socket
     * was empty (no room, held, ended) would not hear of those bytes again.
     * Cancelled, it is armed anew when the read goes on, and a POLL_ADD on a
     * readable socket completes at once. */
    if (!gaio__ur_multishot_wanted(st, c))
        gaio__ur_ask_cancel(st, c, GAIO_READ, 0);
}

void gaio__ur_ibuf_reads(gaio__ur_state *st, gaio_conn *c)
{
    if (gaio__ur_recv_in_place(st, c, 0) == 0)
        gaio__ur_schedule_start(st, c, GAIO_READ);
}

int gaio__ur_last_try(gaio__ur_state *st, gaio_conn *c, gaio_req *r)
{
    if (r->kind != GAIO_READ || r->op != GAIO_OP_READ || !gaio_req_buf(r) || c->closing || c->fd < 0 ||
        (c->engine_flags & READ_HELD))
        return 0;
    for (;;) {
        int short_read;
        ssize_t n = gaio_recv_head(st->core, c, r, &short_read);
        if (c->head[GAIO_READ] != r)
            return 2; /* gaio_core_progress finished it */
        if (n <= 0)
            return 0; /* -EAGAIN: nothing more there */
        /* bytes, not all: an end of stream may follow them */
    }
}

int gaio__ur_multishot_wanted(gaio__ur_state *st, gaio_conn *c)
{
    gaio_req *r = gaio_conn_head(c, GAIO_READ);
    if (!r || !(r->flags & GAIO_F_REPEAT) || c->closing ||
        (c->engine_flags & STARVED) || gaio__ur_read_failed(st, c) ||
        !gaio_core_arrival_room(st->core))
        return 0;
    if (r->op == GAIO_OP_ACCEPT)
        return (c->engine_flags & ACCEPTING) != 0;
    if ((c->engine_flags & BIT(POLL_IN_FLIGHT, GAIO_READ)) && !(c->engine_flags & DRAINED))
        return 0; /* its last recv() left bytes in the socket: no wake-up comes for them */
    return r->op == GAIO_OP_READ && !gaio_req_buf(r) && !(c->engine_flags & READ_HELD) &&
           !(c->engine_flags & ACCEPTING);
}

void gaio__ur_recv_cqe(gaio__ur_state *st, gaio_conn *c, int32_t res, uint32_t flags, int ring,
                       int more)
{
    struct gaio__uring_bufring *bufs = &st->bufs[ring];
    uint32_t *filled = st->buf_filled[ring];
    uint32_t id = flags >> GAIO__IORING_CQE_BUFFER_SHIFT;
    if (res > 0 && !(flags & GAIO__IORING_CQE_F_SOCK_NONEMPTY))
        c->engine_flags |= DRAINED;
    else
        c->engine_flags &= ~DRAINED; /* bytes left, or none taken (ENOBUFS: no buffer for them) */
    if (ring == RING_ONESHOT && res > 0 && (uint32_t)res <= bufs->size / 8 &&
        !(flags & GAIO__IORING_CQE_F_SOCK_NONEMPTY))
        c->engine_flags &= ~STREAMING; /* messages again */
    else if (ring == RING_ONESHOT && res > 0 && (uint32_t)res > bufs->size / 8 && st->use[TECH_POLL_STREAMS])
        c->engine_flags |= STREAMING; /* a bulk arrival: the next reads recv() in place */
    if ((flags & GAIO__IORING_CQE_F_BUFFER) && id < bufs->count) {
        if (res > 0) {
            unsigned char *src = (unsigned char *)gaio__uring_bufring_data(bufs, (uint16_t)id) + filled[id];
            filled[id] += (uint32_t)res;
            take(st, c, src, (size_t)res);
        }
        if (!(flags & GAIO__IORING_CQE_F_BUF_MORE)) {
            filled[id] = 0;
            gaio__uring_bufring_recycle(bufs, (uint16_t)id);
        }
    }
    if (more) {
        /* a standing read that ended, was held, or left bytes parked stops the kernel */
        if (!gaio__ur_multishot_wanted(st, c))
            gaio__ur_ask_cancel(st, c, GAIO_READ, 0);
        return;
    }
    if (ring == RING_MULTISHOT && (res == -ENOBUFS || gaio__ur_has_parked(st, c)))
        c->engine_flags |= STREAMING; /* ran the ring dry, or parked bytes */
    gaio_req *r = c->head[GAIO_READ];
    if (r && r->state == GAIO_REQ_CANCELLING)
        gaio_core_finish(st->core, r); /* after the bytes that raced its cancellation */
    if (res == 0 || (res < 0 && res != -ENOBUFS && res != -ECANCELED && res != -EINTR &&
                     res != -EAGAIN))
        stream_end(st, c, res);
    /* -ENOBUFS: every buffer was full when data came; recycled by now: again */
}

/* ---- R16: accepts past RLIMIT_NOFILE ----
 * IORING_OP_ACCEPT takes RLIMIT_NOFILE when its SQE is prepared
 * (io_accept_prep: accept->nofile = rlimit(RLIMIT_NOFILE)) and allocates
 * under that number for as long as the operation lives: a multishot ACCEPT
 * armed before the process lowered its limit goes on accepting past it, as a
 * one-shot one does for its connection. accept4() would have failed with
 * EMFILE: the kernel hands out the lowest free number, so a descriptor at or
 * past today's soft limit means none was free below it. Such a connection is
 * not lost (the kernel took it from the backlog) nor delivered: it is held in
 * st->held, the accept reports EMFILE as on the other engines (a standing one
 * backs off, which cancels its multishot ACCEPT: the next one is prepared
 * with the limit of its time), and it is handed over first when the accept
 * tries again, moved below the limit by F_DUPFD_CLOEXEC (which obeys it). */

static int nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= (rlim_t)INT_MAX)
        return INT_MAX;
    return (int)rl.rlim_cur;
}

static int has_held(gaio__ur_state *st, uint64_t id)
{
    for (uint32_t i = 0; i < st->nheld; i++)
        if (st->held[i].id == id)
            return 1;
    return 0;
}

/* 0, or -1 when the list could not grow (the caller hands fd over as it is). */
static int hold(gaio__ur_state *st, gaio_conn *c, int fd)
{
    if (st->nheld == st->cap_held && grow((void **)&st->held, &st->cap_held, sizeof *st->held))
        return -1;
    st->held[st->nheld++] = (gaio__ur_held_fd){.id = gaio_conn_id(c), .fd = fd};
    return 0;
}

static void unhold(gaio__ur_state *st, uint32_t i)
{
    memmove(st->held + i, st->held + i + 1, (st->nheld - i - 1) * sizeof *st->held);
    st->nheld--;
}

int gaio__ur_hand_held(gaio__ur_state *st, gaio_conn *c)
{
    uint64_t id = gaio_conn_id(c);
    uint32_t i = 0;
    gaio_req *r;
    for (;;) {
        while (i < st->nheld && st->held[i].id != id)
            i++;
        if (i == st->nheld)
            return 1;
        if (!(r = gaio_conn_head(c, GAIO_READ)) || r->op != GAIO_OP_ACCEPT)
            return 0;
        if ((r->flags & GAIO_F_REPEAT) && !gaio_core_arrival_room(st->core)) {
            gaio__ur_starve(st, c);
            return 0;
        }
        int fd = fcntl(st->held[i].fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            gaio_core_accepted(st->core, r, -errno); /* EMFILE: still no room below the limit */
            continue; /* a standing accept backs off (no head now); a one-shot one ended */
        }
        close(st->held[i].fd);
        unhold(st, i);
        gaio_core_accepted(st->core, r, fd);
    }
}

void gaio__ur_drop_held(gaio__ur_state *st, gaio_conn *c)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < st->nheld; i++) {
        if (!c || st->held[i].id == gaio_conn_id(c))
            close(st->held[i].fd);
        else
            st->held[kept++] = st->held[i];
    }
    st->nheld = kept;
}

/* A descriptor an ACCEPT brought for r, the head accept (queued). */
static void accepted(gaio__ur_state *st, gaio_conn *c, gaio_req *r, int fd)
{
    if (fd < nofile_limit() && (!st->nheld || !has_held(st, gaio_conn_id(c)))) {
        gaio_core_accepted(st->core, r, fd);
        return;
    }
    /* past the limit, or behind connections held: hold it, in arrival order */
    if (hold(st, c, fd) != 0) {
        gaio_core_accepted(st->core, r, fd); /* no memory to hold it: never lose it */
        return;
    }
    if (!(r->flags & GAIO_F_BACKOFF))
        gaio__ur_hand_held(st, c); /* what fits goes now; else EMFILE, as accept4() */
}

void gaio__ur_accept_cqe(gaio__ur_state *st, gaio_conn *c, int32_t res, int more)
{
    gaio_core *core = st->core;
    gaio_req *r = c->head[GAIO_READ];
    if (r && (r->op != GAIO_OP_ACCEPT ||
              (r->state != GAIO_REQ_QUEUED && r->state != GAIO_REQ_CANCELLING)))
        r = NULL;
    if (res >= 0) {
        if (r && r->state == GAIO_REQ_QUEUED && !c->closing)
            accepted(st, c, r, res);
        else if (r)
            gaio_core_accepted(core, r, res); /* the caller's, even when it raced a cancellation */
        else
            close(res); /* no accept waits (it ended: no memory for a result): nobody takes it */
    } else if (res == -EAGAIN) {
        /* A kernel that honours the listener's O_NONBLOCK answers at once
         * instead of waiting for a connection: accept after POLL_ADD from now. */
        st->use[TECH_ACCEPT] = st->use[TECH_ACCEPT_MULTISHOT] = 0;
        snprintf(st->why[TECH_ACCEPT], sizeof st->why[TECH_ACCEPT],
                 "IORING_OP_ACCEPT answered EAGAIN on a non-blocking listener");
        snprintf(st->why[TECH_ACCEPT_MULTISHOT], sizeof st->why[TECH_ACCEPT_MULTISHOT],
                 "needs accept");
    } else if (r && r->state == GAIO_REQ_QUEUED && !(r->flags & GAIO_F_BACKOFF) &&
               res != -ECANCELED && res != -EINTR) {
        gaio_core_accepted(core, r, res); /* skips ECONNABORTED; backs off on EMFILE & co */
    }
    if (more) {
        if (!gaio__ur_multishot_wanted(st, c))
            gaio__ur_ask_cancel(st, c, GAIO_READ, 0);
        return;
    }
    r = c->head[GAIO_READ];
    if (r && r->state == GAIO_REQ_CANCELLING)
        gaio_core_finish(core, r);
}

#endif /* __linux__ */
