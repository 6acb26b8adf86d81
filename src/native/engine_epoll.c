/* The epoll engine (Linux >= 2.6.22 for eventfd, 2.6.17 for EPOLLRDHUP).
 *
 * Techniques:
 *   - edge-triggered registration, once per connection at delegation:
 *     EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, data.u64 = slot | gen << 32,
 *     so an event for a freed or reused slot is recognised and dropped;
 *   - readiness remembered per connection and the non-blocking recv /
 *     send(MSG_NOSIGNAL) done for the head requests: readiness.c, shared with
 *     kqueue (a new head is tried at once, before any epoll_wait);
 *   - eventfd for wake-ups from other threads (level-triggered, drained);
 *   - epoll_pwait with wait_io()'s signal mask (signals.c).
 * Kernel facts relied on:
 *   - closing our (only) descriptor of a socket removes it from the epoll set;
 *     we still EPOLL_CTL_DEL first since the caller may hold a dup (see trio's
 *     _io_epoll.py essay on dup'ed descriptors) - ours never leak, theirs are
 *     closed by delegation, but a fork may keep one.
 */
#include "readiness.h"

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

#define WAKE_ID 0 /* generation 0 is never a connection's */
#define MAX_EVENTS 256

typedef struct {
    gaio_core *core;
    gaio_ready rd;
    int epfd, evfd;
    struct epoll_event events[MAX_EVENTS];
} epoll_state;

static int ep_create(gaio_core *core, void **out, char *why, size_t whylen)
{
    epoll_state *st = gaio_calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    st->core = core;
    gaio_ready_init(&st->rd, core);
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    st->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_ID};
    if (st->epfd < 0 || st->evfd < 0 || epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->evfd, &ev) < 0) {
        int err = errno;
        snprintf(why, whylen, "epoll unavailable: %s", strerror(err));
        if (st->epfd >= 0)
            close(st->epfd);
        if (st->evfd >= 0)
            close(st->evfd);
        free(st);
        return gaio_resource_error(err) ? err : -1;
    }
    *out = st;
    return 0;
}

static void ep_destroy(void *state)
{
    epoll_state *st = state;
    close(st->epfd);
    close(st->evfd);
    gaio_ready_free(&st->rd);
    free(st);
}

static int ep_watch(void *state, gaio_conn *c)
{
    epoll_state *st = state;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = gaio_conn_id(c)};
    if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        return -errno;
    c->engine_flags = GAIO_MAY_READ | GAIO_MAY_WRITE; /* optimistic: a failed try costs one EAGAIN */
    return 0;
}

static int ep_unwatch(void *state, gaio_conn *c)
{
    epoll_state *st = state;
    if (c->fd >= 0)
        epoll_ctl(st->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    return 0;
}

static void ep_start(void *state, gaio_conn *c, int kind)
{
    epoll_state *st = state;
    gaio_ready_start(&st->rd, c, kind);
}

static int ep_cancel(void *state, gaio_req *r)
{
    return 0; /* nothing is ever in flight in the kernel */
}

static void ep_wake(void *state)
{
    epoll_state *st = state;
    uint64_t one = 1;
    if (write(st->evfd, &one, sizeof one) < 0) { /* counter full: a wake is pending anyway */ }
}

static int ep_wait(void *state, int64_t timeout_ns, const sigset_t *sigmask)
{
    epoll_state *st = state;
    gaio_ready_retry(&st->rd);
    int ms = gaio_ready_timeout_ms(&st->rd, timeout_ns);
    gaio_core_unlock(st->core);
    int n = epoll_pwait(st->epfd, st->events, MAX_EVENTS, ms, sigmask);
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
            c->engine_flags |= GAIO_HUP | GAIO_MAY_READ;
        if (ev & EPOLLIN)
            c->engine_flags |= GAIO_MAY_READ;
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            c->engine_flags |= GAIO_MAY_WRITE;
        gaio_ready_reads(&st->rd, c);
        gaio_ready_writes(&st->rd, c);
    }
    if (gaio_core_fileno_asked(st->core) && gaio_ready_owed(&st->rd))
        ep_wake(st); /* fileno() stays readable: work is left for the next wait */
    return n;
}

static int ep_fileno(void *state)
{
    epoll_state *st = state;
    return st->epfd; /* readable while an event is ready, the wake eventfd's included */
}

const gaio_engine_ops gaio_engine_epoll = {
    .name = "epoll",
    .wait_sigmask = 1,
    .create = ep_create,
    .destroy = ep_destroy,
    .watch = ep_watch,
    .unwatch = ep_unwatch,
    .start = ep_start,
    .cancel = ep_cancel,
    .wait = ep_wait,
    .wake = ep_wake,
    .fileno = ep_fileno,
    .send_now = gaio_ready_send_now,
};

#else /* not Linux */

static int ep_unavailable(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "epoll exists only on Linux");
    return -1;
}

const gaio_engine_ops gaio_engine_epoll = {.name = "epoll", .create = ep_unavailable};

#endif
