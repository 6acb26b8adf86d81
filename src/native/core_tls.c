/* TLS sessions, the core's side (R28-R31; see gaio_tls in core.h): which
 * session has work, the session's internal ciphertext requests at the heads
 * of its queues, and the pass the binding runs with the GIL. No Python here:
 * the record layer is the binding's (tls_session.c). */
#include "core_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

static gaio_tls *session_of(gaio_core *core, const gaio_conn *c)
{
    return c->tls && c->slot < core->cap_tls_of ? core->tls_of[c->slot] : NULL;
}

void gaio__tls_mark(gaio_core *core, gaio_conn *c)
{
    gaio_tls *t = session_of(core, c);
    if (!t || t->listed || c->closing)
        return;
    t->listed = 1;
    t->next = core->tls_pending;
    core->tls_pending = t;
}

void gaio__tls_orphan(gaio_core *core, gaio_req *r)
{
    gaio_tls *t = r->u.w.tls;
    if (!t)
        return;
    r->u.w.tls = NULL;
    t->next_dead = core->tls_dead;
    core->tls_dead = t;
}

int gaio__tls_again(gaio_core *core, const gaio_req *r)
{
    gaio_conn *c = gaio_core_conn(core, r->conn_id);
    if (c && session_of(core, c))
        return 1;
    /* the binding's check ran without core->lock: two threads may both have
     * passed it, the first one's request not drained yet (a waiter sleeps) */
    for (const gaio_req *q = core->incoming_head; q; q = q->next)
        if (q->op == GAIO_OP_TLS && q->conn_id == r->conn_id)
            return 1;
    return 0;
}

void gaio__tls_begin(gaio_core *core, gaio_conn *c, gaio_req *r)
{
    gaio_tls *t = r->u.w.tls;
    if (c->slot >= core->cap_tls_of) {
        /* the binding refused a second start_tls: c is not a TLS one yet */
        uint32_t cap = core->cap_slots > c->slot ? core->cap_slots : c->slot + 1;
        gaio_tls **a = gaio_realloc(core->tls_of, cap * sizeof *a);
        if (!a) {
            gaio__tls_orphan(core, r);
            gaio__req_complete(core, r, ENOMEM);
            return;
        }
        memset(a + core->cap_tls_of, 0, (cap - core->cap_tls_of) * sizeof *a);
        core->tls_of = a;
        core->cap_tls_of = cap;
    }
    if (core->tls_of[c->slot]) {
        /* cannot happen: gaio_core_submit refused a second start_tls
         * (gaio__tls_again); never two sessions on one connection */
        gaio__tls_orphan(core, r);
        gaio__req_complete(core, r, EALREADY);
        return;
    }
    core->tls_of[c->slot] = t;
    t->conn_id = gaio_conn_id(c);
    t->request = r;
    for (int k = 0; k < 2; k++) {
        gaio_req *q = k ? &t->wr : &t->rd;
        q->kind = (uint8_t)k;
        q->op = k ? GAIO_OP_WRITE : GAIO_OP_READ;
        q->flags = GAIO_F_INTERNAL;
        q->deadline_ns = GAIO_NO_DEADLINE;
        q->heap_index = GAIO__NO_HEAP;
        q->conn_id = t->conn_id;
        q->conn = c;
    }
    c->tls = 1;
    /* A read queued before start_tls may have an operation in the kernel
     * (io_uring): what it brings from now on is ciphertext. It is withdrawn
     * (the read stays queued, gaio__tls_handover) before the session reads. */
    gaio_req *h = c->head[GAIO_READ];
    if (core->engine->defers_submit && h && h->state == GAIO_REQ_QUEUED && h->op == GAIO_OP_READ &&
        !(h->flags & GAIO_F_INTERNAL)) {
        int rc = core->engine->cancel(core->engine_state, h);
        if (rc == 1) {
            core->cancels++;
            h->state = GAIO_REQ_CANCELLING;
            h->cancel_reason = GAIO_ERR_HANDOVER;
        }
    }
    gaio__tls_mark(core, c);
}

int gaio__tls_early(gaio_core *core, gaio_req *r, ssize_t res)
{
    gaio_tls *t = session_of(core, r->conn);
    unsigned char *src = gaio_req_buf(r) ? r->buf + r->done : NULL;
    if (!t || !src)
        return 0;
    unsigned char *e = gaio_realloc(t->early, t->nearly + (size_t)res);
    if (e) {
        memcpy(e + t->nearly, src, (size_t)res);
        t->early = e;
        t->nearly += (size_t)res;
    }
    return 0;
}

