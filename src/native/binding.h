/* Shared by the Python binding's files (module.c, watcher.c, args.c,
 * conn_map.c, signals.c, request.c, request_special.c, request_datagram.c,
 * result.c): the only place that touches Python objects. */
#ifndef GAIO_BINDING_H
#define GAIO_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "backpressure.h"
#include "engine.h"

/* OpResult: the native completion type (result.c) */
extern PyTypeObject gaio__OpResult_Type;
PyObject *gaio__opresult_new(PyObject *op, PyObject *conn, PyObject *ctx, PyObject *buffer,
                             Py_ssize_t size, PyObject *error, int is_ibuf, PyObject *accepted);

/* IbufMem: owner of internal-buffer memory shown to Python. A view is made by
 * arming one region and calling PyMemoryView_FromObject; the memory is freed
 * (if owned) when the last view of it goes. */
typedef struct {
    PyObject_HEAD
    unsigned char *mem;      /* the chunk / engine region */
    void *owned;             /* free()d at dealloc when set */
    Py_ssize_t exports;      /* live Py_buffer exports */
    unsigned char *armed;    /* region the next getbuffer exports */
    Py_ssize_t armed_len;
} gaio__IbufMem;
extern PyTypeObject gaio__IbufMem_Type;
gaio__IbufMem *gaio__ibufmem_new(unsigned char *mem);
PyObject *gaio__ibufmem_view(gaio__IbufMem *m, unsigned char *ptr, Py_ssize_t len);


/* ---- module state (one interpreter), set by PyInit__native (module.c) ---- */

typedef struct {
    PyObject *WatcherClosedError, *DeadlineExceededError, *ConnClosedError,
        *EngineUnavailableError;
    PyObject *Op[6];            /* gaio.Op by enum gaio_op */
    PyObject *SocketType, *UnsupportedOperation;
    /* the checks of gaio._python_args the rarer requests share with the python engine */
    PyObject *check_listener, *check_connect_socket, *check_address, *sendfile_source;
    PyObject *check_io_conn, *datagram_address; /* R24, R25 */
    /* _socket.socket's own family/type/proto getters (no enum conversion) */
    PyObject *sock_family, *sock_type, *sock_proto;
    PyObject *zero;
    PyObject *memoryview_release; /* the unbound method: no attribute lookup per view */
    PyObject *socket_fileno, *socket_detach; /* socket.socket's own, not a subclass's */
    PyObject *s_conn, *s_buf, *s_data, *s_ctx, *s_timeout, *s_deadline, *s_repeat, *s_quiet,
        *s_listener, *s_sock, *s_address, *s_file, *s_offset, *s_count, *s_family,
        *s_setblocking, *s_connect_ex;
} gaio__module_state;
extern gaio__module_state gaio__state;

/* What every watcher holds now (guarded by the GIL): the test suite's leak
 * accounting checks both are back where they were after each test. */
typedef struct {
    Py_ssize_t requests;         /* request structs given out and not yet disposed */
    Py_ssize_t ibuf_chunks_kept; /* internal-buffer chunks an export keeps after their batch */
} gaio__live_counts;
extern gaio__live_counts gaio__live;

/* ---- requests (request.c) ---- */

typedef struct pyreq {
    union {
        PyObject *conn;         /* strong */
        struct pyreq *next_spare; /* in the watcher's freelist (spare) */
    };
    PyObject *ctx;              /* strong */
    gaio_req req;               /* the core hands back &req (pyreq_of); req.owner: PYREQ_* */
    /* A standing read without an idle limit or a deadline is allocated up
     * to req's short end (GAIO_REQ_SHORT_SIZE: 48 bytes with conn and
     * ctx, a pymalloc class of its own), so an idle connection's standing read stays small: it is
     * not on the live list, its connection's map entry names it
     * (OWNER_STANDING). Any other standing read is allocated whole. */
    struct pyreq *live_prev, *live_next; /* every other undelivered request, for GC traversal */
    /* A request without a buffer (a one-shot read into the internal buffer,
     * accept, connect, sendfile) is allocated without what follows
     * (PYREQ_ALLOC_SMALL, 160 bytes). */
    PyObject *bufobj;           /* caller's buffer (or our bytes copy) */
    union {
        Py_buffer view;         /* export of bufobj held until completion */
        struct {
            Py_buffer *items;   /* exports of a vectored write's items (or their R6 copies) */
            Py_ssize_t n;
        } vec;
    };
} pyreq;
/* gaio__req_alloc's sizes, each with its freelist */
enum { PYREQ_ALLOC_SMALL, PYREQ_ALLOC_VIEW, PYREQ_ALLOC_STANDING_READ, PYREQ_ALLOCS };
static inline pyreq *pyreq_of(gaio_req *r) { return (pyreq *)((char *)r - offsetof(pyreq, req)); }
enum {
    PYREQ_STANDING_READ = GAIO_REQ_SHORT, /* allocated short (PYREQ_ALLOC_STANDING_READ):
                                 * named by its map entry, never on the live list */
    PYREQ_HAS_VIEW = 1,         /* allocated whole (bufobj, view or vec) */
    PYREQ_IS_VECTOR = 2,        /* ... used as vec: a vectored write */
    PYREQ_COPIED = 4,           /* bufobj is the watcher's bytes copy of an internal-buffer view
                                 * large enough to be recycled (see copy_pool) */
};
static inline int pyreq_has_view(const pyreq *p) { return (p->req.owner & PYREQ_HAS_VIEW) != 0; }
static inline int pyreq_is_short_standing(const pyreq *p)
{
    return (p->req.owner & PYREQ_STANDING_READ) != 0;
}

