/* gaio._native: the Watcher type over gaio's C core (its creation, garbage
 * collection and deletion, its method table) and the module itself.
 *
 * The binding owns every Python object: a request (pyreq, request.c) embeds
 * the core's gaio_req and holds strong references to its socket, ctx and
 * buffer until its result is built (result.c). The Watcher's methods other
 * than the requests are in watcher.c (wait_io, close, stats, fileno). Sockets
 * map to connections through conn_map.c (R2, R9); arguments are parsed in args.c.
 *
 * Threads: none. Everything runs in the caller's threads.
 */
#include "binding.h"

#include <errno.h>
#include <string.h>

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

static PyObject *Watcher_enter(Watcher *w, PyObject *unused)
{
    Py_INCREF(w);
    return (PyObject *)w;
}

static PyObject *Watcher_exit(Watcher *w, PyObject *args)
{
    gaio__watcher_shutdown(w);
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
    static char *kwlist[] = {"bufsize", "engine", "write_high", "batch_wait", NULL};
    PyObject *bufsize_obj = NULL, *write_high_obj = NULL;
    const char *engine = NULL;
    Py_ssize_t write_high;
    double batch_wait = 0; /* checked by gaio.Watcher (_python_args.check_batch_wait) */
    if (w->inited) {
        PyErr_SetString(PyExc_RuntimeError, "Watcher.__init__() may run only once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$sOd:Watcher", kwlist, &bufsize_obj, &engine,
                                     &write_high_obj, &batch_wait))
        return -1;
    if (!(batch_wait >= 0 && batch_wait <= GAIO_MAX_BATCH_WAIT_S)) {
        PyErr_SetString(PyExc_ValueError, "batch_wait must be from 0 to 1 second (or None for off)");
        return -1;
    }
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
    w->map.core = core;
    gaio_core_set_batch_wait(core, (int64_t)(batch_wait * 1e9));
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
        if (!pyreq_has_view(p))
            continue;
        Py_VISIT(p->bufobj);
        if (p->req.owner & PYREQ_IS_VECTOR) {
            for (Py_ssize_t i = 0; i < p->vec.n; i++)
                Py_VISIT(p->vec.items[i].obj);
        } else {
            Py_VISIT(p->view.obj); /* the export holds its own reference */
        }
    }
    for (size_t i = 0; i < w->map.cap; i++) {
        map_entry *e = gaio__map_at(&w->map, i);
        pyreq *p = e ? entry_standing(e) : NULL;
        if (p) {
            Py_VISIT(p->ctx); /* a standing read the entry names (not on the live list) */
            Py_VISIT(p->conn);
        } else if (e && (e->owner_bits & OWNER_OWNED)) {
            Py_VISIT((PyObject *)e->owner);
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
        gaio__watcher_shutdown(w);
    return 0;
}

static void Watcher_dealloc(Watcher *w)
{
    PyObject_GC_UnTrack(w);
    if (w->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)w);
    gaio__watcher_shutdown(w);
    gaio__core_drop_if_unused(w); /* nobody can be using it: w is going */
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
    Py_CLEAR(w->tls_errors);
    Py_CLEAR(w->tls_interrupt);
    Py_CLEAR(w->connect_errors);
    if (w->link)
        ((WatcherLink *)w->link)->w = NULL;
    Py_CLEAR(w->link);
    PyMem_Free(w->map.e);
    PyMem_Free(w->results);
    gaio_origins_free(&w->origins);
    for (int k = 0; k < PYREQ_ALLOCS; k++)
        while (w->spare[k]) {
            pyreq *p = w->spare[k];
            w->spare[k] = p->next_spare;
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
    {"start_tls", (PyCFunction)(void (*)(void))gaio__watcher_start_tls, FASTKW,
     "start_tls($self, conn, context, *, server_side, server_hostname=None, ctx=None, "
     "timeout=None, deadline=None)\n--\n\n"
     "Begin a TLS session on conn (R28): engine='python' only, until issue 20's next step."},
    {"fileno", (PyCFunction)gaio__watcher_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nA descriptor readable whenever wait_io(0) has work (R23)."},
    {"next_timeout", (PyCFunction)gaio__watcher_next_timeout, METH_NOARGS,
     "next_timeout($self, /)\n--\n\nSeconds until the earliest deadline, or None (R23)."},
    {"free", (PyCFunction)gaio__watcher_free, METH_O,
     "free($self, conn, /)\n--\n\nClose conn's descriptor; its pending requests end with gaio__state.ConnClosedError."},
    {"wait_io", (PyCFunction)(void (*)(void))gaio__watcher_wait_io, FASTKW,
     "wait_io($self, timeout=None)\n--\n\nWait without the GIL for results; returns a list of OpResult."},
    {"close", (PyCFunction)gaio__watcher_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose every descriptor, drop pending requests. Idempotent."},
    {"stats", (PyCFunction)gaio__watcher_stats, METH_NOARGS, "stats($self, /)\n--\n\nCounters."},
    {"__enter__", (PyCFunction)Watcher_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
    {"_techniques", (PyCFunction)gaio__watcher_techniques, METH_NOARGS,
     "_techniques($self, /)\n--\n\nTest-only: {technique: None if the engine uses it, else why not}."},
    {"_debug_hold_lock", (PyCFunction)gaio__watcher_debug_hold_lock, METH_O,
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
    .tp_doc = "Watcher(bufsize=65536, *, engine, write_high=262144, batch_wait=0.0)\n--\n\n"
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
        !(S->check_io_conn = import_attr("gaio._python_args", "check_io_conn")) ||
        !(S->datagram_address = import_attr("gaio._python_args", "datagram_address")) ||
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
    static const char *const op_names[6] = {"READ", "WRITE", "ACCEPT", "CONNECT", "SENDFILE", "TLS"};
    for (int i = 0; i < 6; i++)
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
