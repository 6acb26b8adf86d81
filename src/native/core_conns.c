/* Connections: a slot table with generation numbers (an id is slot | gen << 32,
 * so a stale id never finds a reused slot), each connection's read and write
 * FIFOs, and free() of a connection, done here or by the waiter. */
#include "core_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

gaio_conn *gaio_core_conn(gaio_core *core, uint64_t id)
{
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);
    if (slot >= core->nslots)
        return NULL;
    gaio_conn *c = gaio__slot_conn(core, slot);
    if (!c || c->gen != gen || c->closing)
        return NULL;
    return c;
}

gaio_conn *gaio_core_conn_held(gaio_core *core, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    gaio_conn *c = slot < core->nslots ? gaio__slot_conn(core, slot) : NULL;
    return c && c->gen == (uint32_t)(id >> 32) ? c : NULL;
}

gaio_conn *gaio_core_slot(const gaio_core *core, uint32_t slot)
{
    gaio_conn **ch = __atomic_load_n(&core->chunks, __ATOMIC_ACQUIRE);
    return &ch[slot >> GAIO_CONN_CHUNK_SHIFT][slot & (GAIO_CONN_CHUNK - 1)];
}

gaio_conn *gaio_core_next_conn(gaio_core *core, uint32_t *slot)
{
    while (*slot < core->nslots) {
        gaio_conn *c = gaio__slot_conn(core, (*slot)++);
        if (c)
            return c;
    }
    return NULL;
}

/* Room for one more slot in the per-slot arrays and the slab; 0 or ENOMEM. */
static int slots_grow(gaio_core *core)
{
    uint32_t n = core->nchunks;
    if (core->nslots >= n * GAIO_CONN_CHUNK) {
        if (n == core->cap_chunks) {
            /* never realloc: the binding may be reading the old array (gaio_core_slot) */
            uint32_t cap = n ? n * 2 : 4;
            gaio_conn **ch = gaio_malloc(cap * sizeof *ch);
            if (!ch)
                return ENOMEM;
            if (n)
                memcpy(ch, core->chunks, n * sizeof *ch);
            if (core->chunks)
                core->retired[core->nretired++] = core->chunks;
            __atomic_store_n(&core->chunks, ch, __ATOMIC_RELEASE);
            core->cap_chunks = cap;
        }
        /* not zeroed: a slot's memory is touched only when it is first used */
        gaio_conn *chunk = gaio_malloc(GAIO_CONN_CHUNK * sizeof(gaio_conn));
        if (!chunk)
            return ENOMEM;
        core->chunks[n] = chunk;
        core->nchunks = n + 1;
    }
    if (core->nslots < core->cap_slots)
        return 0;
    uint32_t old = core->cap_slots, cap = old ? old * 2 : 64;
    /* room an idle connection never uses stays untouched (gaio_grow) */
    uint32_t *f = gaio_grow(core->free_slots, core->nfree * sizeof *f, old * sizeof *f,
                            cap * sizeof *f);
    if (!f)
        return ENOMEM;
    core->free_slots = f;
    /* room to queue a free() for every connection: free() never allocates */
    uint64_t *q = cap <= core->cap_frees
                      ? core->frees
                      : gaio_grow(core->frees, core->nfrees * sizeof *q,
                                  core->cap_frees * sizeof *q, cap * sizeof *q);
    if (!q)
        return ENOMEM;
    core->frees = q;
    /* and to restart the standing read of every connection (R21) */
    uint64_t *rl = gaio_grow(core->released, core->nreleased * sizeof *rl, old * sizeof *rl,
                             cap * sizeof *rl);
    if (!rl)
        return ENOMEM;
    core->released = rl;
    if (cap > core->cap_frees)
        core->cap_frees = cap;
    core->cap_slots = cap;
    return 0;
}

