/* The kqueue engine (FreeBSD, NetBSD, OpenBSD, DragonFly, macOS): a mirror of
 * engine_epoll.c, which documents the shared techniques.
 *
 * Differences from epoll:
 *   - EV_CLEAR on EVFILT_READ and EVFILT_WRITE gives edge-triggered events;
 *     both filters are added once at delegation;
 *   - EV_EOF on a filter plays the part of EPOLLRDHUP/EPOLLHUP;
 *   - wake-ups use EVFILT_USER (FreeBSD >= 8.1, macOS >= 10.6, NetBSD >= 10),
 *     else a non-blocking self-pipe;
 *   - macOS has no MSG_NOSIGNAL: SO_NOSIGPIPE is set on the descriptor.
 *   - closing a descriptor removes its knotes; we delete them first anyway.
 */
#include "engine.h"

#include <stdio.h>
#include <string.h>

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* SO_NOSIGPIPE is set at watch() */
#endif

enum { MAY_READ = 1, MAY_WRITE = 2, HUP = 4, IN_TODO = 8 };
#define WAKE_ID 0 /* generation 0 is never a connection's */
#define MAX_EVENTS 256

typedef struct {
    gaio_core *core;
    int kq;
    int pipe_r, pipe_w;            /* -1 when EVFILT_USER is used */
    uint64_t *todo, *todo_spare;
    uint32_t ntodo, cap_todo;
    struct kevent events[MAX_EVENTS];
} kq_state;

static int kq_create(gaio_core *core, void **out, char *why, size_t whylen)
{
    kq_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    st->core = core;
    st->pipe_r = st->pipe_w = -1;
    st->kq = kqueue();
    if (st->kq < 0) {
        snprintf(why, whylen, "kqueue unavailable: %s", strerror(errno));
        free(st);
        return -1;
    }
    fcntl(st->kq, F_SETFD, FD_CLOEXEC);
    struct kevent ev;
#ifdef EVFILT_USER
    EV_SET(&ev, WAKE_ID, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, NULL);
    if (kevent(st->kq, &ev, 1, NULL, 0, NULL) == 0) {
        *out = st;
        return 0;
    }
#endif
    int p[2];
    if (pipe(p) < 0) {
        snprintf(why, whylen, "kqueue wake-up pipe: %s", strerror(errno));
        close(st->kq);
        free(st);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
    }
    st->pipe_r = p[0];
    st->pipe_w = p[1];
    EV_SET(&ev, st->pipe_r, EVFILT_READ, EV_ADD, 0, 0, (void *)(uintptr_t)WAKE_ID);
    kevent(st->kq, &ev, 1, NULL, 0, NULL);
    *out = st;
    return 0;
}

static void kq_destroy(void *state)
{
    kq_state *st = state;
    close(st->kq);
    if (st->pipe_r >= 0) {
        close(st->pipe_r);
        close(st->pipe_w);
    }
    free(st->todo);
    free(st->todo_spare);
    free(st);
}

static int kq_watch(void *state, gaio_conn *c)
{
    kq_state *st = state;
    struct kevent ev[2];
    void *udata = (void *)(uintptr_t)gaio_conn_id(c); /* 64-bit udata on every target */
    EV_SET(&ev[0], c->fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, udata);
    EV_SET(&ev[1], c->fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, udata);
    if (kevent(st->kq, ev, 2, NULL, 0, NULL) < 0)
        return -errno;
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    c->engine_flags = MAY_READ | MAY_WRITE;
    return 0;
}

static int kq_unwatch(void *state, gaio_conn *c)
{
    kq_state *st = state;
    if (c->fd >= 0) {
        struct kevent ev[2];
        EV_SET(&ev[0], c->fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
        EV_SET(&ev[1], c->fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
        kevent(st->kq, ev, 2, NULL, 0, NULL);
    }
    return 0;
}

static void todo_add(kq_state *st, gaio_conn *c)
{
    if (c->engine_flags & IN_TODO)
        return;
    if (st->ntodo == st->cap_todo) {
        uint32_t cap = st->cap_todo ? st->cap_todo * 2 : 64;
        uint64_t *t = realloc(st->todo, cap * sizeof *t);
        if (!t)
            return;
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

static void do_reads(kq_state *st, gaio_conn *c)
{
    gaio_req *r;
    while ((c->engine_flags & MAY_READ) && (r = gaio_conn_head(c, GAIO_READ))) {
        unsigned char *ptr;
        size_t want;
        if (r->buf) {
            ptr = r->buf + r->done;
            want = r->len - r->done;
        } else if (!(want = gaio_core_swap_reserve(st->core, &ptr))) {
            todo_add(st, c);
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

static void do_writes(kq_state *st, gaio_conn *c)
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

static void kq_start(void *state, gaio_conn *c, int kind)
{
    if (c->closing || c->fd < 0)
        return;
    if (kind == GAIO_READ)
        do_reads(state, c);
    else
        do_writes(state, c);
}

static int kq_cancel(void *state, gaio_req *r)
{
    return 0;
}

static void retry_todo(kq_state *st)
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

static int kq_wait(void *state, int64_t timeout_ns)
{
    kq_state *st = state;
    if (st->ntodo && gaio_core_swap_room(st->core))
        retry_todo(st);
    if (gaio_core_has_results(st->core))
        timeout_ns = 0;
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    gaio_core_unlock(st->core);
    int n = kevent(st->kq, NULL, 0, st->events, MAX_EVENTS, tsp);
    int err = errno;
    gaio_core_lock(st->core);
    if (n < 0)
        return -err;
    for (int i = 0; i < n; i++) {
        struct kevent *ev = &st->events[i];
        uint64_t id = (uint64_t)(uintptr_t)ev->udata;
        if (id == WAKE_ID) {
            char drain[64];
            if (st->pipe_r >= 0)
                while (read(st->pipe_r, drain, sizeof drain) > 0) {}
            continue;
        }
        gaio_conn *c = gaio_core_conn(st->core, id);
        if (!c)
            continue;
        if (ev->filter == EVFILT_READ) {
            c->engine_flags |= MAY_READ;
            if (ev->flags & (EV_EOF | EV_ERROR))
                c->engine_flags |= HUP;
            do_reads(st, c);
        } else if (ev->filter == EVFILT_WRITE) {
            c->engine_flags |= MAY_WRITE;
            do_writes(st, c);
        }
    }
    return n;
}

static void kq_wake(void *state)
{
    kq_state *st = state;
    if (st->pipe_w >= 0) {
        char b = 1;
        if (write(st->pipe_w, &b, 1) < 0) { /* pipe full: a wake is pending anyway */ }
        return;
    }
#ifdef EVFILT_USER
    struct kevent ev;
    EV_SET(&ev, WAKE_ID, EVFILT_USER, 0, NOTE_TRIGGER, 0, NULL);
    kevent(st->kq, &ev, 1, NULL, 0, NULL);
#endif
}

const gaio_engine_ops gaio_engine_kqueue = {
    .name = "kqueue",
    .create = kq_create,
    .destroy = kq_destroy,
    .watch = kq_watch,
    .unwatch = kq_unwatch,
    .start = kq_start,
    .cancel = kq_cancel,
    .wait = kq_wait,
    .wake = kq_wake,
    .recycle = NULL,
};

#else /* no kqueue here */

static int kq_unavailable(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "kqueue exists only on BSD and macOS");
    return -1;
}

const gaio_engine_ops gaio_engine_kqueue = {.name = "kqueue", .create = kq_unavailable};

#endif
