/* What engine_uring.c (submissions, cancels, the wait), uring_recv.c (what
 * arrives: bytes of buffer-select receives, connections of accepts),
 * uring_setup.c (creation, the techniques chosen), uring_migrate.c (the
 * single issuer, the move to another ring) and uring_close.c share.
 * Private to the io_uring engine; see engine_uring.c's header comment. */
#ifndef GAIO_URING_ENGINE_H
#define GAIO_URING_ENGINE_H

#include <sys/types.h>

#include "engine.h"
#include "side_table.h"
#include "uring_ring.h"

/* gaio_conn.engine_flags; the first four shifted by the direction (kind) */
enum {
    IN_FLIGHT = 1,        /* << kind: an operation of the head is in the kernel */
    CANCEL_ASKED = 4,     /* << kind: an ASYNC_CANCEL for it is queued or sent */
    TO_START = 16,        /* << kind: on the work list, to be submitted */
    READ_IS_IBUF = 64,    /* the read in flight is for internal-buffer reads (select or poll) */
    STARVED = 128,        /* on the starved list: its read waits for room (buffer, results) */
    READ_HELD = 256,      /* reads take what a receive left first: bytes parked in st->parked
                           * (uring_recv.c), or, when c has no entry there, a hole: bytes
                           * taken from the kernel could not be kept, reads end with ENOMEM.
                           * One bit for both: engine_flags has no other free, and the two
                           * never meet (a failed stream parks nothing) */
    POLL_IN_FLIGHT = 512, /* << kind: the operation in flight is a POLL_ADD for readiness.c's
                           * syscall (connect, sendfile; accept and vectored writes when the
                           * kernel lacks their operation) */
    MULTISHOT = 2048,     /* the read in flight is a multishot RECV or ACCEPT: a CQE with
                           * IORING_CQE_F_MORE keeps it, the one without ends it */
    ACCEPTING = 4096,     /* the read in flight is an IORING_OP_ACCEPT */
    DRAINED = 16384,      /* the last receive emptied the socket: the next polls first; with
                           * a multishot POLL_ADD in flight, unset when a recv() stopped before
                           * the socket was empty (the poll must go: no wake-up would follow) */
    RESUME = 32768,       /* a STREAMING read retried after it starved: recv() before a poll */
    STREAMING = 8192,     /* reads that stream: POLL_ADD + recv() ("poll-streams"), else
                           * one-shot RECVs (uring_recv.c) */
};
#define BIT(flag, kind) ((uint32_t)(flag) << (kind))

/* A quiet write of an internal-buffer view that is not sent at once is
 * copied (R6): from this size the copy costs more than the send() from the
 * requesting thread does (the COPY_POOL_MIN of binding.h). */
#define SEND_LARGE_AT_ONCE 4096

/* The length of one RECV or SEND: at most 1 GiB, the rest goes with the next. */
static inline uint32_t op_len(size_t n) { return n > (1u << 30) ? 1u << 30 : (uint32_t)n; }

/* st->bufs: an incremental buffer is filled piece after piece, and a CQE
 * says which buffer, not where in it: the pieces of a buffer must reach us in
 * the order the kernel took them. A multishot receive posts each CQE but its
 * last at once, while one-shot completions wait for the end of the kernel's
 * batch, so the two could cross (fixed in Linux 6.15 and the 6.1+ stable
 * kernels of mid-2025: https://git.kernel.org/torvalds/c/687b2bae0eff). They
 * never share a buffer: each kind has its own ring. */
enum { RING_ONESHOT, RING_MULTISHOT };

/* Techniques the engine may use (gaio_core_techniques): each one can be
 * missing from the kernel, or avoided with GAIO_URING_AVOID=name,... */
