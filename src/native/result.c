/* gaio._native.OpResult (immutable, slots, no __dict__) and the internal
 * buffer's memory owner behind the read-only views that internal-buffer reads return. */
#include "binding.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *op, *conn, *ctx, *buffer, *error, *accepted;
    PyObject *address;          /* NULL: None */
    Py_ssize_t size;
    char is_swap_buffer;
    char truncated;
} OpResult;

PyObject *gaio__opresult_new(PyObject *op, PyObject *conn, PyObject *ctx, PyObject *buffer,
                             Py_ssize_t size, PyObject *error, int is_ibuf, PyObject *accepted)
{
    /* steals conn, ctx, buffer, error, accepted; borrows op */
    OpResult *r = PyObject_GC_New(OpResult, &gaio__OpResult_Type);
    if (!r) {
        Py_XDECREF(conn);
        Py_XDECREF(ctx);
        Py_XDECREF(buffer);
        Py_XDECREF(error);
        Py_XDECREF(accepted);
        return NULL;
    }
    r->accepted = accepted;
    r->address = NULL;
    r->truncated = 0;
    Py_INCREF(op);
    r->op = op;
    r->conn = conn;
    r->ctx = ctx;
    r->buffer = buffer;
    r->error = error;
    r->size = size;
    r->is_swap_buffer = (char)is_ibuf;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

static int opresult_traverse(OpResult *r, visitproc visit, void *arg)
{
    Py_VISIT(r->op);
    Py_VISIT(r->conn);
    Py_VISIT(r->ctx);
    Py_VISIT(r->buffer);
    Py_VISIT(r->error);
    Py_VISIT(r->accepted);
    Py_VISIT(r->address);
    return 0;
}

static int opresult_clear(OpResult *r)
{
    Py_CLEAR(r->op);
    Py_CLEAR(r->conn);
    Py_CLEAR(r->ctx);
    Py_CLEAR(r->buffer);
    Py_CLEAR(r->error);
    Py_CLEAR(r->accepted);
    Py_CLEAR(r->address);
    return 0;
}

static void opresult_dealloc(OpResult *r)
{
    PyObject_GC_UnTrack(r);
    Py_TRASHCAN_BEGIN(r, opresult_dealloc)
    opresult_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
    Py_TRASHCAN_END
}

static PyObject *opresult_repr(OpResult *r)
{
    PyObject *name = PyObject_GetAttrString(r->op, "name");
    if (!name)
        return NULL;
    PyObject *s = PyUnicode_FromFormat("OpResult(op=%U, conn=%R, size=%zd, error=%R, is_swap_buffer=%s)",
                                       name, r->conn, r->size, r->error,
                                       r->is_swap_buffer ? "True" : "False");
    Py_DECREF(name);
    return s;
}

static PyMemberDef opresult_members[] = {
    {"op", T_OBJECT, offsetof(OpResult, op), READONLY,
     "Op.READ, Op.WRITE, Op.ACCEPT, Op.CONNECT, Op.SENDFILE or Op.TLS"},
    {"conn", T_OBJECT, offsetof(OpResult, conn), READONLY, "the socket object of the request"},
    {"ctx", T_OBJECT, offsetof(OpResult, ctx), READONLY, "the request's ctx, unchanged"},
    {"buffer", T_OBJECT, offsetof(OpResult, buffer), READONLY,
     "the caller's buffer, or a read-only memoryview over the internal buffer"},
    {"size", T_PYSSIZET, offsetof(OpResult, size), READONLY, "bytes transferred"},
    {"error", T_OBJECT, offsetof(OpResult, error), READONLY, "None or the exception"},
    {"is_swap_buffer", T_BOOL, offsetof(OpResult, is_swap_buffer), READONLY,
     "True when buffer views the internal buffer"},
    {"accepted", T_OBJECT, offsetof(OpResult, accepted), READONLY,
     "the new connection of an ACCEPT result (a socket.socket, not delegated); None otherwise"},
    {NULL},
};

/* 0.3's datagram fields (R24, R25): neutral on every result they do not concern. */
/* A start_tls result has no sender: its address slot holds the session's
 * SSLObject (R28), which costs no other result a field. */
static int is_tls(const OpResult *r) { return r->op == gaio__state.Op[GAIO_OP_TLS]; }

static PyObject *opresult_address(OpResult *r, void *c)
{
    PyObject *a = r->address && !is_tls(r) ? r->address : Py_None;
    Py_INCREF(a);
    return a;
}

static PyObject *opresult_truncated(OpResult *r, void *c) { return PyBool_FromLong(r->truncated); }
static PyObject *opresult_tls(OpResult *r, void *c)
{
    PyObject *a = r->address && is_tls(r) ? r->address : Py_None;
    Py_INCREF(a);
    return a;
}

static PyGetSetDef opresult_getset[] = {
    {"address", (getter)opresult_address, NULL,
     "a datagram's sender on an unconnected datagram socket; None otherwise", NULL},
    {"truncated", (getter)opresult_truncated, NULL,
     "True when a datagram was longer than its buffer; False otherwise", NULL},
    {"tls", (getter)opresult_tls, NULL,
     "the session's ssl.SSLObject on the result of start_tls(); None otherwise", NULL},
    {NULL},
};

PyTypeObject gaio__OpResult_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gaio._native.OpResult",
    .tp_basicsize = sizeof(OpResult),
    .tp_dealloc = (destructor)opresult_dealloc,
    .tp_repr = (reprfunc)opresult_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The completion of one request (immutable).",
    .tp_traverse = (traverseproc)opresult_traverse,
    .tp_clear = (inquiry)opresult_clear,
    .tp_members = opresult_members,
    .tp_getset = opresult_getset,
};

