/* The TLS record paths of the native engines (R28-R30): the handshake,
 * reads (decrypting into the caller's or the internal buffer, answering
 * what a read makes the session write) and writes (cut into records of at
 * most RECORD plaintext bytes, RECORDS_PER_SEND of them encrypted ahead).
 * tls_session.c runs them in its pass, with the GIL and core->lock held,
 * and owns the ciphertext's internal requests they draw on (flush,
 * more_ciphertext). The python engine's twin is gaio/_python_tls.py. */
#include "tls_session.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* ---- handshake ---- */

void gaio__tls_handshake_failed(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c,
                             PyObject *exc)
{
    s->state = FAILED;
    Py_XSETREF(s->error, exc);
    if (s->t.request)
        gaio__tls_end_with(w, core, s->t.request, gaio__tls_clone_of(w, exc));
    gaio__tls_fail_all(w, core, s, c);
}

/* Advance the handshake: 1 once it succeeded (its result made). */
int gaio__tls_handshake(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    for (;;) {
        int f = gaio__tls_flush(w, core, s, c);
        if (f == 0)
            return 0;
        if (!s->t.request) {
            /* its deadline passed, or the connection is going */
            gaio__tls_handshake_failed(w, core, s, c, gaio__error_object(s->t.request_error));
            return 0;
        }
        if (f < 0) {
            int err = s->t.wr.error > 0 ? s->t.wr.error : EPIPE;
            gaio__tls_handshake_failed(w, core, s, c, gaio__error_object(err));
            return 0;
        }
        PyObject *r = call0(s->obj, S.do_handshake);
        if (r) {
            Py_DECREF(r);
            f = gaio__tls_flush(w, core, s, c); /* its last flight goes before the result */
            if (f == 0)
                return 0;
            gaio_core_tls_handshake_done(core, &s->t, 0);
            s->state = OPEN;
            return 1;
        }
        if (!PyErr_ExceptionMatches(S.SSLWantReadError)) {
            PyObject *exc = gaio__tls_fetch(w);
            gaio__tls_flush(w, core, s, c); /* the alert tells the peer why, if it goes */
            gaio__tls_handshake_failed(w, core, s, c, exc);
            return 0;
        }
        PyErr_Clear();
        PyObject *p = PyObject_GetAttr(s->out, S.pending);
        long pending = p ? PyLong_AsLong(p) : 0;
        Py_XDECREF(p);
        PyErr_Clear();
        if (pending > 0)
            continue;
        int m = gaio__tls_more_ciphertext(core, s);
        if (m == 0)
            return 0;
        if (m < 0 && s->rd_errno) {
            gaio__tls_handshake_failed(w, core, s, c, gaio__error_object(s->rd_errno));
            return 0;
        }
        if (m < 0 && !s->eof_fed) {
            /* no memory for the body's buffer, or the connection is going */
            gaio__tls_handshake_failed(w, core, s, c, gaio__error_object(ENOMEM));
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
        gaio__tls_clear(w);
        if (tls12) {
            PyObject *junk = call0(s->out, S.read);
            Py_XDECREF(junk);
            PyErr_Clear();
            gaio__tls_broken(w, core, s, c, PyObject_CallFunction(
                       S.SSLError, "s", "renegotiation refused: the peer asked for a new handshake"));
            return 0;
        }
    }
    gaio__tls_flush(w, core, s, c);
    return 1;
}

/* The session needs ciphertext to decrypt more: the answer a read made
 * goes first, then the internal read. 1 to look again, 0 to stop here. */
static int want_ciphertext(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    if (out_pending(s) > 0 && !answer(w, core, s, c))
        return 0;
    int m = gaio__tls_more_ciphertext(core, s);
    if (m == 0)
        return 0;
    if (m < 0 && s->rd_errno)
        s->end = s->rd_errno; /* a reset ends the reads (R30) */
    else if (m < 0 && !s->eof_fed)
        s->end = ENOMEM;
    return 1;
}

void gaio__tls_reads(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    gaio_req *r;
    while (s->state == OPEN && (r = gaio_core_tls_user_head(c, GAIO_READ)) &&
           r->state == GAIO_REQ_QUEUED) {
        if (s->end) {
            if (s->end == GAIO_ERR_TLS)
                gaio__tls_end_with(w, core, r, gaio__tls_clone_of(w, s->end_exc));
            else
                gaio_core_tls_end(core, r, s->end);
            continue;
        }
        if (r->flags & GAIO_F_HELD)
            return; /* back-pressure (R21): the pass comes back when it is released */
        unsigned char *ptr;
        size_t room;
        if (!gaio_req_buf(r)) {
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
        /* the read would raise SSLWantReadError (twice a record): ask at once */
        if (gaio__tls_nothing_to_read(w, s)) {
            if (!want_ciphertext(w, core, s, c))
                return;
            continue;
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
                if (!want_ciphertext(w, core, s, c))
                    return;
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
            gaio__tls_broken(w, core, s, c, gaio__tls_fetch(w));
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

void gaio__tls_writes(Watcher *w, gaio_core *core, tls_session *s, gaio_conn *c)
{
    while (s->state == OPEN) {
        int f = gaio__tls_flush(w, core, s, c);
        if (f == 0)
            return;
        gaio_req *r = gaio_core_tls_user_head(c, GAIO_WRITE);
        if (!r || r->state != GAIO_REQ_QUEUED)
            return;
        if (f < 0) {
            gaio__tls_write_failed(w, core, s, c, EPIPE);
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
                gaio__tls_broken(w, core, s, c, gaio__tls_fetch(w));
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