/* ---- socket -> connection map: open addressing on the object's address (conn_map.c) ---- */

typedef struct {
    PyWeakReference base;
    uintptr_t key;   /* the socket object's address */
    uint64_t id;
} ConnRef;
static inline uintptr_t connref_key(const ConnRef *r) { return r->key; }

/* A connection's entry is kept in its gaio_conn's owner fields (core.h),
 * next to its slot and gen: the map itself is an open-addressing table of
 * slot + 1 (0: empty) hashed on the socket object's address, 4 bytes a
 * connection at a load of 3/8 to 3/4 (5-11 bytes). owner is the socket's
 * ConnRef (OWNER_WEAK: the weak reference that releases a dropped socket,
 * R9) or, while a standing read holds the socket strongly, that standing
 * read's pyreq (OWNER_STANDING; its conn is the key) with no ConnRef at all:
 * an idle connection with a standing read (a server's every connection)
 * saves the 96 bytes of a weakref, and its standing read the 16 bytes of
 * live links (GC traversal and close() find it through the map). A second
 * standing read of the same connection is an ordinary request (live list).
 * OWNER_OWNED marks one that holds the socket itself because a ConnRef could
 * not be made (out of memory): it is released by free() or close() only.
 * owner_bits' low bits are the connection's GAIO_CONN_* flags. */
#define OWNER_FLAGS 7u
#define OWNER_WEAK 8u
#define OWNER_OWNED 16u
#define OWNER_STANDING 32u
_Static_assert((GAIO_CONN_DGRAM | GAIO_CONN_PEER | GAIO_CONN_LOCAL) <= OWNER_FLAGS,
               "the connection's flags fit below the binding's marks");
typedef gaio_conn map_entry;
static inline ConnRef *entry_ref(const map_entry *e)
{
    return (e->owner_bits & OWNER_WEAK) ? (ConnRef *)e->owner : NULL;
}
static inline pyreq *entry_standing(const map_entry *e)
{
    return (e->owner_bits & OWNER_STANDING) ? (pyreq *)e->owner : NULL;
}
static inline uintptr_t entry_key(const map_entry *e)
{
    if (e->owner_bits & OWNER_WEAK)
        return connref_key((ConnRef *)e->owner);
    if (e->owner_bits & OWNER_STANDING)
        return (uintptr_t)((pyreq *)e->owner)->conn;
    return e->owner;
}
static inline unsigned entry_flags(const map_entry *e) { return e->owner_bits & OWNER_FLAGS; }
static inline uint64_t entry_id(const map_entry *e) { return gaio_conn_id(e); }

typedef struct {
    uint32_t *e;     /* slot + 1 */
    size_t cap, n;   /* cap is a power of two */
    gaio_core *core; /* whose slots */
} connmap;

/* ---- the Watcher (module.c: the type and its lifetime; watcher.c: its methods) ---- */

/* Writing an internal-buffer view back copies it into a new bytes (R6). A
 * copy of tens of KiB is a malloc() at the top of the heap, and freeing it
 * lets glibc give the pages back (trim), so the next copy page-faults on
 * fresh zeroed pages: a fifth of a stream echo's CPU. Copies of at least
 * COPY_POOL_MIN bytes that only the watcher still holds at the next
 * wait_io() are kept (at most COPY_POOL of them) and refilled instead. */
