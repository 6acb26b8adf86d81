/* The io_uring engine, without liburing (the kernel layer is uring_ring.c).
 *
 * Techniques, and the kernel each needs (the probe refuses older kernels, and
 * engine="auto" then falls back to epoll):
 *   - RECV into the caller's buffer and SEND(MSG_NOSIGNAL) from the caller's
 *     data, one operation in flight per connection and direction, always for
 *     the head request; a short send or a read_full's short recv is resubmitted
 *     for the rest (RECV/SEND: 5.6; FEAT_FAST_POLL 5.7 so a socket that is not
 *     ready is polled by the kernel instead of blocking an io-wq thread);
 *   - reads without a buffer: a buffer-select RECV from a ring of 4 provided
 *     buffers of bufsize, registered incremental (IOU_PBUF_RING_INC, 6.12) so
 *     that many small reads share a buffer, one after the other. An idle
 *     connection holds no buffer: the kernel picks one when data arrives. The
 *     bytes are copied at once into the core's internal buffer (whose views
 *     Python holds until the next wait_io) and the buffer goes back to the
 *     kernel as soon as it is full: memory stays 4 x bufsize in the kernel's
 *     ring + the core's 4 x bufsize, and a batch hands out at most 4 x
 *     bufsize. Bytes beyond the batch's budget wait, copied, on their
 *     connection (parked_bytes) for the next read. Before 6.12, or with
 *     GAIO_URING_NO_PBUF=1: a one-shot POLL_ADD(POLLIN), then recv() into the
 *     core's internal buffer from user space (5.1);
 *   - back-pressure: nothing is submitted for a direction with no request;
 *   - every submission of a wait() and the wait itself are ONE io_uring_enter,
 *     with the timeout passed in IORING_ENTER_EXT_ARG (5.11), the lock dropped
 *     around it (and the GIL, by the binding);
 *   - deadlines and free() cancel with ASYNC_CANCEL by user_data (5.5); the
 *     request keeps its buffer and its connection stays allocated until the
 *     cancelled operation's completion arrives; bytes it moved meanwhile are
 *     reported (engine.h: cancel returns 1, then gaio_core_finish). A read
 *     whose deadline finds nothing in the kernel is tried once more with a
 *     non-blocking recv() (an end of stream already there is not a deadline);
 *     free() or close() of a socket with an operation in flight shuts it
 *     down before the core closes it (the operation's file reference
 *     outlives close());
 *   - wake(): an eventfd kept armed in the ring with POLL_ADD;
 *   - a full SQ ring is submitted and refilled, and what does not fit waits
 *     on the work list for the next wait(); completions the kernel held back
 *     for a full CQ ring (FEAT_NODROP, 5.5) are flushed with another enter.
 * Not used: SINGLE_ISSUER/DEFER_TASKRUN (6.1) and COOP_TASKRUN (5.19). The
 * kernel finishes a socket operation as task work of the thread that submitted
 * it, and wait_io() may run on a different thread each time: DEFER_TASKRUN
 * refuses other threads (-EEXIST) and COOP_TASKRUN does not wake a submitter
 * that sleeps elsewhere, which would stall its completions.
 * user_data: a gaio_conn pointer | direction (TAG_READ/TAG_WRITE), or a tag.
 * Environment: GAIO_URING_DISABLE=1 makes the probe fail (engine "auto" then
 * picks epoll); GAIO_URING_NO_PBUF=1 uses POLL_ADD + recv() for reads without
 * a buffer instead of provided buffers.
 */
#include "engine.h"
#include "readiness.h"

#include <stdio.h>
#include <string.h>

#if defined(__linux__)

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uring_ring.h"

#define SQ_ENTRIES 256
#define CQ_ENTRIES 4096   /* beyond it completions wait in the kernel (NODROP) */
#define MAX_OP_BYTES (1u << 30)
_Static_assert((GAIO_IBUF_CHUNKS & (GAIO_IBUF_CHUNKS - 1)) == 0, "a buffer ring's size is a power of two");

