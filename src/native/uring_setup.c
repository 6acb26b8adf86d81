/* The io_uring engine's creation (engine.create): the ring, the techniques
 * the kernel offers and GAIO_URING_AVOID leaves (engine_uring.c's header
 * lists them with their kernel versions), the wake-up eventfd; and the
 * report of those choices (engine.techniques). The single issuer's thread
 * and the move to another ring are uring_migrate.c's. */
#if defined(__linux__)

#include "uring_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static const char *const TECH_NAMES[TECH_COUNT] = {
    [TECH_PBUF] = "provided-buffers",
    [TECH_RECV_MULTISHOT] = "multishot-recv",
    [TECH_ACCEPT] = "accept",
    [TECH_ACCEPT_MULTISHOT] = "multishot-accept",
    [TECH_SENDMSG] = "sendmsg",
    [TECH_DEFER_TASKRUN] = "defer-taskrun",
    [TECH_SEND_AT_ONCE] = "send-at-once",
    [TECH_SEND_LARGE_AT_ONCE] = "send-large-at-once",
    [TECH_MIN_WAIT] = "min-wait",
    [TECH_RECV_POLL_FIRST] = "recv-poll-first",
    [TECH_POLL_STREAMS] = "poll-streams",
    [TECH_POLL_MULTISHOT] = "multishot-poll",
    [TECH_SEND_WHEN_QUIET] = "send-when-quiet",
    [TECH_LOOK_IN_USER_SPACE] = "look-in-user-space",
};

/* Techniques not used unless GAIO_URING_AVOID is set (to "" for none):
 * measured slower. A multishot RECV per standing read cost 3x the server CPU
 * per message of a RECV per arrival (13.6 against 5.8 us, rr 64 B x 50
 * connections, the server and its clients pinned to different CPUs as in
 * the benchmark harness); unpinned it was on a par. A quiet write's send()
 * at once ("send-at-once") cost 1.06x (rr 64 B x 50) and 1.08x (50,000
 * msgs/s) the CPU per message of a SEND in the next wait's enter, with
 * defer-taskrun, median of 6 alternating runs on a loaded machine (the
 * server saturated: many messages per wait, whose SENDs share one enter).
 * batch_wait as the kernel's min-wait ("min-wait") measured no better than
 * the core's sleep and look: server CPU per message at 50,000 msgs/s with
 * batch_wait=100 us, 9.05-10.14 against 9.46-11.31 us (4 runs each, A/B/A/B,
 * a saturated machine where the load generator reached only 19-51k msgs/s). */
#define AVOIDED_BY_DEFAULT "multishot-recv,send-at-once,min-wait"

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

void gaio__ur_open_bufring(gaio__ur_state *st, int t, int which)
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
    gaio__ur_open_bufring(st, TECH_PBUF, RING_ONESHOT);
    offer(st, TECH_RECV_MULTISHOT,
          !st->use[TECH_PBUF] ? "needs provided buffers"
          : !gaio__uring_has_op(ring, GAIO__IORING_OP_SEND_ZC) ? "IORING_RECV_MULTISHOT needs Linux 6.0"
                                                                : NULL);
    gaio__ur_open_bufring(st, TECH_RECV_MULTISHOT, RING_MULTISHOT);
    offer(st, TECH_ACCEPT,
          gaio__uring_has_op(ring, GAIO__IORING_OP_ACCEPT) ? NULL : "io_uring lacks IORING_OP_ACCEPT");
    offer(st, TECH_ACCEPT_MULTISHOT,
          !st->use[TECH_ACCEPT] ? "needs accept"
          : !gaio__uring_has_op(ring, GAIO__IORING_OP_SOCKET) ? "IORING_ACCEPT_MULTISHOT needs Linux 5.19"
                                                              : NULL);
    offer(st, TECH_SENDMSG,
          gaio__uring_has_op(ring, GAIO__IORING_OP_SENDMSG) ? NULL : "io_uring lacks IORING_OP_SENDMSG");
    offer(st, TECH_RECV_POLL_FIRST,
          !st->use[TECH_PBUF] ? "needs provided buffers"
          : !gaio__uring_has_op(ring, GAIO__IORING_OP_SOCKET) ? "IORING_RECVSEND_POLL_FIRST needs Linux 5.19"
                                                              : NULL);
    /* IORING_POLL_ADD_MULTI came in 5.13 and has no opcode of its own; it
     * is dated by IORING_OP_MKDIRAT (5.15), past its early fixes */
    offer(st, TECH_POLL_MULTISHOT, gaio__uring_has_op(ring, GAIO__IORING_OP_MKDIRAT)
                                       ? NULL
                                       : "IORING_POLL_ADD_MULTI needs Linux 5.15 here");
    offer(st, TECH_POLL_STREAMS,
          st->use[TECH_PBUF] ? NULL : "needs provided buffers (without them every read is POLL_ADD + recv())");
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
    if (gaio__uring_open(&st->ring, GAIO__UR_SQ_ENTRIES, GAIO__UR_CQ_ENTRIES,
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
    offer(st, TECH_SEND_LARGE_AT_ONCE, st->use[TECH_DEFER_TASKRUN] ? NULL : "needs defer-taskrun");
    offer(st, TECH_SEND_WHEN_QUIET, st->use[TECH_DEFER_TASKRUN] ? NULL : "needs defer-taskrun");
    offer(st, TECH_LOOK_IN_USER_SPACE, !st->use[TECH_DEFER_TASKRUN] ? "needs defer-taskrun"
                                       : !(st->ring.setup_flags & GAIO__IORING_SETUP_TASKRUN_FLAG)
                                           ? "the kernel refused TASKRUN_FLAG with DEFER_TASKRUN"
                                           : NULL);
    /* Only with DEFER_TASKRUN does a min-wait that found nothing fall back to
     * waking at the first completion (io_cqring_min_timer_wakeup resets
     * cq_wait_nr to 1); a normal ring would wait for all it was asked. */
    offer(st, TECH_MIN_WAIT, !st->use[TECH_DEFER_TASKRUN] ? "needs defer-taskrun"
                             : !(st->ring.features & GAIO__IORING_FEAT_MIN_TIMEOUT)
                                 ? "IORING_FEAT_MIN_TIMEOUT needs Linux 6.12"
                                 : NULL);
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