uint64_t gaio_core_watch(gaio_core *core, int fd, unsigned flags, int *err)
{
    void *token = gaio__binding_enter(core);
    if (core->closing || core->closed) {
        gaio__binding_leave(core, token);
        *err = EBADF;
        return 0;
    }
    uint32_t slot;
    gaio_conn *c;
    if (core->nfree) {
        slot = core->free_slots[--core->nfree];
        c = &core->chunks[slot >> GAIO_CONN_CHUNK_SHIFT][slot & (GAIO_CONN_CHUNK - 1)];
        uint32_t gen = c->gen; /* bumped when the slot was freed */
        memset(c, 0, sizeof *c);
        c->gen = gen;
    } else {
        int e = core->nslots >= GAIO_MAX_SLOTS ? EMFILE : slots_grow(core);
        if (e) {
            gaio__binding_leave(core, token);
            *err = e;
            return 0;
        }
        slot = core->nslots++;
        c = &core->chunks[slot >> GAIO_CONN_CHUNK_SHIFT][slot & (GAIO_CONN_CHUNK - 1)];
        memset(c, 0, sizeof *c);
        c->gen = 1;
    }
    c->fd = fd;
    c->dgram = (flags & GAIO_CONN_DGRAM) != 0;
    c->peer = (flags & GAIO_CONN_PEER) != 0;
    c->local = (flags & GAIO_CONN_LOCAL) != 0;
    c->slot = slot;
    c->live = 1;
    int rc = core->engine->watch(core->engine_state, c);
    if (rc < 0) {
        c->live = 0;
        core->free_slots[core->nfree++] = slot;
        gaio__binding_leave(core, token);
        *err = -rc;
        return 0;
    }
    core->stats.watched++;
    uint64_t id = gaio_conn_id(c);
    gaio__binding_leave(core, token);
    return id;
}

static void conn_release_slot(gaio_core *core, gaio_conn *c)
{
    if (c->tls)
        gaio__tls_conn_gone(core, c);
    c->live = 0;
    /* generation 0 is never used, so an id of 0 means "no connection" */
    if (++c->gen == 0)
        c->gen = 1;
    core->free_slots[core->nfree++] = c->slot;
}

void gaio__conn_maybe_release(gaio_core *core, gaio_conn *c)
{
    if (c->closing && !c->engine_busy && !c->head[0] && !c->head[1])
        conn_release_slot(core, c);
}

gaio_req *gaio_conn_head(gaio_conn *c, int kind)
{
    gaio_req *r = c->head[kind];
    if (!r || r->state != GAIO_REQ_QUEUED || (r->flags & (GAIO_F_HELD | GAIO_F_BACKOFF)))
        return NULL;
    if (c->tls && gaio__tls_hidden(c, r))
        return NULL; /* the TLS layer's (core_tls.c) */
    /* R17: reads start when the connect succeeded */
    if (kind == GAIO_READ && c->head[GAIO_WRITE] && c->head[GAIO_WRITE]->op == GAIO_OP_CONNECT)
        return NULL;
    return r;
}

/* A connection's FIFO keeps no tail pointer (16 bytes of every connection):
 * its head's prev is the tail, every other prev the one ahead, the tail's
 * next NULL. gaio__queue_prev tells a head from the rest. */
void gaio__queue_append(gaio_conn *c, gaio_req *r)
{
    gaio_req *h = c->head[r->kind];
    r->next = NULL;
    if (!h) {
        r->prev = r;
        c->head[r->kind] = r;
        return;
    }
    r->prev = h->prev;
    h->prev->next = r;
    h->prev = r;
}

void gaio__queue_push_front(gaio_conn *c, gaio_req *r)
{
    gaio_req *h = c->head[r->kind];
    r->next = h;
    r->prev = h ? h->prev : r;
    if (h)
        h->prev = r;
    c->head[r->kind] = r;
}