/* gaio_conn.engine_flags; shifted by the direction where it applies */
enum {
    IN_FLIGHT = 1,     /* << kind: an operation of the head is in the kernel */
    CANCEL_ASKED = 4,  /* << kind: an ASYNC_CANCEL for it is queued or sent */
    TO_START = 16,     /* << kind: on the work list, to be submitted */
    READ_IS_IBUF = 64, /* the read in flight is for an internal-buffer read (select or poll) */
    STARVED = 128,     /* on the starved list: its internal-buffer read waits for room */
    READ_FAILED = 256, /* bytes taken from the kernel could not be kept: reads end with ENOMEM */
    POLL_IN_FLIGHT = 512, /* << kind: the operation in flight is a POLL_ADD for readiness.c's
                           * syscall (accept, connect, sendfile, vectored writes) */
};
#define BIT(flag, kind) ((uint32_t)(flag) << (kind))

enum { TAG_READ = GAIO_READ, TAG_WRITE = GAIO_WRITE, TAG_WAKE = 2, TAG_CANCEL = 3, TAG_MASK = 7 };

enum { WORK_START, WORK_CANCEL };
typedef struct {
    uint64_t id; /* the connection, looked up again when the item runs */
    uint8_t what, kind;
} work_item;

/* Bytes a provided buffer brought that no read request could take yet (the
 * batch's internal-buffer budget was spent): a copy, handed out first when
 * the connection's reads go on. In gaio_conn.engine_data. */
typedef struct {
    size_t len, off;
    unsigned char data[];
} parked_bytes;

typedef struct {
    gaio_core *core;
    struct gaio__uring ring;
    /* provided buffers (use_pbuf): GAIO_IBUF_CHUNKS buffers of bufsize */
    int use_pbuf;
    struct gaio__uring_bufring bufs;
    uint32_t buf_filled[GAIO_IBUF_CHUNKS]; /* bytes the kernel put in each since provided */
    int evfd;
    int wake_armed;
    uint64_t in_flight;  /* SQEs prepared whose CQE has not been reaped */
    work_item *work;     /* submissions for the next wait(), in order */
    uint32_t nwork, cap_work;
    uint64_t *starved;   /* connections whose internal-buffer read waits for room */
    uint32_t nstarved, cap_starved;
    int rescan;          /* work or starved could not grow: look at every connection */
} uring_state;

static int grow(void **items, uint32_t *cap, size_t size)
{
    uint32_t n = *cap ? *cap * 2 : 64;
    void *p = gaio_realloc(*items, n * size);
    if (!p)
        return -1;
    *items = p;
    *cap = n;
    return 0;
}

/* 0, or -1 when the list could not grow: the caller leaves its flag unset
 * and sets st->rescan, so the next wait() finds the connection by its state. */
static int work_push(uring_state *st, gaio_conn *c, int what, int kind)
{
    if (st->nwork == st->cap_work && grow((void **)&st->work, &st->cap_work, sizeof *st->work)) {
        st->rescan = 1;
        return -1;
    }
    st->work[st->nwork++] = (work_item){.id = gaio_conn_id(c), .what = what, .kind = kind};
    return 0;
}

static void ur_wake(void *state);

static void schedule_start(uring_state *st, gaio_conn *c, int kind)
{
    if (c->closing || c->fd < 0 || (c->engine_flags & (BIT(IN_FLIGHT, kind) | BIT(TO_START, kind))))
        return;
    gaio_req *r = gaio_conn_head(c, kind);
    if (!r || (kind == GAIO_READ && !r->buf && (c->engine_flags & STARVED)))
        return;
    if (work_push(st, c, WORK_START, kind) == 0)
        c->engine_flags |= BIT(TO_START, kind);
    if (st->core->notify && !st->core->waiting)
        ur_wake(st); /* R23: fileno() must show that a submission waits */
}

static void starve(uring_state *st, gaio_conn *c)
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

static struct gaio__io_uring_sqe *get_sqe(uring_state *st)
{
    struct gaio__io_uring_sqe *sqe = gaio__uring_get_sqe(&st->ring);
    if (!sqe) {
        /* SQ ring full: hand it to the kernel now (no waiting), then refill */
        gaio__uring_submit(&st->ring);
        sqe = gaio__uring_get_sqe(&st->ring);
    }
    if (sqe)
        st->in_flight++;
    return sqe;
}

