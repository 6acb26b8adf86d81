/* Requests: the steps every request takes (its socket looked up or
 * delegated, its times, its queueing in the core), and the request methods
 * read, read_full, write and free. accept, connect and sendfile are in
 * request_special.c. */
#include "binding.h"
#include "readiness.h" /* GAIO_IOV_MAX */

#include <string.h>
#include <unistd.h>

/* ---- the steps every request takes ---- */

/* Before the checks that may run Python code: conn is known (delegated) or
 * a socket whose descriptor *fd will be delegated; *flags: GAIO_CONN_*.
 * Datagram sockets only where dgram_ok (R24), delegated or not. */
int gaio__conn_first_look(Watcher *w, PyObject *conn, int *fd, int dgram_ok, unsigned *flags)
{
    *fd = -1;
    map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
    if (e) {
        *flags = entry_flags(e);
        if ((*flags & GAIO_CONN_DGRAM) && !dgram_ok) {
            gaio__stream_only_error(SOCK_DGRAM);
            return -1;
        }
        return 1;
    }
    return (*fd = gaio__socket_fd(conn, dgram_ok, flags)) < 0 ? -1 : 0;
}

/* After them: fileno(), buffer exports, GC callbacks and the Python checks
 * may have run Python code: the watcher may be closed, the map reshaped.
 * Look again, and delegate conn if it is new. */
int gaio__conn_resolve(Watcher *w, PyObject *conn, int fd, unsigned flags, uint64_t *id)
{
    map_entry *e;
    if (w->closed) {
        gaio__closed_error();
        return -1;
    }
    if ((e = gaio__map_find(&w->map, (uintptr_t)conn))) {
        *id = entry_id(e);
        return 0;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "conn was freed meanwhile");
        return -1;
    }
    return gaio__delegate(w, conn, fd, flags, id);
}

/* Hand p (filled) to the core. On failure p is disposed of. */
PyObject *gaio__req_queue(Watcher *w, pyreq *p, PyObject *conn, PyObject *ctx, uint64_t id)
{
    p->conn = conn;
    Py_INCREF(conn);
    p->ctx = ctx ? ctx : Py_None;
    Py_INCREF(p->ctx);
    gaio_req_set_conn_id(&p->req, id);
    /* The standing read holds conn from now until it is disposed of, which
     * makes the entry weak again (done before the core may finish it in
     * another thread): the weakref is not needed meanwhile, and the entry
     * names the standing read instead of a live list. */
    if (pyreq_is_short_standing(p))
        gaio__conn_strong(w, p, id); /* cannot fail: submit() checked the entry */
    else
        gaio__live_add(w, p);
    int rc;
    PINNED(w, rc = gaio_core_submit(w->core, &p->req));
    if (rc < 0) {
        /* nothing was queued: another thread closed the watcher meanwhile,
         * or there was no memory for its deadline or its result */
        gaio__live_remove(p);
        gaio__req_dispose(w, p);
        if (rc == -EALREADY)
            return gaio__tls_again_error();
        return rc == -ENOMEM ? PyErr_NoMemory() : gaio__closed_error();
    }
    Py_RETURN_NONE;
}

int gaio__flag_arg(PyObject *o, uint8_t *flags, uint8_t bit)
{
    if (!o)
        return 0;
    int t = PyObject_IsTrue(o);
    if (t < 0)
        return -1;
    if (t)
        *flags |= bit;
    return 0;
}

/* timeout is an idle limit; when (the deadline argument, parsed) its end */
int gaio__standing_times(gaio_idle *out, int64_t *deadline_ns, PyObject *timeout, int64_t when)
{
    *out = (gaio_idle){.until_ns = GAIO_NO_DEADLINE};
    *deadline_ns = when;
    if (timeout && timeout != Py_None) {
        double t;
        if (gaio__seconds_arg(timeout, "timeout", &t) < 0)
            return -1;
        if (t <= 0) {
            PyErr_SetString(PyExc_ValueError,
                            "a standing request's timeout (an idle limit) must be > 0");
            return -1;
        }
        int64_t ns = gaio__ns_clamp(t * 1e9);
        out->idle_ns = ns == INT64_MAX ? 0 : (ns > 0 ? ns : 1);
        *deadline_ns = out->idle_ns ? when : GAIO_NO_DEADLINE;
    } else {
        out->until_ns = when;
    }
    return 0;
}

