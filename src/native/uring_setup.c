/* The io_uring engine's creation (engine.create): the ring, the techniques
 * the kernel offers and GAIO_URING_AVOID leaves (engine_uring.c's header
 * lists them with their kernel versions), the wake-up eventfd; and the
 * report of those choices (engine.techniques). */
#if defined(__linux__)

#include "uring_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SQ_ENTRIES 256
#define CQ_ENTRIES 4096   /* beyond it completions wait in the kernel (NODROP) */

static const char *const TECH_NAMES[TECH_COUNT] = {
    [TECH_PBUF] = "provided-buffers",
    [TECH_RECV_MULTISHOT] = "multishot-recv",
    [TECH_ACCEPT] = "accept",
    [TECH_ACCEPT_MULTISHOT] = "multishot-accept",
    [TECH_SENDMSG] = "sendmsg",
    [TECH_DEFER_TASKRUN] = "defer-taskrun",
    [TECH_SEND_AT_ONCE] = "send-at-once",
};

/* Techniques not used unless GAIO_URING_AVOID is set (to "" for none):
 * measured slower. A multishot RECV per standing read cost 3x the server CPU
 * per message of a RECV per arrival (13.6 against 5.8 us, rr 64 B x 50
 * connections, the server and its clients pinned to different CPUs as in
 * the benchmark harness); unpinned it was on a par. A quiet write's send()
 * at once ("send-at-once") cost 1.06x (rr 64 B x 50) and 1.08x (50,000
 * msgs/s) the CPU per message of a SEND in the next wait's enter, with
 * defer-taskrun, median of 6 alternating runs on a loaded machine (the
 * server saturated: many messages per wait, whose SENDs share one enter). */
#define AVOIDED_BY_DEFAULT "multishot-recv,send-at-once"

/* Whether GAIO_URING_AVOID (a comma-separated list) names technique t. */
static int avoided(int t)
{
    const char *p = getenv("GAIO_URING_AVOID");
    if (!p)
        p = AVOIDED_BY_DEFAULT;
    size_t want = strlen(TECH_NAMES[t]);
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == want && strncmp(p, TECH_NAMES[t], len) == 0)
            return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

/* Use technique t unless what it needs is missing (why not) or it is avoided. */
static void offer(gaio__ur_state *st, int t, const char *missing)
{
    if (missing)
        snprintf(st->why[t], sizeof st->why[t], "%s", missing);
    else if (avoided(t))
        snprintf(st->why[t], sizeof st->why[t], getenv("GAIO_URING_AVOID")
                                                    ? "avoided (GAIO_URING_AVOID)"
                                                    : "off by default (GAIO_URING_AVOID= turns it on)");
    else
        st->use[t] = 1;
}

/* Technique t (provided buffers, one ring each) registers its buffer ring
 * `which` with the ring; when it cannot, t is not used. */
static void open_bufring(gaio__ur_state *st, int t, int which)
{
    uint32_t size = (uint32_t)gaio_core_bufsize(st->core);
    if (st->use[t] && gaio__uring_bufring_open(&st->ring, &st->bufs[which], (uint16_t)(which + 1),
                                               GAIO_IBUF_CHUNKS, size, GAIO__IOU_PBUF_RING_INC,
                                               st->why[t]))
        st->use[t] = 0;
}

static void choose_techniques(gaio__ur_state *st)
{
    struct gaio__uring *ring = &st->ring;
    /* Incremental provided buffers (6.12) let many small reads share one
     * buffer; without them a buffer per read would cap a batch at a handful
     * of reads, and POLL_ADD + recv() serve better. */
    const char *no_pbuf = getenv("GAIO_URING_NO_PBUF");
    offer(st, TECH_PBUF, no_pbuf && no_pbuf[0] && strcmp(no_pbuf, "0") != 0 ? "GAIO_URING_NO_PBUF is set"
                                                                            : NULL);
    open_bufring(st, TECH_PBUF, RING_ONESHOT);
    offer(st, TECH_RECV_MULTISHOT,
          !st->use[TECH_PBUF] ? "needs provided buffers"
          : !gaio__uring_has_op(ring, GAIO__IORING_OP_SEND_ZC) ? "IORING_RECV_MULTISHOT needs Linux 6.0"
                                                                : NULL);
    open_bufring(st, TECH_RECV_MULTISHOT, RING_MULTISHOT);
    offer(st, TECH_ACCEPT,
          gaio__uring_has_op(ring, GAIO__IORING_OP_ACCEPT) ? NULL : "io_uring lacks IORING_OP_ACCEPT");
    offer(st, TECH_ACCEPT_MULTISHOT,
          !st->use[TECH_ACCEPT] ? "needs accept"
          : !gaio__uring_has_op(ring, GAIO__IORING_OP_SOCKET) ? "IORING_ACCEPT_MULTISHOT needs Linux 5.19"
                                                              : NULL);
    offer(st, TECH_SENDMSG,
          gaio__uring_has_op(ring, GAIO__IORING_OP_SENDMSG) ? NULL : "io_uring lacks IORING_OP_SENDMSG");
}

