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
#include "readiness.h"

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

#define WAKE_ID 0 /* generation 0 is never a connection's */
#define MAX_EVENTS 256

typedef struct {
    gaio_core *core;
    gaio_ready rd;
    int kq;
    int pipe_r, pipe_w;            /* -1 when EVFILT_USER is used */
    struct kevent events[MAX_EVENTS];
} kq_state;

static int kq_create(gaio_core *core, void **out, char *why, size_t whylen)
{
    kq_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    st->core = core;
    gaio_ready_init(&st->rd, core);
    st->pipe_r = st->pipe_w = -1;
    st->kq = kqueue();
    if (st->kq < 0) {
        int err = errno;
        snprintf(why, whylen, "kqueue unavailable: %s", strerror(err));
        free(st);
        return gaio_resource_error(err) ? err : -1;
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
        int err = errno;
        snprintf(why, whylen, "kqueue wake-up pipe: %s", strerror(err));
        close(st->kq);
        free(st);
        return gaio_resource_error(err) ? err : -1;
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
    gaio_ready_free(&st->rd);
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
    c->engine_flags = GAIO_MAY_READ | GAIO_MAY_WRITE;
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

static void kq_start(void *state, gaio_conn *c, int kind)
{
    kq_state *st = state;
    gaio_ready_start(&st->rd, c, kind);
}

static int kq_cancel(void *state, gaio_req *r)
{
    return 0;
}

static int kq_wait(void *state, int64_t timeout_ns)
{
    kq_state *st = state;
    gaio_ready_retry(&st->rd);
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
            c->engine_flags |= GAIO_MAY_READ;
            if (ev->flags & (EV_EOF | EV_ERROR))
                c->engine_flags |= GAIO_HUP;
            gaio_ready_reads(&st->rd, c);
        } else if (ev->filter == EVFILT_WRITE) {
            c->engine_flags |= GAIO_MAY_WRITE;
            gaio_ready_writes(&st->rd, c);
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
};

#else /* no kqueue here */

static int kq_unavailable(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "kqueue exists only on BSD and macOS");
    return -1;
}

const gaio_engine_ops gaio_engine_kqueue = {.name = "kqueue", .create = kq_unavailable};

#endif