void gaio__queue_remove(gaio_conn *c, gaio_req *r)
{
    int k = r->kind;
    gaio_req *h = c->head[k];
    if (r == h) {
        c->head[k] = r->next;
        if (r->next)
            r->next->prev = r->prev;
    } else {
        r->prev->next = r->next;
        (r->next ? r->next : h)->prev = r->prev;
    }
    r->next = r->prev = NULL;
}

gaio_req *gaio__queue_prev(const gaio_req *r)
{
    return r == r->conn->head[r->kind] ? NULL : r->prev;
}

void gaio__conn_close(gaio_core *core, gaio_conn *c)
{
    gaio_req *h = c->head[GAIO_WRITE];
    if (h && h->op == GAIO_OP_CONNECT && h->state == GAIO_REQ_QUEUED)
        gaio__req_abort(core, h, GAIO_ERR_CLOSED); /* R17: its result first, then the rest in request order */
    c->closing = 1;
    for (int k = 0; k < 2; k++) {
        /* Only the head is aborted: gaio__req_complete ends the rest behind it, at
         * once or after an in-flight head's cancellation (io_uring), so no
         * deadline may jump the queue meanwhile. */
        for (gaio_req *r = c->head[k]; r; r = r->next)
            gaio__heap_remove(core, r);
        if (c->head[k])
            gaio__req_abort(core, c->head[k], GAIO_ERR_CLOSED);
    }
    c->engine_busy = core->engine->unwatch(core->engine_state, c) == 1;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        core->fd_closed = core->nbackoff != 0; /* R16: standing accepts may try again */
    }
    core->stats.watched--;
    gaio__conn_maybe_release(core, c);
}

static int queue_free(gaio_core *core, uint64_t id)
{
    if (core->nfrees == core->cap_frees) {
        uint32_t cap = core->cap_frees ? core->cap_frees * 2 : 16;
        uint64_t *f = gaio_realloc(core->frees, cap * sizeof *f);
        if (!f)
            return -1;
        core->frees = f;
        core->cap_frees = cap;
    }
    core->frees[core->nfrees++] = id;
    core->frees_asked++;
    return 0;
}

/* No thread runs the engine: free the connection in this one. Requests still
 * incoming for it will find it gone and end with GAIO_ERR_CLOSED. */
static void close_here(gaio_core *core, uint64_t id)
{
    gaio_conn *c = gaio_core_conn(core, id);
    if (c)
        gaio__conn_close(core, c);
    gaio__notify(core);
}

static void free_conn(gaio_core *core, uint64_t id, int wait_done)
{
    void *token = gaio__binding_enter(core);
    for (;;) {
        if (core->closing || core->closed) {
            /* close() closes every descriptor anyway */
            gaio__binding_leave(core, token);
            return;
        }
        if (!core->waiting) {
            close_here(core, id);
            gaio__binding_leave(core, token);
            return;
        }
        if (queue_free(core, id) == 0)
            break;
        /* not expected: gaio_core_watch keeps room for a free() of every
         * connection. Never drop the free: let the waiter run those queued,
         * or do it here once it has left. */
        core->woken = 1;
        core->engine->wake(core->engine_state);
        gaio__binding_wait_idle(core, &token);
    }
    uint64_t ticket = core->frees_asked;
    /* the waiter is in engine.wait with the lock dropped: always kick it */
    core->woken = 1;
    core->engine->wake(core->engine_state);
    /* re-entered from the TLS pass (the waiter itself): it runs the free at its end */
    while (wait_done && token != GAIO__REENTERED && core->waiting && core->frees_done < ticket &&
           !core->closed)
        gaio__binding_wait_idle(core, &token);
    gaio__binding_leave(core, token);
}

void gaio_core_free(gaio_core *core, uint64_t id) { free_conn(core, id, 1); }

void gaio_core_release(gaio_core *core, uint64_t id) { free_conn(core, id, 0); }

void gaio_core_conn_idle(gaio_core *core, gaio_conn *c)
{
    c->engine_busy = 0;
    gaio__conn_maybe_release(core, c);
}