int gaio__standing_short(const gaio_idle *t, int64_t deadline_ns)
{
    return !t->idle_ns && deadline_ns == GAIO_NO_DEADLINE;
}

int gaio__standing_set(pyreq *p, const gaio_idle *t, int64_t deadline_ns)
{
    if (pyreq_is_short_standing(p))
        return 0; /* neither a deadline nor an idle limit: nowhere to keep them */
    p->req.deadline_ns = deadline_ns;
    p->req.idle = NULL;
    if (!t->idle_ns)
        return 0; /* deadline_ns is its end, if it has one */
    if (!(p->req.idle = PyMem_Malloc(sizeof *t))) {
        PyErr_NoMemory();
        return -1;
    }
    *p->req.idle = *t;
    return 0;
}

static int is_ibuf_view(PyObject *o)
{
    /* a live view's exporter is safe to look at only while we hold an export */
    return PyMemoryView_Check(o) && PyMemoryView_GET_BUFFER(o)->obj &&
           Py_IS_TYPE(PyMemoryView_GET_BUFFER(o)->obj, &gaio__IbufMem_Type);
}

/* The bytes a write sends from obj, whose buffer view holds: its own
 * (returns 0), or (R6) a copy of an internal-buffer view, which the next
 * batch reuses (returns 1; view->obj is the copy). *poolable: the copy may
 * be recycled (copy pool). */
static int own_bytes(Watcher *w, PyObject *obj, Py_buffer *view, int *poolable, gaio_answer *a)
{
    if (!is_ibuf_view(obj))
        return 0;
    if (a && w->origins.n)
        *a = gaio_origins_find(&w->origins, obj); /* R21: whose bytes these are */
    PyObject *copy = gaio__copy_bytes(w, view->buf, view->len);
    if (poolable)
        *poolable = view->len >= COPY_POOL_MIN && view->len <= COPY_POOL_MAX;
    PyBuffer_Release(view);
    if (!copy)
        return -1;
    int rc = gaio__buffer_arg(copy, view, 0); /* the export keeps the copy */
    Py_DECREF(copy);
    return rc < 0 ? -1 : 1;
}

/* own_bytes() of obj's buffer, taken here. */
static int write_view(Watcher *w, PyObject *obj, Py_buffer *view, int *poolable, gaio_answer *a)
{
    if (gaio__buffer_arg(obj, view, 0) < 0)
        return -1;
    return own_bytes(w, obj, view, poolable, a);
}

/* ---- read, read_full, write ---- */

enum { ARG_CONN, ARG_BUF, ARG_CTX, ARG_TIMEOUT, ARG_DEADLINE, ARG_FLAG, NARGS,
       ARG_ADDRESS = NARGS /* write's only */ };

static PyObject *vector_write(Watcher *w, PyObject *conn, int fd, unsigned cflags, PyObject *data,
                              PyObject *ctx, int64_t when, uint8_t flags, gaio_addr *to);