enum {
    TECH_PBUF,            /* "provided-buffers": reads without a buffer select a buffer */
    TECH_RECV_MULTISHOT,  /* "multishot-recv": a standing read is one RECV */
    TECH_ACCEPT,          /* "accept": IORING_OP_ACCEPT */
    TECH_ACCEPT_MULTISHOT,/* "multishot-accept": a standing accept is one ACCEPT */
    TECH_SENDMSG,         /* "sendmsg": vectored writes are IORING_OP_SENDMSG */
    TECH_DEFER_TASKRUN,   /* "defer-taskrun": SINGLE_ISSUER|DEFER_TASKRUN, one waiting thread */
    TECH_SEND_AT_ONCE,    /* "send-at-once": engine.send_now, a quiet write's send() (needs
                           * defer-taskrun) */
    TECH_SEND_LARGE_AT_ONCE, /* "send-large-at-once": the same for a quiet write of at least
                              * SEND_LARGE_AT_ONCE bytes (needs defer-taskrun) */
    TECH_MIN_WAIT,        /* "min-wait": Watcher(batch_wait=) as the kernel's min-wait in the
                           * one io_uring_enter (needs defer-taskrun) */
    TECH_RECV_POLL_FIRST, /* "recv-poll-first": a buffer-select RECV after a receive that
                           * emptied the socket (DRAINED) arms its poll at once
                           * (IORING_RECVSEND_POLL_FIRST, 5.19): no try that finds nothing */
    TECH_POLL_STREAMS,    /* "poll-streams": internal-buffer reads of a bulk stream (STREAMING)
                           * are POLL_ADD + recv() into the internal buffer, no copy out of a
                           * provided buffer (needs provided-buffers: else every read is) */
    TECH_POLL_MULTISHOT,  /* "multishot-poll": a standing internal-buffer read is ONE multishot
                           * POLL_ADD, a recv() into the internal buffer per arrival: no SQE,
                           * no poll armed and no copy out of a provided buffer per message */
    TECH_SEND_WHEN_QUIET, /* "send-when-quiet": a small quiet write's send() from the requesting
                           * thread when the last wait brought at most QUIET_WAIT completions
                           * (needs defer-taskrun) */
    TECH_LOOK_IN_USER_SPACE, /* "look-in-user-space": a look (wait with no timeout) with nothing
                              * to submit reads the ring's flags, no io_uring_enter, when the
                              * kernel says no task work waits (TASKRUN_FLAG, defer-taskrun) */
    TECH_COUNT,
};

/* A wait that brought at most this many completions is a quiet one: its
 * writes' SENDs would share no enter (send-when-quiet). */
#define QUIET_WAIT 2

enum { WORK_START, WORK_CANCEL }; /* gaio__ur_work.what */

typedef struct {
    uint64_t id; /* the connection, looked up again when the item runs */
    uint8_t what, kind;
} gaio__ur_work;

typedef struct {
    uint64_t id; /* the listener */
    int fd;
} gaio__ur_held_fd;

typedef struct gaio__ur_state {
    gaio_core *core;
    struct gaio__uring ring;
    /* provided buffers (use[TECH_PBUF]): GAIO_IBUF_CHUNKS buffers of bufsize
     * for one-shot receives, as many for multishot ones (TECH_RECV_MULTISHOT) */
    struct gaio__uring_bufring bufs[2];
    uint32_t buf_filled[2][GAIO_IBUF_CHUNKS]; /* bytes the kernel put in each since provided */
    uint8_t use[TECH_COUNT];               /* 1: the technique is used */
    char why[TECH_COUNT][GAIO__URING_REASON_MAX]; /* ... else why not */
    int evfd;
    int wake_armed;
    uint64_t in_flight;  /* CQEs still owed: an SQE each, until its last CQE (no F_MORE) */
    gaio__ur_work *work; /* submissions for the next wait(), in order */
    uint32_t nwork, cap_work;
    uint64_t *starved;   /* connections whose internal-buffer read or standing accept waits for room */
    uint32_t nstarved, cap_starved;
    /* R16: connections an ACCEPT brought on a descriptor at or past today's
     * RLIMIT_NOFILE (the kernel applies the limit of the SQE's submission),
     * in arrival order: handed to the listener's accepts once they fit below
     * it, closed with the listener (uring_recv.c) */
    gaio__ur_held_fd *held;
    uint32_t nheld, cap_held;
    int rescan;          /* work or starved could not grow: look at every connection */
    gaio_side_table parked; /* connection id -> its parked bytes (uring_recv.c, READ_HELD) */
    /* use[TECH_DEFER_TASKRUN]: only the issuer may io_uring_enter. It is the
     * first thread to wait(); 0 until then (the ring is disabled). */
    pid_t issuer;
    int gathered;        /* the last wait() gathered for batch_wait (min-wait) */
    uint32_t last_reaped; /* completions the last wait() took (send-when-quiet) */
} gaio__ur_state;

