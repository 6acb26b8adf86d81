/* The io_uring engine's end (engine.destroy): every operation still in the
 * kernel cancelled and reaped before the rings and buffers go. */
#include "engine.h"

#if defined(__linux__)

#include <stdlib.h>
#include <unistd.h>

#include "uring_engine.h"

/* Cancel every operation still in the kernel and reap them all, so that no
 * completion can write into a buffer the core is about to release. */
static void cancel_everything(gaio__ur_state *st)
{
    st->nwork = 0;
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(st->core, &s));) {
        for (int kind = 0; kind < 2; kind++) {
            if (!(c->engine_flags & BIT(IN_FLIGHT, kind)))
                continue;
            struct gaio__io_uring_sqe *sqe;
            while (!(sqe = gaio__ur_get_sqe(st)) && st->in_flight) {
                gaio__uring_submit_and_wait(&st->ring, 10000000);
                gaio__ur_reap(st, 0);
            }
            if (sqe)
                gaio__uring_prep_cancel(sqe, (uint64_t)(uintptr_t)c | (uint64_t)kind, TAG_CANCEL);
        }
    }
    if (st->wake_armed) {
        struct gaio__io_uring_sqe *sqe = gaio__ur_get_sqe(st);
        if (sqe)
            gaio__uring_prep_cancel(sqe, TAG_WAKE, TAG_CANCEL);
    }
    /* Socket operations end at once when cancelled; the bound only guards
     * against a kernel bug turning close() into a hang. */
    int64_t give_up = gaio_now_ns() + 5000000000LL;
    while (st->in_flight && gaio_now_ns() < give_up) {
        gaio__uring_submit_and_wait(&st->ring, 100000000);
        gaio__ur_reap(st, 0);
    }
}

void gaio__ur_close_bufrings(gaio__ur_state *st)
{
    if (st->use[TECH_PBUF])
        gaio__uring_bufring_close(&st->ring, &st->bufs[RING_ONESHOT]);
    if (st->use[TECH_RECV_MULTISHOT])
        gaio__uring_bufring_close(&st->ring, &st->bufs[RING_MULTISHOT]);
}

void gaio__ur_destroy(void *state)
{
    gaio__ur_state *st = state;
    if (gaio__ur_may_enter(st)) {
        cancel_everything(st);
    } else {
        /* a SINGLE_ISSUER ring closed by another thread: it cannot cancel,
         * so the ring dies first (uring_migrate.c's move_ring says why no
         * operation of it touches a buffer after that) */
        gaio__uring_close(&st->ring);
    }
    gaio__ur_drop_all_parked(st);
    gaio__ur_drop_held(st, NULL);
    gaio__ur_close_bufrings(st);
    gaio__uring_close(&st->ring);
    close(st->evfd);
    free(st->work);
    free(st->starved);
    free(st->held);
    free(st);
}

#endif
