/* Requests in (submit from any thread, the incoming list drained onto the
 * connections), a request ended early (deadline, free()), and the progress
 * the engines report for it. */
#include "core_private.h"

#include <errno.h>

ssize_t gaio_core_try_send(gaio_core *core, uint64_t id, const void *buf, size_t len)
{
    void *token = gaio__binding_enter(core);
    ssize_t n = 0;
    gaio_conn *c;
    /* Nothing may go out before what is queued: no write of this connection
     * waits, and no request of any (incoming) is still on its way. Not for a
     * datagram socket: a send that fails there may have taken a socket error
     * that belongs to a pending read (R27). */
    if (core->engine->send_now && !core->closing && !core->closed && !core->incoming_head &&
        (c = gaio_core_conn(core, id)) && c->fd >= 0 && !c->head[GAIO_WRITE] && !c->dgram &&
        !c->tls) {
        n = core->engine->send_now(core->engine_state, c, buf, len);
        core->stats.bytes_written += (uint64_t)n;
        if ((size_t)n == len) {
            core->stats.submitted++;
            core->stats.quiet_done++;
        }
    }
    gaio__binding_leave(core, token);
    return n;
}

int gaio_core_submit(gaio_core *core, gaio_req *r)
{
    r->state = GAIO_REQ_INCOMING;
    if (!gaio_req_short(r))
        r->heap_index = GAIO__NO_HEAP;
    if (!(r->flags & GAIO_F_REPEAT)) {
        /* a standing request has neither: st and its end are in their place */
        if (r->kind != GAIO_WRITE)
            r->done = 0; /* a write's may count what gaio_core_try_send sent */
        r->ibuf_ptr = NULL;
    }
    if (r->op != GAIO_OP_CONNECT)
        r->error = 0; /* a connect's says how connect() went */
    if (!gaio_req_short(r))
        r->conn = NULL; /* a short request's conn holds its connection's id until it is on it */
    r->next = NULL;
    void *token = gaio__binding_enter(core);
    if (core->closing || core->closed) {
        /* closed by another thread while this one waited for the lock */
        gaio__binding_leave(core, token);
        return -1;
    }
    if (r->op == GAIO_OP_TLS && gaio__tls_again(core, r)) {
        gaio__binding_leave(core, token);
        return -EALREADY;
    }
    /* room for its last result and its deadline is taken now, in the
     * caller's thread, where failing is a MemoryError and not a lost result */
    if (gaio__res_grow(core, (uint64_t)core->nres + core->res_reserved + 1) != 0) {
        gaio__binding_leave(core, token);
        return -ENOMEM;
    }
    if (gaio_req_deadline(r) != GAIO_NO_DEADLINE) {
        if (gaio__heap_reserve(core, (uint64_t)core->nheap + core->heap_promised + 1) != 0) {
            gaio__binding_leave(core, token);
            return -ENOMEM;
        }
        core->heap_promised++;
    }
    core->res_reserved++;
    r->seq = core->next_seq++;
    if (r->flags & GAIO_F_REPEAT)
        gaio_standing_touch(r);
    r->prev = core->incoming_tail;
    if (core->incoming_tail)
        core->incoming_tail->next = r;
    else
        core->incoming_head = r;
    core->incoming_tail = r;
    core->stats.submitted++;
    core->stats.pending++;
    if (!core->waiting)
        /* Nobody runs the engine: start the request here (a readiness engine
         * sends at once), so a reply written between two wait_io() calls is
         * usually done before the next one: no extra kernel round for it. */
        gaio__drain_incoming(core);
    else
        gaio__wake_waiter(core);
    gaio__notify(core);
    gaio__binding_leave(core, token);
    return 0;
}

