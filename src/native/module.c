/* gaio._native: the Watcher type over gaio's C core (wait_io, close, stats,
 * lifetime) and the module itself.
 *
 * The binding owns every Python object: a request (pyreq, request.c) embeds
 * the core's gaio_req and holds strong references to its socket, ctx and
 * buffer until its result is built (result.c). wait_io() releases the GIL
 * once per call (Py_BEGIN_ALLOW_THREADS around gaio_core_wait) and builds
 * the OpResult objects after taking it back, as selectmodule.c does. Sockets
 * map to connections through conns.c (R2, R9); arguments are parsed in args.c.
 *
 * Threads: none. Everything runs in the caller's threads.
 */
#include "binding.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

gaio__module_state gaio__state;
gaio__live_counts gaio__live;

typedef struct {
    const char *name;
    const gaio_engine_ops *ops;
} engine_entry;

/* The engines compiled in, by name. Which one "auto" prefers is decided in
 * one place, gaio's front (ENGINES in _watcher.py): this type runs the one
 * it is given. */
static const engine_entry ENGINES[] = {
    {"uring", &gaio_engine_uring},
    {"epoll", &gaio_engine_epoll},
    {"kqueue", &gaio_engine_kqueue},
};
#define NENGINES (sizeof ENGINES / sizeof ENGINES[0])

static PyTypeObject Watcher_Type;

/* The core lets go of the GIL whenever it would block (gaio_runtime). */
static void *gil_release(void) { return PyEval_SaveThread(); }
static void gil_reacquire(void *token) { PyEval_RestoreThread((PyThreadState *)token); }
static const gaio_runtime gil_runtime = {gil_release, gil_reacquire};

PyObject *gaio__closed_error(void)
{
    PyErr_SetString(gaio__state.WatcherClosedError, "watcher is closed");
    return NULL;
}

/* The core is deleted once the watcher is closed and no thread uses it
 * (one in wait_io, or pinned across a call that released the GIL): the last
 * one out deletes it. */
static void core_drop_if_unused(Watcher *w)
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

static PyObject *Watcher_wait_io(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
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
    core_drop_if_unused(w); /* closed by another thread while we were in the core */
    Py_DECREF(w);
    return result;
}

/* ---- close, stats, lifetime ---- */

static void watcher_close(Watcher *w)
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
    while (all) {
        gaio_req *next = all->next;
        gaio__live_remove((pyreq *)all);
        gaio__req_dispose(w, (pyreq *)all);
        all = next;
    }
    for (size_t i = 0; i < w->map.cap; i++) {
        ConnRef *ref = w->map.e[i].ref;
        w->map.e[i].ref = NULL;
        Py_XDECREF(ref);
    }
    w->map.n = 0;
    /* a wait_io of another thread may still be leaving the core: it checks
     * w->closed before touching it, but the memory must outlive its return */
    w->close_done = 1;
    core_drop_if_unused(w);
}

/* The core outlives close() while a thread still uses it without the GIL:
 * the last one out deletes it. */
void gaio__core_unpin(Watcher *w)
{
    w->pins--;
    core_drop_if_unused(w);
}

/* Another thread's close() may be tearing down (the GIL released): the
 * core lock is held until every descriptor is closed, so wait for it. */
static void wait_for_other_close(Watcher *w, gaio_stats *out)
{
    PINNED(w, gaio_core_get_stats(w->core, out));
}

static PyObject *Watcher_close(Watcher *w, PyObject *unused)
{
    if (w->closed && !w->close_done && w->core) {
        gaio_stats ignored;
        wait_for_other_close(w, &ignored);
    }
    watcher_close(w);
    Py_RETURN_NONE;
}

static int put(PyObject *d, const char *k, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    int rc = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return rc;
}

static PyObject *Watcher_stats(Watcher *w, PyObject *unused)
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
        /* datagrams are the python engine's until issue 19's next step */
        put(d, "datagrams_read", 0) < 0 || put(d, "datagrams_written", 0) < 0) {
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

static PyObject *Watcher_debug_hold_lock(Watcher *w, PyObject *arg)
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
static PyObject *Watcher_techniques(Watcher *w, PyObject *unused)
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

static PyObject *Watcher_enter(Watcher *w, PyObject *unused)
{
    Py_INCREF(w);
    return (PyObject *)w;
}

static PyObject *Watcher_exit(Watcher *w, PyObject *args)
{
    watcher_close(w);
    Py_RETURN_NONE;
}

/* __new__ makes an inert watcher that behaves as closed; __init__ (once)
 * starts the engine. So Watcher.__new__(Watcher), copy.copy() and the like
 * give an object whose methods raise instead of one that could block. */
static PyObject *Watcher_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Watcher *w = (Watcher *)type->tp_alloc(type, 0);
    if (!w)
        return NULL;
    w->engine_name = "";
    w->closed = 1;
    w->close_done = 1;
    w->live.live_next = w->live.live_prev = &w->live;
    return (PyObject *)w;
}