int gaio__tls_handover(gaio_core *core, gaio_req *r)
{
    gaio_conn *c = r->conn;
    if (c->closing) {
        r->cancel_reason = GAIO_ERR_CLOSED; /* free() came meanwhile */
        return 0;
    }
    r->state = GAIO_REQ_QUEUED;
    gaio__tls_mark(core, c);
    gaio__conn_maybe_release(core, c);
    return 1;
}

void gaio__tls_internal_done(gaio_core *core, gaio_req *r)
{
    gaio_tls *t = session_of(core, r->conn);
    r->state = GAIO_REQ_DONE;
    if (!t)
        return;
    if (r->kind == GAIO_READ) {
        t->rd_busy = 0;
        t->rd_over = 1;
    } else {
        t->wr_busy = 0;
        t->wr_over = 1;
    }
}

void gaio__tls_request_done(gaio_core *core, gaio_req *r, int error)
{
    gaio_tls *t = r->u.w.tls;
    gaio_conn *c = r->conn;
    if (!t || !c || session_of(core, c) != t)
        return; /* ended before it began (its connection was gone) */
    t->request = NULL;
    t->request_error = error;
    c->tls_open = 1; /* from now on no user write is the engine's */
}

void gaio__tls_write_ended(gaio_core *core, gaio_req *r)
{
    gaio_tls *t = session_of(core, r->conn);
    if (t && t->record_req == r) {
        /* ended early (deadline, free()): its record still goes first */
        r->done += t->record_plain;
        t->record_req = NULL;
    }
}

void gaio__tls_conn_gone(gaio_core *core, gaio_conn *c)
{
    gaio_tls *t = session_of(core, c);
    if (!t)
        return;
    core->tls_of[c->slot] = NULL;
    t->rd.conn = t->wr.conn = NULL;
    if (t->listed) {
        /* the binding frees it: no list may keep it (rare: a linear walk) */
        for (gaio_tls **at = &core->tls_pending; *at; at = &(*at)->next)
            if (*at == t) {
                *at = t->next;
                break;
            }
        for (gaio_tls **at = &core->tls_later; *at; at = &(*at)->next)
            if (*at == t) {
                *at = t->next;
                break;
            }
        t->listed = 0;
    }
    t->next_dead = core->tls_dead;
    core->tls_dead = t;
}

gaio_tls *gaio_core_tls_of(gaio_core *core, uint64_t conn_id)
{
    void *token = gaio__binding_enter(core);
    gaio_conn *c = gaio_core_conn(core, conn_id);
    gaio_tls *t = c ? session_of(core, c) : NULL;
    gaio__binding_leave(core, token);
    return t;
}

/* ---- the pass ---- */

int gaio_core_tls_in_own_pass(gaio_core *core)
{
    /* read without core->lock: only the pass's own thread can find itself */
    return core->in_pass && pthread_equal(core->pass_owner, pthread_self());
}

/* The pass and a hold run the session's Python code under core->lock, so
 * they keep the runtime lock (GIL) all along: when gaio__binding_enter let
 * it go to wait for core->lock (another thread held it), it is taken back
 * now, core->lock held. Without it the pass ran Python code with no GIL, and
 * the GIL the SSLObject's calls let go was another thread's (a start_tls
 * racing a handshake's pass crashed in that thread). Taking the GIL while
 * holding core->lock cannot deadlock: every thread that holds the GIL and
 * wants core->lock lets the GIL go first (gaio__binding_enter), and the
 * session's own calls already retake it inside the pass. */
static void *enter_with_runtime(gaio_core *core)
{
    void *token = gaio__binding_enter(core);
    if (token && token != GAIO__REENTERED) {
        core->runtime->reacquire(token);
        token = NULL;
    }
    return token;
}

void *gaio_core_tls_pass_begin(gaio_core *core)
{
    void *token = enter_with_runtime(core);
    core->pass_owner = pthread_self();
    core->in_pass = 1;
    /* standing for the waiter: requests of other threads queue as incoming,
     * and reads may take internal-buffer room (gaio_core_ibuf_reserve) */
    core->waiting = 1;
    return token;
}

gaio_tls *gaio_core_tls_next(gaio_core *core)
{
    while (core->tls_pending) {
        gaio_tls *t = core->tls_pending;
        core->tls_pending = t->next;
        t->listed = 0;
        if (gaio_core_conn(core, t->conn_id))
            return t;
    }
    return NULL;
}