/* Move requests from other threads onto their connections; run queued frees. */
void gaio__drain_incoming(gaio_core *core)
{
    gaio_req *r = core->incoming_head, *tail = core->incoming_tail, *connects = NULL;
    core->incoming_head = core->incoming_tail = NULL;
    while (r) {
        if (r->op == GAIO_OP_CONNECT && !core->waiting) {
            /* A connect starts in the waiter's drain, after what was queued
             * behind it: its outcome may be known at once (AF_UNIX, a
             * refusal on loopback), and the requests the caller queues
             * behind it meanwhile must see it, in order (R17). Nothing
             * after it moves before it. */
            core->incoming_head = r;
            core->incoming_tail = tail;
            break;
        }
        gaio_req *next = r->next;
        gaio_conn *c = gaio_core_conn(core, gaio_req_conn_id(r));
        r->next = r->prev = NULL;
        int64_t deadline = gaio_req_deadline(r);
        if (deadline != GAIO_NO_DEADLINE)
            core->heap_promised--;
        if (!c) {
            /* its connection went away after the request was made */
            if (r->op == GAIO_OP_TLS)
                gaio__tls_orphan(core, r);
            r->error = GAIO_ERR_CLOSED;
            gaio__done_append(core, r);
            r = next;
            continue;
        }
        r->conn = c;
        r->state = GAIO_REQ_QUEUED;
        if (deadline != GAIO_NO_DEADLINE && gaio__heap_push(core, r) != 0) {
            /* cannot happen (gaio_core_submit reserved the room); never drop
             * the deadline: a request that could wait forever fails now */
            r->error = ENOMEM;
            gaio__done_append(core, r);
            r = next;
            continue;
        }
        int k = r->kind;
        if (c->dgram)
            gaio__datagram_idle(core, c);
        gaio__queue_append(c, r);
        if (k == GAIO_WRITE)
            gaio__bp_write_queued(core, r);
        else
            gaio__bp_read_head(core, c);
        if (r->op == GAIO_OP_TLS) {
            gaio__tls_begin(core, c, r);
        } else if (c->tls) {
            gaio__tls_mark(core, c);
        } else if (r->op == GAIO_OP_CONNECT) {
            r->u.c.later = connects;
            connects = r;
        } else if (c->head[k] == r) {
            core->engine->start(core->engine_state, c, k);
        }
        r = next;
    }
    /* connects last: what was queued behind them is on their connection now */
    for (gaio_req *next; connects; connects = next) {
        next = connects->u.c.later;
        r = connects;
        gaio_conn *c = r->conn;
        if (c->head[GAIO_WRITE] != r)
            continue; /* ended meanwhile (a free(), or its deadline) */
        if (r->error == EAGAIN && r->u.c.addr) {
            gaio__connect_backoff(core, r, gaio_now_ns()); /* the AF_UNIX backlog is full */
        } else if (r->error != EINPROGRESS) {
            gaio__connect_finished(core, r, r->error); /* connect() told at once */
            gaio__start_next(core, c, GAIO_WRITE);
        } else {
            r->error = 0;
            core->engine->start(core->engine_state, c, GAIO_WRITE);
        }
    }
    gaio__bp_restart_released(core);
    for (uint32_t i = 0; i < core->nfrees; i++) {
        gaio_conn *c = gaio_core_conn(core, core->frees[i]);
        if (c)
            gaio__conn_close(core, c);
    }
    if (core->nfrees) {
        core->frees_done += core->nfrees;
        core->nfrees = 0;
        pthread_cond_broadcast(&core->idle);
    }
}

/* The core removed the head of c's kind queue: tell the engine about the next. */
void gaio__start_next(gaio_core *core, gaio_conn *c, int kind)
{
    if (!c->closing && c->head[kind] && c->head[kind]->state == GAIO_REQ_QUEUED)
        core->engine->start(core->engine_state, c, kind);
}

/* End r early with error: at once, or once the engine has it back. */
void gaio__req_abort(gaio_core *core, gaio_req *r, int error)
{
    gaio_conn *c = r->conn;
    if (r->state == GAIO_REQ_CANCELLING) {
        if (error == GAIO_ERR_CLOSED || r->cancel_reason == GAIO_ERR_HANDOVER)
            r->cancel_reason = error; /* a withdrawn read's own end comes first */
        gaio__heap_remove(core, r);
        return;
    }
    int was_head = c->head[r->kind] == r;
    int cancel = was_head && !gaio__tls_hidden(c, r) ? core->engine->cancel(core->engine_state, r) : 0;
    if (cancel == 1) {
        core->cancels++;
        r->state = GAIO_REQ_CANCELLING;
        r->cancel_reason = error;
        gaio__heap_remove(core, r);
        return;
    }
    if (cancel == 2) {
        /* the engine's last try finished r (end of stream, error, all bytes) */
        gaio__start_next(core, c, r->kind);
        return;
    }
    if (!was_head && c->head[r->kind]->state == GAIO_REQ_CANCELLING) {
        /* queued behind a head the kernel still has: it may not end first */
        gaio__heap_remove(core, r);
        r->state = GAIO_REQ_EXPIRED;
        r->error = error;
        return;
    }
    if (r->op == GAIO_OP_CONNECT)
        gaio__connect_finished(core, r, error);
    else
        gaio__req_complete(core, r, error);
    if (was_head)
        gaio__start_next(core, c, r->kind);
}

