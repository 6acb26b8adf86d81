/* The io_uring engine's work list: what the next wait() submits (a head's
 * operation to start, one to cancel), batched into its io_uring_enter. */
#include "engine.h"

#if defined(__linux__)

#include "uring_engine.h"

/* 0, or -1 when the list could not grow: the caller leaves its flag unset
 * and sets st->rescan, so the next wait() finds the connection by its state. */
int gaio__ur_work_push(gaio__ur_state *st, gaio_conn *c, int what, int kind)
{
    if (st->nwork == st->cap_work && grow((void **)&st->work, &st->cap_work, sizeof *st->work)) {
        st->rescan = 1;
        return -1;
    }
    st->work[st->nwork++] = (gaio__ur_work){.id = gaio_conn_id(c), .what = what, .kind = kind};
    return 0;
}

void gaio__ur_schedule_start(gaio__ur_state *st, gaio_conn *c, int kind)
{
    if (c->closing || c->fd < 0 || (c->engine_flags & (BIT(IN_FLIGHT, kind) | BIT(TO_START, kind))))
        return;
    gaio_req *r = gaio_conn_head(c, kind);
    if (!r || (kind == GAIO_READ && !gaio_req_buf(r) && (c->engine_flags & STARVED)))
        return;
    if (gaio__ur_work_push(st, c, WORK_START, kind) == 0)
        c->engine_flags |= BIT(TO_START, kind);
    if (gaio_core_fileno_asked(st->core) && !gaio_core_waiting(st->core))
        gaio__ur_wake(st); /* R23: fileno() must show that a submission waits */
}

void gaio__ur_ask_cancel(gaio__ur_state *st, gaio_conn *c, int kind, int now)
{
    if (c->engine_flags & BIT(CANCEL_ASKED, kind))
        return;
    c->engine_flags |= BIT(CANCEL_ASKED, kind);
    if ((now || c->closing) && !gaio_core_closing(st->core)) { /* watcher close(): destroy cancels all */
        /* free(): the operation holds a reference to the socket, so the
         * core's close() would not end the connection while it lives, and
         * the peer must see the end at once. Cancel now, not at the next wait. */
        struct gaio__io_uring_sqe *sqe = gaio__ur_get_sqe(st);
        if (sqe) {
            gaio__uring_prep_cancel(sqe, (uint64_t)(uintptr_t)c | (uint64_t)kind, TAG_CANCEL);
            if (gaio__ur_may_enter(st))
                gaio__uring_submit(&st->ring);
            else
                gaio__ur_wake(st); /* the issuer submits it with its next wait */
            return;
        }
    }
    /* deadlines, multishot operations no longer wanted: batched into the next wait */
    if (gaio__ur_work_push(st, c, WORK_CANCEL, kind) != 0)
        c->engine_flags &= ~BIT(CANCEL_ASKED, kind);
}

#endif