int gaio__ur_create(gaio_core *core, void **out, char *why, size_t whylen)
{
    gaio__ur_state *st = gaio_calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    st->core = core;
    char reason[GAIO__URING_REASON_MAX];
    /* offered before the ring exists: the ring's flags are its probe */
    offer(st, TECH_DEFER_TASKRUN, NULL);
    if (gaio__uring_open(&st->ring, SQ_ENTRIES, CQ_ENTRIES,
                         st->use[TECH_DEFER_TASKRUN] ? GAIO__URING_TASKRUN_SINGLE_THREAD
                                                     : GAIO__URING_TASKRUN_ANY_THREAD,
                         reason) < 0) {
        int err = errno;
        snprintf(why, whylen, "%s", reason);
        free(st);
        /* io_uring_setup's ENOMEM is RLIMIT_MEMLOCK too low for the rings
         * (kernels before 5.12): it lasts, so the engine is unavailable. */
        return err != ENOMEM && gaio_resource_error(err) ? err : -1;
    }
    if (st->use[TECH_DEFER_TASKRUN] && !(st->ring.setup_flags & GAIO__IORING_SETUP_DEFER_TASKRUN)) {
        st->use[TECH_DEFER_TASKRUN] = 0;
        snprintf(st->why[TECH_DEFER_TASKRUN], sizeof st->why[0],
                 "SINGLE_ISSUER|DEFER_TASKRUN|R_DISABLED need Linux 6.1");
    }
    choose_techniques(st);
    offer(st, TECH_SEND_AT_ONCE, st->use[TECH_DEFER_TASKRUN] ? NULL : "needs defer-taskrun");
    st->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->evfd < 0) {
        int err = errno;
        snprintf(why, whylen, "eventfd: %s", strerror(err));
        gaio__ur_close_bufrings(st);
        gaio__uring_close(&st->ring);
        free(st);
        return gaio_resource_error(err) ? err : -1;
    }
    *out = st;
    return 0;
}

static pid_t this_thread(void)
{
    return (pid_t)syscall(SYS_gettid); /* not cached: a fork()ed child has another */
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
    if (gaio__uring_open(&fresh, SQ_ENTRIES, CQ_ENTRIES, GAIO__URING_TASKRUN_ANY_THREAD, reason) < 0)
        return errno ? -errno : -ENOMEM;
    gaio__ur_reap(st, 1);
    gaio__uring_close(&st->ring); /* first: its context dies before its buffers go */
    gaio__ur_close_bufrings(st);
    st->ring = fresh;
    st->use[TECH_DEFER_TASKRUN] = 0;
    snprintf(st->why[TECH_DEFER_TASKRUN], sizeof st->why[0], "%s", why);
    if (st->use[TECH_SEND_AT_ONCE]) {
        st->use[TECH_SEND_AT_ONCE] = 0;
        snprintf(st->why[TECH_SEND_AT_ONCE], sizeof st->why[0], "needs defer-taskrun");
    }
    st->issuer = 0;
    st->in_flight = 0;
    st->wake_armed = 0;
    memset(st->buf_filled, 0, sizeof st->buf_filled);
    open_bufring(st, TECH_PBUF, RING_ONESHOT);
    if (!st->use[TECH_PBUF] && st->use[TECH_RECV_MULTISHOT]) {
        st->use[TECH_RECV_MULTISHOT] = 0;
        snprintf(st->why[TECH_RECV_MULTISHOT], sizeof st->why[0], "needs provided buffers");
    }
    open_bufring(st, TECH_RECV_MULTISHOT, RING_MULTISHOT);
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

int gaio__ur_techniques(void *state, gaio_technique *out, int max)
{
    gaio__ur_state *st = state;
    int n = 0;
    for (; n < TECH_COUNT && n < max; n++) {
        snprintf(out[n].name, sizeof out[n].name, "%s", TECH_NAMES[n]);
        snprintf(out[n].why, sizeof out[n].why, "%s", st->use[n] ? "" : st->why[n]);
    }
    return n;
}

#endif
