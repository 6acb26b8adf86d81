/* Back-pressure (R21): see backpressure.h for the rule. The count a
 * counting standing read keeps (its connection's owed) is changed here and
 * only here. */
#include "core_private.h"

#include <stdint.h>
#include <stdlib.h>

/* The standing read an answer names, if it still stands. */
static gaio_req *standing_of(gaio_core *core, const gaio_answer *a)
{
    gaio_conn *c = a->conn_id ? gaio_core_conn(core, a->conn_id) : NULL;
    gaio_req *s = c ? gaio_core_tls_user_head(c, GAIO_READ) : NULL;
    return s && s->seq == a->seq && (s->flags & GAIO_F_COUNTING) ? s : NULL;
}

/* The standing read that answers for c's own writes, if one counts now. */
static gaio_req *counting_read(gaio_conn *c)
{
    gaio_req *s = c ? gaio_core_tls_user_head(c, GAIO_READ) : NULL;
    return s && (s->flags & GAIO_F_COUNTING) ? s : NULL;
}

static void owe(gaio_core *core, gaio_req *s, size_t n)
{
    if (!s || !n)
        return;
    s->conn->owed += n;
    if (!(s->flags & GAIO_F_HELD) && s->conn->owed > core->write_high) {
        s->flags |= GAIO_F_HELD;
        if (core->engine->pause && s->state == GAIO_REQ_QUEUED)
            core->engine->pause(core->engine_state, s->conn);
    }
}

static void pay(gaio_core *core, gaio_req *s, size_t n)
{
    if (!s || !n)
        return;
    size_t *owed = &s->conn->owed;
    *owed -= n < *owed ? n : *owed;
    if ((s->flags & GAIO_F_HELD) && *owed <= core->write_low) {
        s->flags &= ~GAIO_F_HELD;
        gaio_standing_touch(s); /* its idle limit did not run while it was held */
        /* started once the I/O under way is reported: what it reads comes
         * after the results of the writes that released it */
        if (!(s->flags & GAIO_F_RESTART)) {
            s->flags |= GAIO_F_RESTART;
            core->released[core->nreleased++] = gaio_conn_id(s->conn);
        }
    }
}

/* Owe (sign > 0) or pay (sign < 0) the first n unwritten bytes of write w
 * (SIZE_MAX: all of them) to the standing reads answerable for them. */
static void settle(gaio_core *core, gaio_req *w, size_t n, int sign)
{
    void (*apply)(gaio_core *, gaio_req *, size_t) = sign > 0 ? owe : pay;
    gaio_req *own = counting_read(w->conn);
    gaio_vec *v = w->op == GAIO_OP_WRITE ? w->u.w.vec : NULL;
    if (!v) {
        size_t left = w->len - w->done;
        if (n > left)
            n = left;
        apply(core, w->u.w.origin.conn_id ? standing_of(core, &w->u.w.origin) : own, n);
        return;
    }
    /* a vectored write: each item for its own standing read (R21) */
    for (uint32_t i = v->cur; n && i < v->n; i++) {
        size_t part = v->iov[i].iov_len < n ? v->iov[i].iov_len : n;
        const gaio_answer *a = v->origin ? &v->origin[i] : NULL;
        apply(core, a && a->conn_id ? standing_of(core, a) : own, part);
        if (n != SIZE_MAX)
            n -= part;
    }
}

void gaio__bp_write_queued(gaio_core *core, gaio_req *w)
{
    if (core->write_high && w->op != GAIO_OP_CONNECT)
        settle(core, w, SIZE_MAX, 1);
}

void gaio__bp_written(gaio_core *core, gaio_req *w, size_t n)
{
    if (core->write_high && w->op != GAIO_OP_CONNECT)
        settle(core, w, n, -1);
}

void gaio__bp_write_ended(gaio_core *core, gaio_req *w)
{
    if (core->write_high && w->op != GAIO_OP_CONNECT && w->conn)
        settle(core, w, SIZE_MAX, -1);
}

/* The bytes of write w no view names: those c's standing read answers for. */
static size_t own_bytes_left(const gaio_req *w)
{
    if (w->op == GAIO_OP_CONNECT)
        return 0;
    const gaio_vec *v = w->op == GAIO_OP_WRITE ? w->u.w.vec : NULL;
    if (!v)
        return w->op == GAIO_OP_WRITE && w->u.w.origin.conn_id ? 0 : w->len - w->done;
    size_t n = 0;
    for (uint32_t i = v->cur; i < v->n; i++)
        if (!v->origin || !v->origin[i].conn_id)
            n += v->iov[i].iov_len;
    return n;
}

void gaio__bp_read_head(gaio_core *core, gaio_conn *c)
{
    gaio_req *s = gaio_core_tls_user_head(c, GAIO_READ);
    /* a datagram socket's standing read never counts (R27): UDP drops what
     * cannot be taken, and AF_UNIX senders wait, so no one is slowed */
    if (!core->write_high || c->closing || c->dgram || !s || s->op != GAIO_OP_READ ||
        (s->flags & (GAIO_F_REPEAT | GAIO_F_COUNTING)) != GAIO_F_REPEAT)
        return;
    s->flags |= GAIO_F_COUNTING;
    c->owed = 0; /* an earlier counting read's count ended with it */
    size_t n = 0;
    for (gaio_req *w = c->head[GAIO_WRITE]; w; w = w->next)
        n += own_bytes_left(w);
    owe(core, s, n);
}

void gaio__bp_restart_released(gaio_core *core)
{
    for (uint32_t i = 0; i < core->nreleased; i++) {
        gaio_conn *c = gaio_core_conn(core, core->released[i]);
        gaio_req *s = c ? gaio_core_tls_user_head(c, GAIO_READ) : NULL;
        if (!s || !(s->flags & GAIO_F_RESTART))
            continue;
        s->flags &= ~GAIO_F_RESTART;
        if (c->tls)
            gaio__tls_mark(core, c); /* its session reads for it */
        else if (s->state == GAIO_REQ_QUEUED)
            core->engine->start(core->engine_state, c, GAIO_READ);
    }
    core->nreleased = 0;
}

/* ---- the binding's table of this batch's views ---- */

int gaio_origins_note(gaio_origins *t, const void *view, uint64_t conn_id, uint32_t seq)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        gaio_origin *v = gaio_realloc(t->v, cap * sizeof *v);
        if (!v)
            return -1;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = (gaio_origin){view, {conn_id, seq}};
    return 0;
}

gaio_answer gaio_origins_find(gaio_origins *t, const void *view)
{
    for (size_t k = 0; k < t->n; k++) {
        /* writes usually come in the order of their results: start after the last found */
        size_t i = (t->hint + k) % t->n;
        if (t->v[i].view == view) {
            t->hint = i + 1;
            return t->v[i].read;
        }
    }
    return (gaio_answer){0, 0};
}

void gaio_origins_free(gaio_origins *t)
{
    free(t->v);
    *t = (gaio_origins){0};
}
