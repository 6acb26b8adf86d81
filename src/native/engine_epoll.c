/* The epoll engine (Linux >= 2.6.22 for eventfd, 2.6.17 for EPOLLRDHUP).
 *
 * Techniques:
 *   - edge-triggered registration, once per connection at delegation:
 *     EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, data.u64 = slot | gen << 32,
 *     so an event for a freed or reused slot is recognised and dropped;
 *   - readiness is remembered per connection (MAY_READ / MAY_WRITE): with ET
 *     the kernel reports an edge once, and gaio reads a connection only when a
 *     read request waits for it (back-pressure), possibly much later;
 *   - a new head request is tried at once (start), before any epoll_wait;
 *   - non-blocking recv / send(MSG_NOSIGNAL): a vanished peer is EPIPE, never
 *     SIGPIPE;
 *   - eventfd for wake-ups from other threads (level-triggered, drained).
 * Kernel facts relied on:
 *   - a short recv/send on a stream socket means the buffer was drained/filled;
 *     new data (or room) raises a new edge, so the flag can be cleared then.
 *     After EOF or an error the socket stays readable forever (HUP flag);
 *   - closing our (only) descriptor of a socket removes it from the epoll set;
 *     we still EPOLL_CTL_DEL first since the caller may hold a dup (see trio's
 *     _io_epoll.py essay on dup'ed descriptors) - ours never leak, theirs are
 *     closed by delegation, but a fork may keep one.
 */
#include "engine.h"

#include <stdio.h>
#include <string.h>

#if defined(__linux__)

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAY_READ = 1, MAY_WRITE = 2, HUP = 4, IN_TODO = 8 };
#define WAKE_ID 0 /* generation 0 is never a connection's */
#define MAX_EVENTS 256

typedef struct {
    gaio_core *core;
    int epfd, evfd;
    uint64_t *todo, *todo_spare;   /* connections to retry (internal buffer was full) */
    uint32_t ntodo, cap_todo;
    struct epoll_event events[MAX_EVENTS];
} epoll_state;

static int ep_create(gaio_core *core, void **out, char *why, size_t whylen)
{
    epoll_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    st->core = core;
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    st->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_ID};
    if (st->epfd < 0 || st->evfd < 0 || epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->evfd, &ev) < 0) {
        snprintf(why, whylen, "epoll unavailable: %s", strerror(errno));
        if (st->epfd >= 0)
            close(st->epfd);
        if (st->evfd >= 0)
            close(st->evfd);
        free(st);
        return -1;
    }
    *out = st;
    return 0;
}

static void ep_destroy(void *state)
{
    epoll_state *st = state;
    close(st->epfd);
    close(st->evfd);
    free(st->todo);
    free(st->todo_spare);
    free(st);
}

static int ep_watch(void *state, gaio_conn *c)
{
    epoll_state *st = state;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = gaio_conn_id(c)};
    if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        return -errno;
    c->engine_flags = MAY_READ | MAY_WRITE; /* optimistic: a failed try costs one EAGAIN */
    return 0;
}

static int ep_unwatch(void *state, gaio_conn *c)
{
    epoll_state *st = state;
    if (c->fd >= 0)
        epoll_ctl(st->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    return 0;
}

static void todo_add(epoll_state *st, gaio_conn *c)
{
    if (c->engine_flags & IN_TODO)
        return;
    if (st->ntodo == st->cap_todo) {
        uint32_t cap = st->cap_todo ? st->cap_todo * 2 : 64;
        uint64_t *t = realloc(st->todo, cap * sizeof *t);
        if (!t)
            return; /* retried at its next readiness edge instead */
        st->todo = t;
        uint64_t *s = realloc(st->todo_spare, cap * sizeof *s);
        if (!s)
            return;
        st->todo_spare = s;
        st->cap_todo = cap;
    }
    st->todo[st->ntodo++] = gaio_conn_id(c);
    c->engine_flags |= IN_TODO;
}

static void do_reads(epoll_state *st, gaio_conn *c)
{
    gaio_req *r;
    while ((c->engine_flags & MAY_READ) && (r = gaio_conn_head(c, GAIO_READ))) {
        unsigned char *ptr;
        size_t want;
        if (r->buf) {
            ptr = r->buf + r->done;
            want = r->len - r->done;
        } else if (!(want = gaio_core_swap_reserve(st->core, &ptr))) {
            todo_add(st, c); /* this batch's internal buffer is spent */
            return;
        }
        ssize_t n = recv(c->fd, ptr, want, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->engine_flags &= ~MAY_READ;
                return;
            }
            c->engine_flags |= HUP;
            gaio_core_progress(st->core, r, -errno);
            continue;
        }
        if (n == 0)
            c->engine_flags |= HUP;
        else if ((size_t)n < want && !(c->engine_flags & HUP))
            c->engine_flags &= ~MAY_READ;
        gaio_core_progress(st->core, r, n);
    }
}

