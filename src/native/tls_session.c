/* TLS sessions in the native engines (R28-R31), the binding's side: the
 * record layer, run with the GIL in the pass wait_io makes after the core
 * returned GAIO_WAIT_TLS (core_tls.c has the core's side). The python
 * engine's twin is gaio/_python_tls.py: the same states and rules.
 *
 * The session is Python's ssl.SSLObject over two ssl.MemoryBIOs (R31), its
 * methods called through the C API (vectorcall), never a wrapper of ours.
 * Ciphertext moves between the socket and the BIOs by the session's
 * internal requests, which the engine performs without the GIL:
 *   - a READ, one record at a time, only while a read or the handshake
 *     needs bytes: its 5-byte header into the session itself, then its body
 *     into a buffer of the body's size that lives only until the body is in
 *     the BIO. An idle connection holds at most the unread rest of one
 *     record (R29), and one waiting for a header (a standing read's usual
 *     state) no buffer at all;
 *   - a WRITE of what the outgoing BIO holds (a bytes object kept until the
 *     engine is done with it).
 * A write is cut into records of at most RECORD plaintext bytes; a record
 * is encrypted only when the previous one went out whole, and its
 * plaintext counts (gaio_core_progress: size, bytes_written, R21's
 * back-pressure) once the kernel took it all.
 *
 * States: WAITING (the writes before start_tls go out in plaintext, by the
 * engine), HANDSHAKING, OPEN, FAILED (every request completes with the
 * error's class). Reads end with EOFError on close_notify, ssl.SSLEOFError
 * on a stream that ends without it (R30).
 *
 * The pass holds core->lock while the SSLObject runs (it releases the GIL
 * around OpenSSL; no thread holding core->lock ever waits for the GIL, and
 * Python code the session runs on this thread re-enters the core: see
 * gaio__binding_enter). */
#include "binding.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static struct {
    PyObject *read, *write, *do_handshake, *pending, *write_eof, *unwrap, *version, *wrap_bio,
        *server_side, *server_hostname, *release;
    PyObject *SSLError, *SSLWantReadError, *SSLEOFError, *SSLZeroReturnError;
    PyObject *clone_error;
    int ready;
} S;

static int init_names(void)
{
    if (S.ready)
        return 0;
#define NAME(f) if (!(S.f = PyUnicode_InternFromString(#f))) return -1
    NAME(read);
    NAME(write);
    NAME(do_handshake);
    NAME(pending);
    NAME(write_eof);
    NAME(unwrap);
    NAME(version);
    NAME(wrap_bio);
    NAME(server_side);
    NAME(server_hostname);
    NAME(release);
#undef NAME
    PyObject *ssl = PyImport_ImportModule("ssl");
    if (!ssl)
        return -1;
    S.SSLError = PyObject_GetAttrString(ssl, "SSLError");
    S.SSLWantReadError = PyObject_GetAttrString(ssl, "SSLWantReadError");
    S.SSLEOFError = PyObject_GetAttrString(ssl, "SSLEOFError");
    S.SSLZeroReturnError = PyObject_GetAttrString(ssl, "SSLZeroReturnError");
    PyObject *bio = PyObject_GetAttrString(ssl, "MemoryBIO");
    Py_DECREF(ssl);
    Py_XDECREF(bio);
    PyObject *ac = PyImport_ImportModule("gaio._python_accept_connect");
    if (ac) {
        S.clone_error = PyObject_GetAttrString(ac, "_clone_error");
        Py_DECREF(ac);
    }
    if (!S.SSLError || !S.SSLWantReadError || !S.SSLEOFError || !S.SSLZeroReturnError ||
        !S.clone_error)
        return -1;
    S.ready = 1;
    return 0;
}

/* ---- sessions: made by start_tls, disposed of once their connection is gone ---- */

