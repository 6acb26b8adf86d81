/* The TLS record layer's private header, shared by its two files:
 * tls_session.c (sessions, errors, the ciphertext's internal requests,
 * failure, the pass) and tls_records.c (the record paths: handshake,
 * reads, writes). Nothing outside them includes it; binding.h declares
 * what the rest of the binding calls. */
#ifndef GAIO_TLS_SESSION_H
#define GAIO_TLS_SESSION_H

#include "binding.h"


/* The most plaintext one record carries (RFC 8446 5.1), and the largest
 * record on the wire (TLS 1.2's limit: 2^14 + 2048, plus the header). */
#define RECORD 16384
#define HEADER 5
/* The records of one write encrypted ahead and handed to the engine as one
 * send: one pass per RECORDS_PER_SEND records, not per record (each pass
 * is a round trip through wait_io, and io_uring submits at its wait). */
#define RECORDS_PER_SEND 4

enum { WAITING, HANDSHAKING, OPEN, FAILED };

typedef struct {
    gaio_tls t;                 /* first: the core hands back &t */
    PyObject *obj, *in, *out;   /* the SSLObject and its incoming / outgoing MemoryBIO */
    PyObject *error;            /* FAILED: what every request completes with (its class) */
    PyObject *end_exc;          /* reads end: ssl.SSLEOFError (end == GAIO_ERR_TLS) */
    int end;                    /* reads end: 0, GAIO_ERR_EOF, GAIO_ERR_TLS, an errno */
    int rd_errno;               /* the socket's error met by the internal read */
    int state;
    int server_side;
    /* the record being received: its header so far, or the body bytes left */
    unsigned char hdr[HEADER];
    uint8_t hdr_len;
    uint8_t eof_fed;            /* the BIO was told the stream ended */
    size_t body_left;
    unsigned char *rbuf;        /* the body's bytes, only while one is being received */
    PyObject *sending;          /* the bytes the internal write sends */
} tls_session;

/* Interned method names and ssl's exception classes (tls_session.c fills
 * them on the first start_tls); S for short, as every SSLObject call names one. */
extern struct gaio__tls_names {
    PyObject *read, *write, *do_handshake, *pending, *write_eof, *unwrap, *version, *wrap_bio,
        *server_side, *server_hostname, *release;
    PyObject *SSLError, *SSLWantReadError, *SSLEOFError, *SSLZeroReturnError;
    PyObject *clone_error;
    int ready;
} gaio__tls_names;
#define S gaio__tls_names

static inline PyObject *call0(PyObject *self, PyObject *name)
{
    PyObject *args[] = {self};
    return PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline PyObject *call1(PyObject *self, PyObject *name, PyObject *a)
{
    PyObject *args[] = {self, a};
    return PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline long out_pending(tls_session *s)
{
    PyObject *p = PyObject_GetAttr(s->out, S.pending);
    long n = p ? PyLong_AsLong(p) : 0;
    Py_XDECREF(p);
    PyErr_Clear();
    return n;
}

/* ---- tls_session.c ---- */

/* End r with exception exc (stolen): its result's error (GAIO_ERR_TLS). */
void gaio__tls_end_with(Watcher *w, gaio_core *core, gaio_req *r, PyObject *exc);
/* A copy of exc for one more request (NULL: none could be made). */
PyObject *gaio__tls_clone_of(Watcher *w, PyObject *exc);
/* The exception an SSLObject call raised, cleared: the connection's failure. */
PyObject *gaio__tls_fetch(Watcher *w);
/* Drop the exception a call into Python left, unless a signal handler raised
 * it: that one is kept for wait_io() to raise (gaio__tls_fetch's rule). */
void gaio__tls_clear(Watcher *w);
/* 1 when SSLObject.read could only raise SSLWantReadError (nothing is
 * buffered that a read could decrypt): the read asks for ciphertext at once. */
int gaio__tls_nothing_to_read(Watcher *w, tls_session *s);
/* More ciphertext: 1 some arrived (look again), 0 on its way, -1 none will come. */
int gaio__tls_more_ciphertext(gaio_core *core, tls_session *s);
/* The outgoing BIO to the engine: 1 all went, 0 some on its way, -1 refused. */
int gaio__tls_flush(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c);
/* Every queued request fails with the session's error (its class). */
void gaio__tls_fail_all(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c);
/* A record that failed to decrypt, a protocol violation (R30): exc stolen. */
void gaio__tls_broken(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c, PyObject *exc);
/* The socket refused a write's ciphertext: the write at the head ends with err. */
void gaio__tls_write_failed(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c, int err);

/* ---- tls_records.c: the record paths, run by the pass per pending session ---- */

/* The handshake fails with exc (stolen): start_tls's result and every request. */
void gaio__tls_handshake_failed(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c,
                                PyObject *exc);
/* Advance the handshake: 1 once it succeeded (its result made). */
int gaio__tls_handshake(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c);
/* Decrypt into the queued reads. */
void gaio__tls_reads(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c);
/* Encrypt the queued writes, RECORDS_PER_SEND records a send. */
void gaio__tls_writes(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c);

#endif
