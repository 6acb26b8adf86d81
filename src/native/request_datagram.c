/* Datagram sockets in the binding (R24, R25): write()'s address= turned
 * into the sockaddr its sendmsg takes, and a sender's sockaddr into the
 * object socket.recvfrom gives. The checks and their words are the python
 * engine's (_python_args.datagram_address), called for every address the
 * fast path below does not take as it is: a numeric (host, port) tuple or an
 * AF_UNIX path, which is what an echo server writes back (a result's
 * address). */
#include "binding.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

static gaio_addr *addr_new(const void *sa, socklen_t len)
{
    gaio_addr *a = PyMem_Malloc(sizeof *a);
    if (!a) {
        PyErr_NoMemory();
        return NULL;
    }
    memset(a, 0, sizeof *a);
    memcpy(&a->sa, sa, len);
    a->len = len;
    return a;
}

/* An AF_UNIX path (str, bytes, bytearray) as connect() and sendto() take
 * it: encoded with the file system encoding, NUL-terminated unless it is
 * an abstract name (it begins with a NUL). NULL with an exception. */
static gaio_addr *unix_addr(PyObject *path)
{
    PyObject *bytes = NULL;
    if (PyUnicode_Check(path)) {
        if (!PyUnicode_FSConverter(path, &bytes))
            return NULL;
        path = bytes;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(path, &b, PyBUF_SIMPLE) < 0) {
        Py_XDECREF(bytes);
        return NULL;
    }
    struct sockaddr_un un = {0};
    gaio_addr *a = NULL;
    if ((size_t)b.len > sizeof un.sun_path) {
        PyErr_SetString(PyExc_OSError, "AF_UNIX path too long"); /* CPython's words */
    } else {
        un.sun_family = AF_UNIX;
        memcpy(un.sun_path, b.buf, (size_t)b.len);
        size_t n = (size_t)b.len;
        if ((n == 0 || un.sun_path[0] != 0) && n < sizeof un.sun_path)
            n++; /* a path, not an abstract name: its terminating NUL */
        a = addr_new(&un, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    }
    PyBuffer_Release(&b);
    Py_XDECREF(bytes);
    return a;
}

static int int_item(PyObject *t, Py_ssize_t i, unsigned long max, const char *what,
                    unsigned long *out)
{
    *out = 0;
    if (PyTuple_GET_SIZE(t) <= i)
        return 0;
    unsigned long v = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, i));
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > max) {
        PyErr_Format(PyExc_OverflowError, "%s must be 0-%lu.", what, max); /* as CPython's sendto */
        return -1;
    }
    *out = v;
    return 0;
}

/* A (host, port[, flowinfo, scope_id]) tuple the python check accepted (or
 * the fast path's): the host parsed as a number only, never resolved.
 * NULL: no exception when fast (not taken as it is), else one is set. */
static gaio_addr *ip_addr(int family, PyObject *t, int fast)
{
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    PyObject *host = PyTuple_GET_ITEM(t, 0), *port = PyTuple_GET_ITEM(t, 1);
    if (fast && (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(port) ||
                 (family == AF_INET6 && n > 2 && !PyLong_CheckExact(PyTuple_GET_ITEM(t, 2))) ||
                 (family == AF_INET6 && n > 3 && !PyLong_CheckExact(PyTuple_GET_ITEM(t, 3)))))
        return NULL;
    const char *h = PyUnicode_AsUTF8(host);
    long p = PyLong_AsLong(port);
    if (!h || (p == -1 && PyErr_Occurred())) {
        if (fast)
            PyErr_Clear();
        return NULL;
    }
    if (p < 0 || p > 65535) {
        if (!fast)
            PyErr_SetString(PyExc_OverflowError, "port must be 0-65535.");
        return NULL;
    }
    if (family == AF_INET) {
        struct sockaddr_in sin = {0};
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)p);
        if (inet_pton(AF_INET, h, &sin.sin_addr) == 1)
            return addr_new(&sin, sizeof sin);
    } else {
        struct sockaddr_in6 sin6 = {0};
        unsigned long flowinfo, scope_id;
        if (int_item(t, 2, 0xfffff, "flowinfo", &flowinfo) < 0 ||
            int_item(t, 3, 0xffffffffUL, "scope_id", &scope_id) < 0) {
            if (fast)
                PyErr_Clear();
            return NULL;
        }
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)p);
        sin6.sin6_flowinfo = htonl((uint32_t)flowinfo);
        sin6.sin6_scope_id = (uint32_t)scope_id;
        if (inet_pton(AF_INET6, h, &sin6.sin6_addr) == 1)
            return addr_new(&sin6, sizeof sin6);
    }
    if (fast)
        return NULL;
    /* a numeric form inet_pton does not read (an IPv6 zone, "fe80::1%eth0"):
     * getaddrinfo reads it, without resolving anything (AI_NUMERICHOST) */
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = family;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = getaddrinfo(h, NULL, &hints, &res);
    Py_END_ALLOW_THREADS
    if (rc != 0 || !res || res->ai_addrlen > sizeof(struct sockaddr_storage)) {
        if (res)
            freeaddrinfo(res);
        PyErr_Format(PyExc_ValueError, "write() takes a numeric address, not %R", host);
        return NULL;
    }
    gaio_addr *a = addr_new(res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (a && family == AF_INET)
        ((struct sockaddr_in *)&a->sa)->sin_port = htons((uint16_t)p);
    else if (a) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->sa;
        unsigned long flowinfo, scope_id;
        int_item(t, 2, 0xfffff, "flowinfo", &flowinfo); /* read above */
        int_item(t, 3, 0xffffffffUL, "scope_id", &scope_id);
        s6->sin6_port = htons((uint16_t)p);
        s6->sin6_flowinfo = htonl((uint32_t)flowinfo);
        if (scope_id)
            s6->sin6_scope_id = (uint32_t)scope_id;
    }
    return a;
}

