/* gaio._native: the Watcher type over gaio's C core.
 *
 * The binding owns every Python object: a request (pyreq) embeds the core's
 * gaio_req and holds strong references to its socket, ctx and buffer until
 * its result is built. wait_io() releases the GIL once per call
 * (Py_BEGIN_ALLOW_THREADS around gaio_core_wait) and builds the OpResult
 * objects after taking it back, as selectmodule.c does.
 *
 * Sockets map to connections through a C hash keyed by the object's address
 * (R9: no strong reference while idle); a weakref subclass (ConnRef) carries
 * the connection id, and its C callback releases the connection when the
 * caller drops the socket.
 *
 * Threads: none. Everything runs in the caller's threads.
 */
#include "binding.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- module state (one interpreter) ---- */

static PyObject *WatcherClosedError, *DeadlineExceededError, *ConnClosedError,
    *EngineUnavailableError;
static PyObject *OpREAD, *OpWRITE, *SocketType;
static PyObject *memoryview_release; /* the unbound method: no attribute lookup per view */
static PyObject *s_fileno, *s_close, *s_detach, *s_conn, *s_buf, *s_data, *s_ctx, *s_timeout,
    *s_deadline;

typedef struct {
    const char *name;
    const gaio_engine_ops *ops;
} engine_entry;

/* fastest first (R13) */
static const engine_entry ENGINES[] = {
    {"uring", &gaio_engine_uring},
    {"epoll", &gaio_engine_epoll},
    {"kqueue", &gaio_engine_kqueue},
};
#define NENGINES (sizeof ENGINES / sizeof ENGINES[0])

/* ---- requests ---- */

typedef struct pyreq {
    gaio_req req;               /* first: the core hands back &req */
    PyObject *conn, *ctx;       /* strong */
    PyObject *bufobj;           /* caller's buffer (or our bytes copy), NULL for swap reads */
    struct pyreq *live_prev, *live_next; /* every undelivered request, for GC traversal */
    int has_view;               /* allocated with room for view (a request with a buffer) */
    int copied;                 /* bufobj is the watcher's bytes copy of an internal-buffer view
                                 * large enough to be recycled (see copy_pool) */
    Py_buffer view;             /* export of bufobj held until completion; last: a read
                                 * into the internal buffer is allocated without it, so
                                 * an idle connection's pending read stays small */
} pyreq;
#define PYREQ_SMALL offsetof(pyreq, view)

/* ---- socket -> connection map: open addressing on the object's address ---- */

typedef struct {
    PyWeakReference base;
    uintptr_t key;
    uint64_t id;
} ConnRef;

static PyTypeObject ConnRef_Type;

/* An entry is only the ConnRef pointer (NULL: empty); the key is ref->key.
 * One pointer per slot and a load of at most 3/4 keep the table near 11-21
 * bytes per connection: this is per idle connection memory (SPEC's idea). */
typedef struct {
    ConnRef *ref;    /* strong; NULL: empty */
} map_entry;

typedef struct {
    map_entry *e;
    size_t cap, n;   /* cap is a power of two */
} connmap;

static size_t map_hash(uintptr_t key, size_t cap)
{
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (cap - 1);
}

static map_entry *map_find(connmap *m, uintptr_t key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = map_hash(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (!m->e[i].ref)
            return NULL;
        if (m->e[i].ref->key == key)
            return &m->e[i];
    }
}

static int map_insert(connmap *m, ConnRef *ref)
{
    if ((m->n + 1) * 4 > m->cap * 3) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        map_entry *e = PyMem_Calloc(cap, sizeof *e);
        if (!e)
            return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->e[i].ref)
                continue;
            size_t j = map_hash(m->e[i].ref->key, cap);
            while (e[j].ref)
                j = (j + 1) & (cap - 1);
            e[j] = m->e[i];
        }
        PyMem_Free(m->e);
        m->e = e;
        m->cap = cap;
    }
    size_t i = map_hash(ref->key, m->cap);
    while (m->e[i].ref)
        i = (i + 1) & (m->cap - 1);
    m->e[i].ref = ref;
    m->n++;
    return 0;
}

/* Remove an entry (backward-shift deletion keeps probe chains intact); returns its ref. */
static ConnRef *map_remove(connmap *m, map_entry *hole)
{
    ConnRef *ref = hole->ref;
    size_t i = (size_t)(hole - m->e);
    size_t j = i;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (!m->e[j].ref)
            break;
        size_t home = map_hash(m->e[j].ref->key, m->cap);
        /* can e[j] move to i? only if its home is not in (i, j] cyclically */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            m->e[i] = m->e[j];
            i = j;
        }
    }
    m->e[i].ref = NULL;
    m->n--;
    return ref;
}

/* ---- the Watcher ---- */

/* Writing an internal-buffer view back copies it into a new bytes (R6). A
 * copy of tens of KiB is a malloc() at the top of the heap, and freeing it
 * lets glibc give the pages back (trim), so the next copy page-faults on
 * fresh zeroed pages: a fifth of a stream echo's CPU. Copies of at least
 * COPY_POOL_MIN bytes that only the watcher still holds at the next
 * wait_io() are kept (at most COPY_POOL of them) and refilled instead. */