#define COPY_POOL 8
#define COPY_POOL_MIN 4096
#define COPY_POOL_MAX (1 << 20)
#if PY_VERSION_HEX >= 0x030D0000
#undef COPY_POOL_MIN
#define COPY_POOL_MIN PY_SSIZE_T_MAX /* ob_shash is deprecated there: no reuse */
#endif

typedef struct {
    PyObject_HEAD
    gaio_core *core;
    const char *engine_name;
    Py_ssize_t bufsize;
    int closed;
    int waiting;                  /* a thread is in wait_io (guarded by the GIL) */
    int close_done;               /* gaio__watcher_shutdown finished (the core may be deleted) */
    int inited;                   /* __init__ ran (it may run once) */
    int pins;                     /* threads using the core with the GIL released */
    connmap map;
    PyObject *link;               /* WatcherLink: the weakref callbacks' way back */
    PyObject *callback;           /* the C function given to every ConnRef */
    PyObject *views;              /* list: memoryviews handed out in the last batch */
    PyObject *copies;             /* list: large write copies delivered in the last batch */
    PyObject *copies_old;         /* ... in the batch before: the caller's previous results
                                   * list is alive while it calls wait_io() again */
    PyObject *copy_pool[COPY_POOL]; /* bytes copies nobody else holds, for reuse */
    int ncopy_pool;
    gaio__IbufMem *chunk_mem[GAIO_IBUF_CHUNKS]; /* owners of the core's chunks shown */
    pyreq live;                   /* sentinel of the undelivered-requests list */
    pyreq *spare[PYREQ_ALLOCS];   /* freelists of request structs, by PYREQ_ALLOC_* */
    int nspare[PYREQ_ALLOCS];
    gaio_stats final_stats;       /* stats() after close */
    Py_ssize_t write_high;        /* 0: no back-pressure */
    gaio_result *results;         /* the batch taken from the core */
    uint32_t cap_results;
    /* R21: the standing read each view of the last batch came from (the
     * view object itself, as the python engine counts: a slice or a copy is
     * the caller's data); filled only when write_high is set */
    gaio_origins origins;
    PyObject *weakreflist;
    int tls_used;                 /* start_tls was asked: wait_io runs the TLS pass */
    PyObject *tls_errors;         /* {request address: exception} of GAIO_ERR_TLS results */
    PyObject *tls_interrupt;      /* an exception the record layer met that was no TLS error
                                   * (a signal handler's, run by _ssl itself): wait_io raises it */
    PyObject *connect_errors;     /* {conn id: exception} of failed connects (R28), until free() */
} Watcher;

typedef struct {
    PyObject_HEAD
    Watcher *w;                   /* borrowed; NULL once the watcher is closed */
} WatcherLink;

/* A call into the core may release the GIL (gaio_runtime): meanwhile another
 * thread may close the watcher, and the core must outlive the call.
 * gaio__core_unpin deletes it when the watcher was closed meanwhile and
 * nobody else uses it. */
void gaio__core_unpin(Watcher *w);
#define PINNED(w, call)        \
    do {                       \
        (w)->pins++;           \
        call;                  \
        gaio__core_unpin(w);   \
    } while (0)
PyObject *gaio__closed_error(void);
/* Delete the core once the watcher is closed and no thread uses it. */
void gaio__core_drop_if_unused(Watcher *w);
/* close(): every descriptor closed, every request released. Idempotent. */
void gaio__watcher_shutdown(Watcher *w);

/* ---- the Watcher's methods (watcher.c) ---- */

PyObject *gaio__watcher_wait_io(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);
PyObject *gaio__watcher_close(Watcher *w, PyObject *unused);
PyObject *gaio__watcher_stats(Watcher *w, PyObject *unused);
PyObject *gaio__watcher_fileno(Watcher *w, PyObject *unused);
PyObject *gaio__watcher_next_timeout(Watcher *w, PyObject *unused);
PyObject *gaio__watcher_techniques(Watcher *w, PyObject *unused);
PyObject *gaio__watcher_debug_hold_lock(Watcher *w, PyObject *arg);

/* ---- argument parsing (args.c), laid out as _python_args.py ---- */

/* Watcher()'s defaults and bufsize's limit; the python engine's are
 * DEFAULT_BUFSIZE, DEFAULT_WRITE_HIGH and MAX_BUFSIZE in gaio/_python_args.py
 * (tests/test_static_checks.py holds them equal). */