static gaio_addr *convert(int family, PyObject *address, int fast)
{
    if (family == AF_UNIX) {
        if (fast && !PyUnicode_CheckExact(address) && !PyBytes_CheckExact(address))
            return NULL;
        gaio_addr *a = unix_addr(address);
        if (!a && fast)
            PyErr_Clear(); /* the python check words it */
        return a;
    }
    Py_ssize_t n = PyTuple_Check(address) ? PyTuple_GET_SIZE(address) : 0;
    if (n < 2 || n > (family == AF_INET ? 2 : 4)) {
        if (!fast)
            PyErr_SetString(PyExc_SystemError, "gaio: an address the check let through");
        return NULL;
    }
    return ip_addr(family, address, fast);
}

int gaio__datagram_to(PyObject *conn, unsigned flags, PyObject *address, gaio_addr **to)
{
    *to = NULL;
    int connected = (flags & GAIO_CONN_PEER) != 0;
    if (connected && (!address || address == Py_None))
        return 0; /* to the peer */
    PyObject *fam = Py_TYPE(gaio__state.sock_family)->tp_descr_get(gaio__state.sock_family, conn, NULL);
    if (!fam)
        return -1;
    long family = PyLong_AsLong(fam);
    if (family == -1 && PyErr_Occurred()) {
        Py_DECREF(fam);
        return -1;
    }
    if (!connected && address && address != Py_None && (*to = convert((int)family, address, 1))) {
        Py_DECREF(fam);
        return 0;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(fam);
        return -1;
    }
    /* the python engine's check raises for what is wrong, with its words,
     * and gives the address as sendmsg takes it (a path-like's path) */
    PyObject *checked = PyObject_CallFunctionObjArgs(gaio__state.datagram_address, fam,
                                                     address ? address : Py_None,
                                                     connected ? Py_True : Py_False, NULL);
    Py_DECREF(fam);
    if (!checked)
        return -1;
    if (checked != Py_None)
        *to = convert((int)family, checked, 0);
    Py_DECREF(checked);
    return checked == Py_None || *to ? 0 : -1;
}

PyObject *gaio__sender_object(const gaio_addr *a)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->sa;
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        char host[INET_ADDRSTRLEN];
        if (!inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host))
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(sin->sin_port));
    }
    case AF_INET6: {
        /* getnameinfo, as CPython's makeipaddr: a link-local host carries its zone */
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        char host[NI_MAXHOST];
        int rc = getnameinfo(sa, a->len, host, sizeof host, NULL, 0, NI_NUMERICHOST);
        if (rc != 0)
            return PyErr_Format(PyExc_OSError, "getnameinfo: %s", gai_strerror(rc));
        return Py_BuildValue("(siII)", host, (int)ntohs(sin6->sin6_port),
                             (unsigned)ntohl(sin6->sin6_flowinfo), (unsigned)sin6->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t n = a->len - offsetof(struct sockaddr_un, sun_path);
#ifdef __linux__
        if (n > 0 && un->sun_path[0] == 0)
            return PyBytes_FromStringAndSize(un->sun_path, (Py_ssize_t)n); /* an abstract name */
#endif
        size_t len = strnlen(un->sun_path, n);
        return PyUnicode_DecodeFSDefaultAndSize(un->sun_path, (Py_ssize_t)len);
    }
    default:
        Py_RETURN_NONE;
    }
}