/* Give `len` bytes that arrived for c to its read requests in queue order:
 * a copy in the core's internal buffer for internal-buffer reads, in the
 * caller's buffer for the others. A head being cancelled takes what it can
 * and ends. Returns the bytes taken; the rest waits for room. */
static size_t hand_out(uring_state *st, gaio_conn *c, const unsigned char *src, size_t len)
{
    size_t used = 0;
    gaio_req *r;
    while (used < len && (r = c->head[GAIO_READ]) &&
           (r->state == GAIO_REQ_QUEUED || r->state == GAIO_REQ_CANCELLING)) {
        unsigned char *dst;
        size_t room;
        if (r->buf) {
            dst = r->buf + r->done;
            room = r->len - r->done;
        } else {
            ssize_t got = gaio_core_ibuf_reserve(st->core, &dst);
            if (got == 0)
                break;
            if (got < 0) {
                /* no memory to show them: this request fails and the bytes
                 * stay for the next read (parked), so the stream has no hole */
                if (gaio_core_progress(st->core, r, got) == 0 && r->state == GAIO_REQ_CANCELLING)
                    gaio_core_finish(st->core, r);
                continue;
            }
            room = (size_t)got;
        }
        size_t n = len - used < room ? len - used : room;
        memcpy(dst, src + used, n);
        used += n;
        if (gaio_core_progress(st->core, r, (ssize_t)n) == 0 && r->state == GAIO_REQ_CANCELLING)
            gaio_core_finish(st->core, r);
    }
    return used;
}

static int park(gaio_conn *c, const unsigned char *src, size_t len)
{
    parked_bytes *p = gaio_malloc(sizeof *p + len);
    if (!p)
        return -1;
    p->len = len;
    p->off = 0;
    memcpy(p->data, src, len);
    c->engine_data = p;
    return 0;
}

static void drop_parked(gaio_conn *c)
{
    free(c->engine_data);
    c->engine_data = NULL;
}

/* Bytes of c's stream were taken from the kernel and could not be kept (no
 * memory to park them): no later read may go on after the hole, so this one
 * and every later read of c end with ENOMEM. Writes go on. */
static void fail_reads(uring_state *st, gaio_conn *c)
{
    gaio_req *r;
    c->engine_flags |= READ_FAILED;
    drop_parked(c);
    while ((r = gaio_conn_head(c, GAIO_READ)))
        gaio_core_progress(st->core, r, -ENOMEM);
}
/* Parked bytes come from one read (<= bufsize) on a connection whose read
 * found the batch's budget spent; no new read is submitted for it before they
 * are handed out. */

/* 1 when no parked bytes are left for c, 0 when some wait for room. */
static int hand_out_parked(uring_state *st, gaio_conn *c)
{
    parked_bytes *p = c->engine_data;
    p->off += hand_out(st, c, p->data + p->off, p->len - p->off);
    if (p->off == p->len) {
        drop_parked(c);
        return 1;
    }
    if (gaio_conn_head(c, GAIO_READ))
        starve(st, c); /* a read waits: retried when the next batch has room */
    return 0;
}

static uint32_t op_len(size_t n) { return n > MAX_OP_BYTES ? MAX_OP_BYTES : (uint32_t)n; }

/* Submit the head of c's kind queue. -1: no SQE free, try again later. */
static int start_op(uring_state *st, gaio_conn *c, int kind)
{
    if (kind == GAIO_READ && (c->engine_flags & READ_FAILED)) {
        fail_reads(st, c);
        return 0;
    }
    if (kind == GAIO_READ && c->engine_data && !(c->engine_flags & IN_FLIGHT) &&
        !hand_out_parked(st, c))
        return 0; /* bytes are still waiting for room in the internal buffer */
    gaio_req *r = gaio_conn_head(c, kind);
    if (!r || (c->engine_flags & BIT(IN_FLIGHT, kind)))
        return 0;
    struct gaio__io_uring_sqe *sqe = get_sqe(st);
    if (!sqe)
        return -1;
    uint64_t ud = (uint64_t)(uintptr_t)c | (uint64_t)kind;
    if (r->op != GAIO_OP_READ && !(r->op == GAIO_OP_WRITE && !r->u.w.vec)) {
        /* readiness first, then readiness.c's non-blocking syscall */
        gaio__uring_prep_poll_add(sqe, c->fd, kind == GAIO_READ ? POLLIN : POLLOUT, ud);
        c->engine_flags |= BIT(POLL_IN_FLIGHT, kind);
    } else if (kind == GAIO_WRITE)
        gaio__uring_prep_send(sqe, c->fd, r->buf + r->done, op_len(r->len - r->done), ud);
    else if (r->buf)
        gaio__uring_prep_recv(sqe, c->fd, r->buf + r->done, op_len(r->len - r->done), ud);
    else {
        if (st->use_pbuf)
            gaio__uring_prep_recv_select(sqe, c->fd, st->bufs.size, st->bufs.group, ud);
        else
            gaio__uring_prep_poll_add(sqe, c->fd, POLLIN, ud);
        c->engine_flags |= READ_IS_IBUF;
    }
    c->engine_flags |= BIT(IN_FLIGHT, kind);
    return 0;
}

