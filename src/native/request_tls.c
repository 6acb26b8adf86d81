/* start_tls (R28): parsed and checked as the python engine checks it
 * (gaio._python_args: check_tls_arguments, check_tls_socket, the same
 * words), then a session (tls_session.c) and its request, queued with the
 * connection's writes (core_tls.c takes it from there). */
#include "binding.h"

#include <sys/socket.h>

static PyObject *py_args_attr(const char *name)
{
    PyObject *mod = PyImport_ImportModule("gaio._python_args");
    if (!mod)
        return NULL;
    PyObject *o = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return o;
}

/* check_tls_socket's checks for a delegated socket (the object gave its
 * descriptor to the core): not listening, connected. */
static int check_delegated(Watcher *w, uint64_t id)
{
    int fd;
    PINNED(w, fd = gaio_core_conn_fd(w->core, id));
    const char *why = NULL;
    int listening = 0;
    socklen_t len = sizeof listening;
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    if (fd < 0)
        why = "CLOSED_CONN";
    else if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening)
        why = "TLS_ON_LISTENER";
    else if (getpeername(fd, (struct sockaddr *)&sa, &salen) < 0)
        why = "TLS_UNCONNECTED";
    if (!why)
        return 0;
    PyObject *words = py_args_attr(why);
    if (words) {
        PyErr_SetObject(PyExc_ValueError, words);
        Py_DECREF(words);
    }
    return -1;
}

/* A check of the caller's socket failed (ValueError set): if another
 * thread's request delegated it meanwhile, its descriptor is the watcher's
 * now and the caller's object reads as closed: the error goes, and the
 * checks go on as for a delegated socket (a racing second start_tls then
 * gets R28's ValueError, gaio_core_submit's). Returns its entry or NULL. */
static map_entry *delegated_meanwhile(Watcher *w, PyObject *conn)
{
    map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
    if (e && PyErr_ExceptionMatches(PyExc_ValueError))
        PyErr_Clear();
    else
        e = NULL;
    return e;
}

PyObject *gaio__watcher_start_tls(Watcher *w, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static PyObject *names[7];
    static PyObject *check, *check_socket;
    enum { C, CONTEXT, SERVER_SIDE, SERVER_HOSTNAME, CTX, TIMEOUT, DEADLINE, N };
    if (w->closed)
        return gaio__closed_error();
    if (!names[0]) {
        static const char *const spelled[N] = {"conn", "context", "server_side",
                                               "server_hostname", "ctx", "timeout", "deadline"};
        for (int i = 0; i < N; i++)
            if (!(names[i] = PyUnicode_InternFromString(spelled[i])))
                return NULL;
    }
    PyObject *a[N] = {NULL};
    if (gaio__parse_args("Watcher.start_tls", args, nargs, kwnames, names, N, 2, 3, a) < 0)
        return NULL;
    int fd; /* the socket's checks as for every stream-only request */
    unsigned flags = 0;
    if (gaio__conn_first_look(w, a[C], &fd, 0, &flags) < 0 && !delegated_meanwhile(w, a[C]))
        return NULL;
    if (!check && !(check = py_args_attr("check_tls_arguments")))
        return NULL;
    if (!check_socket && !(check_socket = py_args_attr("check_tls_socket")))
        return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(check, a[C], a[CONTEXT], a[SERVER_SIDE],
                                               a[SERVER_HOSTNAME] ? a[SERVER_HOSTNAME] : Py_None,
                                               NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    int64_t when;
    if (gaio__deadline_arg(a[TIMEOUT], a[DEADLINE], &when) < 0)
        return NULL;
    map_entry *e = gaio__map_find(&w->map, (uintptr_t)a[C]);
    gaio_tls *known = NULL;
    if (e && !w->closed)
        PINNED(w, known = gaio_core_tls_of(w->core, entry_id(e)));
    if (known)
        return gaio__tls_again_error(); /* gaio_core_submit checks again, under its lock */
    /* a socket on which connect() was requested counts as connecting (R28) */
    if (!e) {
        r = PyObject_CallOneArg(check_socket, a[C]);
        if (!r && !(e = delegated_meanwhile(w, a[C])))
            return NULL;
        Py_XDECREF(r);
    }
    if (e && !(entry_flags(e) & GAIO_CONN_PEER) && check_delegated(w, entry_id(e)) < 0)
        return NULL;
    PyObject *sslobj;
    gaio_tls *t = gaio__tls_session_new(a[CONTEXT], a[SERVER_SIDE] == Py_True,
                                        a[SERVER_HOSTNAME] ? a[SERVER_HOSTNAME] : Py_None, &sslobj);
    if (!t)
        return NULL;
    uint64_t id;
    pyreq *p = NULL;
    if (gaio__conn_resolve(w, a[C], fd, flags, &id) < 0 || !(p = gaio__req_alloc(w, PYREQ_ALLOC_VIEW))) {
        Py_DECREF(sslobj);
        t->next_dead = NULL;
        gaio__tls_dispose(t);
        return NULL;
    }
    p->req.kind = GAIO_WRITE;
    p->req.op = GAIO_OP_TLS;
    p->req.u.w.tls = t;
    p->req.deadline_ns = when;
    p->bufobj = sslobj; /* for its result's tls: a request allocated whole (PYREQ_ALLOC_VIEW) */
    /* R28: after a failed connect() the handshake ends with its class */
    PyObject *key = w->connect_errors ? PyLong_FromUnsignedLongLong(id) : NULL;
    PyObject *failed = key ? PyDict_GetItemWithError(w->connect_errors, key) : NULL;
    Py_XDECREF(key);
    if (failed)
        gaio__tls_failed_before(t, failed);
    PyErr_Clear();
    w->tls_used = 1;
    PyObject *res = gaio__req_queue(w, p, a[C], a[CTX], id);
    if (!res) {
        t->next_dead = NULL;
        gaio__tls_dispose(t); /* never queued */
    }
    return res;
}

PyObject *gaio__tls_again_error(void)
{
    PyObject *again = py_args_attr("TLS_AGAIN");
    if (again) {
        PyErr_SetObject(PyExc_ValueError, again);
        Py_DECREF(again);
    }
    return NULL;
}

int gaio__tls_refuse_close(Watcher *w)
{
    if (!w->tls_used || !w->core || w->closed || !gaio_core_tls_in_own_pass(w->core))
        return 0;
    PyObject *words = py_args_attr("TLS_CALLBACK_CLOSE");
    if (words) {
        PyErr_SetObject(PyExc_RuntimeError, words);
        Py_DECREF(words);
    }
    return -1;
}

void gaio__forget_connect_error(Watcher *w, uint64_t id)
{
    if (!w->connect_errors || !PyDict_GET_SIZE(w->connect_errors))
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* a weakref callback may run with one set */
    PyObject *key = PyLong_FromUnsignedLongLong(id);
    if (!key || PyDict_DelItem(w->connect_errors, key) < 0)
        PyErr_Clear(); /* KeyError: it had none */
    Py_XDECREF(key);
    PyErr_Restore(type, value, tb);
}