/* ---- IbufMem ---- */

gaio__IbufMem *gaio__ibufmem_new(unsigned char *mem)
{
    /* not GC-tracked: creating one never runs a collection */
    gaio__IbufMem *m = PyObject_New(gaio__IbufMem, &gaio__IbufMem_Type);
    if (!m)
        return NULL;
    m->mem = mem;
    m->owned = NULL;
    m->exports = 0;
    m->armed = NULL;
    m->armed_len = 0;
    return m;
}

PyObject *gaio__ibufmem_view(gaio__IbufMem *m, unsigned char *ptr, Py_ssize_t len)
{
    m->armed = ptr;
    m->armed_len = len;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)m);
    m->armed = NULL;
    return mv;
}

static int ibufmem_getbuffer(gaio__IbufMem *m, Py_buffer *view, int flags)
{
    if (!m->armed) {
        PyErr_SetString(PyExc_BufferError,
                        "gaio's internal buffer is exported only through the views in results");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)m, m->armed, m->armed_len, 1, flags) < 0)
        return -1;
    m->exports++;
    return 0;
}

static void ibufmem_releasebuffer(gaio__IbufMem *m, Py_buffer *view)
{
    m->exports--;
}

static void ibufmem_dealloc(gaio__IbufMem *m)
{
    if (m->owned)
        gaio__live.ibuf_chunks_kept--;
    free(m->owned);
    PyObject_Free(m);
}

static PyBufferProcs ibufmem_as_buffer = {
    (getbufferproc)ibufmem_getbuffer,
    (releasebufferproc)ibufmem_releasebuffer,
};

PyTypeObject gaio__IbufMem_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gaio._native.InternalBuffer",
    .tp_basicsize = sizeof(gaio__IbufMem),
    .tp_dealloc = (destructor)ibufmem_dealloc,
    .tp_as_buffer = &ibufmem_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory of gaio's internal buffer behind result views (not for direct use).",
};

/* ---- the batch: building results, releasing views, the copy pool ---- */

/* The watcher's bytes copy of an internal-buffer view: a pooled one whose
 * size fits (it is ours alone: refcount 1, no hash users), or a new one. */
PyObject *gaio__copy_bytes(Watcher *w, const void *src, Py_ssize_t len)
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

PyObject *gaio__error_object(int error)
{
    switch (error) {
    case 0:
        Py_RETURN_NONE;
    case GAIO_ERR_EOF:
        return PyObject_CallNoArgs(PyExc_EOFError);
    case GAIO_ERR_DEADLINE:
        return PyObject_CallFunction(gaio__state.DeadlineExceededError, "s", "deadline exceeded");
    case GAIO_ERR_CLOSED:
        return PyObject_CallFunction(gaio__state.ConnClosedError, "s", "connection freed");
    case ENOMEM: /* the core or the kernel ran out of memory for this request */
        return PyObject_CallFunction(PyExc_MemoryError, "s", strerror(ENOMEM));
    default:
        return PyObject_CallFunction(PyExc_OSError, "is", error, strerror(error));
    }
}

/* Views of the last batch are released; memory still exported by the caller
 * is handed to its owner object, so no one ever sees reused bytes (R4). */