static int run_item(uring_state *st, const work_item *w)
{
    if (w->what == WORK_CANCEL) {
        /* looked up again: if the SQ ring was full last time, the operation
         * may have completed and the connection been released since */
        gaio_conn *c = gaio_core_conn_held(st->core, w->id);
        if (!c || !(c->engine_flags & BIT(IN_FLIGHT, w->kind)))
            return 0; /* it completed before the cancel went out */
        struct gaio__io_uring_sqe *sqe = get_sqe(st);
        if (!sqe)
            return -1;
        gaio__uring_prep_cancel(sqe, (uint64_t)(uintptr_t)c | w->kind, TAG_CANCEL);
        return 0;
    }
    gaio_conn *c = gaio_core_conn(st->core, w->id);
    if (!c)
        return 0; /* freed since */
    if (c->fd < 0 || start_op(st, c, w->kind) == 0) {
        c->engine_flags &= ~BIT(TO_START, w->kind);
        return 0;
    }
    return -1;
}

/* Turn the work list into SQEs; what does not fit stays for the next wait. */
static void run_work(uring_state *st)
{
    uint32_t i = 0;
    while (i < st->nwork && run_item(st, &st->work[i]) == 0)
        i++;
    if (i && i < st->nwork)
        memmove(st->work, st->work + i, (st->nwork - i) * sizeof *st->work);
    st->nwork -= i;
}

/* The connection is readable: recv() into the internal buffer for as many
 * internal-buffer reads as are queued at its head and have data. */
static void ibuf_reads(uring_state *st, gaio_conn *c)
{
    gaio_req *r;
    while ((r = gaio_conn_head(c, GAIO_READ)) && !r->buf) {
        int short_read;
        ssize_t n = gaio_recv_head(st->core, c, r, &short_read);
        if (n == GAIO_RECV_NO_ROOM) {
            starve(st, c); /* this batch's internal buffer is spent */
            return;
        }
        if (n == -EAGAIN || short_read)
            break; /* drained: poll before the next read */
    }
    schedule_start(st, c, GAIO_READ);
}

/* A POLL_ADD for c's kind head said ready: do what the heads ask while the
 * socket takes it (accepts; connect, sendfile, vectored writes). */
static void poll_ready(uring_state *st, gaio_conn *c, int kind)
{
    gaio_req *r;
    while ((r = gaio_conn_head(c, kind)) && r->op != GAIO_OP_READ &&
           !(r->op == GAIO_OP_WRITE && !r->u.w.vec)) {
        if (kind == GAIO_READ) {
            ssize_t n = gaio_accept_head(st->core, c, r);
            if (n == GAIO_RECV_NO_ROOM) {
                starve(st, c);
                return;
            }
            if (n == -EAGAIN)
                break;
        } else {
            int short_write;
            ssize_t n = gaio_send_head(st->core, c, r, &short_write);
            if (n == -EAGAIN || short_write)
                break;
        }
    }
}

static void retry_starved(uring_state *st)
{
    uint32_t n = st->nstarved;
    st->nstarved = 0;
    for (uint32_t i = 0; i < n; i++) {
        gaio_conn *c = gaio_core_conn(st->core, st->starved[i]);
        if (!c)
            continue;
        c->engine_flags &= ~STARVED;
        if (!gaio_core_ibuf_room(st->core))
            starve(st, c);
        else if (st->use_pbuf)
            schedule_start(st, c, GAIO_READ); /* parked bytes first, then a new recv */
        else
            ibuf_reads(st, c);
    }
}

