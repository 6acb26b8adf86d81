/* The io_uring engine, without liburing: submissions, cancellations and the
 * wait. The kernel layer is uring_ring.c; what arrives (bytes, connections)
 * is handled in uring_recv.c; creation and the choice of techniques are in
 * uring_setup.c; what a POLL_ADD leads to in uring_poll.c; the single issuer
 * and the move to another ring in uring_migrate.c; the end in uring_close.c.
 *
 * Techniques, and the kernel each needs. The probe refuses kernels before
 * 5.11 (engine="auto" then picks epoll); a technique the kernel lacks falls
 * back as said, and Watcher._techniques() tells which ones run:
 *   - one operation in flight per connection and direction, always for the
 *     head request: RECV into the caller's buffer, SEND(MSG_NOSIGNAL), and
 *     for a vectored write SENDMSG(MSG_NOSIGNAL) on its gaio_vec, at most
 *     GAIO_IOV_MAX items each ("sendmsg", 5.3); resubmitted for the rest after
 *     a short one (5.6; FEAT_FAST_POLL 5.7: a socket that is not ready is
 *     polled by the kernel, no io-wq thread blocks on it);
 *   - reads without a buffer: buffer-select RECVs on a ring of 4 provided
 *     buffers of bufsize, incremental (IOU_PBUF_RING_INC, 6.12) so that many
 *     small reads share one buffer ("provided-buffers"). An idle connection
 *     holds no buffer; bytes are copied at once into the core's internal
 *     buffer and a full buffer goes back to the kernel: memory stays 4 x
 *     bufsize per ring (pages touched only where data lands) + the core's 4 x
 *     bufsize, and a batch hands out at most 4 x bufsize (the rest waits,
 *     copied). Before 6.12, or with GAIO_URING_NO_PBUF=1: POLL_ADD(POLLIN),
 *     then recv() (5.1);
 *   - a standing read is a buffer-select RECV per arrival, by default; with
 *     "multishot-recv" turned on (GAIO_URING_AVOID set without it; off by
 *     default: 3x the CPU per message when the server and its peers run on
 *     different CPUs, see AVOIDED_BY_DEFAULT) it is ONE multishot RECV (6.0)
 *     on a ring of its own (uring_engine.h says why): a CQE per arrival while
 *     IORING_CQE_F_MORE says it goes on, resubmitted if it ends while the
 *     request stands, cancelled when the request stops taking bytes (held by
 *     back-pressure, engine.pause; bytes parked; no room for a result). A
 *     bulk stream gets a RECV per arrival instead (uring_recv.c);
 *   - a buffer-select RECV after a receive that emptied the socket (no
 *     IORING_CQE_F_SOCK_NONEMPTY) arms its poll at once: its first try would
 *     find nothing, as on request/response traffic it always does
 *     ("recv-poll-first", IORING_RECVSEND_POLL_FIRST, 5.19);
 *   - a standing read without a buffer: ONE multishot POLL_ADD
 *     (IORING_POLL_ADD_MULTI, 5.13; dated by IORING_OP_MKDIRAT, 5.15), and
 *     per arrival a recv() straight into the internal buffer, as epoll's
 *     level-triggered loop does: no SQE, no poll armed, no provided buffer
 *     and no copy per message ("multishot-poll", uring_recv.c). Cancelled
 *     when the read stops taking what comes (a wake-up comes only for new
 *     bytes), armed anew when it goes on. The RECVs below serve the rest;
 *   - reads of a bulk stream (an arrival of more than bufsize / 8): POLL_ADD
 *     then recv() straight into the internal buffer, no copy out of a
 *     provided buffer, until a small piece empties the socket
 *     ("poll-streams", uring_recv.c; needs provided-buffers, 5.1);
 *   - accepts: ACCEPT(SOCK_CLOEXEC), blocking descriptors as accept4() gives
 *     ("accept", 5.5); a standing accept is ONE multishot ACCEPT ("multishot-
 *     accept", 5.19). A descriptor arriving once its request ended is closed;
 *     one past today's RLIMIT_NOFILE (the ACCEPT kept its submission's) is
 *     held and EMFILE reported, as accept4() would (uring_recv.c).
 *     A kernel that answers EAGAIN on a non-blocking listener instead of
 *     waiting turns accepts to POLL_ADD + accept4();
 *   - connect and sendfile: POLL_ADD(POLLOUT), then readiness.c's SO_ERROR
 *     or sendfile(2);
 *   - datagram sockets: POLL_ADD(POLLIN / POLLOUT), then datagram_io.c's
 *     recvmsg() / sendmsg(), a datagram per request (R24-R27);
 *   - back-pressure: nothing is submitted for a direction with no request;
 *   - every submission of a wait() and the wait itself are ONE io_uring_enter,
 *     the timeout in IORING_ENTER_EXT_ARG (5.11), and wait_io()'s signal
 *     mask too (signals.c), the lock (and the GIL, by the binding) dropped
 *     around it;
 *   - deadlines and free() cancel with ASYNC_CANCEL by user_data (5.5); the
 *     request keeps its buffer and its connection stays allocated until the
 *     operation's last CQE, and what it moved meanwhile is reported (engine.h:
 *     cancel returns 1, then gaio_core_finish). A read whose deadline finds
 *     nothing in the kernel is tried once more with a non-blocking recv();
 *     free() or close() of a socket with an operation in flight shuts it down
 *     first (the operation's file reference outlives close());
 *   - wake(): an eventfd kept armed in the ring with POLL_ADD;
 *   - a full SQ ring is submitted and refilled (what does not fit waits on the
 *     work list); completions held back for a full CQ ring (FEAT_NODROP, 5.5)
 *     are flushed with another enter.
 * The opcode probe does not see flags: multishot RECV is dated by
 * IORING_OP_SEND_ZC, multishot ACCEPT by IORING_OP_SOCKET (same releases).
 *   - SINGLE_ISSUER + DEFER_TASKRUN ("defer-taskrun", 6.1): a socket
 *     operation's completion waits as task work for the issuer's next
 *     io_uring_enter(GETEVENTS) instead of interrupting it (an IPI and a
 *     return to user space per completion: 10% of the server's CPU at 50,000
 *     msgs/s). The first thread to wait() becomes the issuer; other threads
 *     leave their SQEs for it and wake it; a wait() from another thread, or
 *     fileno(), moves the engine for good to a ring any thread may enter
 *     (uring_migrate.c). Before 6.1: as below.
 *   - with defer-taskrun, a quiet write of SEND_LARGE_AT_ONCE bytes or more
 *     is sent by the requesting thread ("send-large-at-once"; smaller ones
 *     too after a wait that brought at most QUIET_WAIT completions,
 *     "send-when-quiet", and always with "send-at-once", off by default):
 *     ur_send_now says why.
 *   - Watcher(batch_wait=) with defer-taskrun: the kernel's min-wait in the
 *     wait's one io_uring_enter ("min-wait", 6.12; off by default, measured
 *     no better), not the core's second sleep and look (core_wait.c).
 *   - with defer-taskrun and TASKRUN_FLAG (the kernel flags queued task
 *     work in the SQ ring), a look with nothing to submit reads that flag
 *     and the CQ ring instead of entering the kernel ("look-in-user-space",
 *     liburing's cq_ring_needs_flush): wait_io() looks before every sleep.
 * Not used: COOP_TASKRUN (5.19): it does not wake a submitter that sleeps
 * elsewhere, which would stall its completions, and measured no faster.
 * user_data: a gaio_conn pointer | direction (TAG_READ/TAG_WRITE), or a tag.
 * Environment: GAIO_URING_DISABLE=1 makes the probe fail; GAIO_URING_NO_PBUF=1
 * reads without provided buffers; GAIO_URING_AVOID=name,... (names from
 * Watcher._techniques()) takes each named technique's fallback, for tests.
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

#include "uring_engine.h"

_Static_assert((GAIO_IBUF_CHUNKS & (GAIO_IBUF_CHUNKS - 1)) == 0, "a buffer ring's size is a power of two");


struct gaio__io_uring_sqe *gaio__ur_get_sqe(gaio__ur_state *st)
{
    struct gaio__io_uring_sqe *sqe = gaio__uring_get_sqe(&st->ring);
    if (!sqe && gaio__ur_may_enter(st)) {
        /* SQ ring full: hand it to the kernel now (no waiting), then refill */
        gaio__uring_submit(&st->ring);
        sqe = gaio__uring_get_sqe(&st->ring);
    }
    if (sqe)
        st->in_flight++;
    return sqe;
}

