/* TLS sessions in the native engines (R28-R31), the binding's side: the
 * record layer, run with the GIL in the pass wait_io makes after the core
 * returned GAIO_WAIT_TLS (core_tls.c has the core's side). This file has
 * the sessions, their errors, their ciphertext and the pass; the record
 * paths (handshake, reads, writes) are in tls_records.c. The python
 * engine's twin is gaio/_python_tls.py: the same states and rules.
 *
 * The session is Python's ssl.SSLObject over two ssl.MemoryBIOs (R31), its
 * methods called through the C API (vectorcall), never a wrapper of ours.
 * Ciphertext moves between the socket and the BIOs by the session's
 * internal requests, which the engine performs without the GIL:
 *   - a READ, one record at a time, only while a read or the handshake
 *     needs bytes: its 5-byte header into the session itself, then its body
 *     and the next record's header into a buffer of that size that lives
 *     only until the body is in the BIO (two recv per record, and a short
 *     one tells a readiness engine the socket is empty). An idle connection
 *     holds at most the unread rest of one record and the next header
 *     (R29), and one waiting for a header (a standing read's usual state)
 *     no buffer at all;
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
#include "tls_session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct gaio__tls_names gaio__tls_names;

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
void gaio__tls_end_with(Watcher *w, gaio_core *core, gaio_req *r, PyObject *exc)
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

PyObject *gaio__tls_clone_of(Watcher *w, PyObject *exc)
{
    PyObject *c = PyObject_CallOneArg(S.clone_error, exc); /* Python code: a handler may run */
    if (!c)
        gaio__tls_clear(w);
    return c;
}

/* The exception an SSLObject call raised (cleared), its traceback dropped:
 * the connection's failure. One that is no ssl.SSLError did not come from
 * the peer: _ssl runs Python's signal handlers after each SSL_read/SSL_write,
 * and wait_io holds signals off the pass only on its own thread (signals.c,
 * gaio__sig_hold). Such a call may have lost or half made its work, so the
 * connection still fails, with an SSLError that names it, and the exception
 * itself is kept for wait_io to raise: never swallowed. */
PyObject *gaio__tls_fetch(Watcher *w)
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

/* The SSLObject's methods are Python (ssl.py wraps _ssl), so a signal handler
 * can run at their first line even while wait_io holds signals off its own
 * thread: another thread took the signal and the flag waits for the next
 * Python code. Where a call's failure is otherwise of no interest, what such
 * a handler raised must still reach the caller. A MemoryError keeps the old
 * meaning of these sites (the detail is dropped, the result says it). */
void gaio__tls_clear(Watcher *w)
{
    if (!PyErr_Occurred())
        return;
    if (PyErr_ExceptionMatches(S.SSLError) || PyErr_ExceptionMatches(PyExc_MemoryError)) {
        PyErr_Clear();
        return;
    }
    Py_XDECREF(gaio__tls_fetch(w));
}

/* ---- ciphertext: the internal requests ---- */

/* What the next internal read asks for: the rest of the header, or the rest
 * of the body and, once the session is open, the next record's header with
 * it (never more: an idle connection holds at most the unread rest of one
 * record and the next header, R29). Asking past the body is what tells the
 * engine when the socket was emptied: a body read that brings less than it
 * asked for is a short read, after which a readiness engine tries no recv
 * until the next edge, instead of one that finds nothing after each record.
 * The handshake's reads ask for exactly the record: its last one then leaves
 * the socket as readable as before, so the first read after start_tls()
 * looks at once for what the peer sent since (a short read there would wait
 * for the engine's next edge while the pass goes on with the writes). */
static size_t record_want(const tls_session *s)
{
    if (!s->body_left)
        return (size_t)(HEADER - s->hdr_len);
    return s->body_left + (s->state == OPEN ? HEADER : 0);
}

/* Walk the record framing over n ciphertext bytes the BIO was given: a
 * header's bytes are kept in s->hdr (its last two give the body's length).
 * 1 when a body was completed on the way (its buffer is done with). */
static int frame(tls_session *s, const unsigned char *p, size_t n)
{
    int body_done = 0;
    for (size_t i = 0; i < n;) {
        if (s->body_left) {
            size_t k = n - i < s->body_left ? n - i : s->body_left;
            s->body_left -= k;
            i += k;
            body_done |= !s->body_left;
            continue;
        }
        s->hdr[s->hdr_len++] = p[i++];
        if (s->hdr_len == HEADER) {
            s->body_left = (size_t)s->hdr[3] << 8 | s->hdr[4];
            s->hdr_len = 0;
        }
    }
    return body_done;
}

/* n ciphertext bytes at p into the incoming BIO. */
static void feed(tls_session *s, const unsigned char *p, size_t n)
{
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n, PyBUF_READ);
    PyObject *r = mv ? call1(s->in, S.write, mv) : NULL;
    Py_XDECREF(mv);
    if (!r)
        PyErr_Clear();
    Py_XDECREF(r);
}

