/* The rarer requests: accept (R16), connect (R17) and sendfile (R19). Their
 * checks are gaio._python_args' own, called from here, so both kinds of
 * engine refuse the same arguments with the same words. The steps every
 * request takes (the request struct, delegation, queueing) are in request.c. */
#include "binding.h"

#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* What these requests check first, in this order (as submit()): a closed
 * watcher, the arguments, the socket (a[0]), the times. Returns 1 when the
 * socket is this watcher's already, 0 when *fd is its descriptor to
 * delegate, -1 on error. */
static int prologue(Watcher *w, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames, PyObject *const *names, int nnames, int maxpos,
                    int required, PyObject **a, PyObject *timeout_deadline[2], int *fd,
                    int64_t *when, int dgram_ok, unsigned *flags)
{
    if (w->closed) {
        gaio__closed_error();
        return -1;
    }
    if (gaio__parse_args(fname, args, nargs, kwnames, names, nnames, maxpos, required, a) < 0)
        return -1;
    int known = gaio__conn_first_look(w, a[0], fd, dgram_ok, flags);
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
        PINNED(w, fd = gaio_core_conn_fd(w->core, entry_id(e)));
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
    unsigned cflags;
    int64_t when;
    int known = prologue(w, "Watcher.accept", args, nargs, kwnames, names, N, 1, 1, a, a + TIMEOUT, &fd, &when, 0, &cflags);
    if (known < 0)
        return NULL;
    uint8_t flags = 0;
    gaio_idle st = {0};
    int64_t st_deadline = 0;
    if (gaio__flag_arg(a[REPEAT], &flags, GAIO_F_REPEAT) < 0)
        return NULL;
    if ((flags & GAIO_F_REPEAT) && gaio__standing_times(&st, &st_deadline, a[TIMEOUT], when) < 0)
        return NULL;
    if (!known && py_check(gaio__state.check_listener, a[L], NULL) < 0)
        return NULL;
    if (known && !delegated_listening(w, a[L]))
        return NULL;
    uint64_t id;
    pyreq *p = NULL;
    if (gaio__conn_resolve(w, a[L], fd, cflags, &id) < 0 || !(p = gaio__req_alloc(w, PYREQ_ALLOC_SMALL)))
        return NULL;
    p->req.kind = GAIO_READ;
    p->req.op = GAIO_OP_ACCEPT;
    p->req.flags = flags;
    p->req.deadline_ns = when;
    if ((flags & GAIO_F_REPEAT) && gaio__standing_set(p, &st, st_deadline) < 0) {
        gaio__req_dispose(w, p);
        return NULL;
    }
    return gaio__req_queue(w, p, a[L], a[CTX], id);
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
    unsigned cflags;
    int64_t when;
    int known = prologue(w, "Watcher.connect", args, nargs, kwnames, names, N, 2, 2, a, a + TIMEOUT, &fd, &when, 1, &cflags);
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
    /* connected from the moment connect() is requested (R25); a stream
     * counts as connecting for start_tls (R28) */
    cflags |= GAIO_CONN_PEER;
    if (gaio__conn_resolve(w, sock, fd, cflags, &id) < 0 || !(p = gaio__req_alloc(w, PYREQ_ALLOC_SMALL))) {
        PyMem_Free(retry);
        return NULL;
    }
    p->req.kind = GAIO_WRITE;
    p->req.op = GAIO_OP_CONNECT;
    p->req.error = (int)err;
    p->req.u.c.addr = retry;
    p->req.u.c.addrlen = retry_len;
    p->req.deadline_ns = when;
    return gaio__req_queue(w, p, sock, a[CTX], id);
}

PyObject *gaio__watcher_sendfile(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    enum { C, FILE_, OFFSET, COUNT, CTX, TIMEOUT, DEADLINE, QUIET, N };
    PyObject *names[N] = {gaio__state.s_conn, gaio__state.s_file, gaio__state.s_offset,
                          gaio__state.s_count, gaio__state.s_ctx, gaio__state.s_timeout,
                          gaio__state.s_deadline, gaio__state.s_quiet};
    PyObject *a[N] = {NULL};
    int fd;
    unsigned cflags;
    int64_t when;
    if (prologue(w, "Watcher.sendfile", args, nargs, kwnames, names, N, 4, 2, a, a + TIMEOUT, &fd, &when, 0, &cflags) < 0)
        return NULL;
    uint8_t flags = 0;
    if (gaio__flag_arg(a[QUIET], &flags, GAIO_F_QUIET) < 0)
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
    if (gaio__conn_resolve(w, a[C], fd, cflags, &id) < 0 || !(p = gaio__req_alloc(w, PYREQ_ALLOC_SMALL))) {
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
    return gaio__req_queue(w, p, a[C], a[CTX], id);
}