/* Prepare the operation of c's head write r (see gaio__ur_prep_read). */
static uint32_t prep_write(gaio__ur_state *st, struct gaio__io_uring_sqe *sqe, gaio_conn *c,
                           gaio_req *r, uint64_t ud)
{
    gaio_vec *v = r->op == GAIO_OP_WRITE ? r->u.w.vec : NULL;
    if (c->dgram) {
        /* one datagram per write: datagram_io.c's sendmsg() once writable */
        gaio__uring_prep_poll_add(sqe, c->fd, POLLOUT, ud);
        return BIT(POLL_IN_FLIGHT, GAIO_WRITE);
    }
    if (r->op == GAIO_OP_WRITE && !v) {
        gaio__uring_prep_send(sqe, c->fd, r->buf + r->done, op_len(r->len - r->done), ud);
        return 0;
    }
    if (v && st->use[TECH_SENDMSG]) {
        v->msg.msg_iov = v->iov + v->cur;
        v->msg.msg_iovlen = v->n - v->cur < GAIO_IOV_MAX ? v->n - v->cur : GAIO_IOV_MAX;
        gaio__uring_prep_sendmsg(sqe, c->fd, &v->msg, ud);
        return 0;
    }
    /* connect, sendfile: writability first, then readiness.c's SO_ERROR or sendfile(2) */
    gaio__uring_prep_poll_add(sqe, c->fd, POLLOUT, ud);
    return BIT(POLL_IN_FLIGHT, GAIO_WRITE);
}