#define COPY_POOL 8
#define COPY_POOL_MIN 4096
#define COPY_POOL_MAX (1 << 20)
#if PY_VERSION_HEX >= 0x030D0000
#undef COPY_POOL_MIN
#define COPY_POOL_MIN PY_SSIZE_T_MAX /* ob_shash is deprecated there: no reuse */
#endif

typedef struct {
    PyObject_HEAD
    gaio_core *core;
    const char *engine_name;
    Py_ssize_t bufsize;
    int closed;
    int waiting;                  /* a thread is in wait_io (guarded by the GIL) */
    int close_done;               /* watcher_close finished (the core may be deleted) */
    int inited;                   /* __init__ ran (it may run once) */
    int pins;                     /* threads using the core with the GIL released */
    connmap map;
    PyObject *link;               /* WatcherLink: the weakref callbacks' way back */
    PyObject *callback;           /* the C function given to every ConnRef */
    PyObject *views;              /* list: memoryviews handed out in the last batch */
    PyObject *copies;             /* list: large write copies delivered in the last batch */
    PyObject *copies_old;         /* ... in the batch before: the caller's previous results
                                   * list is alive while it calls wait_io() again */
    PyObject *copy_pool[COPY_POOL]; /* bytes copies nobody else holds, for reuse */
    int ncopy_pool;
    gaio__SwapMem *chunk_mem[GAIO_SWAP_CHUNKS]; /* owners of the core's chunks shown */
    pyreq live;                   /* sentinel of the undelivered-requests list */
    pyreq *spare[2];              /* freelists of request structs, without / with view */
    int nspare[2];
    gaio_stats final_stats;       /* stats() after close */
    PyObject *weakreflist;
} Watcher;

static PyTypeObject Watcher_Type;

typedef struct {
    PyObject_HEAD
    Watcher *w;                   /* borrowed; NULL once the watcher is closed */
} WatcherLink;

static PyTypeObject WatcherLink_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gaio._native._WatcherLink",
    .tp_basicsize = sizeof(WatcherLink),
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

#define MAX_SPARE 1024

static pyreq *req_alloc(Watcher *w, int with_view)
{
    pyreq *p = w->spare[with_view];
    size_t size = with_view ? sizeof(pyreq) : PYREQ_SMALL;
    if (p) {
        w->spare[with_view] = p->live_next;
        w->nspare[with_view]--;
    } else if (!(p = PyMem_Malloc(size))) {
        PyErr_NoMemory();
        return NULL;
    }
    memset(p, 0, size);
    p->has_view = with_view;
    return p;
}

static void live_add(Watcher *w, pyreq *p)
{
    p->live_next = w->live.live_next;
    p->live_prev = &w->live;
    w->live.live_next->live_prev = p;
    w->live.live_next = p;
}

static void live_remove(pyreq *p)
{
    p->live_prev->live_next = p->live_next;
    p->live_next->live_prev = p->live_prev;
    p->live_next = p->live_prev = NULL;
}

/* Drop a request's references and recycle its struct (GIL held). */
static void req_dispose(Watcher *w, pyreq *p)
{
    if (p->bufobj) {
        if (p->has_view && p->view.obj)
            PyBuffer_Release(&p->view);
        Py_CLEAR(p->bufobj);
    }
    PyObject *conn = p->conn, *ctx = p->ctx;
    p->conn = p->ctx = NULL;
    int k = p->has_view;
    if (w->nspare[k] < MAX_SPARE) {
        p->live_next = w->spare[k];
        w->spare[k] = p;
        w->nspare[k]++;
    } else {
        PyMem_Free(p);
    }
    Py_XDECREF(conn);
    Py_XDECREF(ctx);
}

/* The core lets go of the GIL whenever it would block (gaio_runtime). */
static void *gil_release(void) { return PyEval_SaveThread(); }
static void gil_reacquire(void *token) { PyEval_RestoreThread((PyThreadState *)token); }
static const gaio_runtime gil_runtime = {gil_release, gil_reacquire};

/* A call into the core may release the GIL: meanwhile another thread may
 * close the watcher, and the core must outlive the call. core_unpin deletes
 * it when the watcher was closed meanwhile and nobody else uses it. */
static void core_unpin(Watcher *w);
#define PINNED(w, call) \
    do {                \
        (w)->pins++;    \
        call;           \
        core_unpin(w);  \
    } while (0)

static PyObject *closed_error(void)
{
    PyErr_SetString(WatcherClosedError, "the watcher is closed");
    return NULL;
}

/* ---- argument parsing (METH_FASTCALL | METH_KEYWORDS) ---- */

static int parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, PyObject *const *names, int nnames, int maxpos,
                      int required, PyObject **out)
{
    for (int i = 0; i < nnames; i++)
        out[i] = NULL;
    if (nargs > maxpos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional arguments (%zd given)",
                     fname, maxpos, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < nnames && found < 0; i++)
            if (key == names[i])
                found = i;
        for (int i = 0; i < nnames && found < 0; i++)
            if (PyUnicode_Compare(key, names[i]) == 0)
                found = i;
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", fname, key);
            return -1;
        }
        if (out[found]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%S'", fname, key);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < required; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%S'", fname, names[i]);
            return -1;
        }
    return 0;
}