/* Doubles a list (64 items at first); -1 when it could not grow. */
static inline int grow(void **items, uint32_t *cap, size_t size)
{
    uint32_t n = *cap ? *cap * 2 : 64;
    void *p = gaio_realloc(*items, n * size);
    if (!p)
        return -1;
    *items = p;
    *cap = n;
    return 0;
}

/* user_data: a gaio_conn pointer | direction (TAG_READ/TAG_WRITE), or a tag. */
enum { TAG_READ = GAIO_READ, TAG_WRITE = GAIO_WRITE, TAG_WAKE = 2, TAG_CANCEL = 3, TAG_MASK = 7 };

/* engine_uring.c */
/* An SQE to fill (the SQ ring handed to the kernel first if it is full), or NULL. */
struct gaio__io_uring_sqe *gaio__ur_get_sqe(gaio__ur_state *st);
/* Take the completions the CQ ring holds; returns how many. */
int gaio__ur_reap(gaio__ur_state *st, int with_callbacks);

/* uring_close.c: engine.destroy */
void gaio__ur_destroy(void *state);
/* Give the provided-buffer rings back to the kernel. */
void gaio__ur_close_bufrings(gaio__ur_state *st);
/* uring_work.c: the work list. Append (c, what, kind): 0, or -1 when the
 * list could not grow (st->rescan is set). */
int gaio__ur_work_push(gaio__ur_state *st, gaio_conn *c, int what, int kind);
/* engine.wake: the eventfd the ring watches (engine_uring.c) */
void gaio__ur_wake(void *state);
/* c's kind queue has a new head: submitted with the next wait (work list). */
void gaio__ur_schedule_start(gaio__ur_state *st, gaio_conn *c, int kind);
/* Cancel the operation of c's kind queue in flight: with the next wait, or
 * at once when now (or when c is being freed). */
void gaio__ur_ask_cancel(gaio__ur_state *st, gaio_conn *c, int kind, int now);

/* uring_setup.c: engine.create and engine.techniques */
int gaio__ur_create(gaio_core *core, void **state, char *why, size_t whylen);
int gaio__ur_techniques(void *state, gaio_technique *out, int max);
/* Technique t (provided buffers, one ring each) registers its buffer ring
 * `which` with the ring; when it cannot, t is not used. */
void gaio__ur_open_bufring(gaio__ur_state *st, int t, int which);
#define GAIO__UR_SQ_ENTRIES 256
#define GAIO__UR_CQ_ENTRIES 4096 /* beyond it completions wait in the kernel (NODROP) */

/* uring_migrate.c: the single issuer (defer-taskrun) and the move away from it */
/* Whether this thread may io_uring_enter the ring: always, unless it is a
 * SINGLE_ISSUER ring and this thread is not (or not yet) its issuer. A
 * thread that may not leaves its SQEs in the ring for the issuer's next
 * wait and wakes it. */
int gaio__ur_may_enter(gaio__ur_state *st);
/* The first wait() makes its thread the issuer of a SINGLE_ISSUER ring;
 * a wait() from any other thread (or fileno(), whose descriptor must show
 * completions whoever waits) moves the engine to a ring any thread may
 * enter, for good (why: the reason techniques() gives). 0, or -errno when
 * the new ring could not be made (nothing changed then). */
int gaio__ur_claim_ring(gaio__ur_state *st, const char *why);
/* The ring was replaced: nothing is in flight any more. Requests being
 * cancelled finish, the rest is submitted again. */
void gaio__ur_restart_all(gaio__ur_state *st);

/* uring_poll.c */
/* A POLL_ADD for datagram socket c's kind head said ready (or an error): a
 * datagram per head while the socket takes them, at most
 * GAIO_DATAGRAMS_PER_PASS (the engine polls again). */
void gaio__ur_datagrams_ready(gaio__ur_state *st, gaio_conn *c, int kind);
/* A POLL_ADD for c's kind head said ready: the heads' syscalls while the
 * socket takes them. */
void gaio__ur_poll_ready(gaio__ur_state *st, gaio_conn *c, int kind);

/* uring_recv.c */
/* c's read waits for room (internal buffer, results): on the starved list,
 * tried again by the next wait that has room (gaio__ur_retry_starved). */