/* Submit the head of c's kind queue. -1: no SQE free, try again later. */
static int start_op(gaio__ur_state *st, gaio_conn *c, int kind)
{
    if (kind == GAIO_READ && c->dgram && !(c->engine_flags & IN_FLIGHT) &&
        gaio_recv_waiting(st->core, c)) {
        /* a recvmmsg took them already: no poll would come for them */
        gaio__ur_datagrams_ready(st, c, GAIO_READ);
        if (gaio_recv_waiting(st->core, c))
            return 0; /* the next batch takes the rest (starved), or no read is left */
    }
    if (kind == GAIO_READ && (c->engine_flags & READ_HELD)) {
        if (gaio__ur_read_failed(st, c)) {
            gaio__ur_fail_reads(st, c);
            return 0;
        }
        if (!(c->engine_flags & IN_FLIGHT) && !gaio__ur_parked_out(st, c))
            return 0; /* bytes are still waiting for room in the internal buffer */
    }
    gaio_req *r = gaio_conn_head(c, kind);
    if (!r || (c->engine_flags & BIT(IN_FLIGHT, kind)))
        return 0;
    if (st->nheld && r->op == GAIO_OP_ACCEPT &&
        (!gaio__ur_hand_held(st, c) || !(r = gaio_conn_head(c, kind))))
        return 0; /* connections accepted past RLIMIT_NOFILE go first (uring_recv.c) */
    if ((r->flags & GAIO_F_REPEAT) &&
        (!gaio_core_arrival_room(st->core) || (!gaio_req_buf(r) && r->op == GAIO_OP_READ &&
                                                !gaio_core_ibuf_room(st->core)))) {
        gaio__ur_starve(st, c); /* no room for its next result: the next wait tries again */
        return 0;
    }
    if (kind == GAIO_READ && (c->engine_flags & RESUME)) {
        /* a stream that starved (its bytes wait in the socket): read them
         * now, in the order starved, rather than a poll per batch for each */
        c->engine_flags &= ~RESUME;
        if ((c->engine_flags & STREAMING) && st->use[TECH_POLL_STREAMS] && !gaio_req_buf(r) &&
            r->op == GAIO_OP_READ && !c->dgram &&
            (gaio__ur_recv_in_place(st, c, 0) != 0 || !(r = gaio_conn_head(c, kind))))
            return 0;
    }
    struct gaio__io_uring_sqe *sqe = gaio__ur_get_sqe(st);
    if (!sqe)
        return -1;
    uint64_t ud = (uint64_t)(uintptr_t)c | (uint64_t)kind;
    uint32_t what = kind == GAIO_READ ? gaio__ur_prep_read(st, sqe, c, r, ud) : prep_write(st, sqe, c, r, ud);
    c->engine_flags |= BIT(IN_FLIGHT, kind) | what;
    return 0;
}