/* R21's write_high: a positive int, or None for no limit (0 here) */
static int write_high_arg(PyObject *o, Py_ssize_t *out)
{
    *out = GAIO_DEFAULT_WRITE_HIGH;
    if (!o)
        return 0;
    if (o == Py_None) {
        *out = 0;
        return 0;
    }
    if (PyBool_Check(o) || !PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "write_high must be an int, not %.100s", gaio__type_name(o));
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0 || (!overflow && v <= 0)) {
        PyErr_SetString(PyExc_ValueError, "write_high must be > 0 (or None for no limit)");
        return -1;
    }
    *out = overflow || v > PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)v;
    return 0;
}

static int Watcher_init(Watcher *w, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"bufsize", "engine", "write_high", NULL};
    PyObject *bufsize_obj = NULL, *write_high_obj = NULL;
    const char *engine = NULL;
    Py_ssize_t write_high;
    if (w->inited) {
        PyErr_SetString(PyExc_RuntimeError, "Watcher.__init__() may run only once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$sO:Watcher", kwlist, &bufsize_obj, &engine,
                                     &write_high_obj))
        return -1;
    if (write_high_arg(write_high_obj, &write_high) < 0)
        return -1;
    long long bufsize = GAIO_DEFAULT_BUFSIZE;
    if (bufsize_obj) {
        if (PyBool_Check(bufsize_obj) || !PyLong_Check(bufsize_obj)) {
            PyErr_Format(PyExc_TypeError, "bufsize must be an int, not %.100s",
                         gaio__type_name(bufsize_obj));
            return -1;
        }
        int overflow;
        bufsize = PyLong_AsLongLongAndOverflow(bufsize_obj, &overflow);
        if (bufsize == -1 && PyErr_Occurred())
            return -1;
        if (overflow || bufsize < 1 || bufsize > GAIO_MAX_BUFSIZE) {
            PyErr_SetString(PyExc_ValueError, "bufsize must be from 1 to 2**30");
            return -1;
        }
    }
    const engine_entry *chosen = NULL;
    for (size_t i = 0; engine && i < NENGINES; i++)
        if (strcmp(engine, ENGINES[i].name) == 0)
            chosen = &ENGINES[i];
    if (!engine) {
        PyErr_SetString(PyExc_TypeError,
                        "Watcher() needs engine='uring', 'epoll' or 'kqueue' (gaio.Watcher chooses)");
        return -1;
    }
    if (!chosen) {
        PyErr_Format(PyExc_ValueError, "unknown native engine '%s': choose 'uring', 'epoll' or 'kqueue'",
                     engine);
        return -1;
    }
    WatcherLink *link = PyObject_New(WatcherLink, &gaio__WatcherLink_Type);
    if (!link)
        return -1;
    link->w = NULL;
    PyObject *callback = PyCFunction_New(&gaio__conn_gone_def, (PyObject *)link);
    PyObject *views = PyList_New(0), *copies = PyList_New(0), *copies_old = PyList_New(0);
    if (!callback || !views || !copies || !copies_old) {
        Py_XDECREF(copies);
        Py_XDECREF(copies_old);
        Py_DECREF(link);
        Py_XDECREF(callback);
        Py_XDECREF(views);
        return -1;
    }
    char why[256] = "";
    gaio_core *core = gaio_core_new(chosen->ops, (size_t)bufsize, (size_t)write_high, &gil_runtime,
                                    why, sizeof why);
    int resource_err = core ? 0 : errno; /* out of descriptors or memory: an OSError */
    if (!core) {
        Py_DECREF(link);
        Py_DECREF(callback);
        Py_DECREF(views);
        Py_DECREF(copies);
        Py_DECREF(copies_old);
        if (resource_err) {
            errno = resource_err;
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            PyErr_Format(gaio__state.EngineUnavailableError, "engine %s cannot run here: %s", engine, why);
        }
        return -1;
    }
    link->w = w;
    w->link = (PyObject *)link;
    w->callback = callback;
    w->views = views;
    w->copies = copies;
    w->copies_old = copies_old;
    w->core = core;
    w->engine_name = chosen->name;
    w->bufsize = (Py_ssize_t)bufsize;
    w->write_high = write_high;
    w->inited = 1;
    w->closed = 0;
    w->close_done = 0;
    return 0;
}

