/* Connections: the socket -> connection map (R9: a weak reference only, so
 * a dropped socket is released), delegation of a socket's descriptor (R2),
 * and the weakref callback that releases a dropped socket. */
#include "binding.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

PyTypeObject gaio__ConnRef_Type; /* filled in by PyInit__native: its base is a C symbol */

static size_t map_hash(uintptr_t key, size_t cap)
{
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (cap - 1);
}

map_entry *gaio__map_at(connmap *m, size_t i)
{
    return m->e[i] ? gaio_core_slot(m->core, m->e[i] - 1) : NULL;
}

static uintptr_t key_at(connmap *m, size_t i) { return entry_key(gaio__map_at(m, i)); }

/* The place of key's entry, or of the empty place that ends its probe. */
static size_t map_place(connmap *m, uintptr_t key)
{
    size_t i = map_hash(key, m->cap);
    while (m->e[i] && key_at(m, i) != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

map_entry *gaio__map_find(connmap *m, uintptr_t key)
{
    return m->cap ? gaio__map_at(m, map_place(m, key)) : NULL;
}

int gaio__map_insert(connmap *m, ConnRef *ref, unsigned flags)
{
    if ((m->n + 1) * 4 > m->cap * 3) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        uint32_t *e = PyMem_Calloc(cap, sizeof *e);
        if (!e)
            return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->e[i])
                continue;
            size_t j = map_hash(key_at(m, i), cap);
            while (e[j])
                j = (j + 1) & (cap - 1);
            e[j] = m->e[i];
        }
        PyMem_Free(m->e);
        m->e = e;
        m->cap = cap;
    }
    gaio_conn *c = gaio_core_slot(m->core, (uint32_t)ref->id);
    c->owner = (uintptr_t)ref;
    c->owner_bits = (uint8_t)(flags | OWNER_WEAK);
    m->e[map_place(m, connref_key(ref))] = (uint32_t)ref->id + 1;
    m->n++;
    return 0;
}

/* Take place i out (backward-shift deletion keeps probe chains intact). */
static void map_remove(connmap *m, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (!m->e[j])
            break;
        size_t home = map_hash(key_at(m, j), m->cap);
        /* can e[j] move to i? only if its home is not in (i, j] cyclically */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            m->e[i] = m->e[j];
            i = j;
        }
    }
    m->e[i] = 0;
    m->n--;
}

void gaio__map_drop(connmap *m, map_entry *e)
{
    map_remove(m, map_place(m, entry_key(e)));
    if (e->owner_bits & (OWNER_WEAK | OWNER_OWNED))
        Py_DECREF((PyObject *)e->owner);
}

/* The entry of conn (id) names no standing read yet: one made now can be
 * named by it (gaio__conn_strong), and so allocated short. */
static map_entry *entry_without_standing(Watcher *w, PyObject *conn, uint64_t id)
{
    map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
    return e && entry_id(e) == id && !entry_standing(e) ? e : NULL;
}

int gaio__conn_can_name_standing(Watcher *w, PyObject *conn, uint64_t id)
{
    return entry_without_standing(w, conn, id) != NULL;
}

int gaio__conn_strong(Watcher *w, pyreq *p, uint64_t id)
{
    map_entry *e = entry_without_standing(w, p->conn, id);
    if (!e)
        return 0;
    PyObject *held = (e->owner_bits & (OWNER_WEAK | OWNER_OWNED)) ? (PyObject *)e->owner : NULL;
    e->owner = (uintptr_t)p;
    e->owner_bits = (uint8_t)((e->owner_bits & OWNER_FLAGS) | OWNER_STANDING);
    /* a weakref going away with its object alive calls nothing; the socket
     * has more references than this one (the standing read's) */
    Py_XDECREF(held);
    return 1;
}