static int run_item(gaio__ur_state *st, const gaio__ur_work *w)
{
    if (w->what == WORK_CANCEL) {
        /* looked up again: if the SQ ring was full last time, the operation
         * may have completed and the connection been released since */
        gaio_conn *c = gaio_core_conn_held(st->core, w->id);
        if (!c || !(c->engine_flags & BIT(IN_FLIGHT, w->kind)))
            return 0; /* it completed before the cancel went out */
        struct gaio__io_uring_sqe *sqe = gaio__ur_get_sqe(st);
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
static void run_work(gaio__ur_state *st)
{
    uint32_t i = 0;
    while (i < st->nwork && run_item(st, &st->work[i]) == 0)
        i++;
    if (i && i < st->nwork)
        memmove(st->work, st->work + i, (st->nwork - i) * sizeof *st->work);
    st->nwork -= i;
}

/* A CQE of the operation of c's kind queue head. */
static void complete_op(gaio__ur_state *st, gaio_conn *c, int kind, int32_t res, uint32_t flags)
{
    gaio_core *core = st->core;
    uint32_t was = c->engine_flags;
    int more = kind == GAIO_READ && (was & MULTISHOT) && (flags & GAIO__IORING_CQE_F_MORE);
    if (!more)
        c->engine_flags &= ~(BIT(IN_FLIGHT, kind) | BIT(CANCEL_ASKED, kind) | BIT(POLL_IN_FLIGHT, kind) |
                             (kind == GAIO_READ ? READ_IS_IBUF | MULTISHOT | ACCEPTING : 0));
    int was_ibuf = kind == GAIO_READ && (was & READ_IS_IBUF);
    int was_poll = (was & BIT(POLL_IN_FLIGHT, kind)) != 0;
    gaio_req *r = c->head[kind];
    if (kind == GAIO_READ && (was & ACCEPTING)) {
        gaio__ur_accept_cqe(st, c, res, more);
    } else if (more && was_poll) {
        gaio__ur_poll_arrival(st, c, res); /* a standing read's multishot poll: it goes on */
    } else if (was_ibuf && !was_poll && st->use[TECH_PBUF]) {
        gaio__ur_recv_cqe(st, c, res, flags, (was & MULTISHOT) ? RING_MULTISHOT : RING_ONESHOT, more);
    } else if (r && r->state == GAIO_REQ_CANCELLING) {
        /* bytes that raced the cancel are the caller's: report them first */
        if (was_ibuf || was_poll || res <= 0 || gaio_core_progress(core, r, res) == 0)
            gaio_core_finish(core, r);
    } else if (r && (res == -ECANCELED || res == -EINTR || res == -EAGAIN)) {
        /* not ours to end (the submitting thread exited, a signal): again */
    } else if (r && was_ibuf) { /* POLL_ADD: readable */
        if (!c->closing && c->fd >= 0)
            gaio__ur_ibuf_reads(st, c);
    } else if (r && was_poll) {
        if (!c->closing && c->fd >= 0)
            gaio__ur_poll_ready(st, c, kind); /* a poll error (POLLERR) shows in the syscall */
    } else if (r) {
        gaio_core_progress(core, r, res);
    }
    if (more)
        return; /* it goes on (uring_recv.c cancels it when it is no longer wanted) */
    if (c->closing) {
        if (c->engine_busy && !(c->engine_flags & (BIT(IN_FLIGHT, 0) | BIT(IN_FLIGHT, 1))))
            gaio_core_conn_idle(core, c); /* c may be freed: not touched again */
        return;
    }
    gaio__ur_schedule_start(st, c, kind);
}

static void drain_eventfd(gaio__ur_state *st)
{
    uint64_t count;
    if (read(st->evfd, &count, sizeof count) < 0) { /* already drained: nothing to do */ }
}

/* The engine is being destroyed: give a CQE's buffer back, close what an
 * accept brought; nothing is reported. */
static void drop_cqe(gaio__ur_state *st, gaio_conn *c, int32_t res, uint32_t flags)
{
    struct gaio__uring_bufring *bufs = &st->bufs[(c->engine_flags & MULTISHOT) ? RING_MULTISHOT : RING_ONESHOT];
    uint32_t id = flags >> GAIO__IORING_CQE_BUFFER_SHIFT;
    if ((flags & GAIO__IORING_CQE_F_BUFFER) && id < bufs->count && !(flags & GAIO__IORING_CQE_F_BUF_MORE))
        gaio__uring_bufring_recycle(bufs, (uint16_t)id);
    if ((c->engine_flags & ACCEPTING) && res >= 0)
        close(res);
}

int gaio__ur_reap(gaio__ur_state *st, int with_callbacks)
{
    uint32_t first, n = gaio__uring_cq_ready(&st->ring, &first);
    for (uint32_t i = 0; i < n; i++) {
        struct gaio__io_uring_cqe *cqe = gaio__uring_cqe_at(&st->ring, first + i);
        uint64_t ud = cqe->user_data;
        int32_t res = cqe->res;
        uint32_t flags = cqe->flags;
        if (!(flags & GAIO__IORING_CQE_F_MORE))
            st->in_flight--; /* the last CQE of its SQE (only multishot ones have more) */
        unsigned tag = ud & TAG_MASK;
        gaio_conn *c = (gaio_conn *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);
        if (tag == TAG_WAKE) {
            st->wake_armed = 0;
            drain_eventfd(st);
        } else if (tag == TAG_READ || tag == TAG_WRITE) {
            if (with_callbacks)
                complete_op(st, c, (int)tag, res, flags);
            else
                drop_cqe(st, c, res, flags);
        }
        /* TAG_CANCEL: its target's own completion tells the story */
    }
    gaio__uring_cq_advance(&st->ring, n);
    return (int)n;
}

static void arm_wake(gaio__ur_state *st)
{
    if (st->wake_armed)
        return;
    struct gaio__io_uring_sqe *sqe = gaio__ur_get_sqe(st);
    if (!sqe)
        return; /* next time: a wake-up is a hint, the caller's timeout still holds */
    gaio__uring_prep_poll_add(sqe, st->evfd, POLLIN, TAG_WAKE);
    st->wake_armed = 1;
}

/* gaio__ur_work_push or starve could not grow their list: find what they would have
 * held by the connections' state (only after an allocation failed). */
static void rescan(gaio__ur_state *st)
{
    st->rescan = 0;
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(st->core, &s));) {
        for (int kind = 0; kind < 2; kind++) {
            uint32_t f = c->engine_flags;
            gaio_req *h = c->head[kind];
            if (f & BIT(IN_FLIGHT, kind)) {
                if (!(f & BIT(CANCEL_ASKED, kind)) &&
                    (c->closing || (h && h->state == GAIO_REQ_CANCELLING) ||
                     (kind == GAIO_READ && (f & MULTISHOT) && !gaio__ur_multishot_wanted(st, c))))
                    gaio__ur_ask_cancel(st, c, kind, 0);
            } else if (!(f & BIT(TO_START, kind)) && !(kind == GAIO_READ && (f & STARVED))) {
                gaio__ur_schedule_start(st, c, kind);
            }
        }
    }
}