/* seconds -> double: any real number, i.e. what float() takes through
 * __float__ or __index__ (int, float, Decimal, Fraction), but a bool. NaN is
 * a ValueError; an int too big for a double the OverflowError float() gives. */
static int seconds_arg(PyObject *o, const char *what, double *out)
{
    PyNumberMethods *nb = Py_TYPE(o)->tp_as_number;
    if (!PyFloat_Check(o) &&
        (PyBool_Check(o) || !nb || (!nb->nb_float && !nb->nb_index))) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    double d = PyFloat_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(d)) {
        PyErr_Format(PyExc_ValueError, "%s must not be NaN", what);
        return -1;
    }
    *out = d;
    return 0;
}

static int64_t ns_clamp(double ns)
{
    if (ns >= 9.2e18)
        return INT64_MAX;
    if (ns <= -9.2e18)
        return INT64_MIN + 1;
    return (int64_t)ns;
}

/* The request's absolute deadline in ns, INT64_MAX for none. */
static int deadline_arg(PyObject *timeout, PyObject *deadline, int64_t *out)
{
    double d;
    if (timeout == Py_None)
        timeout = NULL;
    if (deadline == Py_None)
        deadline = NULL;
    *out = INT64_MAX;
    if (timeout && deadline) {
        PyErr_SetString(PyExc_ValueError, "give timeout or deadline, not both");
        return -1;
    }
    if (timeout) {
        if (seconds_arg(timeout, "timeout", &d) < 0)
            return -1;
        int64_t now = gaio_now_ns();
        *out = d <= 0 ? now : ns_clamp((double)now + d * 1e9);
    } else if (deadline) {
        if (seconds_arg(deadline, "deadline", &d) < 0)
            return -1;
        *out = ns_clamp(d * 1e9);
    }
    return 0;
}

/* ---- delegation ---- */

static PyObject *conn_type_error(PyObject *conn, const char *why)
{
    PyErr_Format(PyExc_TypeError, "conn must be a stream socket (%s), not %.100s", why,
                 Py_TYPE(conn)->tp_name);
    return NULL;
}

/* The descriptor of a socket not delegated yet, after checking it is a
 * socket.socket of a stream socket (another object with a fileno(), even of a
 * stream socket, is refused: it could not be closed for the caller, R2). */
static int socket_fd(PyObject *conn)
{
    int is_sock = PyObject_IsInstance(conn, SocketType);
    if (is_sock <= 0) {
        if (is_sock == 0)
            conn_type_error(conn, "a socket.socket");
        return -1;
    }
    PyObject *res = PyObject_CallMethodNoArgs(conn, s_fileno);
    if (!res) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            conn_type_error(conn, "it has no fileno()");
        } else if (PyErr_ExceptionMatches(PyExc_OSError) || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear(); /* a closed file object */
            PyErr_SetString(PyExc_ValueError, "conn is closed and was never delegated");
        }
        return -1;
    }
    if (!PyLong_Check(res)) {
        Py_DECREF(res);
        conn_type_error(conn, "fileno() is not an int");
        return -1;
    }
    long fd = PyLong_AsLong(res);
    Py_DECREF(res);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "conn is closed and was never delegated");
        return -1;
    }
    if (fd > INT32_MAX) {
        conn_type_error(conn, "bad fileno()");
        return -1;
    }
    int type;
    socklen_t len = sizeof type;
    if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        if (errno == ENOTSOCK) {
            conn_type_error(conn, "its descriptor is not a socket");
        } else if (errno == EBADF) {
            PyErr_SetString(PyExc_ValueError, "conn is closed and was never delegated");
        } else {
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return -1;
    }
    if (type != SOCK_STREAM) {
        conn_type_error(conn, "not SOCK_STREAM");
        return -1;
    }
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(conn))) {
        conn_type_error(conn, "it cannot be weakly referenced");
        return -1;
    }
    return (int)fd;
}

/* R2: take the descriptor from the caller's object and watch it, non-blocking.
 * socket.detach() hands it over and leaves the object closed even while
 * makefile() objects hold it open (close() would only mark it); other objects
 * with a fileno() are dup()ed and close()d. */
