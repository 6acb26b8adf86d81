/* Requests: the binding's request struct (pyreq) from allocation to
 * disposal, and the request methods read, read_full, write, accept,
 * connect, sendfile and free. The checks of the rarer requests (accept,
 * connect, sendfile) are gaio._python_args' own, called from here, so both
 * kinds of engine refuse the same arguments with the same words. */
#include "binding.h"

#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <unistd.h>

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

static void release_items(Py_buffer *items, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        PyBuffer_Release(&items[i]);
    PyMem_Free(items);
}

/* Drop a request's references and recycle its struct (GIL held). */
void gaio__req_dispose(Watcher *w, pyreq *p)
{
    if (p->is_vector) {
        release_items(p->vec.items, p->vec.n);
        PyMem_Free(p->req.u.w.vec);
        p->is_vector = 0;
    } else if (p->has_view && p->view.obj) {
        PyBuffer_Release(&p->view);
    }
    if (p->req.op == GAIO_OP_CONNECT && p->req.u.c.addr) {
        PyMem_Free(p->req.u.c.addr);
        p->req.u.c.addr = NULL;
    }
    if (p->req.op == GAIO_OP_SENDFILE && p->req.u.w.file_fd >= 0) {
        close(p->req.u.w.file_fd);
        p->req.u.w.file_fd = -1;
    }
    PyObject *conn = p->conn, *ctx = p->ctx, *buf = p->bufobj;
    p->conn = p->ctx = p->bufobj = NULL;
    int k = p->has_view;
    gaio__live.requests--;
    if (w->nspare[k] < MAX_SPARE) {
        p->live_next = w->spare[k];
        w->spare[k] = p;
        w->nspare[k]++;
    } else {
        PyMem_Free(p);
    }
    Py_XDECREF(buf);
    Py_XDECREF(conn);
    Py_XDECREF(ctx);
}

/* ---- the steps every request takes ---- */

/* Before the checks that may run Python code: conn is known (delegated) or
 * a stream socket whose descriptor *fd will be delegated. `dgram`: the
 * request takes datagram sockets on the python engine (gaio__socket_fd). */
static int conn_first_look(Watcher *w, PyObject *conn, int *fd, int dgram)
{
    *fd = -1;
    if (gaio__map_find(&w->map, (uintptr_t)conn))
        return 1;
    return (*fd = gaio__socket_fd(conn, dgram ? w->engine_name : NULL)) < 0 ? -1 : 0;
}

/* After them: fileno(), buffer exports, GC callbacks and the Python checks
 * may have run Python code: the watcher may be closed, the map reshaped.
 * Look again, and delegate conn if it is new. */
static int conn_resolve(Watcher *w, PyObject *conn, int fd, uint64_t *id)
{
    map_entry *e;
    if (w->closed) {
        gaio__closed_error();
        return -1;
    }
    if ((e = gaio__map_find(&w->map, (uintptr_t)conn))) {
        *id = e->ref->id;
        return 0;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "conn was freed meanwhile");
        return -1;
    }
    return gaio__delegate(w, conn, fd, id);
}

/* Hand p (filled) to the core. On failure p is disposed of. */
static PyObject *queue(Watcher *w, pyreq *p, PyObject *conn, PyObject *ctx, uint64_t id)
{
    p->conn = conn;
    Py_INCREF(conn);
    p->ctx = ctx ? ctx : Py_None;
    Py_INCREF(p->ctx);
    p->req.conn_id = id;
    live_add(w, p);
    int rc;
    PINNED(w, rc = gaio_core_submit(w->core, &p->req));
    if (rc < 0) {
        /* nothing was queued: another thread closed the watcher meanwhile,
         * or there was no memory for its deadline or its result */
        gaio__live_remove(p);
        gaio__req_dispose(w, p);
        return rc == -ENOMEM ? PyErr_NoMemory() : gaio__closed_error();
    }
    Py_RETURN_NONE;
}

static int flag_arg(PyObject *o, uint8_t *flags, uint8_t bit)
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