static int ur_wait(void *state, int64_t timeout_ns, const sigset_t *sigmask)
{
    gaio__ur_state *st = state;
    int claimed = gaio__ur_claim_ring(st, NULL);
    if (claimed < 0)
        return claimed;
    if (st->nstarved && gaio_core_ibuf_room(st->core))
        gaio__ur_retry_starved(st);
    if (st->rescan)
        rescan(st);
    arm_wake(st);
    run_work(st);
    if (gaio_core_has_results(st->core))
        timeout_ns = 0;
    else if (st->rescan && (timeout_ns < 0 || timeout_ns > 10000000))
        timeout_ns = 10000000; /* still owed (no memory yet): come back soon */
    /* batch_wait: a wait that sleeps gathers in the kernel (min-wait). The
     * kernel arms the wait's timeout only once the min-wait is over: never
     * past the caller's, so the min-wait is at most the timeout. */
    int64_t min_wait = st->use[TECH_MIN_WAIT] && timeout_ns != 0 ? gaio_core_batch_wait_ns(st->core) : 0;
    if (timeout_ns > 0 && min_wait > timeout_ns)
        min_wait = timeout_ns;
    st->gathered = min_wait > 0;
    int ret = 0;
    if (timeout_ns != 0 || !st->use[TECH_LOOK_IN_USER_SPACE] || !gaio__uring_nothing_to_get(&st->ring)) {
        gaio_core_unlock(st->core);
        ret = gaio__uring_submit_and_wait_min(&st->ring, timeout_ns, min_wait, sigmask);
        gaio_core_lock(st->core);
    }
    if (ret == -EEXIST && st->use[TECH_DEFER_TASKRUN]) {
        /* the kernel has another issuer: this thread's id was the issuer's,
         * reused after it exited. Nothing was submitted: move, try next wait. */
        st->issuer = -1;
        int moved = gaio__ur_claim_ring(st, "wait_io() ran on a second thread (whose id was "
                                            "reused): moved to a ring any thread may wait on");
        return moved < 0 ? moved : 0;
    }
    int n = gaio__ur_reap(st, 1);
    while (gaio__uring_cq_overflowed(&st->ring)) {
        /* the CQ ring was full: the kernel kept the rest, a zero wait flushes them */
        int flushed = gaio__uring_submit_and_wait(&st->ring, 0);
        int more = gaio__ur_reap(st, 1);
        n += more;
        if (!more && flushed < 0 && flushed != -ETIME && flushed != -EINTR)
            break;
    }
    st->last_reaped = (uint32_t)n;
    if (gaio_core_fileno_asked(st->core)) {
        /* fileno(): what the callbacks scheduled goes to the kernel now, so
         * that its completion shows on the ring's descriptor; the wake-up
         * stays armed for requests made before the next wait */
        arm_wake(st);
        run_work(st);
        if (gaio__ur_may_enter(st))
            gaio__uring_submit(&st->ring);
        if (st->nwork || st->nstarved || st->rescan)
            gaio__ur_wake(st); /* work is left for the next wait */
    }
    if (ret == -EINTR)
        return -EINTR;
    if (ret < 0 && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN)
        return ret;
    return n;
}