static int delegate(Watcher *w, PyObject *conn, int fd, uint64_t *id)
{
    ConnRef *ref = (ConnRef *)PyObject_CallFunctionObjArgs((PyObject *)&ConnRef_Type, conn,
                                                           w->callback, NULL);
    if (!ref)
        return -1;
    int own_fd = -1;
    PyObject *detach = PyObject_GetAttr(conn, s_detach);
    if (!detach) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            Py_DECREF(ref);
            return -1;
        }
        PyErr_Clear();
    }
    if (detach) {
        PyObject *res = PyObject_CallNoArgs(detach);
        Py_DECREF(detach);
        if (!res) {
            Py_DECREF(ref);
            return -1;
        }
        long got = PyLong_Check(res) ? PyLong_AsLong(res) : -1;
        Py_DECREF(res);
        if (got != fd) {
            if (got >= 0 && got <= INT32_MAX)
                close((int)got);
            Py_DECREF(ref);
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "conn.detach() did not return its fileno()");
            return -1;
        }
        own_fd = fd;
    } else {
        own_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (own_fd < 0) {
            Py_DECREF(ref);
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        PyObject *res = PyObject_CallMethodNoArgs(conn, s_close);
        if (!res) {
            Py_DECREF(ref);
            close(own_fd);
            return -1;
        }
        Py_DECREF(res);
    }
    int flags = fcntl(own_fd, F_GETFL);
    if (flags < 0 || fcntl(own_fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(ref);
        close(own_fd);
        return -1;
    }
    if (w->closed || map_find(&w->map, (uintptr_t)conn)) {
        /* close() ran inside conn.close(), or it delegated conn itself */
        Py_DECREF(ref);
        close(own_fd);
        if (w->closed)
            closed_error();
        else
            PyErr_SetString(PyExc_RuntimeError, "conn was delegated re-entrantly");
        return -1;
    }
    int err = 0;
    PINNED(w, *id = gaio_core_watch(w->core, own_fd, &err));
    if (!*id || w->closed) {
        /* w->closed: closed by another thread while the core had the GIL out */
        if (*id)
            PINNED(w, gaio_core_free(w->core, *id));
        Py_DECREF(ref);
        close(own_fd);
        if (w->closed)
            return (closed_error(), -1);
        errno = err;
        if (err == ENOMEM)
            PyErr_NoMemory();
        else
            PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    ref->key = (uintptr_t)conn;
    ref->id = *id;
    if (map_insert(&w->map, ref) < 0) {
        Py_DECREF(ref);
        PINNED(w, gaio_core_free(w->core, *id));
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The weakref callback: the caller dropped a delegated socket (R9). */
static PyObject *conn_gone(PyObject *link, PyObject *arg)
{
    Watcher *w = ((WatcherLink *)link)->w;
    if (!w || w->closed || !PyObject_TypeCheck(arg, &ConnRef_Type))
        Py_RETURN_NONE;
    ConnRef *ref = (ConnRef *)arg;
    map_entry *e = map_find(&w->map, ref->key);
    if (!e || e->ref != ref)
        Py_RETURN_NONE;
    uint64_t id = ref->id;
    map_remove(&w->map, e);
    Py_INCREF(w); /* the link is borrowed; the GIL may be released below */
    PINNED(w, gaio_core_release(w->core, id));
    Py_DECREF(w);
    Py_DECREF(ref); /* the map's reference; the caller still holds one */
    Py_RETURN_NONE;
}

static PyMethodDef conn_gone_def = {"_conn_gone", conn_gone, METH_O, NULL};

/* ---- request methods ---- */

enum { ARG_CONN, ARG_BUF, ARG_CTX, ARG_TIMEOUT, ARG_DEADLINE, NARGS };

static int buffer_arg(PyObject *obj, Py_buffer *view, int writable)
{
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) == 0)
        return 0;
    /* a read-only buffer for a read is a TypeError even when empty: the
     * kind is wrong before the size is */
    if (PyErr_ExceptionMatches(PyExc_BufferError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a %s contiguous bytes-like object, not %.100s",
                     writable ? "buf" : "data", writable ? "writable" : "", Py_TYPE(obj)->tp_name);
    }
    return -1;
}

/* The watcher's bytes copy of an internal-buffer view: a pooled one whose
 * size fits (it is ours alone: refcount 1, no hash users), or a new one. */
static PyObject *copy_bytes(Watcher *w, const void *src, Py_ssize_t len)
{
    for (int i = w->ncopy_pool - 1; len >= COPY_POOL_MIN && i >= 0; i--) {
        PyObject *b = w->copy_pool[i];
        Py_ssize_t size = Py_SIZE(b);
        if (size < len || size > len + len / 4)
            continue;
        w->copy_pool[i] = w->copy_pool[--w->ncopy_pool];
        /* shrinking in place keeps the allocation (PyObject_Free needs no size) */
        Py_SET_SIZE(b, len);
        PyBytesObject *pb = (PyBytesObject *)b;
        memcpy(pb->ob_sval, src, (size_t)len);
        pb->ob_sval[len] = '\0';
#if PY_VERSION_HEX < 0x030D0000
        /* a hash cached by an earlier holder must not outlive the bytes it hashed */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        pb->ob_shash = -1;
#pragma GCC diagnostic pop
#endif
        return b;
    }
    return PyBytes_FromStringAndSize(src, len);
}

static PyObject *submit(Watcher *w, const char *fname, int kind, int full,
                        PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (w->closed)
        return closed_error();
    PyObject *names[NARGS] = {s_conn, kind == GAIO_WRITE ? s_data : s_buf, s_ctx, s_timeout,
                              s_deadline};
    PyObject *a[NARGS];
    int required = (kind == GAIO_READ && !full) ? 1 : 2;
    if (parse_args(fname, args, nargs, kwnames, names, NARGS, 2, required, a) < 0)
        return NULL;
    PyObject *conn = a[ARG_CONN], *buf = a[ARG_BUF];
    int64_t deadline;
    if (deadline_arg(a[ARG_TIMEOUT], a[ARG_DEADLINE], &deadline) < 0)
        return NULL;

    map_entry *e = map_find(&w->map, (uintptr_t)conn);
    int fd = -1;
    if (!e && (fd = socket_fd(conn)) < 0)
        return NULL;

    Py_buffer view = {0};
    PyObject *bufobj = NULL;
    int copied = 0;
    if (buf == Py_None)
        buf = NULL;
    if (kind == GAIO_READ) {
        if (!buf && full) {
            PyErr_SetString(PyExc_ValueError, "read_full needs a buffer");
            return NULL;
        }
        if (buf) {
            if (buffer_arg(buf, &view, 1) < 0)
                return NULL;
            bufobj = buf;
            Py_INCREF(bufobj);
        }
    } else {
        if (!buf) {
            PyErr_SetString(PyExc_ValueError, "write needs data");
            return NULL;
        }
        if (buffer_arg(buf, &view, 0) < 0)
            return NULL;
        /* a live view's exporter is safe to look at only while we hold an export */
        if (PyMemoryView_Check(buf) && PyMemoryView_GET_BUFFER(buf)->obj &&
            Py_IS_TYPE(PyMemoryView_GET_BUFFER(buf)->obj, &gaio__SwapMem_Type)) {
            /* R6: a view of the internal buffer is copied now: it is reused next batch */
            bufobj = copy_bytes(w, view.buf, view.len);
            copied = view.len >= COPY_POOL_MIN && view.len <= COPY_POOL_MAX;
            PyBuffer_Release(&view);
            if (!bufobj)
                return NULL;
            if (buffer_arg(bufobj, &view, 0) < 0) {
                Py_DECREF(bufobj);
                return NULL;
            }
        } else {
            bufobj = buf;
            Py_INCREF(bufobj);
        }
    }
    if (bufobj && view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(bufobj);
        PyErr_Format(PyExc_ValueError, "%s: empty buffer", fname);
        return NULL;
    }
    /* fileno(), buffer exports and GC callbacks may have run Python code:
     * the watcher may be closed, the map reshaped. Look again. */
    uint64_t id = 0;
    int failed = 0;
    if (w->closed) {
        closed_error();
        failed = 1;
    } else if ((e = map_find(&w->map, (uintptr_t)conn))) {
        id = e->ref->id;
    } else if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "conn was freed meanwhile");
        failed = 1;
    } else if (delegate(w, conn, fd, &id) < 0) {
        failed = 1;
    }
    if (failed) {
        if (bufobj) {
            PyBuffer_Release(&view);
            Py_DECREF(bufobj);
        }
        return NULL;
    }
    pyreq *p = req_alloc(w, bufobj != NULL);
    if (!p) {
        if (bufobj) {
            PyBuffer_Release(&view);
            Py_DECREF(bufobj);
        }
        return NULL;
    }
    p->conn = conn;
    Py_INCREF(conn);
    p->ctx = a[ARG_CTX] ? a[ARG_CTX] : Py_None;
    Py_INCREF(p->ctx);
    p->bufobj = bufobj;
    p->copied = copied;
    if (bufobj) {
        p->view = view;
        p->req.buf = view.buf;
        p->req.len = (size_t)view.len;
    }
    p->req.conn_id = id;
    p->req.kind = (uint8_t)kind;
    p->req.full = (uint8_t)full;
    p->req.deadline_ns = deadline;
    live_add(w, p);
    int rc;
    PINNED(w, rc = gaio_core_submit(w->core, &p->req));
    if (rc < 0) {
        /* nothing was queued: another thread closed the watcher meanwhile,
         * or there was no memory for its deadline */
        live_remove(p);
        req_dispose(w, p);
        return rc == -ENOMEM ? PyErr_NoMemory() : closed_error();
    }
    Py_RETURN_NONE;
}

