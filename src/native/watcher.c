/* The Watcher's own methods: wait_io (the GIL released once per call, around
 * gaio_core_wait; the OpResult objects built after it is back, as
 * selectmodule.c does), close, stats, fileno and next_timeout (R23), and the
 * test-only hooks. The type itself, its lifetime and the module are in
 * module.c; the requests are in request.c. */
#include "binding.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <time.h>

PyObject *gaio__closed_error(void)
{
    PyErr_SetString(gaio__state.WatcherClosedError, "watcher is closed");
    return NULL;
}

/* The core is deleted once the watcher is closed and no thread uses it
 * (one in wait_io, or pinned across a call that released the GIL): the last
 * one out deletes it. */
void gaio__core_drop_if_unused(Watcher *w)
{
    if (w->core && w->close_done && !w->waiting && !w->pins) {
        gaio_core_delete(w->core);
        w->core = NULL;
    }
}

/* The core's results, into the watcher's own array (grown here, outside the
 * core's lock: the core never allocates to hand them over). */
static PyObject *take_batch(Watcher *w)
{
    uint32_t n = 0, left = 0;
    do {
        if (left) {
            uint64_t cap = (uint64_t)n + left + left / 2 + 16;
            gaio_result *a = cap < UINT32_MAX ? PyMem_Realloc(w->results, cap * sizeof *a) : NULL;
            if (!a) {
                if (n)
                    break; /* the rest stays in the core for the next call */
                return PyErr_NoMemory();
            }
            w->results = a;
            w->cap_results = (uint32_t)cap;
        }
        n += gaio_core_take_results(w->core, w->results + n, w->cap_results - n, &left);
    } while (left);
    return gaio__build_results(w, w->results, n);
}

PyObject *gaio__watcher_wait_io(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (w->closed)
        return gaio__closed_error();
    PyObject *names[1] = {gaio__state.s_timeout};
    PyObject *a[1];
    if (gaio__parse_args("Watcher.wait_io", args, nargs, kwnames, names, 1, 1, 0, a) < 0)
        return NULL;
    int64_t until = GAIO_NO_DEADLINE;
    int guard_wanted = 1;
    if (a[0] && a[0] != Py_None) {
        double t;
        if (gaio__seconds_arg(a[0], "timeout", &t) < 0)
            return NULL;
        if (t < 0)
            t = 0;
        guard_wanted = t > 0;
        until = gaio__ns_clamp((double)gaio_now_ns() + t * 1e9); /* inf and huge: no limit */
    }
    if (w->waiting) {
        PyErr_SetString(PyExc_RuntimeError, "another thread is already in wait_io()");
        return NULL;
    }
    w->waiting = 1;
    Py_INCREF(w);
    gaio__release_batch(w, 0);
    guard_wanted = guard_wanted && gaio__sig_guard_wanted();
    int rc;
    for (;;) {
        gaio_core *core = w->core;
        Py_BEGIN_ALLOW_THREADS
        rc = gaio_core_wait(core, until, guard_wanted, NULL);
        Py_END_ALLOW_THREADS
        if (rc == GAIO_WAIT_SLEEPY) {
            /* the core would sleep: again, signals guarded (signals.c) */
            gaio__sig_guard guard;
            if (gaio__sig_guard_enter(w, &guard) < 0) /* a handler raised */
                break;
            Py_BEGIN_ALLOW_THREADS
            rc = gaio_core_wait(core, until, 0, gaio__sig_guard_mask(&guard));
            Py_END_ALLOW_THREADS
            gaio__sig_guard_leave(&guard);
        }
        if (w->tls_used && !w->closed && !PyErr_Occurred() &&
            (rc == GAIO_WAIT_TLS || rc == GAIO_WAIT_RESULTS || rc == GAIO_WAIT_TIMEOUT)) {
            /* the record layer, with the GIL (tls_session.c); no signal
             * handler may run inside it (signals.c, gaio__sig_hold) */
            gaio__sig_guard hold;
            if (gaio__sig_hold(&hold) < 0)
                break; /* a handler raised: its exception is wait_io's */
            int made = gaio__tls_pass(w);
            gaio__sig_guard_leave(&hold);
            if (w->tls_interrupt) { /* tls_session.c's fetch(): never swallowed */
                PyObject *exc = w->tls_interrupt;
                w->tls_interrupt = NULL;
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
                break;
            }
            if (made)
                rc = GAIO_WAIT_RESULTS;
            else if (until != GAIO_NO_DEADLINE && gaio_now_ns() >= until)
                rc = GAIO_WAIT_TIMEOUT;
            else
                continue; /* it queued I/O and time remains: wait again */
            break;
        }
        if (rc == GAIO_WAIT_TLS)
            continue;
        if (rc != GAIO_WAIT_EINTR || w->closed || PyErr_CheckSignals() < 0)
            break;
    }
    PyObject *result;
    if (PyErr_Occurred())
        result = NULL; /* results already finished wait for the next call */
    else if (w->closed || rc == GAIO_WAIT_CLOSED)
        result = gaio__closed_error();
    else if (rc == GAIO_WAIT_TIMEOUT)
        result = PyList_New(0);
    else
        result = take_batch(w);
    w->waiting = 0;
    gaio__core_drop_if_unused(w); /* closed by another thread while we were in the core */
    Py_DECREF(w);
    return result;
}