/* A standing request's times (R20): timeout is an idle limit, deadline its end. */
static int standing_times(gaio_req *r, PyObject *timeout, PyObject *deadline, int64_t when)
{
    r->u.st.until_ns = GAIO_NO_DEADLINE;
    r->u.st.idle_ns = 0;
    r->deadline_ns = when;
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
        r->u.st.idle_ns = ns == INT64_MAX ? 0 : (ns > 0 ? ns : 1);
        r->deadline_ns = r->u.st.idle_ns ? when : GAIO_NO_DEADLINE;
    } else {
        r->u.st.until_ns = when;
    }
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

static PyObject *vector_write(Watcher *w, PyObject *conn, int fd, PyObject *data, PyObject *ctx,
                              int64_t when, uint8_t flags);

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
    if (conn_first_look(w, conn, &fd, !full) < 0)
        return NULL;
    int64_t deadline;
    if (gaio__deadline_arg(a[ARG_TIMEOUT], a[ARG_DEADLINE], &deadline) < 0)
        return NULL;
    uint8_t flags = 0;
    if (flag_arg(a[ARG_FLAG], &flags, kind == GAIO_WRITE ? GAIO_F_QUIET : GAIO_F_REPEAT) < 0)
        return NULL;
    if (a[ARG_ADDRESS] && a[ARG_ADDRESS] != Py_None) {
        /* conn is a stream socket: datagram sockets are refused above (R25) */
        PyErr_SetString(PyExc_ValueError,
                        "address= is for datagram sockets (a stream socket writes to its peer)");
        return NULL;
    }
    if (buf == Py_None)
        buf = NULL;
    if (kind == GAIO_WRITE && buf && (PyList_Check(buf) || PyTuple_Check(buf)))
        return vector_write(w, conn, fd, buf, a[ARG_CTX], deadline, flags);

    Py_buffer view = {0};
    PyObject *bufobj = NULL;
    int copied = 0;
    gaio_answer origin = {0};
    size_t already = 0; /* bytes a quiet write sent at once */
    gaio_req st = {0}; /* a standing read's times, checked before anything is taken */
    if (kind == GAIO_READ) {
        if (!buf && full) {
            PyErr_SetString(PyExc_ValueError, "buf is required");
            return NULL;
        }
        if (buf && (flags & GAIO_F_REPEAT)) {
            PyErr_SetString(PyExc_ValueError, "a standing read (repeat=True) takes no buffer");
            return NULL;
        }
        if ((flags & GAIO_F_REPEAT) && standing_times(&st, a[ARG_TIMEOUT], a[ARG_DEADLINE], deadline) < 0)
            return NULL;
        if (buf) {
            if (gaio__buffer_arg(buf, &view, 1) < 0)
                return NULL;
            bufobj = buf;
        }
    } else {
        if (!buf) {
            PyErr_SetString(PyExc_ValueError, "data is required");
            return NULL;
        }
        if (gaio__buffer_arg(buf, &view, 0) < 0)
            return NULL;
        if ((flags & GAIO_F_QUIET) && fd < 0 && view.len > 0 && !w->closed) {
            /* A quiet write to a connection with nothing queued to send is
             * tried now: when the socket takes it all, it needs no request,
             * no copy and no result (as uv_try_write). */
            map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
            ssize_t sent = 0;
            if (e)
                PINNED(w, sent = gaio_core_try_send(w->core, e->ref->id, view.buf, (size_t)view.len));
            if (sent == view.len) {
                PyBuffer_Release(&view);
                Py_RETURN_NONE;
            }
            already = (size_t)sent;
        }
        int was_copied = own_bytes(w, buf, &view, &copied, &origin);
        if (was_copied < 0)
            return NULL;
        bufobj = was_copied ? view.obj : buf;
    }
    if (bufobj && view.len == 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, kind == GAIO_WRITE ? "data is empty" : "buf is empty");
        return NULL;
    }
    uint64_t id = 0;
    pyreq *p = NULL;
    if (conn_resolve(w, conn, fd, &id) < 0 || !(p = req_alloc(w, bufobj != NULL))) {
        if (bufobj)
            PyBuffer_Release(&view);
        return NULL;
    }
    if (bufobj) {
        Py_INCREF(bufobj);
        p->bufobj = bufobj;
        p->copied = copied;
        p->view = view;
        p->req.buf = view.buf;
        p->req.len = (size_t)view.len;
        p->req.done = already;
    }
    p->req.kind = (uint8_t)kind;
    p->req.op = kind == GAIO_WRITE ? GAIO_OP_WRITE : GAIO_OP_READ;
    p->req.full = (uint8_t)full;
    p->req.flags = flags;
    p->req.deadline_ns = deadline;
    if (flags & GAIO_F_REPEAT) {
        p->req.u.st = st.u.st;
        p->req.deadline_ns = st.deadline_ns;
    } else if (kind == GAIO_WRITE) {
        p->req.u.w.origin = origin;
    }
    return queue(w, p, conn, a[ARG_CTX], id);
}

