/* The io_uring engine's single issuer ("defer-taskrun", uring_setup.c
 * opens its ring): which thread may enter the ring, the first wait() that
 * makes its thread the issuer, and the move for good to a ring any thread
 * may enter when another thread waits (or fileno() is asked), with what was
 * in flight submitted again there (close() from another thread: uring_close.c).
 * engine_uring.c's header says why. */
#if defined(__linux__)

#include "uring_engine.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pid_t this_thread(void)
{
    /* not cached: a fork()ed child has another; and a __thread cache in
     * this dlopen()ed module made LeakSanitizer's tracer crash at exit
     * (.ci/sanitize, rc 86 after every test passed) */
    return (pid_t)syscall(SYS_gettid);
}

int gaio__ur_may_enter(gaio__ur_state *st)
{
    return !st->use[TECH_DEFER_TASKRUN] || (st->issuer > 0 && st->issuer == this_thread());
}

/* Leave the SINGLE_ISSUER ring for one any thread may enter. No thread can
 * run the old ring's completions but its issuer, which does not wait now
 * (maybe never again: it may have exited): what the old ring already posted
 * is reported, then it is closed, and what was still in flight is submitted
 * again on the new ring. Closing kills the old ring's context before the
 * close returns (the last reference goes with the munmap of its rings), and
 * the kernel cancels, never runs, the task work of a dying context
 * (io_should_terminate_tw): no operation of the old ring moves a byte or
 * touches a buffer again, and its references to sockets are dropped by the
 * kernel's exit work a moment later. */
static int move_ring(gaio__ur_state *st, const char *why)
{
    struct gaio__uring fresh;
    char reason[GAIO__URING_REASON_MAX];
    if (gaio__uring_open(&fresh, GAIO__UR_SQ_ENTRIES, GAIO__UR_CQ_ENTRIES, GAIO__URING_TASKRUN_ANY_THREAD, reason) < 0)
        return errno ? -errno : -ENOMEM;
    gaio__ur_reap(st, 1);
    gaio__uring_close(&st->ring); /* first: its context dies before its buffers go */
    gaio__ur_close_bufrings(st);
    st->ring = fresh;
    st->use[TECH_DEFER_TASKRUN] = 0;
    snprintf(st->why[TECH_DEFER_TASKRUN], sizeof st->why[0], "%s", why);
    static const int need_it[] = {TECH_SEND_AT_ONCE, TECH_SEND_LARGE_AT_ONCE, TECH_SEND_WHEN_QUIET,
                                  TECH_MIN_WAIT, TECH_LOOK_IN_USER_SPACE};
    for (unsigned i = 0; i < sizeof need_it / sizeof need_it[0]; i++) {
        int t = need_it[i];
        if (st->use[t]) {
            st->use[t] = 0;
            snprintf(st->why[t], sizeof st->why[0], "needs defer-taskrun");
        }
    }
    st->issuer = 0;
    st->in_flight = 0;
    st->wake_armed = 0;
    memset(st->buf_filled, 0, sizeof st->buf_filled);
    gaio__ur_open_bufring(st, TECH_PBUF, RING_ONESHOT);
    if (!st->use[TECH_PBUF] && st->use[TECH_RECV_MULTISHOT]) {
        st->use[TECH_RECV_MULTISHOT] = 0;
        snprintf(st->why[TECH_RECV_MULTISHOT], sizeof st->why[0], "needs provided buffers");
    }
    gaio__ur_open_bufring(st, TECH_RECV_MULTISHOT, RING_MULTISHOT);
    gaio__ur_restart_all(st);
    return 0;
}

int gaio__ur_claim_ring(gaio__ur_state *st, const char *why)
{
    if (!st->use[TECH_DEFER_TASKRUN])
        return 0;
    pid_t me = this_thread();
    if (!why && st->issuer == me)
        return 0;
    if (!why && st->issuer == 0) {
        if (gaio__uring_enable(&st->ring) == 0) {
            st->issuer = me;
            return 0;
        }
        why = "IORING_REGISTER_ENABLE_RINGS failed";
    }
    return move_ring(st, why ? why : "wait_io() ran on a second thread: moved to a ring any "
                                     "thread may wait on");
}

void gaio__ur_restart_all(gaio__ur_state *st)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < st->nwork; i++)
        if (st->work[i].what == WORK_START) /* a cancel's target is gone with the old ring */
            st->work[keep++] = st->work[i];
    st->nwork = keep;
    const uint32_t in_kernel = BIT(IN_FLIGHT, 0) | BIT(IN_FLIGHT, 1);
    const uint32_t gone = in_kernel | BIT(CANCEL_ASKED, 0) | BIT(CANCEL_ASKED, 1) |
                          BIT(POLL_IN_FLIGHT, 0) | BIT(POLL_IN_FLIGHT, 1) | READ_IS_IBUF | MULTISHOT |
                          ACCEPTING;
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(st->core, &s));) {
        if (!(c->engine_flags & in_kernel))
            continue;
        c->engine_flags &= ~gone;
        for (int kind = 0; kind < 2; kind++) {
            gaio_req *r = c->head[kind];
            if (r && r->state == GAIO_REQ_CANCELLING)
                gaio_core_finish(st->core, r); /* its operation never moved a byte more */
        }
        if (c->closing) {
            if (c->engine_busy)
                gaio_core_conn_idle(st->core, c); /* c may be freed: not touched again */
            continue;
        }
        gaio__ur_schedule_start(st, c, GAIO_READ);
        gaio__ur_schedule_start(st, c, GAIO_WRITE);
    }
}

#endif
