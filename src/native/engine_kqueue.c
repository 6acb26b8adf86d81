/* The kqueue engine (FreeBSD, NetBSD, OpenBSD, DragonFly, macOS): a mirror of
 * engine_epoll.c, which documents the shared techniques. On Linux it builds
 * only for testing, against libkqueue (setup.py's GAIO_LIBKQUEUE, .ci/kqueue).
 *
 * Differences from epoll:
 *   - EV_CLEAR on EVFILT_READ and EVFILT_WRITE gives edge-triggered events;
 *     both filters are added once at delegation, in one kevent() call whose
 *     failure fails the delegating request with its errno;
 *   - EV_EOF on a filter plays the part of EPOLLRDHUP/EPOLLHUP;
 *   - udata carries the connection id: whole where a pointer has 64 bits,
 *     packed into 32 bits elsewhere (kq_udata below);
 *   - wake-ups use EVFILT_USER (FreeBSD >= 8.1, macOS >= 10.6, NetBSD >= 10),
 *     else a non-blocking self-pipe;
 *   - macOS has no MSG_NOSIGNAL: SO_NOSIGPIPE is set on the descriptor;
 *   - kevent() takes no signal mask: a signal arriving just before it sleeps
 *     reaches it through a pipe given to CPython's signal.set_wakeup_fd
 *     (signal_fd, signals.c), not through a sigmask as on epoll and io_uring.
 *   - closing a descriptor removes its knotes; we delete them first anyway
 *     (libkqueue cannot see a close()).
 *
 * libkqueue (github.com/mheily/libkqueue, tested at f966089) emulates kqueue
 * in user space over epoll. Where it differs from a kernel kqueue the engine
 * works around it under #ifdef GAIO_LIBKQUEUE, each place saying which
 * difference: events dropped when the event list fills (kq_sweep), the socket
 * error consumed before we see it (kq_reads), and descriptors and threads
 * released asynchronously after close() (kq_destroy). The write-then-read
 * registration order in kq_watch is for libkqueue too, and harmless elsewhere.
 */
#include "readiness.h"

#include <stdio.h>
#include <string.h>

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__) || defined(GAIO_LIBKQUEUE)

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

#ifdef GAIO_LIBKQUEUE
/* Exported by libkqueue (src/linux/platform.c) but not in its <sys/event.h>. */
void libkqueue_drain_pending_close(void);
#endif

#define MAX_EVENTS 256

typedef struct {
    gaio_core *core;
    gaio_ready rd;
    int kq;
    int pipe_r, pipe_w;            /* -1 when EVFILT_USER is used */
    int sig_r, sig_w;              /* signal_fd's pipe, made on first use; else -1 */
    struct kevent events[MAX_EVENTS];
} kq_state;

/* ---- the connection id in udata ----
 *
 * udata is a void *. Where it has 64 bits it holds the id (slot | gen << 32)
 * whole. A 32-bit udata (i386, armv6/7, powerpc BSDs) would cut the
 * generation off, and every event would then be dropped as stale; there udata
 * carries the slot in its low KQ_SLOT_BITS bits and the generation's low bits
 * above them. A stale event is then missed only if its slot was reused a
 * multiple of 2^(32 - KQ_SLOT_BITS) times in between; the descriptor number
 * (ident) is checked too, and unwatch() deletes the knotes before the close,
 * which removes their queued events, so the generation is a second line of
 * defence, not the only one. GAIO_KQUEUE_UDATA32 forces the packed form on a
 * 64-bit build so that .ci/kqueue can run it. */
#if UINTPTR_MAX >= UINT64_MAX && !defined(GAIO_KQUEUE_UDATA32)
_Static_assert(sizeof(void *) >= sizeof(uint64_t), "udata holds a whole connection id");
#define KQ_PACKED_UDATA 0
#else
#define KQ_PACKED_UDATA 1
#define KQ_SLOT_BITS 22 /* 4M connections per watcher; 10 bits of generation */
#define KQ_SLOT_MASK ((UINT32_C(1) << KQ_SLOT_BITS) - 1)
_Static_assert(sizeof(void *) >= sizeof(uint32_t), "udata holds 32 bits at least");
#endif