static int req_finished(const gaio_req *r)
{
    if (r->kind == GAIO_WRITE || (r->flags & GAIO_F_FULL))
        return r->done >= r->len;
    return r->done > 0;
}

/* A vectored write sent n more bytes: move its cursor. */
static void vec_advance(gaio_vec *v, size_t n)
{
    while (n && v->cur < v->n) {
        struct iovec *io = &v->iov[v->cur];
        if (n < io->iov_len) {
            io->iov_base = (char *)io->iov_base + n;
            io->iov_len -= n;
            return;
        }
        n -= io->iov_len;
        io->iov_len = 0;
        v->cur++;
    }
}

/* ptr: where an internal-buffer read's res bytes were put (NULL otherwise) */
static int progress_common(gaio_core *core, gaio_req *r, ssize_t res, unsigned char *ptr)
{
    if (res > 0 && (r->flags & GAIO_F_INTERNAL)) {
        /* ciphertext: the TLS layer counts plaintext */
        r->done += (size_t)res;
        if (!req_finished(r))
            return 0;
        gaio__req_complete(core, r, 0);
        return 1;
    }
    if (res > 0) {
        if (r->kind == GAIO_READ) {
            core->stats.bytes_read += (uint64_t)res;
            if (r->flags & GAIO_F_REPEAT) {
                gaio__arrival(core, r, ptr, (size_t)res, 0, -1);
                return r->state == GAIO_REQ_DONE; /* 1 only when it could not be kept */
            }
        } else {
            core->stats.bytes_written += (uint64_t)res;
            gaio__bp_written(core, r, (size_t)res);
            if (r->op == GAIO_OP_WRITE && r->u.w.vec)
                vec_advance(r->u.w.vec, (size_t)res);
        }
        r->done += (size_t)res;
        if (!req_finished(r))
            return 0;
        gaio__req_complete(core, r, 0);
        return 1;
    }
    if (r->state == GAIO_REQ_CANCELLING)
        return 0; /* the engine calls gaio_core_finish next */
    if (r->op == GAIO_OP_CONNECT) {
        gaio__connect_finished(core, r, (int)-res);
        return 1;
    }
    if (res == 0) {
        if (r->kind == GAIO_WRITE) {
            if (!req_finished(r)) {
                if (r->op != GAIO_OP_SENDFILE)
                    return 0;
                gaio__req_complete(core, r, GAIO_ERR_EOF); /* the file ended before count bytes */
                return 1;
            }
            gaio__req_complete(core, r, 0);
            return 1;
        }
        gaio__req_complete(core, r, GAIO_ERR_EOF);
        return 1;
    }
    gaio__req_complete(core, r, (int)-res);
    return 1;
}

int gaio_core_progress(gaio_core *core, gaio_req *r, ssize_t res)
{
    if (r->state == GAIO_REQ_CANCELLING && r->cancel_reason == GAIO_ERR_HANDOVER)
        return res > 0 ? gaio__tls_early(core, r, res) : 0;
    unsigned char *ptr = NULL;
    if (res > 0 && !gaio_req_buf(r) && r->kind == GAIO_READ) {
        /* committed where gaio_core_ibuf_reserve pointed */
        ptr = core->chunk[core->chunk_cur] + core->chunk_off;
        core->chunk_off += (size_t)res;
        core->ibuf_out += (size_t)res;
        if (!(r->flags & GAIO_F_REPEAT))
            r->ibuf_ptr = ptr; /* a standing read's struct has no ibuf_ptr */
    }
    return progress_common(core, r, res, ptr);
}

void gaio_core_finish(gaio_core *core, gaio_req *r)
{
    gaio_conn *c = r->conn;
    if (r->cancel_reason == GAIO_ERR_HANDOVER && gaio__tls_handover(core, r))
        return;
    int was_head = c->head[r->kind] == r;
    if (r->op == GAIO_OP_CONNECT)
        gaio__connect_finished(core, r, r->cancel_reason);
    else
        gaio__req_complete(core, r, r->cancel_reason);
    if (was_head)
        gaio__start_next(core, c, r->kind);
    gaio__conn_maybe_release(core, c);
}