static int Watcher_traverse(Watcher *w, visitproc visit, void *arg)
{
    for (pyreq *p = w->live.live_next; p && p != &w->live; p = p->live_next) {
        Py_VISIT(p->ctx);
        Py_VISIT(p->conn);
        Py_VISIT(p->bufobj);
        if (p->is_vector) {
            for (Py_ssize_t i = 0; i < p->vec.n; i++)
                Py_VISIT(p->vec.items[i].obj);
        } else if (p->has_view) {
            Py_VISIT(p->view.obj); /* the export holds its own reference */
        }
    }
    Py_VISIT(w->views);
    Py_VISIT(w->copies);
    Py_VISIT(w->copies_old);
    Py_VISIT(w->callback);
    return 0;
}

static int Watcher_clear(Watcher *w)
{
    if (!w->waiting)
        watcher_close(w);
    return 0;
}

static void Watcher_dealloc(Watcher *w)
{
    PyObject_GC_UnTrack(w);
    if (w->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)w);
    watcher_close(w);
    core_drop_if_unused(w); /* nobody can be using it: w is going */
    for (unsigned i = 0; i < GAIO_IBUF_CHUNKS; i++)
        Py_CLEAR(w->chunk_mem[i]);
    Py_CLEAR(w->views);
    Py_CLEAR(w->copies);
    Py_CLEAR(w->copies_old);
    while (w->ncopy_pool) {
        PyObject *b = w->copy_pool[--w->ncopy_pool]; /* Py_CLEAR evaluates its argument twice */
        w->copy_pool[w->ncopy_pool] = NULL;
        Py_DECREF(b);
    }
    Py_CLEAR(w->callback);
    if (w->link)
        ((WatcherLink *)w->link)->w = NULL;
    Py_CLEAR(w->link);
    PyMem_Free(w->map.e);
    PyMem_Free(w->results);
    gaio_origins_free(&w->origins);
    for (int k = 0; k < 2; k++)
        while (w->spare[k]) {
            pyreq *p = w->spare[k];
            w->spare[k] = p->live_next;
            PyMem_Free(p);
        }
    Py_TYPE(w)->tp_free((PyObject *)w);
}

/* R23 */
static PyObject *Watcher_fileno(Watcher *w, PyObject *unused)
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

static PyObject *Watcher_next_timeout(Watcher *w, PyObject *unused)
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

static PyObject *Watcher_get_engine(Watcher *w, void *c) { return PyUnicode_FromString(w->engine_name); }
static PyObject *Watcher_get_bufsize(Watcher *w, void *c) { return PyLong_FromSsize_t(w->bufsize); }