static void *kq_udata(const gaio_conn *c)
{
#if KQ_PACKED_UDATA
    uint32_t packed = c->slot | c->gen << KQ_SLOT_BITS; /* gen's high bits shift out */
    return (void *)(uintptr_t)packed;
#else
    return (void *)(uintptr_t)gaio_conn_id(c);
#endif
}

/* The live connection an event is for, or NULL (freed, reused, closing). */
static gaio_conn *kq_conn(kq_state *st, const struct kevent *ev)
{
#if KQ_PACKED_UDATA
    uint32_t packed = (uint32_t)(uintptr_t)ev->udata, slot = packed & KQ_SLOT_MASK;
    gaio_core *core = st->core;
    uint32_t s = slot;
    gaio_conn *c = gaio_core_next_conn(core, &s);
    if (!c || c->slot != slot || (uint32_t)(c->gen << KQ_SLOT_BITS) != (packed & ~KQ_SLOT_MASK))
        return NULL;
    c = gaio_core_conn(core, gaio_conn_id(c));
#else
    gaio_conn *c = gaio_core_conn(st->core, (uint64_t)(uintptr_t)ev->udata);
#endif
    return c && (uintptr_t)c->fd == ev->ident ? c : NULL;
}

/* ---- engine operations ---- */

static int kq_create(gaio_core *core, void **out, char *why, size_t whylen)
{
    kq_state *st = gaio_calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    st->core = core;
    gaio_ready_init(&st->rd, core);
    st->pipe_r = st->pipe_w = -1;
    st->sig_r = st->sig_w = -1;
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
    EV_SET(&ev, 0, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, NULL);
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
    EV_SET(&ev, st->pipe_r, EVFILT_READ, EV_ADD, 0, 0, NULL);
    if (kevent(st->kq, &ev, 1, NULL, 0, NULL) < 0) {
        snprintf(why, whylen, "kqueue wake-up pipe registration: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        close(st->kq);
        free(st);
        return -1;
    }
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
    if (st->sig_r >= 0) {
        close(st->sig_r);
        close(st->sig_w);
    }
#ifdef GAIO_LIBKQUEUE
    /* libkqueue frees a kqueue's epoll instance, pipe and eventfds on a helper
     * thread after it sees the close(); a kernel kqueue is gone on return.
     * Wait for the helper so that close() of a watcher releases everything. */
    libkqueue_drain_pending_close();
#endif
    gaio_ready_free(&st->rd);
    free(st);
}

static int kq_watch(void *state, gaio_conn *c)
{
    kq_state *st = state;
#if KQ_PACKED_UDATA
    if (c->slot > KQ_SLOT_MASK)
        return -EMFILE; /* more connections than a 32-bit udata tells apart */
#endif
    /* Write filter first. A kernel kqueue does not care about the order;
     * libkqueue keeps one epoll registration per descriptor and, when the
     * write filter is added second, re-registers it without EPOLLRDHUP: an
     * end of stream arriving with data still queued then never shows EV_EOF,
     * and with EV_CLEAR the read that drains the data waits forever. */
    struct kevent ev[2];
    EV_SET(&ev[0], c->fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, kq_udata(c));
    EV_SET(&ev[1], c->fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, kq_udata(c));
    if (kevent(st->kq, ev, 2, NULL, 0, NULL) < 0) {
        /* Without an event list the first failed change is reported as -1 and
         * the changes before it stay applied: take them back (ENOENT for one
         * never added is expected), so nothing refers to this connection. */
        int err = errno;
        EV_SET(&ev[0], c->fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
        EV_SET(&ev[1], c->fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
        for (int i = 0; i < 2; i++)
            (void)kevent(st->kq, &ev[i], 1, NULL, 0, NULL);
        return -err;
    }
#ifdef SO_NOSIGPIPE
    int one = 1;
    if (setsockopt(c->fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) < 0) {
        int err = errno;
        EV_SET(&ev[0], c->fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
        EV_SET(&ev[1], c->fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
        (void)kevent(st->kq, ev, 2, NULL, 0, NULL);
        return -err; /* a send could raise SIGPIPE and kill the process */
    }
#endif
    c->engine_flags = GAIO_MAY_READ | GAIO_MAY_WRITE;
    return 0;
}

static int kq_unwatch(void *state, gaio_conn *c)
{
    kq_state *st = state;
    if (c->fd >= 0) {
        /* The result does not matter: close() follows, which removes the
         * knotes in a kernel kqueue; and a knote left in libkqueue carries
         * this connection's id, so its events are dropped as stale. */
        struct kevent ev[2];
        EV_SET(&ev[0], c->fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
        EV_SET(&ev[1], c->fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
        (void)kevent(st->kq, ev, 2, NULL, 0, NULL);
    }
    return 0;
}

/* The head reads of c while it may be readable; dgram_error: an error
 * libkqueue took from datagram socket c (kq_wait), or 0. */
static void kq_reads(kq_state *st, gaio_conn *c, int dgram_error)
{
#ifdef GAIO_LIBKQUEUE
    /* libkqueue fills EV_EOF's fflags with getsockopt(SO_ERROR), which clears
     * the socket's pending error: recv() then says end of stream where a
     * kernel kqueue leaves the error for recv() to report (ECONNRESET after a
     * reset). kq_wait keeps a stream socket's error: its end of stream
     * becomes it, after the bytes still queued (gaio_kept_error,
     * readiness.c); a datagram socket's is one request's, or nobody's (R27). */
    if (dgram_error) {
        gaio_core_datagram_error(st->core, c, dgram_error);
        gaio_ready_writes(&st->rd, c);
    }
#endif
    gaio_ready_reads(&st->rd, c);
}

static void kq_start(void *state, gaio_conn *c, int kind)
{
    kq_state *st = state;
    if (kind == GAIO_READ && !c->closing && c->fd >= 0)
        kq_reads(st, c, 0);
    else
        gaio_ready_start(&st->rd, c, kind);
}

static int kq_cancel(void *state, gaio_req *r)
{
    return 0; /* nothing is ever in flight in the kernel */
}

#ifdef GAIO_LIBKQUEUE
/* libkqueue issue #89 (github.com/mheily/libkqueue/issues/89): one epoll
 * event of a descriptor with both filters becomes two kevents, and the ones
 * that do not fit in the event list are dropped; with EV_CLEAR their edges
 * never come back. A full list is the only sign it may have happened: then
 * any connection may be readable, writable or at its end. Mark them all so
 * (GAIO_HUP: read until EAGAIN, a short read proves nothing now) and go on
 * with the requests waiting. A wasted try costs one EAGAIN. */
static void kq_sweep(kq_state *st)
{
    uint32_t s = 0;
    for (gaio_conn *c; (c = gaio_core_next_conn(st->core, &s));) {
        if (c->closing || c->fd < 0)
            continue;
        c->engine_flags |= GAIO_MAY_READ | GAIO_MAY_WRITE | GAIO_HUP;
        kq_reads(st, c, 0);
        gaio_ready_writes(&st->rd, c);
    }
}
#endif

static void kq_wake(void *state);

static int kq_wait(void *state, int64_t timeout_ns, const sigset_t *sigmask)
{
    kq_state *st = state;
    gaio_ready_retry(&st->rd);
    if (gaio_core_has_results(st->core))
        timeout_ns = 0;
    else if (st->rd.rescan && (timeout_ns < 0 || timeout_ns > 10000000))
        timeout_ns = 10000000; /* a retry is owed (gaio_ready_later failed): come back soon */
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
    int signalled = 0;
    for (int i = 0; i < n; i++) {
        struct kevent *ev = &st->events[i];
#ifdef EVFILT_USER
        if (ev->filter == EVFILT_USER)
            continue;
#endif
        if (st->pipe_r >= 0 && ev->filter == EVFILT_READ && ev->ident == (uintptr_t)st->pipe_r) {
            char drain[64];
            while (read(st->pipe_r, drain, sizeof drain) > 0) {}
            continue;
        }
        if (st->sig_r >= 0 && ev->filter == EVFILT_READ && ev->ident == (uintptr_t)st->sig_r) {
            char drain[64]; /* CPython wrote the signal numbers; its handlers know them */
            while (read(st->sig_r, drain, sizeof drain) > 0) {}
            signalled = 1;
            continue;
        }
        /* EV_ERROR reports a failed change of the changelist, and this call
         * has none: watch() and unwatch() see their own failures. */
        gaio_conn *c = kq_conn(st, ev);
        if (!c)
            continue; /* freed in this batch, or before */
        if (ev->filter == EVFILT_READ) {
            int dgram_error = 0;
            c->engine_flags |= GAIO_MAY_READ;
            if (ev->flags & EV_EOF) {
                c->engine_flags |= GAIO_HUP;
#ifdef GAIO_LIBKQUEUE
                if (ev->fflags && c->dgram && ev->data == 0) /* kq_reads */
                    dgram_error = (int)ev->fflags;
                else if (ev->fflags && !c->dgram)
                    gaio_keep_error(c, (int)ev->fflags);
#endif
            }
            kq_reads(st, c, dgram_error);
        } else if (ev->filter == EVFILT_WRITE) {
            c->engine_flags |= GAIO_MAY_WRITE;
            gaio_ready_writes(&st->rd, c);
        }
    }
#ifdef GAIO_LIBKQUEUE
    if (n == MAX_EVENTS)
        kq_sweep(st);
#endif
    if (gaio_core_fileno_asked(st->core) && gaio_ready_owed(&st->rd))
        kq_wake(st); /* fileno() stays readable: work is left for the next wait */
    return signalled ? -EINTR : n; /* the core hands out results first, if any */
}

/* A pipe for signal.set_wakeup_fd: CPython's C handler writes the signal's
 * number to it from whichever thread took the signal, so kq_wait wakes
 * whether the signal came before kevent() slept or during the sleep. Made
 * the first time wait_io() blocks on the main thread, kept until destroy:
 * the binding unsets it before any destroy can run. */
static int kq_signal_fd(void *state)
{
    kq_state *st = state;
    if (st->sig_w >= 0)
        return st->sig_w;
    int p[2];
    if (pipe(p) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK); /* set_wakeup_fd wants it */
    }
    struct kevent ev;
    EV_SET(&ev, p[0], EVFILT_READ, EV_ADD, 0, 0, NULL);
    if (kevent(st->kq, &ev, 1, NULL, 0, NULL) < 0) {
        int err = errno;
        close(p[0]);
        close(p[1]);
        return -err;
    }
    st->sig_r = p[0];
    st->sig_w = p[1];
    return st->sig_w;
}

static int kq_fileno(void *state)
{
#ifdef GAIO_LIBKQUEUE
    /* libkqueue's descriptor is the write end of a pipe, never readable (its
     * epoll descriptor is private): nothing another loop could watch */
    return -1;
#else
    kq_state *st = state;
    return st->kq; /* readable while an event is pending, the wake-up's included */
#endif
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
    /* Triggering a registered EVFILT_USER allocates nothing; it fails only
     * for a bad kq, which the waiter's own kevent() reports. */
    struct kevent ev;
    EV_SET(&ev, 0, EVFILT_USER, 0, NOTE_TRIGGER, 0, NULL);
    (void)kevent(st->kq, &ev, 1, NULL, 0, NULL);
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
    .fileno = kq_fileno,
    .send_now = gaio_ready_send_now,
    .signal_fd = kq_signal_fd,
};

#else /* no kqueue here */

static int kq_unavailable(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "kqueue exists only on BSD and macOS "
                          "(on Linux, build with GAIO_LIBKQUEUE=<prefix> for testing)");
    return -1;
}

const gaio_engine_ops gaio_engine_kqueue = {.name = "kqueue", .create = kq_unavailable};

#endif