/* R18: write(conn, [b1, b2, ...]): one request, sent with sendmsg. */
static PyObject *vector_write(Watcher *w, PyObject *conn, int fd, PyObject *data, PyObject *ctx,
                              int64_t when, uint8_t flags)
{
    PyObject *seq = PySequence_Fast(data, "data"); /* a list may change while we look */
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), used = 0;
    Py_buffer *items = PyMem_Calloc(n ? (size_t)n : 1, sizeof *items);
    gaio_answer *origin = PyMem_Calloc(n ? (size_t)n : 1, sizeof *origin); /* R21, per item */
    int from_views = 0;
    size_t total = 0;
    if (!items || !origin) {
        Py_DECREF(seq);
        PyMem_Free(items);
        PyMem_Free(origin);
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
    if (!total) {
        PyErr_SetString(PyExc_ValueError, "vectored write of no bytes (empty sequence or all items empty)");
        goto fail;
    }
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
    if (conn_resolve(w, conn, fd, &id) < 0 || !(p = req_alloc(w, 1))) {
        PyMem_Free(vec);
        goto fail;
    }
    p->is_vector = 1;
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
    return queue(w, p, conn, ctx, id);
fail:
    Py_XDECREF(seq);
    PyMem_Free(origin);
    release_items(items, used);
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

/* ---- accept, connect, sendfile (R16, R17, R19) ---- */

/* What these requests check first, in this order (as submit()): a closed
 * watcher, the arguments, the socket (a[0]), the times. Returns 1 when the
 * socket is this watcher's already, 0 when *fd is its descriptor to
 * delegate, -1 on error. */
static int prologue(Watcher *w, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames, PyObject *const *names, int nnames, int maxpos,
                    int required, PyObject **a, PyObject *timeout_deadline[2], int *fd,
                    int64_t *when, int dgram)
{
    if (w->closed) {
        gaio__closed_error();
        return -1;
    }
    if (gaio__parse_args(fname, args, nargs, kwnames, names, nnames, maxpos, required, a) < 0)
        return -1;
    int known = conn_first_look(w, a[0], fd, dgram);
    if (known < 0 || gaio__deadline_arg(timeout_deadline[0], timeout_deadline[1], when) < 0)
        return -1;
    return known;
}

static int py_check(PyObject *fn, PyObject *a, PyObject *b)
{
    PyObject *r = b ? PyObject_CallFunctionObjArgs(fn, a, b, NULL) : PyObject_CallOneArg(fn, a);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* accept() on a socket this watcher has: it must be listening (R16). */
static int delegated_listening(Watcher *w, PyObject *conn)
{
    map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
    int fd = -1, on = 0;
    if (e)
        PINNED(w, fd = gaio_core_conn_fd(w->core, e->ref->id));
#ifdef SO_ACCEPTCONN
    socklen_t len = sizeof on;
    if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0)
        on = 0;
#else
    on = fd >= 0; /* no way to ask: accept() will tell */
#endif
    if (!on)
        PyErr_SetString(PyExc_ValueError, "accept() needs a listening socket (call listen() first)");
    return on;
}

PyObject *gaio__watcher_accept(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    enum { L, CTX, TIMEOUT, DEADLINE, REPEAT, N };
    PyObject *names[N] = {gaio__state.s_listener, gaio__state.s_ctx, gaio__state.s_timeout,
                          gaio__state.s_deadline, gaio__state.s_repeat};
    PyObject *a[N] = {NULL};
    int fd;
    int64_t when;
    int known = prologue(w, "Watcher.accept", args, nargs, kwnames, names, N, 1, 1, a, a + TIMEOUT, &fd, &when, 0);
    if (known < 0)
        return NULL;
    gaio_req st = {0};
    if (flag_arg(a[REPEAT], &st.flags, GAIO_F_REPEAT) < 0)
        return NULL;
    if ((st.flags & GAIO_F_REPEAT) && standing_times(&st, a[TIMEOUT], a[DEADLINE], when) < 0)
        return NULL;
    if (!known && py_check(gaio__state.check_listener, a[L], NULL) < 0)
        return NULL;
    if (known && !delegated_listening(w, a[L]))
        return NULL;
    uint64_t id;
    pyreq *p = NULL;
    if (conn_resolve(w, a[L], fd, &id) < 0 || !(p = req_alloc(w, 0)))
        return NULL;
    p->req.kind = GAIO_READ;
    p->req.op = GAIO_OP_ACCEPT;
    p->req.flags = st.flags;
    p->req.deadline_ns = when;
    if (st.flags & GAIO_F_REPEAT) {
        p->req.u.st = st.u.st;
        p->req.deadline_ns = st.deadline_ns;
    }
    return queue(w, p, a[L], a[CTX], id);
}

/* R17: connect_ex() answered EAGAIN. On an AF_UNIX socket that is Linux's
 * answer for a listener whose backlog is full: nothing is in progress, and
 * the core tries again (a blocking connect would wait). *addr gets the
 * address as connect() takes it, as CPython builds it (a str or path-like
 * encoded with the file system encoding, NUL-terminated unless abstract).
 * Any other family: *addr stays NULL and the connect fails with EAGAIN. */
static int unix_address(PyObject *sock, PyObject *address, struct sockaddr **addr, socklen_t *len)
{
    *addr = NULL;
    PyObject *family = PyObject_GetAttr(sock, gaio__state.s_family);
    if (!family)
        return -1;
    long fam = PyLong_AsLong(family);
    Py_DECREF(family);
    if (fam == -1 && PyErr_Occurred())
        return -1;
    if (fam != AF_UNIX)
        return 0;
    PyObject *bytes = NULL;
    Py_buffer path;
    if (PyObject_CheckBuffer(address)) {
        if (PyObject_GetBuffer(address, &path, PyBUF_SIMPLE) < 0)
            return -1;
    } else {
        if (!PyUnicode_FSConverter(address, &bytes))
            return -1;
        if (PyObject_GetBuffer(bytes, &path, PyBUF_SIMPLE) < 0) {
            Py_DECREF(bytes);
            return -1;
        }
    }
    struct sockaddr_un *un = NULL;
    if ((size_t)path.len > sizeof un->sun_path) {
        /* connect_ex() took it: cannot happen */
        PyErr_SetString(PyExc_OSError, "AF_UNIX path too long");
    } else if (!(un = PyMem_Calloc(1, sizeof *un))) {
        PyErr_NoMemory();
    } else {
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path.buf, (size_t)path.len);
        size_t n = (size_t)path.len;
        if ((n == 0 || un->sun_path[0] != 0) && n < sizeof un->sun_path)
            n++; /* a path (not an abstract name): its terminating NUL */
        *addr = (struct sockaddr *)un;
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    }
    PyBuffer_Release(&path);
    Py_XDECREF(bytes);
    return un ? 0 : -1;
}