/* A buffer-select recv for c's internal-buffer read is over. Its bytes are
 * copied out of the provided buffer at once (to the core's internal buffer,
 * whose views Python holds until the next wait_io), so the buffer goes back
 * to the kernel as soon as the kernel has filled it. */
static void complete_select(uring_state *st, gaio_conn *c, int32_t res, uint32_t flags)
{
    gaio_req *r = c->head[GAIO_READ];
    uint32_t id = flags >> GAIO__IORING_CQE_BUFFER_SHIFT;
    if ((flags & GAIO__IORING_CQE_F_BUFFER) && id < st->bufs.count) {
        if (res > 0) {
            unsigned char *src = (unsigned char *)gaio__uring_bufring_data(&st->bufs, (uint16_t)id) +
                                 st->buf_filled[id];
            st->buf_filled[id] += (uint32_t)res;
            size_t used = hand_out(st, c, src, (size_t)res);
            if (used < (size_t)res && !c->closing &&
                park(c, src + used, (size_t)res - used) != 0)
                fail_reads(st, c);
        }
        if (!(flags & GAIO__IORING_CQE_F_BUF_MORE)) {
            st->buf_filled[id] = 0;
            gaio__uring_bufring_recycle(&st->bufs, (uint16_t)id);
        }
    }
    if (!r || c->head[GAIO_READ] != r)
        return; /* the bytes finished it */
    if (r->state == GAIO_REQ_CANCELLING)
        gaio_core_finish(st->core, r);
    else if (res == 0 || (res < 0 && res != -ENOBUFS && res != -ECANCELED && res != -EINTR &&
                          res != -EAGAIN))
        gaio_core_progress(st->core, r, res); /* end of stream, socket error */
    /* -ENOBUFS: every buffer was full when data came; recycled by now: again */
}

/* The kernel is done with the operation of c's kind queue head. */
static void complete_op(uring_state *st, gaio_conn *c, int kind, int32_t res, uint32_t flags)
{
    gaio_core *core = st->core;
    int was_ibuf = kind == GAIO_READ && (c->engine_flags & READ_IS_IBUF);
    int was_poll = (c->engine_flags & BIT(POLL_IN_FLIGHT, kind)) != 0;
    c->engine_flags &= ~(BIT(IN_FLIGHT, kind) | BIT(CANCEL_ASKED, kind) | BIT(POLL_IN_FLIGHT, kind));
    if (kind == GAIO_READ)
        c->engine_flags &= ~READ_IS_IBUF;
    gaio_req *r = c->head[kind];
    if (was_ibuf && st->use_pbuf) {
        complete_select(st, c, res, flags);
    } else if (r && r->state == GAIO_REQ_CANCELLING) {
        /* bytes that raced the cancel are the caller's: report them first */
        if (was_ibuf || was_poll || res <= 0 || gaio_core_progress(core, r, res) == 0)
            gaio_core_finish(core, r);
    } else if (r && (res == -ECANCELED || res == -EINTR || res == -EAGAIN)) {
        /* not ours to end (the submitting thread exited, a signal): again */
    } else if (r && was_ibuf) { /* POLL_ADD: readable */
        if (!c->closing && c->fd >= 0)
            ibuf_reads(st, c);
    } else if (r && was_poll) {
        if (!c->closing && c->fd >= 0)
            poll_ready(st, c, kind); /* a poll error (POLLERR) shows in the syscall */
    } else if (r) {
        gaio_core_progress(core, r, res);
    }
    if (c->closing) {
        if (c->engine_busy && !(c->engine_flags & (BIT(IN_FLIGHT, 0) | BIT(IN_FLIGHT, 1))))
            gaio_core_conn_idle(core, c); /* c may be freed: not touched again */
        return;
    }
    schedule_start(st, c, kind);
}

static void drain_eventfd(uring_state *st)
{
    uint64_t count;
    if (read(st->evfd, &count, sizeof count) < 0) { /* already drained: nothing to do */ }
}

