/* The binding's request struct (pyreq) from allocation to disposal: its
 * three sizes and their freelists, the live list the GC traverses, and
 * disposal, which drops its references and makes a standing read's socket
 * weak again (R9). */
#include "binding.h"

#define MAX_SPARE 1024

static const size_t alloc_size[PYREQ_ALLOCS] = {
    [PYREQ_ALLOC_SMALL] = offsetof(pyreq, bufobj),
    [PYREQ_ALLOC_VIEW] = sizeof(pyreq),
    [PYREQ_ALLOC_STANDING_READ] = offsetof(pyreq, req) + GAIO_REQ_SHORT_SIZE,
};
/* an idle connection's standing read: pymalloc's class of 48 (issue 16) */
_Static_assert(sizeof(void *) != 8 || offsetof(pyreq, req) + GAIO_REQ_SHORT_SIZE <= 48,
               "a short standing read outgrew pymalloc's class of 48");
static const uint8_t alloc_owner[PYREQ_ALLOCS] = {
    [PYREQ_ALLOC_VIEW] = PYREQ_HAS_VIEW,
    [PYREQ_ALLOC_STANDING_READ] = PYREQ_STANDING_READ,
};

pyreq *gaio__req_alloc(Watcher *w, int size)
{
    pyreq *p = w->spare[size];
    if (p) {
        w->spare[size] = p->next_spare;
        w->nspare[size]--;
    } else if (!(p = PyMem_Malloc(alloc_size[size]))) {
        PyErr_NoMemory();
        return NULL;
    }
    memset(p, 0, alloc_size[size]);
    p->req.owner = alloc_owner[size];
    gaio__live.requests++;
    return p;
}

void gaio__live_add(Watcher *w, pyreq *p)
{
    p->live_next = w->live.live_next;
    p->live_prev = &w->live;
    w->live.live_next->live_prev = p;
    w->live.live_next = p;
}

void gaio__live_remove(pyreq *p)
{
    if (pyreq_is_short_standing(p))
        return; /* never on the list: its map entry names it */
    p->live_prev->live_next = p->live_next;
    p->live_next->live_prev = p->live_prev;
    p->live_next = p->live_prev = NULL;
}

void gaio__release_items(Py_buffer *items, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        PyBuffer_Release(&items[i]);
    PyMem_Free(items);
}

static int is_standing_read(const pyreq *p)
{
    return (p->req.flags & GAIO_F_REPEAT) && p->req.op == GAIO_OP_READ;
}

/* Drop a request's references and recycle its struct (GIL held). */
void gaio__req_dispose(Watcher *w, pyreq *p)
{
    if (is_standing_read(p) && p->conn)
        gaio__conn_weak(w, p); /* R9 again, before its reference goes */
    int k = pyreq_has_view(p) ? PYREQ_ALLOC_VIEW
            : (p->req.owner & PYREQ_STANDING_READ) ? PYREQ_ALLOC_STANDING_READ : PYREQ_ALLOC_SMALL;
    PyObject *buf = k == PYREQ_ALLOC_VIEW ? p->bufobj : NULL;
    if ((p->req.flags & GAIO_F_REPEAT) && !pyreq_is_short_standing(p)) {
        PyMem_Free(p->req.idle);
        p->req.idle = NULL;
    }
    if (p->req.owner & PYREQ_IS_VECTOR) {
        gaio__release_items(p->vec.items, p->vec.n);
        PyMem_Free(p->req.u.w.vec);
    } else if (buf && p->view.obj) {
        PyBuffer_Release(&p->view);
    }
    if (p->req.op == GAIO_OP_WRITE && p->req.u.w.to) {
        PyMem_Free(p->req.u.w.to);
        p->req.u.w.to = NULL;
    }
    if (p->req.op == GAIO_OP_CONNECT && p->req.u.c.addr) {
        PyMem_Free(p->req.u.c.addr);
        p->req.u.c.addr = NULL;
    }
    if (p->req.op == GAIO_OP_SENDFILE && p->req.u.w.file_fd >= 0) {
        close(p->req.u.w.file_fd);
        p->req.u.w.file_fd = -1;
    }
    PyObject *conn = p->conn, *ctx = p->ctx;
    p->conn = p->ctx = NULL;
    gaio__live.requests--;
    if (w->nspare[k] < MAX_SPARE) {
        p->next_spare = w->spare[k];
        w->spare[k] = p;
        w->nspare[k]++;
    } else {
        PyMem_Free(p);
    }
    Py_XDECREF(buf);
    Py_XDECREF(conn);
    Py_XDECREF(ctx);
}