/* ---- close, stats, lifetime ---- */

void gaio__watcher_shutdown(Watcher *w)
{
    if (w->closed || !w->core)
        return;
    w->closed = 1;
    if (w->link)
        ((WatcherLink *)w->link)->w = NULL;
    gaio__release_batch(w, 1);
    gaio_core *core = w->core;
    gaio_req *all;
    Py_BEGIN_ALLOW_THREADS
    all = gaio_core_close(core);
    Py_END_ALLOW_THREADS
    gaio_core_get_stats(core, &w->final_stats);
    gaio__tls_dispose(gaio_core_tls_take_dead(core));
    while (all) {
        gaio_req *next = all->next;
        gaio__live_remove(pyreq_of(all));
        gaio__req_dispose(w, pyreq_of(all));
        all = next;
    }
    /* the core's slots outlive close() until gaio__core_drop_if_unused */
    for (size_t i = 0; i < w->map.cap; i++) {
        map_entry *e = gaio__map_at(&w->map, i);
        w->map.e[i] = 0;
        if (e && (e->owner_bits & (OWNER_WEAK | OWNER_OWNED)))
            Py_DECREF((PyObject *)e->owner);
    }
    w->map.n = 0;
    /* a wait_io of another thread may still be leaving the core: it checks
     * w->closed before touching it, but the memory must outlive its return */
    w->close_done = 1;
    gaio__core_drop_if_unused(w);
}

/* The core outlives close() while a thread still uses it without the GIL:
 * the last one out deletes it. */
void gaio__core_unpin(Watcher *w)
{
    w->pins--;
    gaio__core_drop_if_unused(w);
}

/* Another thread's close() may be tearing down (the GIL released): the
 * core lock is held until every descriptor is closed, so wait for it. */
static void wait_for_other_close(Watcher *w, gaio_stats *out)
{
    PINNED(w, gaio_core_get_stats(w->core, out));
}

PyObject *gaio__watcher_close(Watcher *w, PyObject *unused)
{
    if (gaio__tls_refuse_close(w) < 0)
        return NULL;
    if (w->closed && !w->close_done && w->core) {
        gaio_stats ignored;
        wait_for_other_close(w, &ignored);
    }
    gaio__watcher_shutdown(w);
    Py_RETURN_NONE;
}

static int put(PyObject *d, const char *k, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    int rc = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return rc;
}