#define GAIO_DEFAULT_BUFSIZE 65536
#define GAIO_DEFAULT_WRITE_HIGH 262144
/* The longest batch_wait, in seconds; the python engine's is MAX_BATCH_WAIT
 * in gaio/_python_args.py (tests/test_static_checks.py holds them equal). */
#define GAIO_MAX_BATCH_WAIT_S 1
#define GAIO_MAX_BUFSIZE (1LL << 30)

int gaio__parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, PyObject *const *names, int nnames, int maxpos,
                     int required, PyObject **out);
int gaio__seconds_arg(PyObject *o, const char *what, double *out);
int64_t gaio__ns_clamp(double ns);
int gaio__deadline_arg(PyObject *timeout, PyObject *deadline, int64_t *out);
int gaio__buffer_arg(PyObject *obj, Py_buffer *view, int writable);
const char *gaio__type_name(PyObject *o);

/* ---- connections (conn_map.c): R2 delegation, R9 release of dropped sockets ---- */

extern PyTypeObject gaio__ConnRef_Type, gaio__WatcherLink_Type;
extern PyMethodDef gaio__conn_gone_def;
map_entry *gaio__map_find(connmap *m, uintptr_t key);
/* Enter ref's connection (ref->id, ref->key set) with its GAIO_CONN_* flags. */
int gaio__map_insert(connmap *m, ConnRef *ref, unsigned flags);
/* The entry of the map's i-th place (NULL: empty), to visit them all. */
map_entry *gaio__map_at(connmap *m, size_t i);
/* Take e out of the map, dropping what it holds (its ConnRef, or the socket
 * it owns): no Python code runs (the ConnRef's callback is the watcher's). */
void gaio__map_drop(connmap *m, map_entry *e);
/* R9 with a standing read: while one stands the socket is held by it, and
 * its entry keeps no weak reference but names it (conn_strong: 1; 0 when
 * the entry is held by another standing read already); when a standing read
 * is disposed of, its connection (still id) is weakly held again (conn_weak). */
int gaio__conn_can_name_standing(Watcher *w, PyObject *conn, uint64_t id);
int gaio__conn_strong(Watcher *w, pyreq *p, uint64_t id);
void gaio__conn_weak(Watcher *w, pyreq *p);
PyObject *gaio__conn_type_error(PyObject *conn, const char *why);
/* The descriptor of a socket.socket not delegated yet, and its GAIO_CONN_*
 * flags; a datagram socket is refused unless dgram_ok (R24). */
int gaio__socket_fd(PyObject *conn, int dgram_ok, unsigned *flags);
int gaio__delegate(Watcher *w, PyObject *conn, int fd, unsigned flags, uint64_t *id);

/* ---- requests (request.c, request_special.c) ---- */

void gaio__live_add(Watcher *w, pyreq *p); /* request_lifetime.c */
void gaio__live_remove(pyreq *p);
void gaio__release_items(Py_buffer *items, Py_ssize_t n);
void gaio__req_dispose(Watcher *w, pyreq *p);
/* The steps every request takes, shared by request.c and request_special.c. */
pyreq *gaio__req_alloc(Watcher *w, int size); /* PYREQ_ALLOC_* */
int gaio__conn_first_look(Watcher *w, PyObject *conn, int *fd, int dgram_ok, unsigned *flags);
int gaio__conn_resolve(Watcher *w, PyObject *conn, int fd, unsigned flags, uint64_t *id);
/* "conn must be a stream socket (SOCK_STREAM), not ..." (R24's stream-only requests) */
PyObject *gaio__stream_only_error(int type);

/* ---- datagram sockets (request_datagram.c): R24, R25 ---- */

/* Where a datagram write goes: *to (PyMem_Malloc'd, the request's until it is
 * disposed of) for an unconnected socket, NULL to its peer; checked and
 * worded as the python engine does (_python_args.datagram_address). */
int gaio__datagram_to(PyObject *conn, unsigned flags, PyObject *address, gaio_addr **to);
/* The sender of a datagram as socket.recvfrom shows it. */
PyObject *gaio__sender_object(const gaio_addr *a);
PyObject *gaio__req_queue(Watcher *w, pyreq *p, PyObject *conn, PyObject *ctx, uint64_t id);
int gaio__flag_arg(PyObject *o, uint8_t *flags, uint8_t bit);
/* A standing request's times (R20: timeout, and when, its parsed deadline)
 * into *t (t->idle_ns 0: no idle limit) and *deadline_ns, the heap's key;
 * gaio__standing_set gives them to p (-1: MemoryError, p left as it was). */