static void do_writes(epoll_state *st, gaio_conn *c)
{
    gaio_req *r;
    while ((c->engine_flags & MAY_WRITE) && (r = gaio_conn_head(c, GAIO_WRITE))) {
        size_t want = r->len - r->done;
        ssize_t n = send(c->fd, r->buf + r->done, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->engine_flags &= ~MAY_WRITE;
                return;
            }
            gaio_core_progress(st->core, r, -errno);
            continue;
        }
        if ((size_t)n < want)
            c->engine_flags &= ~MAY_WRITE;
        gaio_core_progress(st->core, r, n);
    }
}

static void ep_start(void *state, gaio_conn *c, int kind)
{
    if (c->closing || c->fd < 0)
        return;
    if (kind == GAIO_READ)
        do_reads(state, c);
    else
        do_writes(state, c);
}

static int ep_cancel(void *state, gaio_req *r)
{
    return 0; /* nothing is ever in flight in the kernel */
}

static void retry_todo(epoll_state *st)
{
    uint32_t n = st->ntodo;
    uint64_t *ids = st->todo;
    st->todo = st->todo_spare;
    st->todo_spare = ids;
    st->ntodo = 0;
    for (uint32_t i = 0; i < n; i++) {
        gaio_conn *c = gaio_core_conn(st->core, ids[i]);
        if (!c)
            continue;
        c->engine_flags &= ~IN_TODO;
        do_reads(st, c);
    }
}

static int ep_wait(void *state, int64_t timeout_ns)
{
    epoll_state *st = state;
    if (st->ntodo && gaio_core_swap_room(st->core))
        retry_todo(st);
    if (gaio_core_has_results(st->core))
        timeout_ns = 0;
    int ms;
    if (timeout_ns < 0)
        ms = -1;
    else if (timeout_ns >= (int64_t)INT_MAX * 1000000)
        ms = INT_MAX;
    else
        ms = (int)((timeout_ns + 999999) / 1000000); /* round up: wait at least that long */
    gaio_core_unlock(st->core);
    int n = epoll_wait(st->epfd, st->events, MAX_EVENTS, ms);
    int err = errno;
    gaio_core_lock(st->core);
    if (n < 0)
        return -err;
    for (int i = 0; i < n; i++) {
        uint64_t id = st->events[i].data.u64;
        uint32_t ev = st->events[i].events;
        if (id == WAKE_ID) {
            uint64_t count;
            if (read(st->evfd, &count, sizeof count) < 0) { /* already drained */ }
            continue;
        }
        gaio_conn *c = gaio_core_conn(st->core, id);
        if (!c)
            continue; /* freed in this batch, or before */
        if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            c->engine_flags |= HUP | MAY_READ;
        if (ev & EPOLLIN)
            c->engine_flags |= MAY_READ;
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            c->engine_flags |= MAY_WRITE;
        do_reads(st, c);
        do_writes(st, c);
    }
    return n;
}

static void ep_wake(void *state)
{
    epoll_state *st = state;
    uint64_t one = 1;
    if (write(st->evfd, &one, sizeof one) < 0) { /* counter full: a wake is pending anyway */ }
}

const gaio_engine_ops gaio_engine_epoll = {
    .name = "epoll",
    .create = ep_create,
    .destroy = ep_destroy,
    .watch = ep_watch,
    .unwatch = ep_unwatch,
    .start = ep_start,
    .cancel = ep_cancel,
    .wait = ep_wait,
    .wake = ep_wake,
    .recycle = NULL,
};

#else /* not Linux */

static int ep_unavailable(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "epoll exists only on Linux");
    return -1;
}

const gaio_engine_ops gaio_engine_epoll = {.name = "epoll", .create = ep_unavailable};

#endif
