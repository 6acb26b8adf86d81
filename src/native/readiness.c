/* Non-blocking I/O for the readiness engines; see readiness.h. */
#include "readiness.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/socket.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: engine_kqueue.c sets SO_NOSIGPIPE at watch() */
#endif

void gaio_ready_init(gaio_ready *rd, gaio_core *core)
{
    rd->core = core;
    rd->todo = rd->todo_spare = NULL;
    rd->ntodo = rd->cap_todo = 0;
    rd->rescan = 0;
}

void gaio_ready_free(gaio_ready *rd)
{
    free(rd->todo);
    free(rd->todo_spare);
    rd->todo = rd->todo_spare = NULL;
}

static void todo_add(gaio_ready *rd, gaio_conn *c)
{
    if (c->engine_flags & GAIO_IN_TODO)
        return;
    if (rd->ntodo == rd->cap_todo) {
        uint32_t cap = rd->cap_todo ? rd->cap_todo * 2 : 64;
        uint64_t *t = gaio_realloc(rd->todo, cap * sizeof *t);
        if (t)
            rd->todo = t;
        uint64_t *s = t ? gaio_realloc(rd->todo_spare, cap * sizeof *s) : NULL;
        if (!s) {
            /* No edge may ever come for bytes already waiting: the next
             * retry looks at every connection instead of the list. */
            rd->rescan = 1;
            return;
        }
        rd->todo_spare = s;
        rd->cap_todo = cap;
    }
    rd->todo[rd->ntodo++] = gaio_conn_id(c);
    c->engine_flags |= GAIO_IN_TODO;
}

ssize_t gaio_recv_head(gaio_core *core, gaio_conn *c, gaio_req *r, int *short_read)
{
    unsigned char *ptr;
    size_t want;
    *short_read = 0;
    if (r->buf) {
        ptr = r->buf + r->done;
        want = r->len - r->done;
    } else {
        ssize_t room = gaio_core_ibuf_reserve(core, &ptr);
        if (room < 0) {
            /* no memory for the bytes: nothing was read, the request fails */
            gaio_core_progress(core, r, room);
            return room;
        }
        if (room == 0)
            return GAIO_RECV_NO_ROOM;
        want = (size_t)room;
    }
    ssize_t n;
    do
        n = recv(c->fd, ptr, want, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return -EAGAIN;
    if (n < 0)
        n = -errno;
    *short_read = n > 0 && (size_t)n < want;
    gaio_core_progress(core, r, n);
    return n;
}

void gaio_ready_reads(gaio_ready *rd, gaio_conn *c)
{
    gaio_req *r;
    while ((c->engine_flags & GAIO_MAY_READ) && (r = gaio_conn_head(c, GAIO_READ))) {
        int short_read;
        ssize_t n = gaio_recv_head(rd->core, c, r, &short_read);
        if (n == GAIO_RECV_NO_ROOM) {
            todo_add(rd, c); /* this batch's internal buffer is spent */
            return;
        }
        if (n == -EAGAIN || (short_read && !(c->engine_flags & GAIO_HUP)))
            c->engine_flags &= ~GAIO_MAY_READ;
        else if (n <= 0 && n != -ENOMEM)
            c->engine_flags |= GAIO_HUP; /* end of stream or a socket error */
    }
}

void gaio_ready_writes(gaio_ready *rd, gaio_conn *c)
{
    gaio_req *r;
    while ((c->engine_flags & GAIO_MAY_WRITE) && (r = gaio_conn_head(c, GAIO_WRITE))) {
        size_t want = r->len - r->done;
        ssize_t n = send(c->fd, r->buf + r->done, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->engine_flags &= ~GAIO_MAY_WRITE;
                return;
            }
            gaio_core_progress(rd->core, r, -errno);
            continue;
        }
        if ((size_t)n < want)
            c->engine_flags &= ~GAIO_MAY_WRITE;
        gaio_core_progress(rd->core, r, n);
    }
}

void gaio_ready_start(gaio_ready *rd, gaio_conn *c, int kind)
{
    if (c->closing || c->fd < 0)
        return;
    if (kind == GAIO_READ)
        gaio_ready_reads(rd, c);
    else
        gaio_ready_writes(rd, c);
}

/* todo_add could not grow the list: every connection whose internal-buffer
 * read waits is tried (only after an allocation failed). */
static void retry_all(gaio_ready *rd)
{
    gaio_core *core = rd->core;
    rd->rescan = 0;
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(core, &s));) {
        gaio_req *r;
        if (!c->closing && c->fd >= 0 && !(c->engine_flags & GAIO_IN_TODO) &&
            (r = gaio_conn_head(c, GAIO_READ)) && !r->buf)
            gaio_ready_reads(rd, c);
        if (rd->rescan || !gaio_core_ibuf_room(core)) {
            rd->rescan = 1; /* the rest at the next retry */
            return;
        }
    }
}

void gaio_ready_retry(gaio_ready *rd)
{
    if (rd->rescan && gaio_core_ibuf_room(rd->core))
        retry_all(rd);
    if (!rd->ntodo || !gaio_core_ibuf_room(rd->core))
        return;
    uint32_t n = rd->ntodo;
    uint64_t *ids = rd->todo;
    rd->todo = rd->todo_spare;
    rd->todo_spare = ids;
    rd->ntodo = 0;
    for (uint32_t i = 0; i < n; i++) {
        gaio_conn *c = gaio_core_conn(rd->core, ids[i]);
        if (!c)
            continue;
        c->engine_flags &= ~GAIO_IN_TODO;
        gaio_ready_reads(rd, c);
    }
}

int gaio_ready_timeout_ms(gaio_ready *rd, int64_t timeout_ns)
{
    if (gaio_core_has_results(rd->core))
        return 0;
    if (rd->rescan && (timeout_ns < 0 || timeout_ns > 10000000))
        timeout_ns = 10000000; /* a retry is owed (todo_add failed): come back soon */
    if (timeout_ns < 0)
        return -1;
    if (timeout_ns >= (int64_t)INT_MAX * 1000000)
        return INT_MAX;
    return (int)((timeout_ns + 999999) / 1000000);
}