void gaio__ur_wake(void *state)
{
    gaio__ur_state *st = state;
    uint64_t one = 1;
    if (write(st->evfd, &one, sizeof one) < 0) { /* counter full: a wake is pending anyway */ }
}

static int ur_fileno(void *state)
{
    gaio__ur_state *st = state;
    /* The ring's descriptor is readable while completions wait, but with
     * DEFER_TASKRUN they wait as task work only the issuer runs: whoever
     * waits on the descriptor must be able to make them CQEs. */
    if (gaio__ur_claim_ring(st, "fileno() was asked: its descriptor must show completions to "
                                "any thread") < 0)
        return -1;
    /* The wake eventfd's POLL_ADD is armed in the kernel now so that wake() shows. */
    arm_wake(st);
    run_work(st); /* and what requests made so far scheduled */
    gaio__uring_submit(&st->ring);
    return st->ring.fd;
}

static int ur_watch(void *state, gaio_conn *c)
{
    /* poll-streams: a connection's first reads recv() in place, as a stream's:
     * a burst of new connections with bytes waiting then takes this batch's
     * internal buffer in turn, the rest left in their sockets, instead of
     * RECVs that each take a piece of the provided buffers only to park it
     * (a copy) once the batch's budget is spent. The first small piece makes
     * its reads RECVs. */
    c->engine_flags = ((gaio__ur_state *)state)->use[TECH_POLL_STREAMS] ? STREAMING : 0;
    return 0;
}