PyObject *gaio__watcher_connect(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    enum { S, ADDR, CTX, TIMEOUT, DEADLINE, N };
    PyObject *names[N] = {gaio__state.s_sock, gaio__state.s_address, gaio__state.s_ctx,
                          gaio__state.s_timeout, gaio__state.s_deadline};
    PyObject *a[N] = {NULL};
    int fd;
    int64_t when;
    int known = prologue(w, "Watcher.connect", args, nargs, kwnames, names, N, 2, 2, a, a + TIMEOUT, &fd, &when, 1);
    if (known < 0)
        return NULL;
    PyObject *sock = a[S];
    if (known) {
        PyErr_SetString(PyExc_ValueError, "connect() on a delegated socket");
        return NULL;
    }
    if (py_check(gaio__state.check_connect_socket, sock, NULL) < 0)
        return NULL;
    PyObject *family = PyObject_GetAttr(sock, gaio__state.s_family);
    if (!family)
        return NULL;
    int rc = py_check(gaio__state.check_address, family, a[ADDR]);
    Py_DECREF(family);
    if (rc < 0)
        return NULL;
    /* connect() now, non-blocking (no DNS: the address is numeric); the
     * engine waits for its outcome (EINPROGRESS) */
    PyObject *r = PyObject_CallMethodObjArgs(sock, gaio__state.s_setblocking, Py_False, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    r = PyObject_CallMethodObjArgs(sock, gaio__state.s_connect_ex, a[ADDR], NULL);
    if (!r)
        return NULL;
    long err = PyLong_AsLong(r);
    Py_DECREF(r);
    if (err == -1 && PyErr_Occurred())
        return NULL;
    if (err == EALREADY)
        err = EINPROGRESS;
    struct sockaddr *retry = NULL;
    socklen_t retry_len = 0;
    if (err == EAGAIN && unix_address(sock, a[ADDR], &retry, &retry_len) < 0)
        return NULL;
    uint64_t id;
    pyreq *p = NULL;
    if (conn_resolve(w, sock, fd, &id) < 0 || !(p = req_alloc(w, 0))) {
        PyMem_Free(retry);
        return NULL;
    }
    p->req.kind = GAIO_WRITE;
    p->req.op = GAIO_OP_CONNECT;
    p->req.error = (int)err;
    p->req.u.c.addr = retry;
    p->req.u.c.addrlen = retry_len;
    p->req.deadline_ns = when;
    return queue(w, p, sock, a[CTX], id);
}

PyObject *gaio__watcher_sendfile(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    enum { C, FILE_, OFFSET, COUNT, CTX, TIMEOUT, DEADLINE, QUIET, N };
    PyObject *names[N] = {gaio__state.s_conn, gaio__state.s_file, gaio__state.s_offset,
                          gaio__state.s_count, gaio__state.s_ctx, gaio__state.s_timeout,
                          gaio__state.s_deadline, gaio__state.s_quiet};
    PyObject *a[N] = {NULL};
    int fd;
    int64_t when;
    if (prologue(w, "Watcher.sendfile", args, nargs, kwnames, names, N, 4, 2, a, a + TIMEOUT, &fd, &when, 0) < 0)
        return NULL;
    uint8_t flags = 0;
    if (flag_arg(a[QUIET], &flags, GAIO_F_QUIET) < 0)
        return NULL;
    PyObject *offset = a[OFFSET] ? a[OFFSET] : gaio__state.zero;
    PyObject *src = PyObject_CallFunctionObjArgs(gaio__state.sendfile_source, a[FILE_], offset,
                                                 a[COUNT] ? a[COUNT] : Py_None, NULL);
    if (!src)
        return NULL;
    int file_fd = -1;
    long long off = PyLong_AsLongLong(offset);
    long long count = -1;
    if (PyTuple_Check(src) && PyTuple_GET_SIZE(src) == 2) {
        file_fd = (int)PyLong_AsLong(PyTuple_GET_ITEM(src, 0));
        count = PyLong_AsLongLong(PyTuple_GET_ITEM(src, 1));
    }
    Py_DECREF(src);
    if (PyErr_Occurred())
        return NULL;
    int own = -1;
    /* our own descriptor of the file: the caller may close theirs meanwhile */
    if (count > 0 && (own = fcntl(file_fd, F_DUPFD_CLOEXEC, 0)) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    uint64_t id;
    pyreq *p = NULL;
    if (conn_resolve(w, a[C], fd, &id) < 0 || !(p = req_alloc(w, 0))) {
        if (own >= 0)
            close(own);
        return NULL;
    }
    p->req.kind = GAIO_WRITE;
    p->req.op = GAIO_OP_SENDFILE;
    p->req.flags = flags;
    p->req.len = (size_t)count;
    p->req.deadline_ns = when;
    p->req.u.w.file_fd = own;
    p->req.u.w.file_off = (int64_t)off;
    return queue(w, p, a[C], a[CTX], id);
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
    uint64_t id = e->ref->id;
    ConnRef *ref = gaio__map_remove(&w->map, e);
    PINNED(w, gaio_core_free(w->core, id));
    Py_DECREF(ref);
    Py_RETURN_NONE;
}
