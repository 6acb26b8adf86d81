/* gaio_core_wait: the loop the waiter runs with the GIL released (drain the
 * incoming requests, run the engine until the first deadline, expire
 * deadlines), and the wake-ups other threads send it. */
#include "core_private.h"

#include <errno.h>
#include <time.h>

/* R23: no thread waits and fileno() was asked: its descriptor must become
 * readable for what a request or a free() made this thread do (results, a
 * read owed to the next wait, a submission to make). Once per wait. */
void gaio__notify(gaio_core *core)
{
    if (core->notify && !core->waiting && !core->notified) {
        core->notified = 1;
        core->engine->wake(core->engine_state);
    }
}

void gaio__wake_waiter(gaio_core *core)
{
    if (core->sleeping && !core->woken) {
        core->woken = 1;
        core->engine->wake(core->engine_state);
    }
}

/* When standing request r's idle limit runs out: its heap key may be
 * earlier, as it moves only when it comes up (R20). The limit counts from the
 * last result, and not while back-pressure holds r (R21). */
static int64_t standing_due(const gaio_req *r, int64_t now)
{
    const gaio_idle *t = r->idle;
    int64_t when = (r->flags & GAIO_F_HELD) ? now : t->active_ns;
    when = when > GAIO_NO_DEADLINE - t->idle_ns ? GAIO_NO_DEADLINE : when + t->idle_ns;
    return when > t->until_ns ? t->until_ns : when;
}

/* Move the standing requests at the top of the heap to their real
 * deadlines, so that heap[0] is the earliest one (next_timeout, R23). */
static void heap_settle(gaio_core *core, int64_t now)
{
    while (core->nheap) {
        gaio_req *r = core->heap[0];
        if (!(r->flags & GAIO_F_REPEAT) || !r->idle)
            return;
        int64_t when = standing_due(r, now);
        if (when <= r->deadline_ns)
            return;
        gaio__heap_rekey(core, r, when);
    }
}

static void expire_deadlines(gaio_core *core, int64_t now)
{
    while (core->nheap && core->heap[0]->deadline_ns <= now) {
        gaio_req *r = core->heap[0];
        if ((r->flags & GAIO_F_REPEAT) && r->idle) {
            int64_t when = standing_due(r, now);
            if (when > now) {
                gaio__heap_rekey(core, r, when);
                continue;
            }
        }
        /* The heap leaves equal deadlines in no set order: end the requests
         * queued ahead of r with the same deadline first (R3). Linked in the
         * queue and still in the heap means still waiting. */
        for (gaio_req *p; (p = gaio__queue_prev(r)) && !gaio_req_short(p) && p->heap_index != GAIO__NO_HEAP &&
                          p->deadline_ns <= r->deadline_ns;)
            r = p;
        gaio__req_abort(core, r, GAIO_ERR_DEADLINE);
    }
}

int64_t gaio__first_deadline(gaio_core *core)
{
    if (core->nheap && (core->heap[0]->flags & GAIO_F_REPEAT))
        heap_settle(core, gaio_now_ns());
    int64_t until = core->nheap ? core->heap[0]->deadline_ns : GAIO_NO_DEADLINE;
    if (core->nbackoff && core->backoff_ns < until)
        until = core->backoff_ns;
    return until;
}

/* The engine's wait in ns: -1 for no limit, else until the earlier of
 * until_ns and the first deadline (any time, negative ones included). */
static int64_t engine_timeout(gaio_core *core, int64_t until_ns)
{
    if (core->nres || core->incoming_head || core->nfrees || (core->nbackoff && core->fd_closed) ||
        core->tls_pending)
        return 0;
    int64_t until = until_ns;
    int64_t first = gaio__first_deadline(core); /* once: it may settle the heap's top */
    if (first < until)
        until = first;
    if (until == GAIO_NO_DEADLINE)
        return -1;
    int64_t now = gaio_now_ns();
    return until > now ? until - now : 0;
}

/* batch_wait: the engine's wait slept and brought results. What else comes
 * within batch_wait of the start of that sleep joins the batch: one sleep and
 * one look (the engine's wait with no timeout), not a wake-up per arrival,
 * which would cost what it is meant to save. Never past the caller's
 * until_ns; the lock is free meanwhile, so requests from other threads go
 * on. A wake() (close(), a request) does not cut the sleep short: it is at
 * most GAIO_MAX_BATCH_WAIT_S, and what it asks is done at the look. A signal
 * of the sleep stays pending (the guard blocks it) until that look. */