void gaio__conn_weak(Watcher *w, pyreq *p)
{
    PyObject *conn = p->conn;
    uint64_t id = gaio_req_conn_id(&p->req);
    map_entry *e = gaio__map_find(&w->map, (uintptr_t)conn);
    if (!e || entry_id(e) != id || (e->owner_bits & (OWNER_WEAK | OWNER_OWNED)))
        return;
    if (entry_standing(e) && entry_standing(e) != p)
        return; /* the entry names another standing read, which holds the socket */
    if (entry_standing(e)) {
        /* its standing read is going: the entry keeps the socket's address
         * (its key) until the weak reference is made, never a pyreq recycled */
        e->owner = (uintptr_t)conn;
        e->owner_bits &= OWNER_FLAGS;
    }
    if (w->closed)
        return; /* close() empties the map */
    PyObject *type, *value, *tb; /* called while a batch's error may be set */
    PyErr_Fetch(&type, &value, &tb);
    ConnRef *ref = (ConnRef *)PyObject_CallFunctionObjArgs((PyObject *)&gaio__ConnRef_Type, conn,
                                                           w->callback, NULL);
    /* making it may have run a collection, and Python code: look again */
    e = w->closed ? NULL : gaio__map_find(&w->map, (uintptr_t)conn);
    if (e && entry_id(e) == id && !(e->owner_bits & (OWNER_WEAK | OWNER_OWNED | OWNER_STANDING))) {
        if (ref) {
            ref->key = (uintptr_t)conn;
            ref->id = id;
            e->owner = (uintptr_t)ref;
            e->owner_bits |= OWNER_WEAK;
            ref = NULL;
        } else {
            /* no memory for it: hold the socket until free() or close() */
            PyErr_Clear();
            Py_INCREF(conn);
            e->owner_bits |= OWNER_OWNED;
        }
    }
    PyErr_Clear();
    Py_XDECREF(ref);
    PyErr_Restore(type, value, tb);
}

PyTypeObject gaio__WatcherLink_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gaio._native._WatcherLink",
    .tp_basicsize = sizeof(WatcherLink),
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

/* socket.SocketKind's name of a socket type, as the python engine words it */
static const char *sock_kind_name(int type, char buf[16])
{
    switch (type) {
    case SOCK_DGRAM:
        return "SOCK_DGRAM";
    case SOCK_SEQPACKET:
        return "SOCK_SEQPACKET";
    case SOCK_RAW:
        return "SOCK_RAW";
    default:
        snprintf(buf, 16, "%d", type);
        return buf;
    }
}

PyObject *gaio__stream_only_error(int type)
{
    char kind[16];
    PyErr_Format(PyExc_TypeError, "conn must be a stream socket (SOCK_STREAM), not %s",
                 sock_kind_name(type, kind));
    return NULL;
}

/* A datagram socket's GAIO_CONN_* flags: its family, whether it has a peer.
 * A family gaio does not take is refused by the python engine's check,
 * which names it as socket.AddressFamily does. */
static int datagram_flags(PyObject *conn, int fd, unsigned *flags)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int family = sa.ss_family;
    if (family != AF_INET && family != AF_INET6 && family != AF_UNIX) {
        PyObject *r = PyObject_CallOneArg(gaio__state.check_io_conn, conn);
        Py_XDECREF(r);
        if (r)
            PyErr_SetString(PyExc_TypeError, "datagram sockets of AF_INET, AF_INET6 and AF_UNIX only");
        return -1;
    }
    *flags = GAIO_CONN_DGRAM | (family == AF_UNIX ? GAIO_CONN_LOCAL : 0);
    len = sizeof sa;
    if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0)
        *flags |= GAIO_CONN_PEER;
    return 0;
}

PyObject *gaio__conn_type_error(PyObject *conn, const char *why)
{
    PyErr_Format(PyExc_TypeError, "conn must be %s, not %.100s", why, gaio__type_name(conn));
    return NULL;
}

/* The descriptor of a socket not delegated yet, after checking it is a
 * socket.socket of a stream socket, or of a datagram socket of AF_INET,
 * AF_INET6 or AF_UNIX when the request takes them (dgram_ok: read, write,
 * connect, R24); *flags says which (GAIO_CONN_*). Another object with a
 * fileno(), even of a socket, is refused: it could not be closed for the
 * caller (R2). */