gaio_tls *gaio__tls_session_new(PyObject *context, int server_side, PyObject *hostname,
                                PyObject **sslobj)
{
    if (init_names() < 0)
        return NULL;
    PyObject *ssl = PyImport_ImportModule("ssl");
    if (!ssl)
        return NULL;
    PyObject *bio_type = PyObject_GetAttrString(ssl, "MemoryBIO");
    Py_DECREF(ssl);
    if (!bio_type)
        return NULL;
    tls_session *s = PyMem_Calloc(1, sizeof *s);
    if (!s) {
        Py_DECREF(bio_type);
        PyErr_NoMemory();
        return NULL;
    }
    s->in = PyObject_CallNoArgs(bio_type);
    s->out = s->in ? PyObject_CallNoArgs(bio_type) : NULL;
    Py_DECREF(bio_type);
    if (s->out) {
        PyObject *args[] = {context, s->in, s->out, server_side ? Py_True : Py_False, hostname};
        PyObject *kw = PyTuple_Pack(2, S.server_side, S.server_hostname);
        if (kw)
            s->obj = PyObject_VectorcallMethod(S.wrap_bio, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                               kw);
        Py_XDECREF(kw);
    }
    if (!s->obj) {
        Py_XDECREF(s->in);
        Py_XDECREF(s->out);
        PyMem_Free(s);
        return NULL;
    }
    s->server_side = server_side;
    Py_INCREF(s->obj);
    *sslobj = s->obj;
    return &s->t;
}

static void session_dispose(tls_session *s)
{
    free(s->t.early);
    Py_XDECREF(s->obj);
    Py_XDECREF(s->in);
    Py_XDECREF(s->out);
    Py_XDECREF(s->error);
    Py_XDECREF(s->end_exc);
    Py_XDECREF(s->sending);
    free(s->rbuf);
    PyMem_Free(s);
}

void gaio__tls_dispose(gaio_tls *dead)
{
    while (dead) {
        gaio_tls *next = dead->next_dead;
        session_dispose((tls_session *)dead);
        dead = next;
    }
}

void gaio__tls_failed_before(gaio_tls *t, PyObject *exc)
{
    tls_session *s = (tls_session *)t;
    s->state = FAILED;
    Py_INCREF(exc);
    Py_XSETREF(s->error, exc);
}

/* ---- errors: a TLS error's exception travels beside its result ---- */

/* End r with exception exc (stolen): its result's error (GAIO_ERR_TLS). */
static void end_with(Watcher *w, gaio_core *core, gaio_req *r, PyObject *exc)
{
    PyObject *key = PyLong_FromVoidPtr(r);
    if (!w->tls_errors)
        w->tls_errors = PyDict_New();
    if (!key || !exc || !w->tls_errors || PyDict_SetItem(w->tls_errors, key, exc) < 0)
        PyErr_Clear(); /* the result says SSLError without the details */
    Py_XDECREF(key);
    Py_XDECREF(exc);
    gaio_core_tls_end(core, r, GAIO_ERR_TLS);
}

PyObject *gaio__tls_error_take(Watcher *w, gaio_req *r)
{
    PyObject *exc = NULL;
    PyObject *key = PyLong_FromVoidPtr(r);
    if (key && w->tls_errors) {
        exc = PyDict_GetItemWithError(w->tls_errors, key);
        Py_XINCREF(exc);
        if (exc)
            PyDict_DelItem(w->tls_errors, key);
    }
    Py_XDECREF(key);
    PyErr_Clear();
    if (!exc && S.SSLError)
        exc = PyObject_CallFunction(S.SSLError, "s", "TLS error");
    return exc;
}

static PyObject *clone_of(PyObject *exc)
{
    PyObject *c = PyObject_CallOneArg(S.clone_error, exc);
    if (!c)
        PyErr_Clear();
    return c;
}

/* The exception an SSLObject call raised (cleared), its traceback dropped:
 * the connection's failure. One that is no ssl.SSLError did not come from
 * the peer: _ssl runs Python's signal handlers after each SSL_read/SSL_write,
 * and wait_io holds signals off the pass only on its own thread (signals.c,
 * gaio__sig_hold). Such a call may have lost or half made its work, so the
 * connection still fails, with an SSLError that names it, and the exception
 * itself is kept for wait_io to raise: never swallowed. */