static PyObject *Watcher_read(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "read", GAIO_READ, 0, args, nargs, kw);
}

static PyObject *Watcher_read_full(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "read_full", GAIO_READ, 1, args, nargs, kw);
}

static PyObject *Watcher_write(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "write", GAIO_WRITE, 0, args, nargs, kw);
}

static PyObject *Watcher_free(Watcher *w, PyObject *conn)
{
    if (w->closed)
        return closed_error();
    map_entry *e = map_find(&w->map, (uintptr_t)conn);
    if (!e) {
        int is_sock = PyObject_IsInstance(conn, SocketType);
        if (is_sock < 0)
            return NULL;
        if (!is_sock)
            return conn_type_error(conn, "free() takes a socket");
        Py_RETURN_NONE; /* unknown, never delegated or already freed */
    }
    uint64_t id = e->ref->id;
    ConnRef *ref = map_remove(&w->map, e);
    PINNED(w, gaio_core_free(w->core, id));
    Py_DECREF(ref);
    Py_RETURN_NONE;
}

/* ---- results ---- */

static PyObject *error_object(int error)
{
    switch (error) {
    case 0:
        Py_RETURN_NONE;
    case GAIO_ERR_EOF:
        return PyObject_CallNoArgs(PyExc_EOFError);
    case GAIO_ERR_DEADLINE:
        return PyObject_CallFunction(DeadlineExceededError, "s", "deadline exceeded");
    case GAIO_ERR_CLOSED:
        return PyObject_CallFunction(ConnClosedError, "s", "connection freed");
    case ENOMEM: /* the core or the kernel ran out of memory for this request */
        return PyObject_CallFunction(PyExc_MemoryError, "s", strerror(ENOMEM));
    default:
        return PyObject_CallFunction(PyExc_OSError, "is", error, strerror(error));
    }
}