PyObject *gaio__watcher_stats(Watcher *w, PyObject *unused)
{
    gaio_stats s;
    if (w->core && !w->closed)
        PINNED(w, gaio_core_get_stats(w->core, &s));
    else if (w->core && !w->close_done)
        wait_for_other_close(w, &s);
    else
        s = w->final_stats;
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    if (put(d, "submitted", s.submitted) < 0 || put(d, "completed", s.completed) < 0 ||
        put(d, "bytes_read", s.bytes_read) < 0 || put(d, "bytes_written", s.bytes_written) < 0 ||
        put(d, "watched", w->closed ? 0 : s.watched) < 0 ||
        put(d, "pending", w->closed ? 0 : s.pending) < 0 ||
        put(d, "timeouts", s.timeouts) < 0 ||
        put(d, "internal_buffer_bytes", s.ibuf_bytes_batch) < 0 ||
        put(d, "internal_buffer_chunks", s.ibuf_chunks) < 0 ||
        put(d, "engine_wakeups", s.wakeups) < 0 || put(d, "threads", 0) < 0 ||
        put(d, "accepted", s.accepted) < 0 || put(d, "quiet_done", s.quiet_done) < 0 ||
        put(d, "datagrams_read", s.datagrams_read) < 0 ||
        put(d, "datagrams_written", s.datagrams_written) < 0 ||
        put(d, "datagram_recv_calls", s.datagram_recv_calls) < 0 ||
        put(d, "datagram_send_calls", s.datagram_send_calls) < 0 ||
        put(d, "tls_handshakes", s.tls_handshakes) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* Test-only: a thread of its own holds the core's lock for `seconds`, as the
 * waiter does while it runs a batch of recv/send; returns once it holds it.
 * Lets a test show that a request made meanwhile never stops the caller's
 * other Python threads (it must not wait for core->lock holding the GIL). */
typedef struct {
    gaio_core *core;
    double seconds;
    sem_t locked;
} lock_holder;

static void *hold_lock(void *arg)
{
    lock_holder *h = arg;
    gaio_core_lock(h->core);
    struct timespec ts = {(time_t)h->seconds, (long)((h->seconds - (double)(time_t)h->seconds) * 1e9)};
    sem_post(&h->locked);
    nanosleep(&ts, NULL);
    gaio_core_unlock(h->core); /* the core is not touched after this */
    sem_destroy(&h->locked);
    free(h);
    return NULL;
}

PyObject *gaio__watcher_debug_hold_lock(Watcher *w, PyObject *arg)
{
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(seconds >= 0 && seconds <= 10)) {
        PyErr_SetString(PyExc_ValueError, "seconds must be from 0 to 10");
        return NULL;
    }
    if (w->closed)
        return gaio__closed_error();
    lock_holder *h = malloc(sizeof *h);
    if (!h)
        return PyErr_NoMemory();
    h->core = w->core;
    h->seconds = seconds;
    sem_init(&h->locked, 0, 0);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, hold_lock, h);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        sem_destroy(&h->locked);
        free(h);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_BEGIN_ALLOW_THREADS
    while (sem_wait(&h->locked) != 0 && errno == EINTR)
        ;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Test-only: {technique: None if the engine uses it, else why not}. */
PyObject *gaio__watcher_techniques(Watcher *w, PyObject *unused)
{
    if (w->closed)
        return gaio__closed_error();
    gaio_technique t[16];
    int n;
    PINNED(w, n = gaio_core_techniques(w->core, t, 16));
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < n; i++) {
        PyObject *why = t[i].why[0] ? PyUnicode_FromString(t[i].why) : Py_None;
        if (!why || PyDict_SetItemString(d, t[i].name, why) < 0)
            Py_CLEAR(d);
        if (why != Py_None)
            Py_XDECREF(why);
    }
    return d;
}

/* R23 */
PyObject *gaio__watcher_fileno(Watcher *w, PyObject *unused)
{
    if (w->closed)
        return gaio__closed_error();
    int fd;
    PINNED(w, fd = gaio_core_fileno(w->core));
    if (fd < 0) {
        if (w->closed)
            return gaio__closed_error();
        PyErr_Format(gaio__state.UnsupportedOperation, "engine %s has no descriptor to watch",
                     w->engine_name);
        return NULL;
    }
    return PyLong_FromLong(fd);
}

PyObject *gaio__watcher_next_timeout(Watcher *w, PyObject *unused)
{
    if (w->closed)
        return gaio__closed_error();
    int64_t until;
    PINNED(w, until = gaio_core_next_deadline(w->core));
    if (until == GAIO_NO_DEADLINE)
        Py_RETURN_NONE;
    int64_t left = until - gaio_now_ns();
    return PyFloat_FromDouble(left > 0 ? (double)left / 1e9 : 0.0);
}