void gaio__ur_starve(gaio__ur_state *st, gaio_conn *c);
void gaio__ur_retry_starved(gaio__ur_state *st);
/* Prepare the operation of c's head read (or accept) r in sqe; returns the
 * engine_flags that say what is in flight. */
uint32_t gaio__ur_prep_read(gaio__ur_state *st, struct gaio__io_uring_sqe *sqe, gaio_conn *c,
                            gaio_req *r, uint64_t ud);
/* Without provided buffers, a POLL_ADD said c is readable: recv() into the
 * internal buffer for as many internal-buffer reads as are queued at its head
 * and have data. */
void gaio__ur_ibuf_reads(gaio__ur_state *st, gaio_conn *c);
/* A CQE with F_MORE of c's multishot POLL_ADD ("multishot-poll"), mask its
 * events: recv() into the internal buffer for its standing read; the poll is
 * cancelled when the read no longer takes what comes. */
void gaio__ur_poll_arrival(gaio__ur_state *st, gaio_conn *c, int32_t mask);
/* The same without scheduling what follows: -1 when the batch's internal
 * buffer ran out (c starved, bytes left in the socket), else 0. A short
 * recv() ends it unless to_the_end (then only EAGAIN, the end or an error). */
int gaio__ur_recv_in_place(gaio__ur_state *st, gaio_conn *c, int to_the_end);
/* r's deadline passed while nothing of it was in the kernel: its next try was
 * only scheduled (after a short recv, or not yet submitted), so a read_full
 * with timeout=0 that took the bytes there would end with a deadline though
 * the end of stream behind them was there too (a recv that returns bytes
 * does not report the end). Try at once, non-blocking, as the readiness
 * engines do: bytes, an end of stream or an error already queued count.
 * Not for internal-buffer reads (any byte finishes them, so none was ever
 * short) nor behind parked bytes. 2 when the try finished r, else 0 (r ends
 * with the deadline and the bytes it has). */
int gaio__ur_last_try(gaio__ur_state *st, gaio_conn *c, gaio_req *r);
/* A CQE of c's buffer-select RECV on ring (RING_ONESHOT, or RING_MULTISHOT:
 * more = F_MORE, it goes on). */
void gaio__ur_recv_cqe(gaio__ur_state *st, gaio_conn *c, int32_t res, uint32_t flags, int ring,
                       int more);
/* A CQE of c's ACCEPT (one-shot, or multishot: more = F_MORE). */
void gaio__ur_accept_cqe(gaio__ur_state *st, gaio_conn *c, int32_t res, int more);
/* c's head is an accept and connections wait for it in st->held: hand them
 * over while they fit below RLIMIT_NOFILE (else it meets EMFILE, as accept4()
 * would). 1 when none is left for c: an ACCEPT may go to the kernel. */
int gaio__ur_hand_held(gaio__ur_state *st, gaio_conn *c);
/* Close the connections held for listener c (freed), or for all (c NULL). */
void gaio__ur_drop_held(gaio__ur_state *st, gaio_conn *c);
/* Whether c's multishot operation in flight is still wanted: its request
 * takes what comes now. When not, the engine cancels it. */
int gaio__ur_multishot_wanted(gaio__ur_state *st, gaio_conn *c);
/* Whether c's reads go on after a hole (READ_HELD without parked bytes). */
int gaio__ur_read_failed(gaio__ur_state *st, gaio_conn *c);
/* Whether bytes are parked for c's reads. */
int gaio__ur_has_parked(gaio__ur_state *st, gaio_conn *c);
/* Bytes parked for c (gaio__ur_has_parked) to its reads: 1 when none are
 * left, 0 when some wait for room. */
int gaio__ur_parked_out(gaio__ur_state *st, gaio_conn *c);
/* Free c's parked bytes, if any (a hole stays one). */
void gaio__ur_drop_parked(gaio__ur_state *st, gaio_conn *c);
/* Free every connection's parked bytes (the engine's end). */
void gaio__ur_drop_all_parked(gaio__ur_state *st);
/* c's stream has a hole: this read and every later one end with ENOMEM. */
void gaio__ur_fail_reads(gaio__ur_state *st, gaio_conn *c);

#endif