static PyObject *submit(Watcher *w, const char *fname, int kind, int full,
                        PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (w->closed)
        return gaio__closed_error();
    PyObject *names[NARGS + 1] = {gaio__state.s_conn,
                                  kind == GAIO_WRITE ? gaio__state.s_data : gaio__state.s_buf,
                                  gaio__state.s_ctx, gaio__state.s_timeout, gaio__state.s_deadline,
                                  kind == GAIO_WRITE ? gaio__state.s_quiet : gaio__state.s_repeat,
                                  gaio__state.s_address};
    PyObject *a[NARGS + 1] = {NULL};
    int required = (kind == GAIO_READ && !full) ? 1 : 2;
    int nnames = full ? NARGS - 1 : kind == GAIO_WRITE ? NARGS + 1 : NARGS;
    if (gaio__parse_args(fname, args, nargs, kwnames, names, nnames, 2, required, a) < 0)
        return NULL;
    PyObject *conn = a[ARG_CONN], *buf = a[ARG_BUF];
    int fd;
    unsigned cflags = 0;
    if (gaio__conn_first_look(w, conn, &fd, !full, &cflags) < 0)
        return NULL;
    int dgram = (cflags & GAIO_CONN_DGRAM) != 0;
    int64_t deadline;
    if (gaio__deadline_arg(a[ARG_TIMEOUT], a[ARG_DEADLINE], &deadline) < 0)
        return NULL;
    uint8_t flags = 0;
    if (gaio__flag_arg(a[ARG_FLAG], &flags, kind == GAIO_WRITE ? GAIO_F_QUIET : GAIO_F_REPEAT) < 0)
        return NULL;
    gaio_addr *to = NULL; /* a datagram's address (R25), the request's once queued */
    if (kind == GAIO_WRITE && (dgram || (a[ARG_ADDRESS] && a[ARG_ADDRESS] != Py_None))) {
        if (!dgram) {
            PyErr_SetString(PyExc_ValueError,
                            "address= is for datagram sockets (a stream socket writes to its peer)");
            return NULL;
        }
        if (gaio__datagram_to(conn, cflags, a[ARG_ADDRESS], &to) < 0)
            return NULL;
    }
    if (buf == Py_None)
        buf = NULL;
    if (kind == GAIO_WRITE && buf && (PyList_Check(buf) || PyTuple_Check(buf)))
        return vector_write(w, conn, fd, cflags, buf, a[ARG_CTX], deadline, flags, to);

    Py_buffer view = {0};
    PyObject *bufobj = NULL;
    int copied = 0;
    gaio_answer origin = {0};
    size_t already = 0; /* bytes a quiet write sent at once */
    gaio_idle st = {0}; /* a standing read's times, checked before anything is taken */
    int64_t st_deadline = 0;
    if (kind == GAIO_READ) {
        if (!buf && full) {
            PyErr_SetString(PyExc_ValueError, "buf is required");
            return NULL;
        }
        if (buf && (flags & GAIO_F_REPEAT)) {
            PyErr_SetString(PyExc_ValueError, "a standing read (repeat=True) takes no buffer");
            return NULL;
        }
        if ((flags & GAIO_F_REPEAT) && gaio__standing_times(&st, &st_deadline, a[ARG_TIMEOUT], deadline) < 0)
            return NULL;
        if (buf) {
            if (gaio__buffer_arg(buf, &view, 1) < 0)
                return NULL;
            bufobj = buf;
        }
    } else {
        if (!buf) {
            PyMem_Free(to);
            PyErr_SetString(PyExc_ValueError, "data is required");
            return NULL;
        }
        if (gaio__buffer_arg(buf, &view, 0) < 0) {
            PyMem_Free(to);
            return NULL;
        }
        if ((flags & GAIO_F_QUIET) && fd < 0 && view.len > 0 && !w->closed && !dgram) {
            /* A quiet write to a connection with nothing queued to send is
             * tried now: when the socket takes it all, it needs no request,
             * no copy and no result (as uv_try_write). */
            map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
            ssize_t sent = 0;
            if (e)
                PINNED(w, sent = gaio_core_try_send(w->core, entry_id(e), view.buf, (size_t)view.len));
            if (sent == view.len) {
                PyBuffer_Release(&view);
                Py_RETURN_NONE;
            }
            already = (size_t)sent;
        }
        int was_copied = own_bytes(w, buf, &view, &copied, &origin);
        if (was_copied < 0) {
            PyMem_Free(to);
            return NULL;
        }
        bufobj = was_copied ? view.obj : buf;
    }
    if (bufobj && view.len == 0 && !(dgram && kind == GAIO_WRITE)) {
        /* an empty datagram is a datagram (R24) */
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, kind == GAIO_WRITE ? "data is empty" : "buf is empty");
        return NULL;
    }
    uint64_t id = 0;
    pyreq *p = NULL;
    int resolved = gaio__conn_resolve(w, conn, fd, cflags, &id);
    /* short only when its connection's entry can name it (not a second
     * standing read): nothing runs Python code from here to gaio__req_queue */
    int size = bufobj ? PYREQ_ALLOC_VIEW
               : resolved == 0 && (flags & GAIO_F_REPEAT) && gaio__standing_short(&st, st_deadline) &&
                         gaio__conn_can_name_standing(w, conn, id)
                   ? PYREQ_ALLOC_STANDING_READ
                   : PYREQ_ALLOC_SMALL;
    if (resolved < 0 || !(p = gaio__req_alloc(w, size))) {
        if (bufobj)
            PyBuffer_Release(&view);
        PyMem_Free(to);
        return NULL;
    }
    if (bufobj) {
        Py_INCREF(bufobj);
        p->bufobj = bufobj;
        if (copied)
            p->req.owner |= PYREQ_COPIED;
        p->view = view;
        p->req.buf = view.buf;
        p->req.len = (size_t)view.len;
        p->req.done = already;
    }
    p->req.kind = (uint8_t)kind;
    p->req.op = kind == GAIO_WRITE ? GAIO_OP_WRITE : GAIO_OP_READ;
    p->req.flags = flags | (full ? GAIO_F_FULL : 0);
    if (!pyreq_is_short_standing(p))
        p->req.deadline_ns = deadline;
    if (flags & GAIO_F_REPEAT) {
        if (gaio__standing_set(p, &st, st_deadline) < 0) {
            gaio__req_dispose(w, p);
            return NULL;
        }
    } else if (kind == GAIO_WRITE) {
        p->req.u.w.origin = origin;
        p->req.u.w.to = to;
    }
    return gaio__req_queue(w, p, conn, a[ARG_CTX], id);
}