static PyGetSetDef Watcher_getset[] = {
    {"engine", (getter)Watcher_get_engine, NULL, "the engine's name", NULL},
    {"bufsize", (getter)Watcher_get_bufsize, NULL, "the internal buffer's chunk size", NULL},
    {NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef Watcher_methods[] = {
    {"read", (PyCFunction)(void (*)(void))gaio__watcher_read, FASTKW,
     "read($self, conn, buf=None, *, ctx=None, timeout=None, deadline=None, repeat=False)\n--\n\n"
     "Request a read; returns at once. repeat=True: a standing read (R20)."},
    {"read_full", (PyCFunction)(void (*)(void))gaio__watcher_read_full, FASTKW,
     "read_full($self, conn, buf, *, ctx=None, timeout=None, deadline=None)\n--\n\nRequest a read of len(buf) bytes."},
    {"write", (PyCFunction)(void (*)(void))gaio__watcher_write, FASTKW,
     "write($self, conn, data, *, ctx=None, timeout=None, deadline=None, quiet=False, address=None)\n--\n\n"
     "Request a write of every byte of data (bytes-like, or a list/tuple of them)."},
    {"accept", (PyCFunction)(void (*)(void))gaio__watcher_accept, FASTKW,
     "accept($self, listener, *, ctx=None, timeout=None, deadline=None, repeat=False)\n--\n\n"
     "Request an accept (R16); repeat=True: one result per connection until it ends."},
    {"connect", (PyCFunction)(void (*)(void))gaio__watcher_connect, FASTKW,
     "connect($self, sock, address, *, ctx=None, timeout=None, deadline=None)\n--\n\n"
     "Request a connect to a numeric address (R17)."},
    {"sendfile", (PyCFunction)(void (*)(void))gaio__watcher_sendfile, FASTKW,
     "sendfile($self, conn, file, offset=0, count=None, *, ctx=None, timeout=None, deadline=None, "
     "quiet=False)\n--\n\nRequest a send of a regular file's bytes (R19)."},
    {"fileno", (PyCFunction)Watcher_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nA descriptor readable whenever wait_io(0) has work (R23)."},
    {"next_timeout", (PyCFunction)Watcher_next_timeout, METH_NOARGS,
     "next_timeout($self, /)\n--\n\nSeconds until the earliest deadline, or None (R23)."},
    {"free", (PyCFunction)gaio__watcher_free, METH_O,
     "free($self, conn, /)\n--\n\nClose conn's descriptor; its pending requests end with gaio__state.ConnClosedError."},
    {"wait_io", (PyCFunction)(void (*)(void))Watcher_wait_io, FASTKW,
     "wait_io($self, timeout=None)\n--\n\nWait without the GIL for results; returns a list of OpResult."},
    {"close", (PyCFunction)Watcher_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose every descriptor, drop pending requests. Idempotent."},
    {"stats", (PyCFunction)Watcher_stats, METH_NOARGS, "stats($self, /)\n--\n\nCounters."},
    {"__enter__", (PyCFunction)Watcher_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
    {"_techniques", (PyCFunction)Watcher_techniques, METH_NOARGS,
     "_techniques($self, /)\n--\n\nTest-only: {technique: None if the engine uses it, else why not}."},
    {"_debug_hold_lock", (PyCFunction)Watcher_debug_hold_lock, METH_O,
     "_debug_hold_lock($self, seconds, /)\n--\n\nTest-only: another thread holds the core lock for seconds."},
    {"__exit__", (PyCFunction)Watcher_exit, METH_VARARGS, "__exit__($self, *exc_info)\n--\n\n"},
    {NULL},
};

static PyTypeObject Watcher_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gaio._native.Watcher",
    .tp_basicsize = sizeof(Watcher),
    .tp_dealloc = (destructor)Watcher_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Watcher(bufsize=65536, *, engine, write_high=262144)\n--\n\n"
              "gaio's native watcher (engines uring, epoll, kqueue). Starts no thread.",
    .tp_traverse = (traverseproc)Watcher_traverse,
    .tp_clear = (inquiry)Watcher_clear,
    .tp_weaklistoffset = offsetof(Watcher, weakreflist),
    .tp_methods = Watcher_methods,
    .tp_getset = Watcher_getset,
    .tp_new = Watcher_new,
    .tp_init = (initproc)Watcher_init,
};

/* ---- the module ---- */

static PyObject *import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

static PyObject *intern(const char *s)
{
    return PyUnicode_InternFromString(s);
}

/* Test-only: make the core's own allocations fail (alloc.h). */
static PyObject *fail_allocations(PyObject *mod, PyObject *args)
{
    long after, count = 1;
    if (!PyArg_ParseTuple(args, "l|l:_fail_allocations", &after, &count))
        return NULL;
    if (after < 0 || count < 1) {
        PyErr_SetString(PyExc_ValueError, "_fail_allocations: after >= 0, count >= 1");
        return NULL;
    }
    return PyLong_FromLong(gaio__fail_allocations(after, count));
}

/* Test-only: what every watcher holds now (binding.h's gaio__live). */
static PyObject *live_counts(PyObject *mod, PyObject *unused)
{
    return Py_BuildValue("{snsn}", "requests", gaio__live.requests, "internal_buffer_chunks_kept",
                         gaio__live.ibuf_chunks_kept);
}

static PyMethodDef module_methods[] = {
    {"_live_counts", live_counts, METH_NOARGS,
     "_live_counts()\n--\n\nTest-only. What every watcher holds now: request structs given out\n"
     "and not yet disposed, internal-buffer chunks kept by an export after their batch."},
    {"_fail_allocations", fail_allocations, METH_VARARGS,
     "_fail_allocations(after, count=1, /)\n--\n\n"
     "Test-only. Make the after-th allocation of the native core from now fail (and the\n"
     "count - 1 after it), in every watcher; after=0 disarms. Returns how many failures\n"
     "the previous call caused. Python objects are not concerned."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef gaio_module = {
    PyModuleDef_HEAD_INIT, "gaio._native",
    "gaio's native core: the Watcher over the uring, epoll and kqueue engines.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    gaio__ConnRef_Type.tp_name = "gaio._native._ConnRef";
    gaio__ConnRef_Type.tp_basicsize = sizeof(ConnRef);
    gaio__ConnRef_Type.tp_flags = Py_TPFLAGS_DEFAULT;
    gaio__ConnRef_Type.tp_base = &_PyWeakref_RefType;
    if (PyType_Ready(&gaio__ConnRef_Type) < 0 || PyType_Ready(&gaio__WatcherLink_Type) < 0 ||
        PyType_Ready(&gaio__IbufMem_Type) < 0 || PyType_Ready(&gaio__OpResult_Type) < 0 ||
        PyType_Ready(&Watcher_Type) < 0)
        return NULL;
    gaio__module_state *S = &gaio__state;
    if (!(S->s_conn = intern("conn")) || !(S->s_buf = intern("buf")) || !(S->s_data = intern("data")) ||
        !(S->s_ctx = intern("ctx")) || !(S->s_timeout = intern("timeout")) ||
        !(S->s_deadline = intern("deadline")) || !(S->s_repeat = intern("repeat")) ||
        !(S->s_quiet = intern("quiet")) || !(S->s_listener = intern("listener")) ||
        !(S->s_sock = intern("sock")) || !(S->s_address = intern("address")) ||
        !(S->s_file = intern("file")) || !(S->s_offset = intern("offset")) ||
        !(S->s_count = intern("count")) || !(S->s_family = intern("family")) ||
        !(S->s_setblocking = intern("setblocking")) || !(S->s_connect_ex = intern("connect_ex")) ||
        !(S->zero = PyLong_FromLong(0)))
        return NULL;
    if (!(gaio__state.WatcherClosedError = import_attr("gaio._errors", "WatcherClosedError")) ||
        !(gaio__state.DeadlineExceededError = import_attr("gaio._errors", "DeadlineExceededError")) ||
        !(gaio__state.ConnClosedError = import_attr("gaio._errors", "ConnClosedError")) ||
        !(gaio__state.EngineUnavailableError = import_attr("gaio._errors", "EngineUnavailableError")) ||
        !(gaio__state.SocketType = import_attr("socket", "socket")) ||
        !(gaio__state.socket_fileno = PyObject_GetAttrString(gaio__state.SocketType, "fileno")) ||
        !(gaio__state.socket_detach = PyObject_GetAttrString(gaio__state.SocketType, "detach")) ||
        !(gaio__state.memoryview_release = PyObject_GetAttrString((PyObject *)&PyMemoryView_Type, "release")) ||
        !(S->UnsupportedOperation = import_attr("io", "UnsupportedOperation")) ||
        !(S->check_listener = import_attr("gaio._python_args", "check_listener")) ||
        !(S->check_connect_socket = import_attr("gaio._python_args", "check_connect_socket")) ||
        !(S->check_address = import_attr("gaio._python_args", "check_address")) ||
        !(S->sendfile_source = import_attr("gaio._python_args", "sendfile_source")))
        return NULL;
    PyObject *base = import_attr("_socket", "socket");
    if (!base)
        return NULL;
    S->sock_family = PyObject_GetAttrString(base, "family");
    S->sock_type = PyObject_GetAttrString(base, "type");
    S->sock_proto = PyObject_GetAttrString(base, "proto");
    Py_DECREF(base);
    if (!S->sock_family || !S->sock_type || !S->sock_proto)
        return NULL;
    PyObject *Op = import_attr("gaio._result", "Op");
    if (!Op)
        return NULL;
    static const char *const op_names[5] = {"READ", "WRITE", "ACCEPT", "CONNECT", "SENDFILE"};
    for (int i = 0; i < 5; i++)
        if (!(S->Op[i] = PyObject_GetAttrString(Op, op_names[i]))) {
            Py_DECREF(Op);
            return NULL;
        }
    Py_DECREF(Op);
    PyObject *m = PyModule_Create(&gaio_module);
    if (!m)
        return NULL;
    if (gaio__signals_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&Watcher_Type);
    Py_INCREF(&gaio__OpResult_Type);
    if (PyModule_AddObject(m, "Watcher", (PyObject *)&Watcher_Type) < 0 ||
        PyModule_AddObject(m, "OpResult", (PyObject *)&gaio__OpResult_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
