/* gaio._native.OpResult (immutable, slots, no __dict__) and the internal
 * buffer's memory owner behind the read-only views that swap reads return. */
#include "binding.h"

#include <stddef.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *op, *conn, *ctx, *buffer, *error;
    Py_ssize_t size;
    char is_swap_buffer;
} OpResult;

PyObject *gaio__opresult_new(PyObject *op, PyObject *conn, PyObject *ctx, PyObject *buffer,
                             Py_ssize_t size, PyObject *error, int is_swap)
{
    /* steals conn, ctx, buffer, error; borrows op */
    OpResult *r = PyObject_GC_New(OpResult, &gaio__OpResult_Type);
    if (!r) {
        Py_XDECREF(conn);
        Py_XDECREF(ctx);
        Py_XDECREF(buffer);
        Py_XDECREF(error);
        return NULL;
    }
    Py_INCREF(op);
    r->op = op;
    r->conn = conn;
    r->ctx = ctx;
    r->buffer = buffer;
    r->error = error;
    r->size = size;
    r->is_swap_buffer = (char)is_swap;
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
    return 0;
}

static int opresult_clear(OpResult *r)
{
    Py_CLEAR(r->op);
    Py_CLEAR(r->conn);
    Py_CLEAR(r->ctx);
    Py_CLEAR(r->buffer);
    Py_CLEAR(r->error);
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
    {"op", T_OBJECT, offsetof(OpResult, op), READONLY, "Op.READ or Op.WRITE"},
    {"conn", T_OBJECT, offsetof(OpResult, conn), READONLY, "the socket object of the request"},
    {"ctx", T_OBJECT, offsetof(OpResult, ctx), READONLY, "the request's ctx, unchanged"},
    {"buffer", T_OBJECT, offsetof(OpResult, buffer), READONLY,
     "the caller's buffer, or a read-only memoryview over the internal buffer"},
    {"size", T_PYSSIZET, offsetof(OpResult, size), READONLY, "bytes transferred"},
    {"error", T_OBJECT, offsetof(OpResult, error), READONLY, "None or the exception"},
    {"is_swap_buffer", T_BOOL, offsetof(OpResult, is_swap_buffer), READONLY,
     "True when buffer views the internal buffer"},
    {NULL},
};

PyTypeObject gaio__OpResult_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gaio._native.OpResult",
    .tp_basicsize = sizeof(OpResult),
    .tp_dealloc = (destructor)opresult_dealloc,
    .tp_repr = (reprfunc)opresult_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The completion of one read or write request (immutable).",
    .tp_traverse = (traverseproc)opresult_traverse,
    .tp_clear = (inquiry)opresult_clear,
    .tp_members = opresult_members,
};

/* ---- SwapMem ---- */

gaio__SwapMem *gaio__swapmem_new(unsigned char *mem)
{
    /* not GC-tracked: creating one never runs a collection (see module.c) */
    gaio__SwapMem *m = PyObject_New(gaio__SwapMem, &gaio__SwapMem_Type);
    if (!m)
        return NULL;
    m->mem = mem;
    m->owned = NULL;
    m->exports = 0;
    m->armed = NULL;
    m->armed_len = 0;
    return m;
}

PyObject *gaio__swapmem_view(gaio__SwapMem *m, unsigned char *ptr, Py_ssize_t len)
{
    m->armed = ptr;
    m->armed_len = len;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)m);
    m->armed = NULL;
    return mv;
}

static int swapmem_getbuffer(gaio__SwapMem *m, Py_buffer *view, int flags)
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

static void swapmem_releasebuffer(gaio__SwapMem *m, Py_buffer *view)
{
    m->exports--;
}

static void swapmem_dealloc(gaio__SwapMem *m)
{
    free(m->owned);
    PyObject_Free(m);
}

static PyBufferProcs swapmem_as_buffer = {
    (getbufferproc)swapmem_getbuffer,
    (releasebufferproc)swapmem_releasebuffer,
};

PyTypeObject gaio__SwapMem_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gaio._native.InternalBuffer",
    .tp_basicsize = sizeof(gaio__SwapMem),
    .tp_dealloc = (destructor)swapmem_dealloc,
    .tp_as_buffer = &swapmem_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory of gaio's internal buffer behind result views (not for direct use).",
};