static int ur_unwatch(void *state, gaio_conn *c)
{
    int busy = 0;
    gaio__ur_drop_parked(state, c);
    if (((gaio__ur_state *)state)->nheld)
        gaio__ur_drop_held(state, c);
    for (int kind = 0; kind < 2; kind++) {
        if (c->engine_flags & BIT(IN_FLIGHT, kind)) {
            gaio__ur_ask_cancel(state, c, kind, 0);
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
    gaio__ur_schedule_start(state, c, kind);
}

/* Back-pressure holds c's standing read: its receive in the kernel (multishot
 * or not) stops taking bytes now, not at the next wait. A POLL_ADD may stay:
 * its recv() asks gaio_conn_head first. */
static void ur_pause(void *state, gaio_conn *c)
{
    gaio__ur_state *st = state;
    if ((c->engine_flags & BIT(IN_FLIGHT, GAIO_READ)) && (c->engine_flags & READ_IS_IBUF) &&
        !(c->engine_flags & BIT(POLL_IN_FLIGHT, GAIO_READ)) && st->use[TECH_PBUF])
        gaio__ur_ask_cancel(st, c, GAIO_READ, 1);
}

/* A quiet write's send() from the requesting thread, as the readiness
 * engines do (engine.h). Only with DEFER_TASKRUN: without it, each send()
 * runs the ring's pending task work on its way out of the kernel. Against a
 * SEND it saves the submission, and the SEND's own completion, which would
 * end the next wait at once: an io_uring_enter more per message. For small
 * writes of a busy server that measured slower (send-at-once, off by
 * default: many SENDs share one enter there); after a quiet wait, which
 * brought a message or two, there is nothing to share it with, and the
 * send() measured cheaper (send-when-quiet). A large one sent now also needs
 * no copy of the caller's view (R6): 64 KiB stream echo, server CPU per MB
 * 0.5x, A/B (send-large-at-once). */
static int ur_gathers(void *state)
{
    return ((gaio__ur_state *)state)->gathered;
}

static ssize_t ur_send_now(void *state, gaio_conn *c, const void *buf, size_t len)
{
    gaio__ur_state *st = state;
    if (!(st->use[TECH_SEND_AT_ONCE] || (st->use[TECH_SEND_LARGE_AT_ONCE] && len >= SEND_LARGE_AT_ONCE) ||
          (st->use[TECH_SEND_WHEN_QUIET] && len < SEND_LARGE_AT_ONCE && st->last_reaped <= QUIET_WAIT)) ||
        (c->engine_flags & BIT(IN_FLIGHT, GAIO_WRITE)))
        return 0;
    return gaio_ready_send_now(state, c, buf, len);
}

static int ur_cancel(void *state, gaio_req *r)
{
    gaio_conn *c = r->conn;
    if (!(c->engine_flags & BIT(IN_FLIGHT, r->kind)))
        return gaio__ur_last_try(state, c, r);
    gaio__ur_ask_cancel(state, c, r->kind, 0);
    return 1;
}

const gaio_engine_ops gaio_engine_uring = {
    .name = "uring",
    .wait_sigmask = 1,
    .defers_submit = 1,
    .create = gaio__ur_create,
    .destroy = gaio__ur_destroy,
    .watch = ur_watch,
    .unwatch = ur_unwatch,
    .start = ur_start,
    .cancel = ur_cancel,
    .wait = ur_wait,
    .wake = gaio__ur_wake,
    .fileno = ur_fileno,
    .pause = ur_pause,
    .send_now = ur_send_now,
    .techniques = gaio__ur_techniques,
    .gathers = ur_gathers,
};

#else /* not Linux */

static int ur_unavailable(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "io_uring exists only on Linux");
    return -1;
}

const gaio_engine_ops gaio_engine_uring = {.name = "uring", .create = ur_unavailable};

#endif