/* What the internal read brought: into the incoming BIO, the framing moved on. */
static void absorb_read(tls_session *s)
{
    gaio_req *q = &s->t.rd;
    s->t.rd_over = 0;
    if (q->error == 0 && q->done > 0) {
        /* a header read in place (q->buf is s->hdr + s->hdr_len) walks onto itself */
        feed(s, q->buf, q->done);
        if (frame(s, q->buf, q->done) && q->buf == s->rbuf) {
            free(s->rbuf); /* sized for that body; the next one gets its own */
            s->rbuf = NULL;
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
    feed(s, p, n);
    frame(s, p, n);
    free(p);
}

/* 1 when SSLObject.read could only raise SSLWantReadError: no plaintext is
 * buffered, the stream did not end, and what the incoming BIO still holds
 * is the beginning of the record being received, nothing of a record before
 * it (without read_ahead, which Python never sets, OpenSSL takes a record
 * from the BIO only as it processes it). Raising that exception costs about
 * ten times this look (6 us against 0.6 here), twice per record. */
int gaio__tls_nothing_to_read(Watcher *w, tls_session *s)
{
    if (s->eof_fed || s->t.early || s->t.rd_over)
        return 0;
    size_t partial = s->body_left
        ? HEADER + ((size_t)s->hdr[3] << 8 | s->hdr[4]) - s->body_left
        : s->hdr_len;
    PyObject *p = PyObject_GetAttr(s->in, S.pending);
    long held = p ? PyLong_AsLong(p) : -1;
    Py_XDECREF(p);
    if (held < 0 || (size_t)held > partial) {
        gaio__tls_clear(w);
        return 0;
    }
    p = call0(s->obj, S.pending); /* Python code: a handler may run */
    long plain = p ? PyLong_AsLong(p) : -1;
    Py_XDECREF(p);
    gaio__tls_clear(w);
    return plain == 0;
}

/* More ciphertext for the session: 1 when some arrived at once (look
 * again), 0 when the read is on its way, -1 when none will come. */
int gaio__tls_more_ciphertext(gaio_core *core, tls_session *s)
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
        /* the body's first read sizes the buffer (with the next header);
         * later ones refill it from its start */
        if (!s->rbuf && !(s->rbuf = malloc(s->body_left + HEADER)))
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

/* The internal write ended: the record it carried counts, or fails. */
static void absorb_write(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    gaio_req *q = &s->t.wr;
    s->t.wr_over = 0;
    Py_CLEAR(s->sending);
    gaio_req *r = s->t.record_req;
    s->t.record_req = NULL;
    if (q->error > 0) {
        gaio__tls_write_failed(w, core, s, c, q->error);
        return;
    }
    if (q->error)
        return;
    if (r && c && gaio_core_tls_user_head(c, GAIO_WRITE) == r && r->state == GAIO_REQ_QUEUED)
        gaio_core_progress(core, r, (ssize_t)s->t.record_plain);
}

/* Hand what the outgoing BIO holds to the engine: 1 when all of it went,
 * 0 while some is on its way, -1 when the socket refused it. */
int gaio__tls_flush(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
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

void gaio__tls_fail_all(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    for (int k = 0; k < 2; k++) {
        gaio_req *r;
        /* the start_tls request too, when the session began FAILED */
        while ((r = gaio_core_tls_user_head(c, k)) && r->state == GAIO_REQ_QUEUED)
            gaio__tls_end_with(w, core, r, gaio__tls_clone_of(w, s->error));
    }
}

/* A record that failed to decrypt, a protocol violation (R30): exc stolen. */
void gaio__tls_broken(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c, PyObject *exc)
{
    s->state = FAILED;
    Py_XSETREF(s->error, exc);
    gaio__tls_fail_all(w, core, s, c);
}

void gaio__tls_write_failed(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c, int err)
{
    gaio_req *r = c ? gaio_core_tls_user_head(c, GAIO_WRITE) : NULL;
    if (r && r->state == GAIO_REQ_QUEUED && r != s->t.request && s->state == OPEN)
        gaio_core_tls_end(core, r, err);
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
            gaio__tls_handshake_failed(w, core, s, c, gaio__error_object(s->t.request_error));
        } else if (gaio_core_tls_user_head(c, GAIO_WRITE) == s->t.request) {
            s->state = HANDSHAKING;
        }
    }
    if (s->state == HANDSHAKING)
        gaio__tls_handshake(w, core, s, c);
    if (s->state == OPEN)
        gaio__tls_reads(w, core, s, c);
    if (s->state == OPEN)
        gaio__tls_writes(w, core, s, c);
    if (s->state == FAILED)
        gaio__tls_fail_all(w, core, s, c);
    gaio__tls_clear(w);
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
        gaio__tls_clear(w); /* SSLWantReadError: the peer's close_notify is not awaited */
        PyObject *data = call0(s->out, S.read);
        if (data && PyBytes_Check(data) && PyBytes_GET_SIZE(data))
            gaio_core_tls_goodbye(core, &s->t, PyBytes_AS_STRING(data),
                                  (size_t)PyBytes_GET_SIZE(data));
        Py_XDECREF(data);
        gaio__tls_clear(w);
    }
    gaio_core_tls_unhold(core, token);
    gaio__core_unpin(w);
}