static int reap(uring_state *st, int with_callbacks)
{
    uint32_t first, n = gaio__uring_cq_ready(&st->ring, &first);
    for (uint32_t i = 0; i < n; i++) {
        struct gaio__io_uring_cqe *cqe = gaio__uring_cqe_at(&st->ring, first + i);
        uint64_t ud = cqe->user_data;
        int32_t res = cqe->res;
        uint32_t flags = cqe->flags;
        st->in_flight--;
        unsigned tag = ud & TAG_MASK;
        if (tag == TAG_WAKE) {
            st->wake_armed = 0;
            drain_eventfd(st);
        } else if (tag == TAG_READ || tag == TAG_WRITE) {
            if (!with_callbacks) { /* closing: only give the buffer back */
                uint32_t id = flags >> GAIO__IORING_CQE_BUFFER_SHIFT;
                if ((flags & GAIO__IORING_CQE_F_BUFFER) && id < st->bufs.count &&
                    !(flags & GAIO__IORING_CQE_F_BUF_MORE))
                    gaio__uring_bufring_recycle(&st->bufs, (uint16_t)id);
                continue;
            }
            complete_op(st, (gaio_conn *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK), (int)tag, res,
                        flags);
        }
        /* TAG_CANCEL: its target's own completion tells the story */
    }
    gaio__uring_cq_advance(&st->ring, n);
    return (int)n;
}

static void arm_wake(uring_state *st)
{
    if (st->wake_armed)
        return;
    struct gaio__io_uring_sqe *sqe = get_sqe(st);
    if (!sqe)
        return; /* next time: a wake-up is a hint, the caller's timeout still holds */
    gaio__uring_prep_poll_add(sqe, st->evfd, POLLIN, TAG_WAKE);
    st->wake_armed = 1;
}

static void ask_cancel(uring_state *st, gaio_conn *c, int kind);

/* work_push or starve could not grow their list: find what they would have
 * held by the connections' state (only after an allocation failed). */
static void rescan(uring_state *st)
{
    st->rescan = 0;
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(st->core, &s));) {
        for (int kind = 0; kind < 2; kind++) {
            uint32_t f = c->engine_flags;
            gaio_req *h = c->head[kind];
            if (f & BIT(IN_FLIGHT, kind)) {
                if (!(f & BIT(CANCEL_ASKED, kind)) &&
                    (c->closing || (h && h->state == GAIO_REQ_CANCELLING)))
                    ask_cancel(st, c, kind);
            } else if (!(f & BIT(TO_START, kind)) && !(kind == GAIO_READ && (f & STARVED))) {
                schedule_start(st, c, kind);
            }
        }
    }
}

static int ur_wait(void *state, int64_t timeout_ns)
{
    uring_state *st = state;
    if (st->nstarved && gaio_core_ibuf_room(st->core))
        retry_starved(st);
    if (st->rescan)
        rescan(st);
    arm_wake(st);
    run_work(st);
    if (gaio_core_has_results(st->core))
        timeout_ns = 0;
    else if (st->rescan && (timeout_ns < 0 || timeout_ns > 10000000))
        timeout_ns = 10000000; /* still owed (no memory yet): come back soon */
    gaio_core_unlock(st->core);
    int ret = gaio__uring_submit_and_wait(&st->ring, timeout_ns);
    gaio_core_lock(st->core);
    int n = reap(st, 1);
    while (gaio__uring_cq_overflowed(&st->ring)) {
        /* the CQ ring was full: the kernel kept the rest, a zero wait flushes them */
        int flushed = gaio__uring_submit_and_wait(&st->ring, 0);
        int more = reap(st, 1);
        n += more;
        if (!more && flushed < 0 && flushed != -ETIME && flushed != -EINTR)
            break;
    }
    if (st->core->notify) {
        /* fileno(): what the callbacks scheduled goes to the kernel now, so
         * that its completion shows on the ring's descriptor; the wake-up
         * stays armed for requests made before the next wait */
        arm_wake(st);
        run_work(st);
        gaio__uring_submit(&st->ring);
        if (st->nwork || st->nstarved || st->rescan)
            ur_wake(st); /* work is left for the next wait */
    }
    if (ret == -EINTR)
        return -EINTR;
    if (ret < 0 && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN)
        return ret;
    return n;
}