int gaio__socket_fd(PyObject *conn, int dgram_ok, unsigned *flags)
{
    *flags = 0;
    int is_sock = PyObject_IsInstance(conn, gaio__state.SocketType);
    if (is_sock <= 0) {
        if (is_sock == 0)
            gaio__conn_type_error(conn, "a socket.socket");
        return -1;
    }
    /* socket.socket's own fileno(), not a subclass's: the descriptor that
     * detach() will hand over (the python engine does the same) */
    PyObject *res = PyObject_CallOneArg(gaio__state.socket_fileno, conn);
    if (!res)
        return -1;
    if (!PyLong_Check(res)) {
        Py_DECREF(res);
        gaio__conn_type_error(conn, "a socket.socket (its fileno() is not an int)");
        return -1;
    }
    long fd = PyLong_AsLong(res);
    Py_DECREF(res);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "conn is closed (or delegated to another watcher)");
        return -1;
    }
    if (fd > INT32_MAX) {
        gaio__conn_type_error(conn, "a socket.socket (its fileno() is out of range)");
        return -1;
    }
    int type;
    socklen_t len = sizeof type;
    if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        if (errno == ENOTSOCK) {
            gaio__conn_type_error(conn, "a socket.socket (its descriptor is not a socket)");
        } else if (errno == EBADF) {
            PyErr_SetString(PyExc_ValueError, "conn is closed (or delegated to another watcher)");
        } else {
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return -1;
    }
    if (type == SOCK_DGRAM && dgram_ok) {
        if (datagram_flags(conn, (int)fd, flags) < 0)
            return -1;
    } else if (type != SOCK_STREAM) {
        gaio__stream_only_error(type);
        return -1;
    }
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(conn))) {
        gaio__conn_type_error(conn, "it cannot be weakly referenced");
        return -1;
    }
    return (int)fd;
}

/* R2: take the descriptor from the caller's object and watch it, non-blocking.
 * socket.socket.detach() hands it over and leaves the object closed even
 * while makefile() objects hold it open (close() would only mark it). */
int gaio__delegate(Watcher *w, PyObject *conn, int fd, unsigned flags, uint64_t *id)
{
    ConnRef *ref = (ConnRef *)PyObject_CallFunctionObjArgs((PyObject *)&gaio__ConnRef_Type, conn,
                                                           w->callback, NULL);
    if (!ref)
        return -1;
    PyObject *res = PyObject_CallOneArg(gaio__state.socket_detach, conn);
    if (!res) {
        Py_DECREF(ref);
        return -1;
    }
    long got = PyLong_Check(res) ? PyLong_AsLong(res) : -1;
    Py_DECREF(res);
    if (got != fd) {
        /* Python code run since fileno() (a GC callback) closed or swapped it */
        if (got >= 0 && got <= INT32_MAX)
            close((int)got);
        Py_DECREF(ref);
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "conn was closed while it was being delegated");
        return -1;
    }
    int own_fd = fd;
    int fl = fcntl(own_fd, F_GETFL);
    if (fl < 0 || fcntl(own_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(ref);
        close(own_fd);
        return -1;
    }
    if (w->closed || gaio__map_find(&w->map, (uintptr_t)conn)) {
        /* close() ran inside conn.close(), or it delegated conn itself */
        Py_DECREF(ref);
        close(own_fd);
        if (w->closed)
            gaio__closed_error();
        else
            PyErr_SetString(PyExc_RuntimeError, "conn was delegated re-entrantly");
        return -1;
    }
    int err = 0;
    PINNED(w, *id = gaio_core_watch(w->core, own_fd, flags, &err));
    if (!*id || w->closed) {
        /* w->closed: closed by another thread while the core had the GIL out */
        if (*id)
            PINNED(w, gaio_core_free(w->core, *id));
        Py_DECREF(ref);
        close(own_fd);
        if (w->closed)
            return (gaio__closed_error(), -1);
        errno = err;
        if (err == ENOMEM)
            PyErr_NoMemory();
        else
            PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    ref->key = (uintptr_t)conn;
    ref->id = *id;
    if (gaio__map_insert(&w->map, ref, flags) < 0) {
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
    if (!w || w->closed || !PyObject_TypeCheck(arg, &gaio__ConnRef_Type))
        Py_RETURN_NONE;
    ConnRef *ref = (ConnRef *)arg;
    map_entry *e = gaio__map_find(&w->map, connref_key(ref));
    if (!e || entry_ref(e) != ref)
        Py_RETURN_NONE;
    uint64_t id = ref->id;
    gaio__forget_connect_error(w, id);
    Py_INCREF(w); /* the link is borrowed; the GIL may be released below */
    gaio__map_drop(&w->map, e); /* the map's reference; the caller still holds one */
    PINNED(w, gaio_core_release(w->core, id));
    Py_DECREF(w);
    Py_RETURN_NONE;
}

PyMethodDef gaio__conn_gone_def = {"_conn_gone", conn_gone, METH_O, NULL};