/* A datagram of more items than one sendmsg takes is still one datagram
 * (R24): its items become one bytes copy, item 0. The copy answers for no
 * standing read (R21), as a copy made by the caller would not. */
static int join_items(Py_buffer *items, Py_ssize_t *used, gaio_answer *origin,
                      int *from_views)
{
    size_t total = 0;
    for (Py_ssize_t i = 0; i < *used; i++)
        total += (size_t)items[i].len;
    PyObject *joined = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!joined)
        return -1;
    char *dst = PyBytes_AS_STRING(joined);
    for (Py_ssize_t i = 0; i < *used; i++) {
        memcpy(dst, items[i].buf, (size_t)items[i].len);
        dst += items[i].len;
        PyBuffer_Release(&items[i]);
    }
    *used = 0;
    int rc = gaio__buffer_arg(joined, &items[0], 0); /* the export keeps the copy */
    Py_DECREF(joined);
    if (rc < 0)
        return -1;
    *used = 1;
    origin[0] = (gaio_answer){0, 0};
    *from_views = 0;
    return 0;
}

/* R18: write(conn, [b1, b2, ...]): one request, sent with sendmsg. */
static PyObject *vector_write(Watcher *w, PyObject *conn, int fd, unsigned cflags, PyObject *data,
                              PyObject *ctx, int64_t when, uint8_t flags, gaio_addr *to)
{
    int dgram = (cflags & GAIO_CONN_DGRAM) != 0;
    PyObject *seq = PySequence_Fast(data, "data"); /* a list may change while we look */
    if (!seq) {
        PyMem_Free(to);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), used = 0;
    Py_buffer *items = PyMem_Calloc(n ? (size_t)n : 1, sizeof *items);
    gaio_answer *origin = PyMem_Calloc(n ? (size_t)n : 1, sizeof *origin); /* R21, per item */
    int from_views = 0;
    size_t total = 0;
    if (!items || !origin) {
        Py_DECREF(seq);
        PyMem_Free(items);
        PyMem_Free(origin);
        PyMem_Free(to);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (item == Py_None || PyList_Check(item) || PyTuple_Check(item)) {
            PyErr_Format(PyExc_TypeError, "data items must be bytes-like objects, not %.100s",
                         gaio__type_name(item));
            goto fail;
        }
        if (write_view(w, item, &items[used], NULL, &origin[used]) < 0) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, PyObject_CheckBuffer(item)
                             ? "data items must be contiguous buffers, not a non-contiguous %.100s"
                             : "data items must be bytes-like objects, not %.100s",
                             gaio__type_name(item));
            }
            goto fail;
        }
        if (items[used].len == 0) {
            PyBuffer_Release(&items[used]);
            origin[used] = (gaio_answer){0, 0};
            continue;
        }
        from_views |= origin[used].conn_id != 0;
        total += (size_t)items[used].len;
        used++;
    }
    Py_DECREF(seq);
    seq = NULL;
    if (!total && !(dgram && n)) {
        /* items that are all empty are one empty datagram (R24) */
        PyErr_SetString(PyExc_ValueError, "vectored write of no bytes (empty sequence or all items empty)");
        goto fail;
    }
    if (dgram && used > GAIO_IOV_MAX && join_items(items, &used, origin, &from_views) < 0)
        goto fail;
    size_t origin_size = from_views ? (size_t)used * sizeof *origin : 0;
    gaio_vec *vec = PyMem_Malloc(sizeof *vec + (size_t)used * sizeof(struct iovec) + origin_size);
    if (!vec) {
        PyErr_NoMemory();
        goto fail;
    }
    memset(&vec->msg, 0, sizeof vec->msg);
    vec->n = (uint32_t)used;
    vec->cur = 0;
    for (Py_ssize_t i = 0; i < used; i++)
        vec->iov[i] = (struct iovec){items[i].buf, (size_t)items[i].len};
    vec->origin = from_views ? (gaio_answer *)&vec->iov[used] : NULL;
    if (from_views)
        memcpy(vec->origin, origin, origin_size);
    PyMem_Free(origin);
    origin = NULL;
    uint64_t id = 0;
    pyreq *p = NULL;
    if (gaio__conn_resolve(w, conn, fd, cflags, &id) < 0 || !(p = gaio__req_alloc(w, PYREQ_ALLOC_VIEW))) {
        PyMem_Free(vec);
        goto fail;
    }
    p->req.owner |= PYREQ_IS_VECTOR;
    p->vec.items = items;
    p->vec.n = used;
    p->bufobj = data; /* the result's buffer: the list or tuple given */
    Py_INCREF(data);
    p->req.kind = GAIO_WRITE;
    p->req.op = GAIO_OP_WRITE;
    p->req.flags = flags;
    p->req.len = total;
    p->req.deadline_ns = when;
    p->req.u.w.vec = vec;
    p->req.u.w.to = to;
    return gaio__req_queue(w, p, conn, ctx, id);
fail:
    Py_XDECREF(seq);
    PyMem_Free(origin);
    PyMem_Free(to);
    gaio__release_items(items, used);
    return NULL;
}

PyObject *gaio__watcher_read(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "Watcher.read", GAIO_READ, 0, args, nargs, kw);
}

PyObject *gaio__watcher_read_full(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "Watcher.read_full", GAIO_READ, 1, args, nargs, kw);
}

PyObject *gaio__watcher_write(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return submit(w, "Watcher.write", GAIO_WRITE, 0, args, nargs, kw);
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
            return gaio__conn_type_error(conn, "a socket.socket");
        Py_RETURN_NONE; /* unknown, never delegated or already freed */
    }
    if (gaio__tls_refuse_close(w) < 0)
        return NULL;
    uint64_t id = entry_id(e);
    gaio__map_drop(&w->map, e); /* conn is the caller's: nothing is deallocated */
    if (w->tls_used) /* after the map's entry: Python code may run, and change the map */
        gaio__tls_goodbye(w, id); /* R30: close_notify first, if it goes at once */
    gaio__forget_connect_error(w, id);
    PINNED(w, gaio_core_free(w->core, id));
    Py_RETURN_NONE;
}