static void ur_wake(void *state)
{
    uring_state *st = state;
    uint64_t one = 1;
    if (write(st->evfd, &one, sizeof one) < 0) { /* counter full: a wake is pending anyway */ }
}

static int ur_fileno(void *state)
{
    uring_state *st = state;
    /* The ring's descriptor is readable while completions wait; the wake
     * eventfd's POLL_ADD is armed in the kernel now so that wake() shows. */
    arm_wake(st);
    run_work(st); /* and what requests made so far scheduled */
    gaio__uring_submit(&st->ring);
    return st->ring.fd;
}

static int ur_watch(void *state, gaio_conn *c)
{
    c->engine_flags = 0;
    return 0;
}

static void ask_cancel(uring_state *st, gaio_conn *c, int kind)
{
    if (c->engine_flags & BIT(CANCEL_ASKED, kind))
        return;
    c->engine_flags |= BIT(CANCEL_ASKED, kind);
    if (c->closing && !st->core->closing) { /* watcher close(): destroy cancels all at once */
        /* free(): the operation holds a reference to the socket, so the
         * core's close() would not end the connection while it lives. Cancel
         * now, not at the next wait: the peer must see the end at once. */
        struct gaio__io_uring_sqe *sqe = get_sqe(st);
        if (sqe) {
            gaio__uring_prep_cancel(sqe, (uint64_t)(uintptr_t)c | (uint64_t)kind, TAG_CANCEL);
            gaio__uring_submit(&st->ring);
            return;
        }
    }
    if (work_push(st, c, WORK_CANCEL, kind) != 0) /* deadlines: batched into the next wait */
        c->engine_flags &= ~BIT(CANCEL_ASKED, kind);
}

static int ur_unwatch(void *state, gaio_conn *c)
{
    int busy = 0;
    drop_parked(c);
    for (int kind = 0; kind < 2; kind++) {
        if (c->engine_flags & BIT(IN_FLIGHT, kind)) {
            ask_cancel(state, c, kind);
            busy = 1;
        }
    }
    /* An operation in flight holds its own reference to the socket's file,
     * so the core's close() is not the last one, and which thread drops the
     * last one is not ours to choose: the cancelled operation completes as
     * task work of the thread that submitted it; if that thread has exited
     * (wait_io() ran on a thread that is gone), a kernel worker of the ring
     * runs it a jiffy later (io_fallback_tw) and its fput() from a kernel
     * thread is deferred once more (delayed_fput). The peer could send to a
     * freed socket for several ms after its ConnClosedError. shutdown() acts
     * on the socket, not on a reference: the peer sees the end now (EOF, and
     * EPIPE/ECONNRESET on a send), whoever closes the file last. Only with an
     * operation in flight: otherwise close() is the last reference and does
     * exactly what R8 says (with unread data, TCP sends a RST; after the
     * shutdown the peer sees a FIN first, then the RST at the last close).
     * A descriptor of the same socket held elsewhere (a dup, a child
     * process) sees it shut down too. */
    if (busy && c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR); /* ENOTCONN (not connected): nothing to end */
    return busy;
}

static void ur_start(void *state, gaio_conn *c, int kind)
{
    schedule_start(state, c, kind);
}

/* r's deadline passed while nothing of it was in the kernel: its next try was
 * only scheduled (after a short recv, or not yet submitted), so a read_full
 * with timeout=0 that took the bytes there would end with a deadline though
 * the end of stream behind them was there too (a recv that returns bytes
 * does not report the end). Try at once, non-blocking, as the readiness
 * engines do: bytes, an end of stream or an error already queued count.
 * Not for internal-buffer reads (any byte finishes them, so none was ever
 * short) nor behind parked bytes. 2 when the try finished r, else 0 (r ends
 * with the deadline and the bytes it has). */