void gaio__release_batch(Watcher *w, int closing)
{
    Py_ssize_t n = w->views ? PyList_GET_SIZE(w->views) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallOneArg(gaio__state.memoryview_release, PyList_GET_ITEM(w->views, i));
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear(); /* exported by the caller: handled below */
    }
    if (n)
        PyList_SetSlice(w->views, 0, n, NULL);
    gaio_origins_reset(&w->origins);
    for (unsigned i = 0; i < GAIO_IBUF_CHUNKS; i++) {
        gaio__IbufMem *m = w->chunk_mem[i];
        if (m && (closing || m->exports > 0)) {
            m->owned = gaio_core_ibuf_detach(w->core, i);
            if (m->owned)
                gaio__live.ibuf_chunks_kept++;
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
        gaio_core_ibuf_reset(w->core);
}

/* The owner object of internal-buffer bytes at ptr (a new reference). */
static gaio__IbufMem *ibuf_owner(Watcher *w, const unsigned char *ptr)
{
    for (unsigned i = 0; i < GAIO_IBUF_CHUNKS; i++) {
        size_t size;
        unsigned char *c = gaio_core_ibuf_chunk(w->core, i, &size);
        if (!c || ptr < c || ptr >= c + size)
            continue;
        gaio__IbufMem *m = w->chunk_mem[i];
        if (!m || m->mem != c) {
            Py_XDECREF(m);
            m = w->chunk_mem[i] = gaio__ibufmem_new(c);
            if (!m)
                return NULL;
        }
        Py_INCREF(m);
        return m;
    }
    PyErr_SetString(PyExc_SystemError, "gaio: an internal-buffer read outside the internal buffer");
    return NULL;
}

/* What phase 1 keeps of a result: nothing of it may be read from the
 * request after Python code ran (the request of an arrival stays queued,
 * and a close() run by a finalizer would dispose of it). */
typedef struct {
    PyObject *conn, *ctx;       /* strong */
    gaio__IbufMem *owner;       /* strong, for internal-buffer bytes */
    pyreq *final;               /* the request, off the live list, when the result is its last */
    uint64_t conn_id;           /* of a standing read's arrival, for gaio_origins_note (else 0) */
    uint32_t seq;
    uint8_t op;
} pending_item;

static PyObject *accepted_socket(PyObject *listener, int fd)
{
    /* _socket.socket's own getters: the listener is detached but keeps them */
    PyObject *f = Py_TYPE(gaio__state.sock_family)->tp_descr_get(gaio__state.sock_family, listener, NULL);
    PyObject *t = f ? Py_TYPE(gaio__state.sock_type)->tp_descr_get(gaio__state.sock_type, listener, NULL) : NULL;
    PyObject *p = t ? Py_TYPE(gaio__state.sock_proto)->tp_descr_get(gaio__state.sock_proto, listener, NULL) : NULL;
    PyObject *fdo = p ? PyLong_FromLong(fd) : NULL;
    PyObject *s = fdo ? PyObject_CallFunctionObjArgs(gaio__state.SocketType, f, t, p, fdo, NULL) : NULL;
    Py_XDECREF(f);
    Py_XDECREF(t);
    Py_XDECREF(p);
    Py_XDECREF(fdo);
    return s;
}

/* R28: a start_tls after a failed connect() ends with its class. */
static void note_connect_error(Watcher *w, uint64_t conn_id, int err)
{
    PyObject *error = gaio__error_object(err); /* its own: the caller's may carry a traceback */
    PyObject *key = error ? PyLong_FromUnsignedLongLong(conn_id) : NULL;
    if (!w->connect_errors)
        w->connect_errors = PyDict_New();
    if (!key || !w->connect_errors || PyDict_SetItem(w->connect_errors, key, error) < 0)
        PyErr_Clear();
    Py_XDECREF(key);
    Py_XDECREF(error);
}

PyObject *gaio__build_results(Watcher *w, gaio_result *res, Py_ssize_t n)
{
    /* Phase 1: no Python code can run (no GC-tracked allocation): take the
     * finished requests off the live list, hold what each result shows. */
    pending_item *items = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *items);
    if (!items) {
        /* the batch is lost to the caller: dispose of the finished requests */
        for (Py_ssize_t i = 0; i < n; i++) {
            free(res[i].addr);
            if (res[i].fd >= 0)
                close(res[i].fd);
            if (res[i].final) {
                gaio__live_remove(pyreq_of(res[i].req));
                gaio__req_dispose(w, pyreq_of(res[i].req));
            }
        }
        return PyErr_NoMemory();
    }
    Py_ssize_t shown = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        gaio_result *e = &res[i];
        pyreq *p = pyreq_of(e->req);
        pending_item *it = &items[i];
        it->op = p->req.op;
        it->final = e->final ? p : NULL;
        if (e->final)
            gaio__live_remove(p);
        it->conn = p->conn;
        it->ctx = p->ctx;
        Py_INCREF(it->conn);
        Py_INCREF(it->ctx);
        it->owner = NULL;
        /* a datagram socket's views count for no standing read (R27) */
        it->conn_id = w->write_high && !e->final && it->op == GAIO_OP_READ && !e->datagram
                          ? e->conn_id : 0;
        it->seq = p->req.seq;
        if (e->ptr && e->size) {
            it->owner = ibuf_owner(w, e->ptr); /* no GC: IbufMem is not tracked */
            if (!it->owner)
                PyErr_Clear(); /* reported as buffer None below */

        }
        if (!e->silent)
            shown++;
    }
    /* Phase 2: the objects */
    PyObject *list = PyList_New(shown);
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        gaio_result *e = &res[i];
        pending_item *it = &items[i];
        pyreq *p = it->final;
        PyObject *buffer = NULL, *error = NULL, *accepted = NULL, *r = NULL, *sender = NULL;
        int is_ibuf = 0;
        if (!list || e->silent)
            goto next;
        if (it->owner) {
            buffer = gaio__ibufmem_view(it->owner, e->ptr, (Py_ssize_t)e->size);
            if (buffer && PyList_Append(w->views, buffer) == 0) {
                is_ibuf = 1;
                /* out of memory: its writes count as plain data (R21 weaker, nothing breaks) */
                if (it->conn_id)
                    (void)gaio_origins_note(&w->origins, buffer, it->conn_id, it->seq);
            } else {
                Py_CLEAR(buffer);
            }
        } else if (e->ptr && e->datagram) {
            /* an empty datagram read into the internal buffer: an empty view (R24) */
            buffer = PyMemoryView_FromMemory((char *)e->ptr, 0, PyBUF_READ);
            if (buffer && PyList_Append(w->views, buffer) == 0)
                is_ibuf = 1;
            else
                Py_CLEAR(buffer);
        } else if (p && pyreq_has_view(p) && p->bufobj && it->op == GAIO_OP_TLS) {
            buffer = Py_None; /* bufobj is the session's SSLObject, for a success */
            Py_INCREF(buffer);
            if (e->error == 0) {
                sender = p->bufobj;
                Py_INCREF(sender);
            }
        } else if (p && pyreq_has_view(p) && p->bufobj &&
                   (it->op == GAIO_OP_READ || it->op == GAIO_OP_WRITE)) {
            buffer = p->bufobj;
            Py_INCREF(buffer);
            if ((p->req.owner & PYREQ_COPIED) && w->copies && PyList_Append(w->copies, buffer) < 0)
                PyErr_Clear(); /* not recycled, that is all */
        } else {
            buffer = Py_None;
            Py_INCREF(buffer);
        }
        if (e->fd >= 0) {
            accepted = accepted_socket(it->conn, e->fd);
            if (accepted)
                e->fd = -1; /* the socket object owns it now */
        } else {
            accepted = Py_None;
            Py_INCREF(accepted);
        }
        error = !buffer || !accepted    ? NULL
                : e->error == GAIO_ERR_TLS ? gaio__tls_error_take(w, e->req)
                                           : gaio__error_object(e->error);
        if (error && it->op == GAIO_OP_CONNECT && e->error > 0 && p)
            note_connect_error(w, e->conn_id, e->error);
        if (error && e->addr && !(sender = gaio__sender_object(e->addr)))
            Py_CLEAR(error);
        if (error) {
            r = gaio__opresult_new(gaio__state.Op[it->op], it->conn, it->ctx, buffer,
                                   (Py_ssize_t)e->size, error, is_ibuf, accepted);
            it->conn = it->ctx = NULL; /* stolen */
            buffer = accepted = error = NULL;
            if (r) {
                ((OpResult *)r)->address = sender;
                ((OpResult *)r)->truncated = (char)e->truncated;
                sender = NULL;
            }
        }
        Py_XDECREF(sender);
        if (r) {
            PyList_SET_ITEM(list, j++, r);
        } else {
            Py_XDECREF(buffer);
            Py_XDECREF(accepted);
            Py_CLEAR(list);
        }
    next:
        free(e->addr); /* the core's (gaio_malloc) */
        e->addr = NULL;
        if (e->fd >= 0)
            close(e->fd); /* not handed out: never leak a descriptor */
        Py_XDECREF(it->conn);
        Py_XDECREF(it->ctx);
        Py_XDECREF(it->owner);
        if (p)
            gaio__req_dispose(w, p);
    }
    PyMem_Free(items);
    return list;
}