static int gather(gaio_core *core, int64_t slept_at, int64_t until_ns, const sigset_t *sigmask)
{
    int64_t until = slept_at + core->batch_wait_ns;
    if (until_ns < until)
        until = until_ns;
    int64_t left = until - gaio_now_ns();
    if (left <= 0)
        return 0;
    struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
    pthread_mutex_unlock(&core->lock);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&core->lock);
    if (core->closing)
        return 0;
    gaio__drain_incoming(core);
    return core->engine->wait(core->engine_state, 0, sigmask);
}

int gaio_core_wait(gaio_core *core, int64_t until_ns, int stop_before_sleep,
                   const sigset_t *sigmask)
{
    int rc;
    pthread_mutex_lock(&core->lock);
    core->waiting = 1;
    core->notified = 0;
    int cancel_round = 0;
    /* sessions that found the last batch's internal buffer spent go first */
    while (core->tls_later) {
        gaio_tls *t = core->tls_later;
        core->tls_later = t->next;
        t->next = core->tls_pending;
        core->tls_pending = t;
    }
    for (;;) {
        if (core->closing || core->closed) {
            rc = GAIO_WAIT_CLOSED;
            break;
        }
        gaio__drain_incoming(core);
        if (core->nbackoff)
            gaio__serve_backoff(core, gaio_now_ns());
        if (core->tls_pending && !core->skipped_poll) {
            /* requests drained (or made between waits) gave sessions work */
            core->skipped_poll = 1;
            rc = GAIO_WAIT_TLS;
            break;
        }
        if (core->nres && !core->skipped_poll) {
            /* Results are ready without the kernel (requests finished when
             * they were made): hand them out now. The next call polls, so
             * the kernel is asked at least every other call. */
            core->skipped_poll = 1;
            /* no deadline is expired here: a request whose time is up
             * may not have been tried yet (a timeout <= 0 is tried once
             * first); the next call polls, then expires it */
            rc = GAIO_WAIT_RESULTS;
            break;
        }
        core->skipped_poll = 0;
        int64_t timeout = engine_timeout(core, until_ns);
        if (timeout != 0 && stop_before_sleep) {
            if (stop_before_sleep == 1) {
                /* a look first (bytes already there, say): a wait that
                 * finds work needs no guard against signals */
                stop_before_sleep = 2;
                timeout = 0;
            } else {
                rc = GAIO_WAIT_SLEEPY;
                break;
            }
        }
        core->sleeping = timeout != 0;
        core->woken = 0;
        int64_t slept_at = timeout != 0 && core->batch_wait_ns ? gaio_now_ns() : 0;
        int erc = core->engine->wait(core->engine_state, timeout, sigmask);
        if (slept_at && core->nres && erc != -EINTR &&
            !(core->engine->gathers && core->engine->gathers(core->engine_state)))
            erc = gather(core, slept_at, until_ns, sigmask);
        core->sleeping = 0;
        core->stats.wakeups++;
        gaio__bp_restart_released(core);
        int64_t now = gaio_now_ns();
        uint64_t cancels = core->cancels;
        expire_deadlines(core, now);
        if (core->nbackoff)
            gaio__serve_backoff(core, now);
        if (core->tls_pending) {
            rc = GAIO_WAIT_TLS; /* the binding's pass, then maybe results */
            break;
        }
        if (core->nres) {
            rc = GAIO_WAIT_RESULTS;
            break;
        }
        if (core->closing) {
            rc = GAIO_WAIT_CLOSED;
            break;
        }
        if (erc == -EINTR) {
            rc = GAIO_WAIT_EINTR;
            break;
        }
        if (core->cancels != cancels && !cancel_round) {
            /* deadlines made the engine cancel operations in the kernel:
             * one more round (not blocking once time is up) collects them */
            cancel_round = 1;
            continue;
        }
        if (until_ns != GAIO_NO_DEADLINE && now >= until_ns) {
            rc = GAIO_WAIT_TIMEOUT;
            break;
        }
    }
    /* frees queued while we leave are ours to run */
    if (!core->closing && !core->closed)
        gaio__drain_incoming(core);
    core->waiting = 0;
    pthread_cond_broadcast(&core->idle);
    pthread_mutex_unlock(&core->lock);
    return rc;
}