/* Views of the last batch are released; memory still exported by the caller
 * is handed to its owner object, so no one ever sees reused bytes (R4). */
static void release_batch(Watcher *w, int closing)
{
    Py_ssize_t n = w->views ? PyList_GET_SIZE(w->views) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallOneArg(memoryview_release, PyList_GET_ITEM(w->views, i));
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear(); /* exported by the caller: handled below */
    }
    if (n)
        PyList_SetSlice(w->views, 0, n, NULL);
    for (unsigned i = 0; i < GAIO_SWAP_CHUNKS; i++) {
        gaio__SwapMem *m = w->chunk_mem[i];
        if (m && (closing || m->exports > 0)) {
            m->owned = gaio_core_swap_detach(w->core, i);
            w->chunk_mem[i] = NULL;
            Py_DECREF(m);
        }
    }
    n = w->copies_old ? PyList_GET_SIZE(w->copies_old) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(w->copies_old, i);
        /* only the list holds it: nobody else can see it refilled */
        if (!closing && Py_REFCNT(b) == 1 && w->ncopy_pool < COPY_POOL) {
            Py_INCREF(b);
            w->copy_pool[w->ncopy_pool++] = b;
        }
    }
    if (n)
        PyList_SetSlice(w->copies_old, 0, n, NULL);
    if (w->copies_old) {
        PyObject *t = w->copies_old; /* now empty */
        w->copies_old = w->copies;
        w->copies = t;
    }
    if (closing && w->copies_old)
        PyList_SetSlice(w->copies_old, 0, PyList_GET_SIZE(w->copies_old), NULL);
    while (closing && w->ncopy_pool) {
        PyObject *b = w->copy_pool[--w->ncopy_pool]; /* Py_CLEAR evaluates its argument twice */
        w->copy_pool[w->ncopy_pool] = NULL;
        Py_DECREF(b);
    }
    if (!closing)
        gaio_core_swap_reset(w->core);
}

/* The owner object of a swap read's bytes (a new reference). */
static gaio__SwapMem *swap_owner(Watcher *w, gaio_req *r)
{
    gaio_core *core = w->core;
    for (unsigned i = 0; i < GAIO_SWAP_CHUNKS; i++) {
        unsigned char *c = core->chunk[i];
        if (!c || r->swap_ptr < c || r->swap_ptr >= c + core->bufsize)
            continue;
        gaio__SwapMem *m = w->chunk_mem[i];
        if (!m || m->mem != c) {
            Py_XDECREF(m);
            m = w->chunk_mem[i] = gaio__swapmem_new(c);
            if (!m)
                return NULL;
        }
        Py_INCREF(m);
        return m;
    }
    PyErr_SetString(PyExc_SystemError, "gaio: swap read outside the internal buffer");
    return NULL;
}

static PyObject *build_results(Watcher *w, gaio_req *done)
{
    /* Phase 1: no Python code can run (no GC-tracked allocation): take the
     * requests off the live list and pin the memory owners of swap reads. */
    Py_ssize_t n = 0;
    for (gaio_req *r = done; r; r = r->next) {
        pyreq *p = (pyreq *)r;
        live_remove(p);
        n++;
        if (!p->bufobj && r->done > 0) {
            p->bufobj = (PyObject *)swap_owner(w, r); /* a SwapMem while building */
            if (!p->bufobj)
                PyErr_Clear(); /* reported as buffer None below */
        }
    }
    PyObject *list = PyList_New(n);
    Py_ssize_t i = 0;
    for (gaio_req *r = done, *next; r; r = next) {
        next = r->next;
        pyreq *p = (pyreq *)r;
        if (!list) {
            req_dispose(w, p);
            continue;
        }
        PyObject *buffer, *error = error_object(r->error);
        int is_swap = 0;
        if (!p->bufobj) {
            buffer = Py_None;
            Py_INCREF(buffer);
        } else if (Py_IS_TYPE(p->bufobj, &gaio__SwapMem_Type)) {
            gaio__SwapMem *m = (gaio__SwapMem *)p->bufobj;
            buffer = gaio__swapmem_view(m, r->swap_ptr, (Py_ssize_t)r->done);
            if (buffer && PyList_Append(w->views, buffer) == 0)
                is_swap = 1;
            else
                Py_CLEAR(buffer);
            Py_CLEAR(p->bufobj);
        } else {
            PyBuffer_Release(&p->view);
            buffer = p->bufobj;
            p->bufobj = NULL;
            if (p->copied && w->copies && PyList_Append(w->copies, buffer) < 0)
                PyErr_Clear(); /* not recycled, that is all */
        }
        if (!buffer || !error) {
            Py_XDECREF(buffer);
            Py_XDECREF(error);
            req_dispose(w, p);
            Py_CLEAR(list);
            continue;
        }
        PyObject *res = gaio__opresult_new(r->kind == GAIO_READ ? OpREAD : OpWRITE, p->conn,
                                           p->ctx, buffer, (Py_ssize_t)r->done, error, is_swap);
        p->conn = p->ctx = NULL; /* stolen */
        req_dispose(w, p);
        if (!res) {
            Py_CLEAR(list);
            continue;
        }
        PyList_SET_ITEM(list, i++, res);
    }
    return list;
}

