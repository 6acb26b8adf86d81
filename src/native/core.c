/* gaio's core: connections, per-connection FIFOs, deadlines, the internal
 * buffer and the batch of finished requests. No Python here (see module.c).
 *
 * Locking: core->lock guards all of it. Request threads take it briefly to
 * queue work; the waiter holds it while it runs the engine, except around the
 * engine's blocking syscall. Nobody takes the GIL while holding it.
 */
#include "backpressure.h"
#include "core_lock.h"
#include "deadline_heap.h"
#include "engine.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: engine_kqueue.c sets SO_NOSIGPIPE at watch() */
#endif

int64_t gaio_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- connections ---- */

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

gaio_conn *gaio_core_conn(gaio_core *core, uint64_t id)
{
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);
    if (slot >= core->nslots)
        return NULL;
    gaio_conn *c = core->slots[slot];
    if (!c || c->gen != gen || c->closing)
        return NULL;
    return c;
}

gaio_conn *gaio_core_conn_held(gaio_core *core, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    gaio_conn *c = slot < core->nslots ? core->slots[slot] : NULL;
    return c && c->gen == (uint32_t)(id >> 32) ? c : NULL;
}

gaio_conn *gaio_core_next_conn(gaio_core *core, uint32_t *slot)
{
    while (*slot < core->nslots) {
        gaio_conn *c = core->slots[(*slot)++];
        if (c)
            return c;
    }
    return NULL;
}