int gaio__standing_times(gaio_idle *t, int64_t *deadline_ns, PyObject *timeout, int64_t when);
int gaio__standing_set(pyreq *p, const gaio_idle *t, int64_t deadline_ns);
/* 1: a standing read of these times is short (PYREQ_ALLOC_STANDING_READ). */
int gaio__standing_short(const gaio_idle *t, int64_t deadline_ns);
PyObject *gaio__watcher_read(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);
PyObject *gaio__watcher_read_full(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);
PyObject *gaio__watcher_write(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);
PyObject *gaio__watcher_free(Watcher *w, PyObject *conn);
PyObject *gaio__watcher_accept(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);
PyObject *gaio__watcher_connect(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);
PyObject *gaio__watcher_sendfile(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);
/* request_tls.c: start_tls (R28) */
PyObject *gaio__watcher_start_tls(Watcher *w, PyObject *const *args, Py_ssize_t nargs, PyObject *kw);

/* ---- TLS sessions (tls_session.c): R28-R31 ---- */

/* A session for context.wrap_bio (*sslobj: a new reference to its SSLObject). */
gaio_tls *gaio__tls_session_new(PyObject *context, int server_side, PyObject *hostname,
                                PyObject **sslobj);
/* Dispose of sessions linked by next_dead (GIL held). */
void gaio__tls_dispose(gaio_tls *dead);
/* The pass after gaio_core_wait: 1 when results are ready. */
int gaio__tls_pass(Watcher *w);
/* The exception of a GAIO_ERR_TLS result of request r (a new reference). */
PyObject *gaio__tls_error_take(Watcher *w, gaio_req *r);
/* The connection id goes (free(), or dropped): its failed connect is forgotten. */
void gaio__forget_connect_error(Watcher *w, uint64_t id);
/* The session begins FAILED with exc's class: its connect() failed (R28). */
void gaio__tls_failed_before(gaio_tls *t, PyObject *exc);
/* free(conn): close_notify if it can go at once (R30). */
void gaio__tls_goodbye(Watcher *w, uint64_t conn_id);
/* Raises R28's ValueError for a second start_tls; returns NULL (request_tls.c). */
PyObject *gaio__tls_again_error(void);
/* close() or free() from a TLS callback on the pass's thread: raises
 * RuntimeError and returns -1 (request_tls.c); 0 elsewhere. */
int gaio__tls_refuse_close(Watcher *w);

/* ---- the batch of results (result.c): R4 views, R6 copies ---- */

PyObject *gaio__copy_bytes(Watcher *w, const void *src, Py_ssize_t len);
PyObject *gaio__error_object(int error);
void gaio__release_batch(Watcher *w, int closing);
PyObject *gaio__build_results(Watcher *w, gaio_result *res, Py_ssize_t n);

/* ---- signals around wait_io's sleep (signals.c) ---- */

enum { GAIO_GUARD_NONE, GAIO_GUARD_MASK, GAIO_GUARD_WAKEUP };
typedef struct {
    int how;
    sigset_t old; /* GAIO_GUARD_MASK: the caller's mask, to sleep with and restore */
    int fd;       /* GAIO_GUARD_WAKEUP: the engine's descriptor given to set_wakeup_fd */
} gaio__sig_guard;
int gaio__signals_init(PyObject *module);
/* Before a wait that would sleep (GIL held, w->waiting set), on the main
 * thread: close the gap between Python's signal check and the sleep
 * (signals.c). Returns 0, or -1 with the exception a handler raised. */
int gaio__sig_guard_enter(Watcher *w, gaio__sig_guard *g);
/* Python handlers run on this thread: a sleep of its needs the guard. */
int gaio__sig_guard_wanted(void);
/* The mask to give gaio_core_wait (NULL: none). */
static inline const sigset_t *gaio__sig_guard_mask(const gaio__sig_guard *g)
{
    return g->how == GAIO_GUARD_MASK ? &g->old : NULL;
}
/* Around the TLS pass: run pending handlers (-1: one raised), then hold
 * asynchronous signals blocked until gaio__sig_guard_leave (signals.c). */
int gaio__sig_hold(gaio__sig_guard *g);
/* After the wait or the pass (GIL held): the mask or the wakeup descriptor as before. */
void gaio__sig_guard_leave(gaio__sig_guard *g);

#endif