static PyObject *Watcher_wait_io(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (w->closed)
        return closed_error();
    PyObject *names[1] = {s_timeout};
    PyObject *a[1];
    if (parse_args("wait_io", args, nargs, kwnames, names, 1, 1, 0, a) < 0)
        return NULL;
    int64_t until = GAIO_NO_DEADLINE;
    if (a[0] && a[0] != Py_None) {
        double t;
        if (seconds_arg(a[0], "timeout", &t) < 0)
            return NULL;
        if (t < 0)
            t = 0;
        until = ns_clamp((double)gaio_now_ns() + t * 1e9); /* inf and huge: no limit */
    }
    if (w->waiting) {
        PyErr_SetString(PyExc_RuntimeError, "another thread is already in wait_io()");
        return NULL;
    }
    w->waiting = 1;
    Py_INCREF(w);
    release_batch(w, 0);
    int rc;
    for (;;) {
        gaio_core *core = w->core;
        Py_BEGIN_ALLOW_THREADS
        rc = gaio_core_wait(core, until);
        Py_END_ALLOW_THREADS
        if (rc != GAIO_WAIT_EINTR || w->closed)
            break;
        if (PyErr_CheckSignals() < 0) {
            w->waiting = 0;
            Py_DECREF(w);
            return NULL;
        }
    }
    PyObject *result;
    if (w->closed || rc == GAIO_WAIT_CLOSED)
        result = closed_error();
    else if (rc == GAIO_WAIT_TIMEOUT)
        result = PyList_New(0);
    else
        result = build_results(w, gaio_core_take_done(w->core));
    w->waiting = 0;
    if (w->closed && w->close_done && w->core && !w->pins) {
        /* closed from another thread while we were leaving the core */
        gaio_core_delete(w->core);
        w->core = NULL;
    }
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
    release_batch(w, 1);
    gaio_core *core = w->core;
    gaio_req *all;
    Py_BEGIN_ALLOW_THREADS
    all = gaio_core_close(core);
    Py_END_ALLOW_THREADS
    gaio_core_get_stats(core, &w->final_stats);
    while (all) {
        gaio_req *next = all->next;
        live_remove((pyreq *)all);
        req_dispose(w, (pyreq *)all);
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
    if (!w->waiting && !w->pins) {
        gaio_core_delete(core);
        w->core = NULL;
    }
}

/* The core outlives close() while a thread still uses it without the GIL:
 * the last one out deletes it. */
static void core_unpin(Watcher *w)
{
    if (--w->pins == 0 && !w->waiting && w->close_done && w->core) {
        gaio_core_delete(w->core);
        w->core = NULL;
    }
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
        put(d, "internal_buffer_bytes", s.swap_bytes_batch) < 0 ||
        put(d, "internal_buffer_chunks", s.swap_chunks) < 0 ||
        put(d, "engine_wakeups", s.wakeups) < 0 || put(d, "threads", 0) < 0) {
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
        return closed_error();
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

static int Watcher_init(Watcher *w, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"bufsize", "engine", NULL};
    PyObject *bufsize_obj = NULL;
    const char *engine = "auto";
    if (w->inited) {
        PyErr_SetString(PyExc_RuntimeError, "Watcher.__init__() may run only once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$s:Watcher", kwlist, &bufsize_obj, &engine))
        return -1;
    long long bufsize = 65536;
    if (bufsize_obj) {
        if (PyBool_Check(bufsize_obj) || !PyLong_Check(bufsize_obj)) {
            PyErr_Format(PyExc_TypeError, "bufsize must be an int, not %.100s",
                         Py_TYPE(bufsize_obj)->tp_name);
            return -1;
        }
        int overflow;
        bufsize = PyLong_AsLongLongAndOverflow(bufsize_obj, &overflow);
        if (bufsize == -1 && PyErr_Occurred())
            return -1;
        if (overflow || bufsize < 1 || bufsize > (1LL << 30)) {
            PyErr_SetString(PyExc_ValueError, "bufsize must be from 1 to 2**30");
            return -1;
        }
    }
    int any = strcmp(engine, "auto") == 0;
    const engine_entry *chosen = NULL;
    for (size_t i = 0; i < NENGINES; i++)
        if (any || strcmp(engine, ENGINES[i].name) == 0)
            chosen = &ENGINES[i];
    if (!chosen) {
        PyErr_Format(PyExc_ValueError, "unknown native engine '%s': choose 'uring', 'epoll' or 'kqueue'",
                     engine);
        return -1;
    }
    WatcherLink *link = PyObject_New(WatcherLink, &WatcherLink_Type);
    if (!link)
        return -1;
    link->w = NULL;
    PyObject *callback = PyCFunction_New(&conn_gone_def, (PyObject *)link);
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
    gaio_core *core = NULL;
    int resource_err = 0; /* out of descriptors or memory: an OSError, no next engine */
    for (size_t i = 0; i < NENGINES && !core && !resource_err; i++) {
        if (!any && &ENGINES[i] != chosen)
            continue;
#ifdef __linux__
        if (any && ENGINES[i].ops == &gaio_engine_kqueue)
            continue; /* libkqueue (setup.py's GAIO_LIBKQUEUE), for tests: by name only */
#endif
        core = gaio_core_new(ENGINES[i].ops, (size_t)bufsize, &gil_runtime, why, sizeof why);
        if (core)
            chosen = &ENGINES[i];
        else
            resource_err = errno;
    }
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
            PyErr_Format(EngineUnavailableError, "engine %s cannot run here: %s", engine, why);
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
        if (p->has_view)
            Py_VISIT(p->view.obj); /* the export holds its own reference */
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
    if (w->core) {
        gaio_core_delete(w->core);
        w->core = NULL;
    }
    for (unsigned i = 0; i < GAIO_SWAP_CHUNKS; i++)
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
    for (int k = 0; k < 2; k++)
        while (w->spare[k]) {
            pyreq *p = w->spare[k];
            w->spare[k] = p->live_next;
            PyMem_Free(p);
        }
    Py_TYPE(w)->tp_free((PyObject *)w);
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
    {"read", (PyCFunction)(void (*)(void))Watcher_read, FASTKW,
     "read($self, conn, buf=None, *, ctx=None, timeout=None, deadline=None)\n--\n\nRequest a read; returns at once."},
    {"read_full", (PyCFunction)(void (*)(void))Watcher_read_full, FASTKW,
     "read_full($self, conn, buf, *, ctx=None, timeout=None, deadline=None)\n--\n\nRequest a read of len(buf) bytes."},
    {"write", (PyCFunction)(void (*)(void))Watcher_write, FASTKW,
     "write($self, conn, data, *, ctx=None, timeout=None, deadline=None)\n--\n\nRequest a write of every byte of data."},
    {"free", (PyCFunction)Watcher_free, METH_O,
     "free($self, conn, /)\n--\n\nClose conn's descriptor; its pending requests end with ConnClosedError."},
    {"wait_io", (PyCFunction)(void (*)(void))Watcher_wait_io, FASTKW,
     "wait_io($self, timeout=None)\n--\n\nWait without the GIL for results; returns a list of OpResult."},
    {"close", (PyCFunction)Watcher_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose every descriptor, drop pending requests. Idempotent."},
    {"stats", (PyCFunction)Watcher_stats, METH_NOARGS, "stats($self, /)\n--\n\nCounters."},
    {"__enter__", (PyCFunction)Watcher_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
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
    .tp_doc = "Watcher(bufsize=65536, *, engine='auto')\n--\n\n"
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

static PyMethodDef module_methods[] = {
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
    ConnRef_Type.tp_name = "gaio._native._ConnRef";
    ConnRef_Type.tp_basicsize = sizeof(ConnRef);
    ConnRef_Type.tp_flags = Py_TPFLAGS_DEFAULT;
    ConnRef_Type.tp_base = &_PyWeakref_RefType;
    if (PyType_Ready(&ConnRef_Type) < 0 || PyType_Ready(&WatcherLink_Type) < 0 ||
        PyType_Ready(&gaio__SwapMem_Type) < 0 || PyType_Ready(&gaio__OpResult_Type) < 0 ||
        PyType_Ready(&Watcher_Type) < 0)
        return NULL;
    if (!(s_fileno = intern("fileno")) || !(s_close = intern("close")) || !(s_detach = intern("detach")) ||
        !(s_conn = intern("conn")) || !(s_buf = intern("buf")) || !(s_data = intern("data")) ||
        !(s_ctx = intern("ctx")) || !(s_timeout = intern("timeout")) ||
        !(s_deadline = intern("deadline")))
        return NULL;
    if (!(WatcherClosedError = import_attr("gaio._errors", "WatcherClosedError")) ||
        !(DeadlineExceededError = import_attr("gaio._errors", "DeadlineExceededError")) ||
        !(ConnClosedError = import_attr("gaio._errors", "ConnClosedError")) ||
        !(EngineUnavailableError = import_attr("gaio._errors", "EngineUnavailableError")) ||
        !(SocketType = import_attr("socket", "socket")) ||
        !(memoryview_release = PyObject_GetAttrString((PyObject *)&PyMemoryView_Type, "release")))
        return NULL;
    PyObject *Op = import_attr("gaio._result", "Op");
    if (!Op)
        return NULL;
    OpREAD = PyObject_GetAttrString(Op, "READ");
    OpWRITE = PyObject_GetAttrString(Op, "WRITE");
    Py_DECREF(Op);
    if (!OpREAD || !OpWRITE)
        return NULL;
    PyObject *m = PyModule_Create(&gaio_module);
    if (!m)
        return NULL;
    Py_INCREF(&Watcher_Type);
    Py_INCREF(&gaio__OpResult_Type);
    if (PyModule_AddObject(m, "Watcher", (PyObject *)&Watcher_Type) < 0 ||
        PyModule_AddObject(m, "OpResult", (PyObject *)&gaio__OpResult_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *names = PyTuple_New(NENGINES);
    if (!names) {
        Py_DECREF(m);
        return NULL;
    }
    for (size_t i = 0; i < NENGINES; i++)
        PyTuple_SET_ITEM(names, i, PyUnicode_FromString(ENGINES[i].name));
    if (PyModule_AddObject(m, "ENGINES", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