static PyObject *fetch(Watcher *w)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    if (value && !PyObject_IsInstance(value, S.SSLError)) {
        if (!w->tls_interrupt) {
            PyException_SetTraceback(value, tb);
            w->tls_interrupt = value; /* the first one; a later one is dropped */
        } else {
            Py_DECREF(value);
        }
        Py_XDECREF(tb);
        value = PyObject_CallFunction(S.SSLError, "s",
                                      "the TLS record layer was interrupted (an exception "
                                      "that was not a TLS error, raised by wait_io)");
        if (!value)
            PyErr_Clear();
        return value;
    }
    Py_XDECREF(tb);
    if (value)
        PyException_SetTraceback(value, Py_None);
    return value;
}

/* ---- ciphertext: the internal requests ---- */

static size_t record_want(const tls_session *s)
{
    return s->body_left ? s->body_left : (size_t)(HEADER - s->hdr_len);
}

static PyObject *call0(PyObject *self, PyObject *name)
{
    PyObject *args[] = {self};
    return PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static PyObject *call1(PyObject *self, PyObject *name, PyObject *a)
{
    PyObject *args[] = {self, a};
    return PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* What the internal read brought: into the incoming BIO, the framing moved on. */
static void absorb_read(tls_session *s)
{
    gaio_req *q = &s->t.rd;
    s->t.rd_over = 0;
    if (q->error == 0 && q->done > 0) {
        size_t n = q->done;
        PyObject *mv = PyMemoryView_FromMemory((char *)q->buf, (Py_ssize_t)n, PyBUF_READ);
        PyObject *r = mv ? call1(s->in, S.write, mv) : NULL;
        Py_XDECREF(mv);
        if (!r)
            PyErr_Clear();
        Py_XDECREF(r);
        if (q->buf == s->rbuf) {
            s->body_left -= n;
            if (!s->body_left) {
                free(s->rbuf);
                s->rbuf = NULL;
            }
        } else { /* read in place: s->hdr + s->hdr_len */
            s->hdr_len = (uint8_t)(s->hdr_len + n);
            if (s->hdr_len == HEADER) {
                s->body_left = (size_t)s->hdr[3] << 8 | s->hdr[4];
                s->hdr_len = 0;
            }
        }
    } else if (q->error == GAIO_ERR_EOF) {
        /* the SSLObject tells close_notify from truncation */
        PyObject *r = call0(s->in, S.write_eof);
        if (!r)
            PyErr_Clear();
        Py_XDECREF(r);
        s->eof_fed = 1;
    } else if (q->error > 0) {
        s->rd_errno = q->error;
    }
}

/* Bytes a read made before start_tls brought after it (core_tls.c's
 * withdrawal): into the BIO, the framing walked over them. */
static void absorb_early(tls_session *s)
{
    unsigned char *p = s->t.early;
    size_t n = s->t.nearly;
    s->t.early = NULL;
    s->t.nearly = 0;
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n, PyBUF_READ);
    PyObject *r = mv ? call1(s->in, S.write, mv) : NULL;
    Py_XDECREF(mv);
    Py_XDECREF(r);
    PyErr_Clear();
    for (size_t i = 0; i < n;) {
        if (s->body_left) {
            size_t k = n - i < s->body_left ? n - i : s->body_left;
            s->body_left -= k;
            i += k;
            continue;
        }
        s->hdr[s->hdr_len++] = p[i++];
        if (s->hdr_len == HEADER) {
            s->body_left = (size_t)s->hdr[3] << 8 | s->hdr[4];
            s->hdr_len = 0;
        }
    }
    free(p);
}

/* More ciphertext for the session: 1 when some arrived at once (look
 * again), 0 when the read is on its way, -1 when none will come. */
static int more_ciphertext(gaio_core *core, tls_session *s)
{
    if (s->t.early) {
        absorb_early(s);
        return 1;
    }
    if (s->t.rd_over)
        absorb_read(s);
    if (s->rd_errno || s->eof_fed)
        return -1;
    if (s->t.rd_busy)
        return 0;
    if (!s->body_left) {
        s->t.rd.buf = s->hdr + s->hdr_len;
    } else {
        /* the body's first read sizes the buffer; later ones refill it from its start */
        if (!s->rbuf && !(s->rbuf = malloc(s->body_left)))
            return -1;
        s->t.rd.buf = s->rbuf;
    }
    s->t.rd.len = record_want(s);
    int queued = gaio_core_tls_queue(core, &s->t, GAIO_READ);
    if (queued <= 0)
        return queued;
    if (!s->t.rd_over)
        return s->t.rd_busy ? 0 : -1;
    absorb_read(s);
    return 1;
}

static void write_failed(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c, int err);

/* The internal write ended: the record it carried counts, or fails. */
static void absorb_write(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    gaio_req *q = &s->t.wr;
    s->t.wr_over = 0;
    Py_CLEAR(s->sending);
    gaio_req *r = s->t.record_req;
    s->t.record_req = NULL;
    if (q->error > 0) {
        write_failed(w, core, s, c, q->error);
        return;
    }
    if (q->error)
        return;
    if (r && c && gaio_core_tls_user_head(c, GAIO_WRITE) == r && r->state == GAIO_REQ_QUEUED)
        gaio_core_progress(core, r, (ssize_t)s->t.record_plain);
}

/* Hand what the outgoing BIO holds to the engine: 1 when all of it went,
 * 0 while some is on its way, -1 when the socket refused it. */
static int flush(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    for (;;) {
        if (s->t.wr_over)
            absorb_write(w, core, s, c);
        if (s->t.wr_busy)
            return 0;
        PyObject *p = PyObject_GetAttr(s->out, S.pending);
        long pending = p ? PyLong_AsLong(p) : -1;
        Py_XDECREF(p);
        if (pending <= 0) {
            PyErr_Clear();
            return 1;
        }
        PyObject *data = call0(s->out, S.read);
        if (!data || !PyBytes_Check(data)) {
            PyErr_Clear();
            Py_XDECREF(data);
            return -1;
        }
        s->sending = data;
        s->t.wr.buf = (unsigned char *)PyBytes_AS_STRING(data);
        s->t.wr.len = (size_t)PyBytes_GET_SIZE(data);
        if (gaio_core_tls_queue(core, &s->t, GAIO_WRITE) == 0)
            return 0; /* not for writes: none is withdrawn */
        if (!s->t.wr_busy && !s->t.wr_over) {
            Py_CLEAR(s->sending); /* the connection is going */
            return -1;
        }
    }
}

/* ---- failure ---- */

static void fail_all(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    for (int k = 0; k < 2; k++) {
        gaio_req *r;
        /* the start_tls request too, when the session began FAILED */
        while ((r = gaio_core_tls_user_head(c, k)) && r->state == GAIO_REQ_QUEUED)
            end_with(w, core, r, clone_of(s->error));
    }
}

/* A record that failed to decrypt, a protocol violation (R30): exc stolen. */
static void broken(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c, PyObject *exc)
{
    s->state = FAILED;
    Py_XSETREF(s->error, exc);
    fail_all(w, core, s, c);
}

static void write_failed(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c, int err)
{
    gaio_req *r = c ? gaio_core_tls_user_head(c, GAIO_WRITE) : NULL;
    if (r && r->state == GAIO_REQ_QUEUED && r != s->t.request && s->state == OPEN)
        gaio_core_tls_end(core, r, err);
}

/* ---- handshake ---- */

static void handshake_failed(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c,
                             PyObject *exc)
{
    s->state = FAILED;
    Py_XSETREF(s->error, exc);
    if (s->t.request)
        end_with(w, core, s->t.request, clone_of(exc));
    fail_all(w, core, s, c);
}

/* Advance the handshake: 1 once it succeeded (its result made). */
static int handshake(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    for (;;) {
        int f = flush(w, core, s, c);
        if (f == 0)
            return 0;
        if (!s->t.request) {
            /* its deadline passed, or the connection is going */
            handshake_failed(w, core, s, c, gaio__error_object(s->t.request_error));
            return 0;
        }
        if (f < 0) {
            int err = s->t.wr.error > 0 ? s->t.wr.error : EPIPE;
            handshake_failed(w, core, s, c, gaio__error_object(err));
            return 0;
        }
        PyObject *r = call0(s->obj, S.do_handshake);
        if (r) {
            Py_DECREF(r);
            f = flush(w, core, s, c); /* its last flight goes before the result */
            if (f == 0)
                return 0;
            gaio_core_tls_handshake_done(core, &s->t, 0);
            s->state = OPEN;
            return 1;
        }
        if (!PyErr_ExceptionMatches(S.SSLWantReadError)) {
            PyObject *exc = fetch(w);
            flush(w, core, s, c); /* the alert tells the peer why, if it goes */
            handshake_failed(w, core, s, c, exc);
            return 0;
        }
        PyErr_Clear();
        PyObject *p = PyObject_GetAttr(s->out, S.pending);
        long pending = p ? PyLong_AsLong(p) : 0;
        Py_XDECREF(p);
        PyErr_Clear();
        if (pending > 0)
            continue;
        int m = more_ciphertext(core, s);
        if (m == 0)
            return 0;
        if (m < 0 && s->rd_errno) {
            handshake_failed(w, core, s, c, gaio__error_object(s->rd_errno));
            return 0;
        }
        if (m < 0 && !s->eof_fed) {
            /* no memory for the body's buffer, or the connection is going */
            handshake_failed(w, core, s, c, gaio__error_object(ENOMEM));
            return 0;
        }
    }
}

/* ---- reads ---- */

/* A read made the session write (a TLS 1.3 key update's answer, an alert):
 * send it. A TLS 1.2 client asked to renegotiate would answer with a
 * handshake: refused, the connection fails (SPEC 0.3). 1 to go on. */
static int answer(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    if (!s->server_side) {
        PyObject *v = call0(s->obj, S.version);
        int tls12 = v && PyUnicode_Check(v) && PyUnicode_CompareWithASCIIString(v, "TLSv1.2") == 0;
        Py_XDECREF(v);
        PyErr_Clear();
        if (tls12) {
            PyObject *junk = call0(s->out, S.read);
            Py_XDECREF(junk);
            PyErr_Clear();
            broken(w, core, s, c, PyObject_CallFunction(
                       S.SSLError, "s", "renegotiation refused: the peer asked for a new handshake"));
            return 0;
        }
    }
    flush(w, core, s, c);
    return 1;
}

static long out_pending(tls_session *s)
{
    PyObject *p = PyObject_GetAttr(s->out, S.pending);
    long n = p ? PyLong_AsLong(p) : 0;
    Py_XDECREF(p);
    PyErr_Clear();
    return n;
}

static void reads(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    gaio_req *r;
    while (s->state == OPEN && (r = gaio_core_tls_user_head(c, GAIO_READ)) &&
           r->state == GAIO_REQ_QUEUED) {
        if (s->end) {
            if (s->end == GAIO_ERR_TLS)
                end_with(w, core, r, clone_of(s->end_exc));
            else
                gaio_core_tls_end(core, r, s->end);
            continue;
        }
        if (r->flags & GAIO_F_HELD)
            return; /* back-pressure (R21): the pass comes back when it is released */
        unsigned char *ptr;
        size_t room;
        if (!r->buf) {
            ssize_t got = gaio_core_ibuf_reserve(core, &ptr);
            if (got < 0) {
                gaio_core_tls_end(core, r, ENOMEM);
                continue;
            }
            if (got == 0) {
                gaio_core_tls_later(core, &s->t); /* the next batch has room */
                return;
            }
            room = (size_t)got;
        } else {
            ptr = r->buf + r->done;
            room = r->len - r->done;
        }
        if (room > PY_SSIZE_T_MAX)
            room = PY_SSIZE_T_MAX;
        PyObject *mv = PyMemoryView_FromMemory((char *)ptr, (Py_ssize_t)room, PyBUF_WRITE);
        PyObject *len = mv ? PyLong_FromSize_t(room) : NULL;
        PyObject *res = NULL;
        if (len) {
            PyObject *args[] = {s->obj, len, mv};
            res = PyObject_VectorcallMethod(S.read, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        }
        Py_XDECREF(len);
        if (mv) {
            /* the memory is the caller's or the batch's: no export may outlive the call */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyObject *rel = call0(mv, S.release);
            Py_XDECREF(rel);
            Py_DECREF(mv);
            PyErr_Clear();
            PyErr_Restore(type, value, tb);
        }
        if (!res) {
            if (PyErr_ExceptionMatches(S.SSLWantReadError)) {
                PyErr_Clear();
                if (out_pending(s) > 0 && !answer(w, core, s, c))
                    return;
                int m = more_ciphertext(core, s);
                if (m == 0)
                    return;
                if (m < 0 && s->rd_errno)
                    s->end = s->rd_errno; /* a reset ends the reads (R30) */
                else if (m < 0 && !s->eof_fed)
                    s->end = ENOMEM;
                continue;
            }
            if (PyErr_ExceptionMatches(S.SSLEOFError) || PyErr_ExceptionMatches(S.SSLZeroReturnError)) {
                /* the stream ended without close_notify: never a clean end (R30) */
                PyErr_Clear();
                s->end = GAIO_ERR_TLS;
                Py_XSETREF(s->end_exc, PyObject_CallFunction(S.SSLEOFError, "is", 8,
                                                             "EOF occurred in violation of protocol"));
                continue;
            }
            broken(w, core, s, c, fetch(w));
            return;
        }
        ssize_t n = PyLong_AsSsize_t(res);
        Py_DECREF(res);
        if (n < 0) {
            PyErr_Clear();
            n = 0;
        }
        if (out_pending(s) > 0 && !answer(w, core, s, c))
            return;
        if (n == 0) { /* the peer's close_notify (SSLObject.read returns 0 only then) */
            s->end = GAIO_ERR_EOF;
            continue;
        }
        gaio_core_progress(core, r, n);
    }
}

/* ---- writes ---- */

/* The next record's plaintext of write r, at most RECORD bytes from
 * `ahead` bytes past what was sent (NULL: r ended here, or no memory). */
static PyObject *take(gaio_core *core, gaio_req *r, size_t ahead, size_t *size)
{
    size_t done = r->done + ahead;
    size_t left = r->len - done;
    size_t n = left < RECORD ? left : RECORD;
    *size = n;
    if (r->op == GAIO_OP_SENDFILE) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (!b)
            return NULL;
        ssize_t got;
        do
            got = pread(r->u.w.file_fd, PyBytes_AS_STRING(b), n, (off_t)(r->u.w.file_off + (int64_t)done));
        while (got < 0 && errno == EINTR);
        if (got <= 0) {
            int err = got == 0 ? GAIO_ERR_EOF : errno;
            Py_DECREF(b);
            if (!ahead) /* else the records taken go first, and the next look ends it */
                gaio_core_tls_end(core, r, err);
            return NULL;
        }
        *size = (size_t)got;
        if ((size_t)got < n)
            _PyBytes_Resize(&b, got);
        return b;
    }
    if (r->u.w.vec) {
        gaio_vec *v = r->u.w.vec;
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (!b)
            return NULL;
        char *dst = PyBytes_AS_STRING(b);
        size_t want = n, skip = ahead;
        for (uint32_t i = v->cur; want && i < v->n; i++) {
            size_t have = v->iov[i].iov_len;
            const char *from = v->iov[i].iov_base;
            if (skip >= have) {
                skip -= have;
                continue;
            }
            from += skip;
            have -= skip;
            skip = 0;
            size_t part = have < want ? have : want;
            memcpy(dst, from, part);
            dst += part;
            want -= part;
        }
        return b;
    }
    return PyMemoryView_FromMemory((char *)r->buf + done, (Py_ssize_t)n, PyBUF_READ);
}

static void writes(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    while (s->state == OPEN) {
        int f = flush(w, core, s, c);
        if (f == 0)
            return;
        gaio_req *r = gaio_core_tls_user_head(c, GAIO_WRITE);
        if (!r || r->state != GAIO_REQ_QUEUED)
            return;
        if (f < 0) {
            write_failed(w, core, s, c, EPIPE);
            continue;
        }
        size_t ahead = 0;
        for (int n = 0; n < RECORDS_PER_SEND && r->done + ahead < r->len; n++) {
            size_t size;
            PyObject *chunk = take(core, r, ahead, &size);
            if (!chunk) {
                if (PyErr_Occurred()) {
                    PyErr_Clear();
                    if (!ahead)
                        gaio_core_tls_end(core, r, ENOMEM);
                }
                break; /* take() ended r, or what is encrypted goes first */
            }
            PyObject *res = call1(s->obj, S.write, chunk);
            Py_DECREF(chunk);
            if (!res) {
                broken(w, core, s, c, fetch(w));
                return;
            }
            Py_DECREF(res);
            ahead += size;
        }
        if (ahead) {
            s->t.record_req = r;
            s->t.record_plain = ahead;
        }
    }
}

/* ---- the pump and the pass ---- */

static void pump(Watcher *w, gaio_core *core, tls_session *s)
{
    gaio_conn *c = gaio_core_tls_conn(core, &s->t);
    if (!c)
        return;
    if (s->t.rd_over)
        absorb_read(s);
    if (s->t.wr_over)
        absorb_write(w, core, s, c);
    if (s->state == WAITING) {
        if (!s->t.request) {
            handshake_failed(w, core, s, c, gaio__error_object(s->t.request_error));
        } else if (gaio_core_tls_user_head(c, GAIO_WRITE) == s->t.request) {
            s->state = HANDSHAKING;
        }
    }
    if (s->state == HANDSHAKING)
        handshake(w, core, s, c);
    if (s->state == OPEN)
        reads(w, core, s, c);
    if (s->state == OPEN)
        writes(w, core, s, c);
    if (s->state == FAILED)
        fail_all(w, core, s, c);
    if (PyErr_Occurred())
        PyErr_Clear();
    /* R29: no body buffer for an idle connection (what came is in the BIO) */
    if (s->rbuf && !s->t.rd_busy && !s->t.rd_over) {
        free(s->rbuf);
        s->rbuf = NULL;
    }
}

int gaio__tls_pass(Watcher *w)
{
    gaio_core *core = w->core;
    gaio_tls *t, *dead;
    void *token = gaio_core_tls_pass_begin(core);
    /* a second round for what the flush's completions brought; the rest
     * waits for the next wait_io */
    for (int round = 0; round < 2; round++) {
        while ((t = gaio_core_tls_next(core)))
            pump(w, core, (tls_session *)t);
        if (!gaio_core_tls_flush(core))
            break;
    }
    int results = gaio_core_tls_pass_end(core, token, &dead);
    gaio__tls_dispose(dead);
    return results;
}

/* free(conn) of a TLS connection (R30): close_notify if the session is
 * open, no record is half sent and the socket takes it at once. */
void gaio__tls_goodbye(Watcher *w, uint64_t conn_id)
{
    gaio_core *core = w->core;
    w->pins++; /* the core outlives a close() by another thread meanwhile */
    void *token = gaio_core_tls_hold(core);
    tls_session *s = (tls_session *)gaio_core_tls_held(core, conn_id);
    if (s && s->state == OPEN && !s->t.wr_busy) {
        PyObject *r = call0(s->obj, S.unwrap);
        Py_XDECREF(r);
        PyErr_Clear(); /* SSLWantReadError: the peer's close_notify is not awaited */
        PyObject *data = call0(s->out, S.read);
        if (data && PyBytes_Check(data) && PyBytes_GET_SIZE(data))
            gaio_core_tls_goodbye(core, &s->t, PyBytes_AS_STRING(data),
                                  (size_t)PyBytes_GET_SIZE(data));
        Py_XDECREF(data);
        PyErr_Clear();
    }
    gaio_core_tls_unhold(core, token);
    gaio__core_unpin(w);
}