uint64_t gaio_core_watch(gaio_core *core, int fd, int *err)
{
    gaio_conn *c = gaio_calloc(1, sizeof *c);
    if (!c) {
        *err = ENOMEM;
        return 0;
    }
    void *token = gaio__binding_enter(core);
    if (core->closing || core->closed) {
        gaio__binding_leave(core, token);
        free(c);
        *err = EBADF;
        return 0;
    }
    uint32_t slot;
    if (core->nfree) {
        slot = core->free_slots[--core->nfree];
    } else {
        if (core->nslots == core->cap_slots) {
            uint32_t cap = core->cap_slots ? core->cap_slots * 2 : 64;
            gaio_conn **s = gaio_realloc(core->slots, cap * sizeof *s);
            if (s)
                core->slots = s;
            uint32_t *g = s ? gaio_realloc(core->slot_gen, cap * sizeof *g) : NULL;
            if (g)
                core->slot_gen = g;
            uint32_t *f = g ? gaio_realloc(core->free_slots, cap * sizeof *f) : NULL;
            if (f)
                core->free_slots = f;
            /* room to queue a free() for every connection: free() never allocates */
            uint64_t *q = !f                       ? NULL
                          : cap <= core->cap_frees ? core->frees
                                                   : gaio_realloc(core->frees, cap * sizeof *q);
            if (q)
                core->frees = q;
            /* and to restart the standing read of every connection (R21) */
            uint64_t *rl = q ? gaio_realloc(core->released, cap * sizeof *rl) : NULL;
            if (!rl) {
                gaio__binding_leave(core, token);
                free(c);
                *err = ENOMEM;
                return 0;
            }
            core->released = rl;
            if (cap > core->cap_frees)
                core->cap_frees = cap;
            core->cap_slots = cap;
        }
        slot = core->nslots++;
        core->slot_gen[slot] = 1;
    }
    c->fd = fd;
    c->slot = slot;
    c->gen = core->slot_gen[slot];
    core->slots[slot] = c;
    int rc = core->engine->watch(core->engine_state, c);
    if (rc < 0) {
        core->slots[slot] = NULL;
        core->free_slots[core->nfree++] = slot;
        gaio__binding_leave(core, token);
        free(c);
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
    core->slots[c->slot] = NULL;
    /* generation 0 is never used, so an id of 0 means "no connection" */
    if (++core->slot_gen[c->slot] == 0)
        core->slot_gen[c->slot] = 1;
    core->free_slots[core->nfree++] = c->slot;
    free(c);
}

static void conn_maybe_release(gaio_core *core, gaio_conn *c)
{
    if (c->closing && !c->engine_busy && !c->head[0] && !c->head[1])
        conn_release_slot(core, c);
}

gaio_req *gaio_conn_head(gaio_conn *c, int kind)
{
    gaio_req *r = c->head[kind];
    if (!r || r->state != GAIO_REQ_QUEUED || (r->flags & (GAIO_F_HELD | GAIO_F_BACKOFF)))
        return NULL;
    /* R17: reads start when the connect succeeded */
    if (kind == GAIO_READ && c->head[GAIO_WRITE] && c->head[GAIO_WRITE]->op == GAIO_OP_CONNECT)
        return NULL;
    return r;
}

static void queue_remove(gaio_conn *c, gaio_req *r)
{
    int k = r->kind;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->head[k] = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        c->tail[k] = r->prev;
    r->next = r->prev = NULL;
}

/* ---- results ---- */

static int res_grow(gaio_core *core, uint64_t need)
{
    if (need <= core->cap_res)
        return 0;
    uint64_t cap = core->cap_res ? (uint64_t)core->cap_res * 2 : 64;
    if (cap < need)
        cap = need;
    if (cap > UINT32_MAX / 2)
        return -1;
    gaio_result *a = gaio_realloc(core->res, cap * sizeof *a);
    if (!a)
        return -1;
    core->res = a;
    core->cap_res = (uint32_t)cap;
    return 0;
}

int gaio_core_arrival_room(gaio_core *core)
{
    /* the reserve is the last result of every live request */
    return res_grow(core, (uint64_t)core->nres + core->res_reserved + 1) == 0;
}

/* r's last result (r->error set); its room was reserved at submit. */
static void done_append(gaio_core *core, gaio_req *r)
{
    r->state = GAIO_REQ_DONE;
    r->next = r->prev = NULL;
    int fd = r->op == GAIO_OP_ACCEPT && !(r->flags & GAIO_F_REPEAT) && r->error == 0
                 ? r->u.accepted_fd : -1;
    core->res_reserved--;
    core->res[core->nres++] = (gaio_result){
        .req = r, .ptr = r->ibuf_ptr, .size = r->done, .error = r->error, .fd = fd, .final = 1,
        .silent = (r->flags & GAIO_F_QUIET) && r->error == 0,
    };
}

static void req_complete(gaio_core *core, gaio_req *r, int error);

/* A result of standing request r that leaves it queued. The engine asked
 * gaio_core_arrival_room before the I/O; should there be no room after all,
 * r ends with ENOMEM rather than lose what arrived silently. */
static void arrival(gaio_core *core, gaio_req *r, unsigned char *ptr, size_t size, int error, int fd)
{
    gaio_result *last = core->nres ? &core->res[core->nres - 1] : NULL;
    gaio_standing_touch(r);
    if (last && last->req == r && !last->final && ptr && last->ptr && !last->error &&
        last->ptr + last->size == ptr) {
        last->size += size; /* one pass over a socket, contiguous: one result */
        return;
    }
    if (!gaio_core_arrival_room(core)) {
        if (fd >= 0)
            close(fd);
        req_complete(core, r, ENOMEM);
        return;
    }
    core->res[core->nres++] = (gaio_result){
        .req = r, .ptr = ptr, .size = size, .error = error, .fd = fd, .final = 0, .silent = 0};
}

/* seq a came before seq b (they wrap) */
static int before(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

/* Take r off its connection (and the heap) and append it to the results. */
static void req_complete(gaio_core *core, gaio_req *r, int error)
{
    gaio_conn *c = r->conn;
    int k = r->kind;
    int was_cancelling = r->state == GAIO_REQ_CANCELLING;
    gaio__heap_remove(core, r);
    queue_remove(c, r);
    if (r->flags & GAIO_F_BACKOFF)
        core->nbackoff--;
    r->flags &= ~(GAIO_F_HELD | GAIO_F_BACKOFF);
    if (k == GAIO_WRITE)
        gaio__bp_write_ended(core, r);
    r->error = error;
    if (error == GAIO_ERR_DEADLINE)
        core->stats.timeouts++;
    done_append(core, r);
    /* Requests whose deadline passed while this head was being cancelled end
     * right after it, in queue order (R3: none overtook it). Those still
     * queued between them have later deadlines or none: overtaking them is
     * allowed. */
    for (gaio_req *q = was_cancelling ? c->head[k] : NULL, *next; q; q = next) {
        next = q->next;
        if (q->state == GAIO_REQ_EXPIRED) {
            queue_remove(c, q);
            if (k == GAIO_WRITE)
                gaio__bp_write_ended(core, q);
            if (q->error == GAIO_ERR_DEADLINE)
                core->stats.timeouts++;
            done_append(core, q);
        }
    }
    /* A freed connection's requests end in queue order: those behind a head
     * the engine had to cancel (see conn_close) follow it now. */
    while (c->closing && (r = c->head[k]) && r->state == GAIO_REQ_QUEUED) {
        gaio__heap_remove(core, r);
        queue_remove(c, r);
        if (k == GAIO_WRITE)
            gaio__bp_write_ended(core, r);
        r->error = GAIO_ERR_CLOSED;
        done_append(core, r);
    }
    if (k == GAIO_READ)
        gaio__bp_read_head(core, c); /* a standing read may be the head now */
}

static void start_next(gaio_core *core, gaio_conn *c, int kind);
static void connect_finished(gaio_core *core, gaio_req *r, int error);

/* Connect r ended (R17): on success the reads queued behind it start (the
 * writes go on as after any write); on failure everything queued behind it
 * ends with its error, in request order. */
static void connect_done(gaio_core *core, gaio_conn *c, int error)
{
    if (c->closing)
        return;
    if (!error) {
        start_next(core, c, GAIO_READ);
        return;
    }
    for (;;) {
        gaio_req *rd = c->head[GAIO_READ], *wr = c->head[GAIO_WRITE];
        if (rd && rd->state != GAIO_REQ_QUEUED)
            rd = NULL;
        if (wr && wr->state != GAIO_REQ_QUEUED)
            wr = NULL;
        gaio_req *r = rd && (!wr || before(rd->seq, wr->seq)) ? rd : wr;
        if (!r)
            return;
        req_complete(core, r, error);
    }
}

/* The core removed the head of c's kind queue: tell the engine about the next. */
static void start_next(gaio_core *core, gaio_conn *c, int kind)
{
    if (!c->closing && c->head[kind] && c->head[kind]->state == GAIO_REQ_QUEUED)
        core->engine->start(core->engine_state, c, kind);
}

/* End r early with error: at once, or once the engine has it back. */
static void req_abort(gaio_core *core, gaio_req *r, int error)
{
    gaio_conn *c = r->conn;
    if (r->state == GAIO_REQ_CANCELLING) {
        if (error == GAIO_ERR_CLOSED)
            r->cancel_reason = error;
        gaio__heap_remove(core, r);
        return;
    }
    int was_head = c->head[r->kind] == r;
    int cancel = was_head ? core->engine->cancel(core->engine_state, r) : 0;
    if (cancel == 1) {
        core->cancels++;
        r->state = GAIO_REQ_CANCELLING;
        r->cancel_reason = error;
        gaio__heap_remove(core, r);
        return;
    }
    if (cancel == 2) {
        /* the engine's last try finished r (end of stream, error, all bytes) */
        start_next(core, c, r->kind);
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
        connect_finished(core, r, error);
    else
        req_complete(core, r, error);
    if (was_head)
        start_next(core, c, r->kind);
}

/* ---- the engine's callbacks ---- */

static int req_finished(const gaio_req *r)
{
    if (r->kind == GAIO_WRITE || r->full)
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

static void connect_finished(gaio_core *core, gaio_req *r, int error)
{
    gaio_conn *c = r->conn;
    req_complete(core, r, error);
    connect_done(core, c, error);
}

/* R17: connect r, the head of its writes, found an AF_UNIX listener's backlog
 * full (EAGAIN). Nothing is in progress and no readiness will come (the
 * socket even polls writable, unconnected): it waits, watching nothing, and
 * serve_backoff tries again after GAIO_CONNECT_RETRY_NS, as a blocking
 * connect would wait; its deadline or a free() ends it meanwhile. */
static void connect_backoff(gaio_core *core, gaio_req *r, int64_t now)
{
    r->error = 0;
    r->flags |= GAIO_F_BACKOFF;
    r->u.c.retry_ns = now + GAIO_CONNECT_RETRY_NS;
    if (!core->nbackoff++ || r->u.c.retry_ns < core->backoff_ns)
        core->backoff_ns = r->u.c.retry_ns;
}

static void connect_retry(gaio_core *core, gaio_conn *c, gaio_req *r, int64_t now)
{
    int rc;
    do
        rc = connect(c->fd, r->u.c.addr, r->u.c.addrlen);
    while (rc < 0 && errno == EINTR);
    int err = rc < 0 ? errno : 0;
    if (err == EAGAIN) {
        connect_backoff(core, r, now);
    } else if (err == EINPROGRESS || err == EALREADY) {
        core->engine->start(core->engine_state, c, GAIO_WRITE);
    } else {
        connect_finished(core, r, err);
        start_next(core, c, GAIO_WRITE);
    }
}

static int progress_common(gaio_core *core, gaio_req *r, ssize_t res)
{
    if (res > 0) {
        if (r->kind == GAIO_READ) {
            core->stats.bytes_read += (uint64_t)res;
            if (r->flags & GAIO_F_REPEAT) {
                arrival(core, r, r->ibuf_ptr, (size_t)res, 0, -1);
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
        req_complete(core, r, 0);
        return 1;
    }
    if (r->state == GAIO_REQ_CANCELLING)
        return 0; /* the engine calls gaio_core_finish next */
    if (r->op == GAIO_OP_CONNECT) {
        connect_finished(core, r, (int)-res);
        return 1;
    }
    if (res == 0) {
        if (r->kind == GAIO_WRITE) {
            if (!req_finished(r)) {
                if (r->op != GAIO_OP_SENDFILE)
                    return 0;
                req_complete(core, r, GAIO_ERR_EOF); /* the file ended before count bytes */
                return 1;
            }
            req_complete(core, r, 0);
            return 1;
        }
        req_complete(core, r, GAIO_ERR_EOF);
        return 1;
    }
    req_complete(core, r, (int)-res);
    return 1;
}

int gaio_core_accepted(gaio_core *core, gaio_req *r, int res)
{
    if (res >= 0) {
        core->stats.accepted++;
        if (r->flags & GAIO_F_REPEAT) {
            arrival(core, r, NULL, 0, 0, res);
            return r->state == GAIO_REQ_DONE;
        }
        r->u.accepted_fd = res;
        req_complete(core, r, 0);
        return 1;
    }
    if (res == -ECONNABORTED || res == -EINTR || res == -EAGAIN || res == -EWOULDBLOCK)
        return 0; /* only the connection being accepted is concerned: accept again */
    if (!(r->flags & GAIO_F_REPEAT) || !gaio_resource_error(-res) || r->state != GAIO_REQ_QUEUED) {
        req_complete(core, r, -res);
        return 1;
    }
    /* R16: a standing accept survives descriptor exhaustion without spinning */
    int64_t now = gaio_now_ns();
    if (now - r->u.st.reported_ns >= GAIO_ACCEPT_RETRY_NS) {
        r->u.st.reported_ns = now;
        arrival(core, r, NULL, 0, -res, -1);
        if (r->state == GAIO_REQ_DONE)
            return 1;
    }
    r->flags |= GAIO_F_BACKOFF;
    r->u.st.retry_ns = now + GAIO_ACCEPT_RETRY_NS;
    if (!core->nbackoff++ || r->u.st.retry_ns < core->backoff_ns)
        core->backoff_ns = r->u.st.retry_ns;
    core->fd_closed = 0; /* only a descriptor closed from now on counts */
    return 0;
}

int gaio_core_progress(gaio_core *core, gaio_req *r, ssize_t res)
{
    if (res > 0 && !r->buf && r->kind == GAIO_READ) {
        /* committed where gaio_core_ibuf_reserve pointed */
        r->ibuf_ptr = core->chunk[core->chunk_cur] + core->chunk_off;
        core->chunk_off += (size_t)res;
        core->ibuf_out += (size_t)res;
    }
    return progress_common(core, r, res);
}

void gaio_core_finish(gaio_core *core, gaio_req *r)
{
    gaio_conn *c = r->conn;
    int was_head = c->head[r->kind] == r;
    if (r->op == GAIO_OP_CONNECT)
        connect_finished(core, r, r->cancel_reason);
    else
        req_complete(core, r, r->cancel_reason);
    if (was_head)
        start_next(core, c, r->kind);
    conn_maybe_release(core, c);
}

void gaio_core_conn_idle(gaio_core *core, gaio_conn *c)
{
    c->engine_busy = 0;
    conn_maybe_release(core, c);
}

/* ---- requests in, results out ---- */

static void drain_incoming(gaio_core *core);

/* R23: no thread waits and fileno() was asked: its descriptor must become
 * readable for what a request or a free() made this thread do (results, a
 * read owed to the next wait, a submission to make). Once per wait. */
static void notify(gaio_core *core)
{
    if (core->notify && !core->waiting && !core->notified) {
        core->notified = 1;
        core->engine->wake(core->engine_state);
    }
}

static void wake_waiter(gaio_core *core)
{
    if (core->sleeping && !core->woken) {
        core->woken = 1;
        core->engine->wake(core->engine_state);
    }
}

ssize_t gaio_core_try_send(gaio_core *core, uint64_t id, const void *buf, size_t len)
{
    void *token = gaio__binding_enter(core);
    ssize_t n = 0;
    gaio_conn *c;
    /* Nothing may go out before what is queued: no write of this connection
     * waits, and no request of any (incoming) is still on its way. */
    if (core->engine->direct_send && !core->closing && !core->closed && !core->incoming_head &&
        (c = gaio_core_conn(core, id)) && c->fd >= 0 && !c->head[GAIO_WRITE]) {
        do
            n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            n = 0; /* full, or an error the request will meet again and report */
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
    r->heap_index = GAIO__NO_HEAP;
    if (r->kind != GAIO_WRITE)
        r->done = 0; /* a write's may count what gaio_core_try_send sent */
    if (r->op != GAIO_OP_CONNECT)
        r->error = 0; /* a connect's says how connect() went */
    r->conn = NULL;
    r->ibuf_ptr = NULL;
    r->next = NULL;
    void *token = gaio__binding_enter(core);
    if (core->closing || core->closed) {
        /* closed by another thread while this one waited for the lock */
        gaio__binding_leave(core, token);
        return -1;
    }
    /* room for its last result and its deadline is taken now, in the
     * caller's thread, where failing is a MemoryError and not a lost result */
    if (res_grow(core, (uint64_t)core->nres + core->res_reserved + 1) != 0) {
        gaio__binding_leave(core, token);
        return -ENOMEM;
    }
    if (r->deadline_ns != GAIO_NO_DEADLINE) {
        if (gaio__heap_reserve(core, (uint64_t)core->nheap + core->heap_promised + 1) != 0) {
            gaio__binding_leave(core, token);
            return -ENOMEM;
        }
        core->heap_promised++;
    }
    core->res_reserved++;
    r->seq = core->next_seq++;
    if (r->flags & GAIO_F_REPEAT)
        r->u.st.active_ns = gaio_now_ns();
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
        drain_incoming(core);
    else
        wake_waiter(core);
    notify(core);
    gaio__binding_leave(core, token);
    return 0;
}

static void conn_close(gaio_core *core, gaio_conn *c)
{
    gaio_req *h = c->head[GAIO_WRITE];
    if (h && h->op == GAIO_OP_CONNECT && h->state == GAIO_REQ_QUEUED)
        req_abort(core, h, GAIO_ERR_CLOSED); /* R17: its result first, then the rest in request order */
    c->closing = 1;
    for (int k = 0; k < 2; k++) {
        /* Only the head is aborted: req_complete ends the rest behind it, at
         * once or after an in-flight head's cancellation (io_uring), so no
         * deadline may jump the queue meanwhile. */
        for (gaio_req *r = c->head[k]; r; r = r->next)
            gaio__heap_remove(core, r);
        if (c->head[k])
            req_abort(core, c->head[k], GAIO_ERR_CLOSED);
    }
    c->engine_busy = core->engine->unwatch(core->engine_state, c) == 1;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        core->fd_closed = core->nbackoff != 0; /* R16: standing accepts may try again */
    }
    core->stats.watched--;
    conn_maybe_release(core, c);
}

/* Move requests from other threads onto their connections; run queued frees. */
static void drain_incoming(gaio_core *core)
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
        gaio_conn *c = gaio_core_conn(core, r->conn_id);
        r->next = r->prev = NULL;
        r->state = GAIO_REQ_QUEUED;
        if (r->deadline_ns != GAIO_NO_DEADLINE)
            core->heap_promised--;
        if (!c) {
            /* its connection went away after the request was made */
            r->error = GAIO_ERR_CLOSED;
            done_append(core, r);
            r = next;
            continue;
        }
        r->conn = c;
        if (r->deadline_ns != GAIO_NO_DEADLINE && gaio__heap_push(core, r) != 0) {
            /* cannot happen (gaio_core_submit reserved the room); never drop
             * the deadline: a request that could wait forever fails now */
            r->error = ENOMEM;
            done_append(core, r);
            r = next;
            continue;
        }
        int k = r->kind;
        r->prev = c->tail[k];
        if (c->tail[k])
            c->tail[k]->next = r;
        else
            c->head[k] = r;
        c->tail[k] = r;
        if (k == GAIO_WRITE)
            gaio__bp_write_queued(core, r);
        else
            gaio__bp_read_head(core, c);
        if (r->op == GAIO_OP_CONNECT) {
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
            connect_backoff(core, r, gaio_now_ns()); /* the AF_UNIX backlog is full */
        } else if (r->error != EINPROGRESS) {
            connect_finished(core, r, r->error); /* connect() told at once */
            start_next(core, c, GAIO_WRITE);
        } else {
            r->error = 0;
            core->engine->start(core->engine_state, c, GAIO_WRITE);
        }
    }
    gaio__bp_restart_released(core);
    for (uint32_t i = 0; i < core->nfrees; i++) {
        gaio_conn *c = gaio_core_conn(core, core->frees[i]);
        if (c)
            conn_close(core, c);
    }
    if (core->nfrees) {
        core->frees_done += core->nfrees;
        core->nfrees = 0;
        pthread_cond_broadcast(&core->idle);
    }
}

/* When standing request r's idle limit runs out: its heap key may be
 * earlier, as it moves only when it comes up (R20). The limit counts from the
 * last result, and not while back-pressure holds r (R21). */
static int64_t standing_due(const gaio_req *r, int64_t now)
{
    int64_t when = (r->flags & GAIO_F_HELD) ? now : r->u.st.active_ns;
    when = when > GAIO_NO_DEADLINE - r->u.st.idle_ns ? GAIO_NO_DEADLINE : when + r->u.st.idle_ns;
    return when > r->u.st.until_ns ? r->u.st.until_ns : when;
}

/* Move the standing requests at the top of the heap to their real
 * deadlines, so that heap[0] is the earliest one (next_timeout, R23). */
static void heap_settle(gaio_core *core, int64_t now)
{
    while (core->nheap) {
        gaio_req *r = core->heap[0];
        if (!(r->flags & GAIO_F_REPEAT) || !r->u.st.idle_ns)
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
        if ((r->flags & GAIO_F_REPEAT) && r->u.st.idle_ns) {
            int64_t when = standing_due(r, now);
            if (when > now) {
                gaio__heap_rekey(core, r, when);
                continue;
            }
        }
        /* The heap leaves equal deadlines in no set order: end the requests
         * queued ahead of r with the same deadline first (R3). Linked in the
         * queue and still in the heap means still waiting. */
        while (r->prev && r->prev->heap_index != GAIO__NO_HEAP && r->prev->deadline_ns <= r->deadline_ns)
            r = r->prev;
        req_abort(core, r, GAIO_ERR_DEADLINE);
    }
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
        conn_close(core, c);
    notify(core);
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
    while (wait_done && core->waiting && core->frees_done < ticket && !core->closed)
        gaio__binding_wait_idle(core, &token);
    gaio__binding_leave(core, token);
}

void gaio_core_free(gaio_core *core, uint64_t id) { free_conn(core, id, 1); }
void gaio_core_release(gaio_core *core, uint64_t id) { free_conn(core, id, 0); }

/* The engine's wait in ns: -1 for no limit, else until the earlier of
 * until_ns and the first deadline (any time, negative ones included). */
/* R16: standing accepts whose backoff is over, or all after a descriptor was
 * closed; R17: connects whose time to try again came (time only: a closed
 * descriptor makes no room in another socket's backlog). */
static void serve_backoff(gaio_core *core, int64_t now)
{
    if (!core->nbackoff || (!core->fd_closed && now < core->backoff_ns))
        return;
    int all = core->fd_closed;
    core->fd_closed = 0;
    int64_t next = GAIO_NO_DEADLINE;
    core->backoff_ns = GAIO_NO_DEADLINE; /* a request that backs off again sets it */
    uint32_t s = 0;
    for (gaio_conn *c; core->nbackoff && (c = gaio_core_next_conn(core, &s));) {
        gaio_req *r = c->head[GAIO_WRITE];
        if (r && (r->flags & GAIO_F_BACKOFF)) {
            if (now >= r->u.c.retry_ns) {
                r->flags &= ~GAIO_F_BACKOFF;
                core->nbackoff--;
                connect_retry(core, c, r, now);
                if (c->head[GAIO_WRITE] == r && (r->flags & GAIO_F_BACKOFF) && r->u.c.retry_ns < next)
                    next = r->u.c.retry_ns;
            } else if (r->u.c.retry_ns < next) {
                next = r->u.c.retry_ns;
            }
        }
        r = c->head[GAIO_READ];
        if (!r || !(r->flags & GAIO_F_BACKOFF))
            continue;
        if (all || now >= r->u.st.retry_ns) {
            r->flags &= ~GAIO_F_BACKOFF;
            core->nbackoff--;
            start_next(core, c, GAIO_READ);
        } else if (r->u.st.retry_ns < next) {
            next = r->u.st.retry_ns;
        }
    }
    if (next < core->backoff_ns)
        core->backoff_ns = next;
}

static int64_t first_deadline(gaio_core *core)
{
    if (core->nheap && (core->heap[0]->flags & GAIO_F_REPEAT))
        heap_settle(core, gaio_now_ns());
    int64_t until = core->nheap ? core->heap[0]->deadline_ns : GAIO_NO_DEADLINE;
    if (core->nbackoff && core->backoff_ns < until)
        until = core->backoff_ns;
    return until;
}

static int64_t engine_timeout(gaio_core *core, int64_t until_ns)
{
    if (core->nres || core->incoming_head || core->nfrees || (core->nbackoff && core->fd_closed))
        return 0;
    int64_t until = until_ns;
    int64_t first = first_deadline(core); /* once: it may settle the heap's top */
    if (first < until)
        until = first;
    if (until == GAIO_NO_DEADLINE)
        return -1;
    int64_t now = gaio_now_ns();
    return until > now ? until - now : 0;
}

int gaio_core_wait(gaio_core *core, int64_t until_ns, int stop_before_sleep,
                   const sigset_t *sigmask)
{
    int rc;
    pthread_mutex_lock(&core->lock);
    core->waiting = 1;
    core->notified = 0;
    int cancel_round = 0;
    for (;;) {
        if (core->closing || core->closed) {
            rc = GAIO_WAIT_CLOSED;
            break;
        }
        drain_incoming(core);
        if (core->nbackoff)
            serve_backoff(core, gaio_now_ns());
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
        int erc = core->engine->wait(core->engine_state, timeout, sigmask);
        core->sleeping = 0;
        core->stats.wakeups++;
        gaio__bp_restart_released(core);
        int64_t now = gaio_now_ns();
        uint64_t cancels = core->cancels;
        expire_deadlines(core, now);
        if (core->nbackoff)
            serve_backoff(core, now);
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
        drain_incoming(core);
    core->waiting = 0;
    pthread_cond_broadcast(&core->idle);
    pthread_mutex_unlock(&core->lock);
    return rc;
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
    int64_t until = first_deadline(core);
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
    /* collect every request first: conn_close would move them to done */
    for (gaio_req *r = core->incoming_head, *n; r; r = n) {
        n = r->next;
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
    core->nres = 0;
    for (uint32_t s = 0; s < core->nslots; s++) {
        gaio_conn *c = core->slots[s];
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
        gaio_conn *c = core->slots[s];
        if (!c)
            continue;
        for (int k = 0; k < 2; k++)
            for (gaio_req *r = c->head[k], *n; r; r = n) {
                n = r->next;
                chain(&all, r);
            }
        core->slots[s] = NULL;
        free(c);
    }
    core->nheap = 0;
    core->heap_promised = 0;
    core->res_reserved = 0;
    core->nbackoff = 0;
    core->nfrees = 0;
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
    free(core->slots);
    free(core->slot_gen);
    free(core->free_slots);
    free(core->frees);
    free(core->released);
    free(core->heap);
    free(core->res);
    pthread_cond_destroy(&core->idle);
    pthread_mutex_destroy(&core->lock);
    free(core);
}
