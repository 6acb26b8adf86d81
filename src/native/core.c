/* gaio's core: its lifetime (new, close, delete) and the queries the binding
 * and the engines make of it. No Python here (see module.c). core_private.h
 * lists the files that make up the rest of the core.
 *
 * Locking: core->lock guards all of the core. Request threads take it
 * briefly to queue work; the waiter holds it while it runs the engine,
 * except around the engine's blocking syscall. Nobody takes the GIL while
 * holding it.
 */
#include "core_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int64_t gaio_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

gaio_core *gaio_core_new(const gaio_engine_ops *engine, size_t bufsize, size_t write_high,
                         const gaio_runtime *runtime, char *why, size_t whylen)
{
    gaio_core *core = gaio_calloc(1, sizeof *core);
    if (!core) {
        snprintf(why, whylen, "out of memory");
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&core->lock, NULL);
    pthread_cond_init(&core->idle, NULL);
    core->engine = engine;
    core->runtime = runtime;
    core->bufsize = bufsize;
    core->write_high = write_high;
    core->write_low = write_high / GAIO_WRITE_LOW_DIVISOR;
    core->backoff_ns = GAIO_NO_DEADLINE;
    int rc = engine->create(core, &core->engine_state, why, whylen);
    if (rc != 0) {
        pthread_cond_destroy(&core->idle);
        pthread_mutex_destroy(&core->lock);
        free(core);
        /* for the binding: a resource error (gaio_resource_error) is raised
         * as the OSError; 0 means the engine cannot run here (why says why) */
        errno = rc > 0 ? rc : 0;
        return NULL;
    }
    return core;
}

void gaio_core_set_batch_wait(gaio_core *core, int64_t batch_wait_ns)
{
    core->batch_wait_ns = batch_wait_ns;
}

int gaio_core_conn_fd(gaio_core *core, uint64_t id)
{
    void *token = gaio__binding_enter(core);
    gaio_conn *c = gaio_core_conn(core, id);
    int fd = c ? c->fd : -1;
    gaio__binding_leave(core, token);
    return fd;
}

int gaio_core_signal_fd(gaio_core *core)
{
    void *token = gaio__binding_enter(core);
    int fd = -ENOSYS;
    if (core->closing || core->closed)
        fd = -EBADF;
    else if (core->engine->signal_fd)
        fd = core->engine->signal_fd(core->engine_state);
    gaio__binding_leave(core, token);
    return fd;
}

int64_t gaio_core_next_deadline(gaio_core *core)
{
    void *token = gaio__binding_enter(core);
    int64_t until = gaio__first_deadline(core);
    if (core->nbackoff && core->fd_closed)
        until = gaio_now_ns();
    gaio__binding_leave(core, token);
    return until;
}

int gaio_core_fileno(gaio_core *core)
{
    void *token = gaio__binding_enter(core);
    int fd = -1;
    if (core->closing || core->closed) {
        errno = EBADF;
    } else if (!core->engine->fileno) {
        errno = ENOTSUP;
    } else {
        fd = core->engine->fileno(core->engine_state);
        if (fd < 0) {
            errno = ENOTSUP;
        } else {
            core->notify = 1;
            if (core->nres || core->incoming_head)
                core->engine->wake(core->engine_state);
        }
    }
    gaio__binding_leave(core, token);
    return fd;
}

static void chain(gaio_req **head, gaio_req *r)
{
    r->next = *head;
    *head = r;
}

