/* Requests: the binding's request struct (pyreq) from allocation to
 * disposal, and the request methods read, read_full, write and free. */
#include "binding.h"

#include <string.h>

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
    gaio__live.requests++;
    return p;
}

static void live_add(Watcher *w, pyreq *p)
{
    p->live_next = w->live.live_next;
    p->live_prev = &w->live;
    w->live.live_next->live_prev = p;
    w->live.live_next = p;
}

void gaio__live_remove(pyreq *p)
{
    p->live_prev->live_next = p->live_next;
    p->live_next->live_prev = p->live_prev;
    p->live_next = p->live_prev = NULL;
}

/* Drop a request's references and recycle its struct (GIL held). */
void gaio__req_dispose(Watcher *w, pyreq *p)
{
    if (p->bufobj) {
        if (p->has_view && p->view.obj)
            PyBuffer_Release(&p->view);
        Py_CLEAR(p->bufobj);
    }
    PyObject *conn = p->conn, *ctx = p->ctx;
    p->conn = p->ctx = NULL;
    int k = p->has_view;
    gaio__live.requests--;
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

enum { ARG_CONN, ARG_BUF, ARG_CTX, ARG_TIMEOUT, ARG_DEADLINE, NARGS };

static PyObject *submit(Watcher *w, const char *fname, int kind, int full,
                        PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (w->closed)
        return gaio__closed_error();
    PyObject *names[NARGS] = {gaio__state.s_conn, kind == GAIO_WRITE ? gaio__state.s_data : gaio__state.s_buf, gaio__state.s_ctx, gaio__state.s_timeout,
                              gaio__state.s_deadline};
    PyObject *a[NARGS];
    int required = (kind == GAIO_READ && !full) ? 1 : 2;
    if (gaio__parse_args(fname, args, nargs, kwnames, names, NARGS, 2, required, a) < 0)
        return NULL;
    PyObject *conn = a[ARG_CONN], *buf = a[ARG_BUF];
    int64_t deadline;
    if (gaio__deadline_arg(a[ARG_TIMEOUT], a[ARG_DEADLINE], &deadline) < 0)
        return NULL;

    map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
    int fd = -1;
    if (!e && (fd = gaio__socket_fd(conn)) < 0)
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
            if (gaio__buffer_arg(buf, &view, 1) < 0)
                return NULL;
            bufobj = buf;
            Py_INCREF(bufobj);
        }
    } else {
        if (!buf) {
            PyErr_SetString(PyExc_ValueError, "write needs data");
            return NULL;
        }
        if (gaio__buffer_arg(buf, &view, 0) < 0)
            return NULL;
        /* a live view's exporter is safe to look at only while we hold an export */
        if (PyMemoryView_Check(buf) && PyMemoryView_GET_BUFFER(buf)->obj &&
            Py_IS_TYPE(PyMemoryView_GET_BUFFER(buf)->obj, &gaio__IbufMem_Type)) {
            /* R6: a view of the internal buffer is copied now: it is reused next batch */
            bufobj = gaio__copy_bytes(w, view.buf, view.len);
            copied = view.len >= COPY_POOL_MIN && view.len <= COPY_POOL_MAX;
            PyBuffer_Release(&view);
            if (!bufobj)
                return NULL;
            if (gaio__buffer_arg(bufobj, &view, 0) < 0) {
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
        gaio__closed_error();
        failed = 1;
    } else if ((e = gaio__map_find(&w->map, (uintptr_t)conn))) {
        id = e->ref->id;
    } else if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "conn was freed meanwhile");
        failed = 1;
    } else if (gaio__delegate(w, conn, fd, &id) < 0) {
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
        gaio__live_remove(p);
        gaio__req_dispose(w, p);
        return rc == -ENOMEM ? PyErr_NoMemory() : gaio__closed_error();
    }
    Py_RETURN_NONE;
}

PyObject *gaio__watcher_read(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "read", GAIO_READ, 0, args, nargs, kw);
}

PyObject *gaio__watcher_read_full(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "read_full", GAIO_READ, 1, args, nargs, kw);
}

PyObject *gaio__watcher_write(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "write", GAIO_WRITE, 0, args, nargs, kw);
}

PyObject *gaio__watcher_free(Watcher *w, PyObject *conn)
{
    if (w->closed)
        return gaio__closed_error();
    map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
    if (!e) {
        int is_sock = PyObject_IsInstance(conn, gaio__state.SocketType);
        if (is_sock < 0)
            return NULL;
        if (!is_sock)
            return gaio__conn_type_error(conn, "free() takes a socket");
        Py_RETURN_NONE; /* unknown, never delegated or already freed */
    }
    uint64_t id = e->ref->id;
    ConnRef *ref = gaio__map_remove(&w->map, e);
    PINNED(w, gaio_core_free(w->core, id));
    Py_DECREF(ref);
    Py_RETURN_NONE;
}
