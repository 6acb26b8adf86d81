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
#include <unistd.h>

#define SQ_ENTRIES 256
#define CQ_ENTRIES 4096   /* beyond it completions wait in the kernel (NODROP) */

static const char *const TECH_NAMES[TECH_COUNT] = {
    [TECH_PBUF] = "provided-buffers",
    [TECH_RECV_MULTISHOT] = "multishot-recv",
    [TECH_ACCEPT] = "accept",
    [TECH_ACCEPT_MULTISHOT] = "multishot-accept",
    [TECH_SENDMSG] = "sendmsg",
};

/* Techniques not used unless GAIO_URING_AVOID is set (to "" for none):
 * measured slower. A multishot RECV per standing read cost 3x the server CPU
 * per message of a RECV per arrival (13.6 against 5.8 us, rr 64 B x 50
 * connections, the server and its clients pinned to different CPUs as in
 * the benchmark harness); unpinned it was on a par. */
#define AVOIDED_BY_DEFAULT "multishot-recv"

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

static void choose_techniques(gaio__ur_state *st)
{
    struct gaio__uring *ring = &st->ring;
    /* Incremental provided buffers (6.12) let many small reads share one
     * buffer; without them a buffer per read would cap a batch at a handful
     * of reads, and POLL_ADD + recv() serve better. */
    const char *no_pbuf = getenv("GAIO_URING_NO_PBUF");
    uint32_t size = (uint32_t)gaio_core_bufsize(st->core);
    offer(st, TECH_PBUF, no_pbuf && no_pbuf[0] && strcmp(no_pbuf, "0") != 0 ? "GAIO_URING_NO_PBUF is set"
                                                                            : NULL);
    if (st->use[TECH_PBUF] && gaio__uring_bufring_open(ring, &st->bufs[RING_ONESHOT], 1, GAIO_IBUF_CHUNKS,
                                                       size, GAIO__IOU_PBUF_RING_INC, st->why[TECH_PBUF]))
        st->use[TECH_PBUF] = 0;
    offer(st, TECH_RECV_MULTISHOT,
          !st->use[TECH_PBUF] ? "needs provided buffers"
          : !gaio__uring_has_op(ring, GAIO__IORING_OP_SEND_ZC) ? "IORING_RECV_MULTISHOT needs Linux 6.0"
                                                                : NULL);
    if (st->use[TECH_RECV_MULTISHOT] &&
        gaio__uring_bufring_open(ring, &st->bufs[RING_MULTISHOT], 2, GAIO_IBUF_CHUNKS, size,
                                 GAIO__IOU_PBUF_RING_INC, st->why[TECH_RECV_MULTISHOT]))
        st->use[TECH_RECV_MULTISHOT] = 0;
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
    if (gaio__uring_open(&st->ring, SQ_ENTRIES, CQ_ENTRIES, GAIO__URING_TASKRUN_ANY_THREAD,
                         reason) < 0) {
        int err = errno;
        snprintf(why, whylen, "%s", reason);
        free(st);
        /* io_uring_setup's ENOMEM is RLIMIT_MEMLOCK too low for the rings
         * (kernels before 5.12): it lasts, so the engine is unavailable. */
        return err != ENOMEM && gaio_resource_error(err) ? err : -1;
    }
    choose_techniques(st);
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