static int last_try(uring_state *st, gaio_conn *c, gaio_req *r)
{
    if (r->kind != GAIO_READ || !r->buf || c->closing || c->fd < 0 || c->engine_data ||
        (c->engine_flags & READ_FAILED))
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

static int ur_cancel(void *state, gaio_req *r)
{
    gaio_conn *c = r->conn;
    if (!(c->engine_flags & BIT(IN_FLIGHT, r->kind)))
        return last_try(state, c, r);
    ask_cancel(state, c, r->kind);
    return 1;
}

/* Cancel every operation still in the kernel and reap them all, so that no
 * completion can write into a buffer the core is about to release. */
static void cancel_everything(uring_state *st)
{
    st->nwork = 0;
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(st->core, &s));) {
        drop_parked(c);
        for (int kind = 0; kind < 2; kind++) {
            if (!(c->engine_flags & BIT(IN_FLIGHT, kind)))
                continue;
            struct gaio__io_uring_sqe *sqe;
            while (!(sqe = get_sqe(st)) && st->in_flight) {
                gaio__uring_submit_and_wait(&st->ring, 10000000);
                reap(st, 0);
            }
            if (sqe)
                gaio__uring_prep_cancel(sqe, (uint64_t)(uintptr_t)c | (uint64_t)kind, TAG_CANCEL);
        }
    }
    if (st->wake_armed) {
        struct gaio__io_uring_sqe *sqe = get_sqe(st);
        if (sqe)
            gaio__uring_prep_cancel(sqe, TAG_WAKE, TAG_CANCEL);
    }
    /* Socket operations end at once when cancelled; the bound only guards
     * against a kernel bug turning close() into a hang. */
    int64_t give_up = gaio_now_ns() + 5000000000LL;
    while (st->in_flight && gaio_now_ns() < give_up) {
        gaio__uring_submit_and_wait(&st->ring, 100000000);
        reap(st, 0);
    }
}

static void ur_destroy(void *state)
{
    uring_state *st = state;
    cancel_everything(st);
    if (st->use_pbuf)
        gaio__uring_bufring_close(&st->ring, &st->bufs);
    gaio__uring_close(&st->ring);
    close(st->evfd);
    free(st->work);
    free(st->starved);
    free(st);
}

static int ur_create(gaio_core *core, void **out, char *why, size_t whylen)
{
    uring_state *st = gaio_calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    st->core = core;
    char reason[GAIO__URING_REASON_MAX];
    if (gaio__uring_open(&st->ring, SQ_ENTRIES, CQ_ENTRIES, GAIO__URING_TASKRUN_ANY_THREAD,
                         reason) < 0) {
        int err = errno;
        snprintf(why, whylen, "%s", reason);
        free(st);
        /* io_uring_setup's ENOMEM is RLIMIT_MEMLOCK too low for the rings
         * (kernels before 5.12): it lasts, so the engine is unavailable. */
        return err != ENOMEM && gaio_resource_error(err) ? err : -1;
    }
    /* Incremental provided buffers (6.12) let many small reads share one
     * buffer; without them a buffer per read would cap a batch at a handful
     * of reads, and POLL_ADD + recv() serve better. */
    const char *no_pbuf = getenv("GAIO_URING_NO_PBUF");
    if (!(no_pbuf && no_pbuf[0] && strcmp(no_pbuf, "0") != 0) &&
        gaio__uring_bufring_open(&st->ring, &st->bufs, 1, GAIO_IBUF_CHUNKS, (uint32_t)core->bufsize,
                                 GAIO__IOU_PBUF_RING_INC, reason) == 0)
        st->use_pbuf = 1;
    st->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->evfd < 0) {
        int err = errno;
        snprintf(why, whylen, "eventfd: %s", strerror(err));
        if (st->use_pbuf)
            gaio__uring_bufring_close(&st->ring, &st->bufs);
        gaio__uring_close(&st->ring);
        free(st);
        return gaio_resource_error(err) ? err : -1;
    }
    *out = st;
    return 0;
}

const gaio_engine_ops gaio_engine_uring = {
    .name = "uring",
    .create = ur_create,
    .destroy = ur_destroy,
    .watch = ur_watch,
    .unwatch = ur_unwatch,
    .start = ur_start,
    .cancel = ur_cancel,
    .wait = ur_wait,
    .wake = ur_wake,
    .fileno = ur_fileno,
};

#else /* not Linux */

static int ur_unavailable(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "io_uring exists only on Linux");
    return -1;
}

const gaio_engine_ops gaio_engine_uring = {.name = "uring", .create = ur_unavailable};

#endif
