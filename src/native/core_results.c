/* The result array (core->res), in completion order: room for every live
 * request's last result is reserved when it is submitted, so a completion
 * never allocates; a standing request's arrivals ask for room first. */
#include "core_private.h"

#include <string.h>
#include <unistd.h>

int gaio__res_grow(gaio_core *core, uint64_t need)
{
    if (need <= core->cap_res)
        return 0;
    uint64_t cap = core->cap_res ? (uint64_t)core->cap_res * 2 : 64;
    if (cap < need)
        cap = need;
    if (cap > UINT32_MAX / 2)
        return -1;
    /* only the results waiting are copied: the reserve stays untouched (gaio_grow) */
    gaio_result *a = gaio_grow(core->res, core->nres * sizeof *a, core->cap_res * sizeof *a,
                               cap * sizeof *a);
    if (!a)
        return -1;
    core->res = a;
    core->cap_res = (uint32_t)cap;
    return 0;
}

int gaio_core_has_results(const gaio_core *core) { return core->nres != 0; }

int gaio_core_arrival_room(gaio_core *core)
{
    /* the reserve is the last result of every live request */
    return gaio__res_grow(core, (uint64_t)core->nres + core->res_reserved + 1) == 0;
}

/* r's last result (r->error set); its room was reserved at submit. */
void gaio__done_append(gaio_core *core, gaio_req *r)
{
    if (gaio_req_short(r) && gaio_req_on_conn(r))
        r->short_conn_id = gaio_req_conn_id(r); /* its connection may be reused from now on */
    r->state = GAIO_REQ_DONE;
    r->next = r->prev = NULL;
    int fd = r->op == GAIO_OP_ACCEPT && !(r->flags & GAIO_F_REPEAT) && r->error == 0
                 ? r->u.accepted_fd : -1;
    core->res_reserved--;
    /* a standing request's arrivals carried its bytes: its last result has none */
    int standing = (r->flags & GAIO_F_REPEAT) != 0;
    core->res[core->nres++] = (gaio_result){
        .req = r, .ptr = standing ? NULL : r->ibuf_ptr, .size = standing ? 0 : r->done,
        .error = r->error, .fd = fd, .final = 1,
        .silent = (r->flags & GAIO_F_QUIET) && r->error == 0,
    };
}

/* A result of standing request r that leaves it queued. The engine asked
 * gaio_core_arrival_room before the I/O; should there be no room after all,
 * r ends with ENOMEM rather than lose what arrived silently. */
static gaio_result *arrival_new(gaio_core *core, gaio_req *r, unsigned char *ptr, size_t size,
                                int error, int fd)
{
    if (!gaio_core_arrival_room(core)) {
        if (fd >= 0)
            close(fd);
        gaio__req_complete(core, r, ENOMEM);
        return NULL;
    }
    gaio_result *e = &core->res[core->nres++];
    *e = (gaio_result){
        .req = r, .ptr = ptr, .size = size, .error = error, .fd = fd, .final = 0, .silent = 0};
    return e;
}

void gaio__arrival(gaio_core *core, gaio_req *r, unsigned char *ptr, size_t size, int error, int fd)
{
    gaio_result *last = core->nres ? &core->res[core->nres - 1] : NULL;
    gaio_standing_touch(r);
    if (last && last->req == r && !last->final && ptr && last->ptr && !last->error &&
        last->ptr + last->size == ptr) {
        last->size += size; /* one pass over a socket, contiguous: one result */
        return;
    }
    arrival_new(core, r, ptr, size, error, fd);
}

gaio_result *gaio__arrival_append(gaio_core *core, gaio_req *r, unsigned char *ptr, size_t size,
                                  int error, int fd)
{
    gaio_standing_touch(r);
    return arrival_new(core, r, ptr, size, error, fd);
}

/* Take r off its connection (and the heap) and append it to the results. */
void gaio__req_complete(gaio_core *core, gaio_req *r, int error)
{
    gaio_conn *c = r->conn;
    int k = r->kind;
    int was_cancelling = r->state == GAIO_REQ_CANCELLING;
    gaio__heap_remove(core, r);
    gaio__queue_remove(c, r);
    if (r->flags & GAIO_F_BACKOFF)
        core->nbackoff--;
    r->flags &= ~(GAIO_F_HELD | GAIO_F_BACKOFF);
    int internal = (r->flags & GAIO_F_INTERNAL) != 0;
    if (k == GAIO_WRITE && !internal)
        gaio__bp_write_ended(core, r);
    r->error = error;
    if (internal) {
        gaio__tls_internal_done(core, r); /* no result: the TLS layer's */
    } else {
        if (error == GAIO_ERR_DEADLINE)
            core->stats.timeouts++;
        if (r->op == GAIO_OP_TLS)
            gaio__tls_request_done(core, r, error);
        else if (c->tls && k == GAIO_WRITE)
            gaio__tls_write_ended(core, r);
        gaio__done_append(core, r);
    }
    /* Requests whose deadline passed while this head was being cancelled end
     * right after it, in queue order (R3: none overtook it). Those still
     * queued between them have later deadlines or none: overtaking them is
     * allowed. */
    for (gaio_req *q = was_cancelling ? c->head[k] : NULL, *next; q; q = next) {
        next = q->next;
        if (q->state == GAIO_REQ_EXPIRED) {
            gaio__queue_remove(c, q);
            if (k == GAIO_WRITE)
                gaio__bp_write_ended(core, q);
            if (q->error == GAIO_ERR_DEADLINE)
                core->stats.timeouts++;
            gaio__done_append(core, q);
        }
    }
    /* A freed connection's requests end in queue order: those behind a head
     * the engine had to cancel (see gaio__conn_close) follow it now. */
    while (c->closing && (r = c->head[k]) && r->state == GAIO_REQ_QUEUED) {
        gaio__heap_remove(core, r);
        gaio__queue_remove(c, r);
        if (k == GAIO_WRITE)
            gaio__bp_write_ended(core, r);
        r->error = GAIO_ERR_CLOSED;
        gaio__done_append(core, r);
    }
    if (k == GAIO_READ)
        gaio__bp_read_head(core, c); /* a standing read may be the head now */
    if (c->tls)
        gaio__tls_mark(core, c);
}

uint32_t gaio_core_take_results(gaio_core *core, gaio_result *buf, uint32_t cap, uint32_t *left)
{
    void *token = gaio__binding_enter(core);
    uint32_t n = core->nres < cap ? core->nres : cap;
    if (n) {
        memcpy(buf, core->res, (size_t)n * sizeof *buf);
        memmove(core->res, core->res + n, (size_t)(core->nres - n) * sizeof *core->res);
    }
    core->nres -= n;
    *left = core->nres;
    for (uint32_t i = 0; i < n; i++) {
        buf[i].conn_id = gaio_req_conn_id(buf[i].req);
        if (buf[i].final)
            core->stats.pending--;
        if (buf[i].silent)
            core->stats.quiet_done++;
        else
            core->stats.completed++;
    }
    gaio__binding_leave(core, token);
    return n;
}