gaio_conn *gaio_core_tls_conn(gaio_core *core, gaio_tls *t)
{
    return gaio_core_conn(core, t->conn_id);
}

int gaio_core_tls_pass_end(gaio_core *core, void *token, gaio_tls **dead)
{
    /* what other threads asked meanwhile (frees included) is ours to run */
    if (!core->closing && !core->closed)
        gaio__drain_incoming(core);
    int results = core->nres != 0;
    if (core->notify && (core->tls_pending || core->tls_later) && !core->closing && !core->closed)
        core->engine->wake(core->engine_state); /* R23: fileno() shows the work left */
    core->waiting = 0;
    core->in_pass = 0;
    *dead = core->tls_dead;
    core->tls_dead = NULL;
    pthread_cond_broadcast(&core->idle);
    gaio__binding_leave(core, token);
    return results;
}

void gaio_core_tls_later(gaio_core *core, gaio_tls *t)
{
    if (t->listed)
        return;
    t->listed = 1;
    t->next = core->tls_later;
    core->tls_later = t;
}

int gaio_core_tls_queue(gaio_core *core, gaio_tls *t, int kind)
{
    gaio_conn *c = gaio_core_conn(core, t->conn_id);
    gaio_req *q = kind == GAIO_READ ? &t->rd : &t->wr;
    if (!c || c->fd < 0)
        return -1;
    if (c->head[kind] && c->head[kind]->state == GAIO_REQ_CANCELLING)
        return 0; /* the engine finds its operation's request at the head */
    q->done = 0;
    q->error = 0;
    q->state = GAIO_REQ_QUEUED;
    q->conn = c;
    /* first in line: the engine works on heads, and no user request of a
     * TLS connection is ever the engine's (gaio__tls_hidden) */
    gaio__queue_push_front(c, q);
    if (kind == GAIO_READ) {
        t->rd_busy = 1;
        t->rd_over = 0;
    } else {
        t->wr_busy = 1;
        t->wr_over = 0;
    }
    core->tls_queued = 1;
    core->engine->start(core->engine_state, c, kind);
    return 1;
}

int gaio_core_tls_flush(gaio_core *core)
{
    int queued = core->tls_queued;
    core->tls_queued = 0;
    if (!queued || !core->engine->defers_submit || core->closing)
        return 0;
    core->engine->wait(core->engine_state, 0, NULL);
    gaio__bp_restart_released(core);
    return core->tls_pending != NULL;
}

void gaio_core_tls_end(gaio_core *core, gaio_req *r, int error)
{
    gaio__req_complete(core, r, error);
}

void gaio_core_tls_handshake_done(gaio_core *core, gaio_tls *t, int error)
{
    gaio_req *r = t->request;
    if (!r)
        return;
    if (error == 0)
        core->stats.tls_handshakes++;
    gaio__req_complete(core, r, error);
}

void *gaio_core_tls_hold(gaio_core *core)
{
    void *token = enter_with_runtime(core);
    if (token != GAIO__REENTERED) {
        core->pass_owner = pthread_self();
        core->in_pass = 1;
    }
    return token;
}

void gaio_core_tls_unhold(gaio_core *core, void *token)
{
    if (token != GAIO__REENTERED)
        core->in_pass = 0;
    gaio__binding_leave(core, token);
}

gaio_tls *gaio_core_tls_held(gaio_core *core, uint64_t conn_id)
{
    gaio_conn *c = core->closing || core->closed ? NULL : gaio_core_conn(core, conn_id);
    return c ? session_of(core, c) : NULL;
}

void gaio_core_tls_goodbye(gaio_core *core, gaio_tls *t, const void *data, size_t len)
{
    gaio_conn *c = gaio_core_conn(core, t->conn_id);
    if (c && c->fd >= 0 && !t->wr_busy) {
        /* Nagle would hold this small segment while an earlier one is
         * unacknowledged, and the close() that follows purges what is held
         * when it resets the connection (it does when bytes arrived unread,
         * e.g. TLS 1.3 session tickets): the close_notify would never leave */
        int one = 1;
        if (!c->local)
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ssize_t n;
        do
            n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
    }
}

gaio_tls *gaio_core_tls_take_dead(gaio_core *core)
{
    gaio_tls *dead = core->tls_dead;
    core->tls_dead = NULL;
    return dead;
}