gaio_req *gaio_core_close(gaio_core *core)
{
    gaio_req *all = NULL;
    pthread_mutex_lock(&core->lock);
    if (core->closed) {
        pthread_mutex_unlock(&core->lock);
        return NULL;
    }
    core->closing = 1;
    while (core->waiting) {
        core->woken = 0;
        core->engine->wake(core->engine_state);
        pthread_cond_wait(&core->idle, &core->lock);
    }
    /* collect every request first: gaio__conn_close would move them to done */
    for (gaio_req *r = core->incoming_head, *n; r; r = n) {
        n = r->next;
        if (r->op == GAIO_OP_TLS)
            gaio__tls_orphan(core, r);
        chain(&all, r);
    }
    core->incoming_head = core->incoming_tail = NULL;
    for (uint32_t i = 0; i < core->nres; i++) {
        gaio_result *e = &core->res[i];
        if (e->fd >= 0)
            close(e->fd); /* accepted, never delivered */
        if (e->final)
            chain(&all, e->req); /* an arrival's request is still queued: found below */
    }
    gaio__datagram_forget(core->res, core->nres);
    core->nres = 0;
    for (uint32_t s = 0; s < core->nslots; s++) {
        gaio_conn *c = gaio__slot_conn(core, s);
        if (!c)
            continue;
        if (!c->closing) {
            c->closing = 1;
            c->engine_busy = core->engine->unwatch(core->engine_state, c) == 1;
            if (c->fd >= 0)
                close(c->fd);
            c->fd = -1;
            core->stats.watched--;
        }
    }
    core->engine->destroy(core->engine_state);
    core->engine_state = NULL;
    for (uint32_t s = 0; s < core->nslots; s++) {
        gaio_conn *c = gaio__slot_conn(core, s);
        if (!c)
            continue;
        for (int k = 0; k < 2; k++)
            for (gaio_req *r = c->head[k], *n; r; r = n) {
                n = r->next;
                if (!(r->flags & GAIO_F_INTERNAL)) /* a TLS session's own: it goes with it */
                    chain(&all, r);
            }
        if (c->tls)
            gaio__tls_conn_gone(core, c);
        c->live = 0;
    }
    core->nheap = 0;
    core->heap_promised = 0;
    core->res_reserved = 0;
    core->nbackoff = 0;
    core->nfrees = 0;
    core->tls_pending = core->tls_later = NULL;
    core->stats.pending = 0;
    core->closed = 1;
    pthread_cond_broadcast(&core->idle);
    pthread_mutex_unlock(&core->lock);
    return all;
}

void gaio_core_get_stats(gaio_core *core, gaio_stats *out)
{
    void *token = gaio__binding_enter(core);
    *out = core->stats;
    out->ibuf_bytes_batch = core->ibuf_out;
    gaio__binding_leave(core, token);
}

int gaio_core_techniques(gaio_core *core, gaio_technique *out, int max)
{
    void *token = gaio__binding_enter(core);
    int n = 0;
    if (!core->closing && !core->closed && core->engine->techniques)
        n = core->engine->techniques(core->engine_state, out, max);
    gaio__binding_leave(core, token);
    return n;
}

void gaio_core_delete(gaio_core *core)
{
    if (!core)
        return;
    for (unsigned i = 0; i < GAIO_IBUF_CHUNKS; i++)
        free(core->chunk[i]);
    free(core->spill);
    for (uint32_t i = 0; i < core->nchunks; i++)
        free(core->chunks[i]);
    free(core->chunks);
    for (uint32_t i = 0; i < core->nretired; i++)
        free(core->retired[i]);
    gaio_landing_free(core->landing);
    free(core->free_slots);
    free(core->frees);
    free(core->released);
    free(core->heap);
    free(core->res);
    free(core->tls_of);
    pthread_cond_destroy(&core->idle);
    pthread_mutex_destroy(&core->lock);
    free(core);
}

/* ---- queries for the engines (engine.h) and the binding (core.h) ---- */

int gaio_core_fileno_asked(const gaio_core *core) { return core->notify; }
int gaio_core_waiting(const gaio_core *core) { return core->waiting; }
int64_t gaio_core_batch_wait_ns(const gaio_core *core) { return core->batch_wait_ns; }
int gaio_core_closing(const gaio_core *core) { return core->closing; }
size_t gaio_core_bufsize(const gaio_core *core) { return core->bufsize; }
void gaio_core_wake_engine(gaio_core *core) { core->engine->wake(core->engine_state); }
int gaio_core_wait_sigmask(const gaio_core *core) { return core->engine->wait_sigmask; }

unsigned char *gaio_core_ibuf_chunk(const gaio_core *core, unsigned i, size_t *size)
{
    *size = core->bufsize;
    return i < GAIO_IBUF_CHUNKS ? core->chunk[i] : NULL;
}
