/* A thin io_uring ring without liburing: setup with feature probing, the
 * mmap'ed submission and completion rings, io_uring_enter, and a provided
 * buffer ring. No policy: engine_uring.c decides what to submit and when.
 *
 * Thread use: one thread at a time per ring (the engine's caller holds the
 * watcher's lock or is its single waiter); nothing here locks.
 */
#ifndef GAIO_URING_RING_H
#define GAIO_URING_RING_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "uring_abi.h"

struct msghdr;

#define GAIO__URING_REASON_MAX 256

struct gaio__uring {
    int fd;
    uint32_t setup_flags; /* the flags the kernel accepted */
    uint32_t features;
    uint8_t ops[32];      /* opcodes the kernel supports, a bit each (IORING_REGISTER_PROBE) */

    /* submission ring: `sq_local_tail` counts SQEs prepared, published to
     * the kernel's tail by the next enter */
    uint32_t *sq_head;
    uint32_t *sq_tail;
    uint32_t *sq_flags;
    uint32_t sq_mask;
    uint32_t sq_entries;
    uint32_t sq_local_tail;
    struct gaio__io_uring_sqe *sqes;

    /* completion ring */
    uint32_t *cq_head;
    uint32_t *cq_tail;
    uint32_t cq_mask;
    uint32_t cq_entries;
    struct gaio__io_uring_cqe *cqes;

    void *ring_mem;
    size_t ring_len;
    void *sqe_mem;
    size_t sqe_len;
};

/* How completions may be run, fastest first. The kernel finishes most
 * socket operations as task work of the thread that SUBMITTED them:
 *   SINGLE_THREAD  SINGLE_ISSUER|DEFER_TASKRUN (6.1): every submit and wait
 *                  must then come from one thread, the one that enables the
 *                  ring (it opens disabled: gaio__uring_enable); others get
 *                  EEXIST. Completions are run only inside that thread's
 *                  io_uring_enter(GETEVENTS): no interrupt, no wake-up of a
 *                  task that is busy elsewhere;
 *   COOP           COOP_TASKRUN|TASKRUN_FLAG (5.19): no interrupt to run the
 *                  task work, so a submitter thread that sleeps elsewhere
 *                  (in a futex) holds back its completions;
 *   ANY_THREAD     neither: the submitter is notified like a signal.
 * The ring tries the given level, then the ones below it. */
enum gaio__uring_taskrun {
    GAIO__URING_TASKRUN_ANY_THREAD = 0,
    GAIO__URING_TASKRUN_COOP = 1,
    GAIO__URING_TASKRUN_SINGLE_THREAD = 2,
};

/* Opens a ring with `sq_entries` submission slots and at least
 * `cq_entries` completion slots, setup flags chosen by `taskrun`.
 * Fails (returns -1, `reason` filled in) when io_uring is refused
 * (GAIO_URING_DISABLE=1, sysctl, seccomp, old kernel) or lacks a feature
 * gaio needs: FEAT_SINGLE_MMAP, FEAT_NODROP, FEAT_FAST_POLL, FEAT_EXT_ARG,
 * and the RECV, SEND, POLL_ADD and ASYNC_CANCEL opcodes (Linux 5.11).
 * On failure errno is io_uring_setup's error (EMFILE when the process is out
 * of descriptors), or 0 when the ring opened but lacks something. */
int gaio__uring_open(struct gaio__uring *ring, unsigned sq_entries, unsigned cq_entries,
                     int taskrun, char reason[GAIO__URING_REASON_MAX]);
void gaio__uring_close(struct gaio__uring *ring);
/* A SINGLE_THREAD ring (setup_flags has R_DISABLED) takes submissions once
 * enabled; the calling thread becomes its only issuer. 0 or -errno. */
int gaio__uring_enable(struct gaio__uring *ring);

/* Whether the kernel supports opcode `op` (the probe made at open). The probe
 * says nothing of an opcode's flags: the release that brought a flag is told
 * by an opcode that came with it (uring_abi.h: OP_SOCKET, OP_SEND_ZC). */
static inline int gaio__uring_has_op(const struct gaio__uring *ring, uint8_t op)
{
    return (ring->ops[op >> 3] >> (op & 7)) & 1;
}

/* A zeroed SQE to fill in, or NULL when the submission ring is full (then
 * gaio__uring_submit() makes room). */
struct gaio__io_uring_sqe *gaio__uring_get_sqe(struct gaio__uring *ring);
unsigned gaio__uring_sq_unsubmitted(const struct gaio__uring *ring);

/* Submits every prepared SQE without waiting. Returns >= 0 or -errno. */
int gaio__uring_submit(struct gaio__uring *ring);

/* Submits every prepared SQE and, in the same system call, waits until at
 * least one completion is ready or `timeout_ns` passes (< 0: no limit;
 * 0: do not sleep, but still run pending task work).
 * Returns >= 0, -ETIME at the timeout, -EINTR on a signal, or -errno. */
int gaio__uring_submit_and_wait(struct gaio__uring *ring, int64_t timeout_ns);
/* The same, sleeping with the signal mask *sigmask (NULL: the thread's own),
 * which the kernel sets for the wait and restores after it, as pselect does. */
/* The same, and (min_wait_ns > 0, IORING_FEAT_MIN_TIMEOUT) once a completion
 * has come, it keeps gathering completions until min_wait_ns after the call
 * began (the kernel's min-wait, 6.12); one that comes later ends it at once. */
int gaio__uring_submit_and_wait_min(struct gaio__uring *ring, int64_t timeout_ns,
                                    int64_t min_wait_ns, const sigset_t *sigmask);
int gaio__uring_submit_and_wait_sigmask(struct gaio__uring *ring, int64_t timeout_ns,
                                        const sigset_t *sigmask);

/* Completions: read `ready` entries from `first`, then advance. */
static inline uint32_t gaio__uring_cq_ready(const struct gaio__uring *ring, uint32_t *first)
{
    uint32_t head = *ring->cq_head; /* only we write it */
    *first = head;
    return __atomic_load_n(ring->cq_tail, __ATOMIC_ACQUIRE) - head;
}

static inline struct gaio__io_uring_cqe *gaio__uring_cqe_at(const struct gaio__uring *ring,
                                                            uint32_t index)
{
    return &ring->cqes[index & ring->cq_mask];
}

static inline void gaio__uring_cq_advance(struct gaio__uring *ring, uint32_t count)
{
    /* release: the kernel must not reuse the slots before we have read them */
    __atomic_store_n(ring->cq_head, *ring->cq_head + count, __ATOMIC_RELEASE);
}

/* True when a look (a GETEVENTS enter with no wait) could bring nothing the
 * CQ ring does not show already: a DEFER_TASKRUN ring with TASKRUN_FLAG (the
 * kernel sets IORING_SQ_TASKRUN in the SQ flags when it queues task work,
 * 6.1), no SQE to submit, no task work and no overflow. */
int gaio__uring_nothing_to_get(const struct gaio__uring *ring);

/* True when completions are held in the kernel because the CQ ring was full
 * (FEAT_NODROP keeps them); an enter with GETEVENTS flushes them. */
static inline int gaio__uring_cq_overflowed(const struct gaio__uring *ring)
{
    return (__atomic_load_n(ring->sq_flags, __ATOMIC_RELAXED) & GAIO__IORING_SQ_CQ_OVERFLOW) != 0;
}

/* A provided buffer ring (Linux 5.19): `count` buffers of `size` bytes that
 * buffer-select reads land in; a buffer is lent to one completion and comes
 * back with gaio__uring_bufring_recycle(). */
struct gaio__uring_bufring {
    struct gaio__io_uring_buf *entries; /* the ring shared with the kernel */
    size_t ring_len;
    char *memory; /* `count` * `size` bytes */
    size_t memory_len;
    uint32_t size;
    uint16_t count; /* a power of two */
    uint16_t group;
    uint16_t local_tail;
};

/* `flags`: 0, or GAIO__IOU_PBUF_RING_INC (6.12) to let each buffer take
 * many reads, one after the other: a CQE with GAIO__IORING_CQE_F_BUF_MORE
 * leaves the rest of its buffer in the ring, the next read of that buffer
 * lands right after it. */
int gaio__uring_bufring_open(struct gaio__uring *ring, struct gaio__uring_bufring *bufs,
                             uint16_t group, uint16_t count, uint32_t size, uint16_t flags,
                             char reason[GAIO__URING_REASON_MAX]);
void gaio__uring_bufring_close(struct gaio__uring *ring, struct gaio__uring_bufring *bufs);
void gaio__uring_bufring_recycle(struct gaio__uring_bufring *bufs, uint16_t id);

static inline char *gaio__uring_bufring_data(const struct gaio__uring_bufring *bufs, uint16_t id)
{
    return bufs->memory + (size_t)id * bufs->size;
}

/* Encodes the common SQEs. */
void gaio__uring_prep_recv(struct gaio__io_uring_sqe *sqe, int fd, void *buf, uint32_t len,
                           uint64_t user_data);
void gaio__uring_prep_recv_select(struct gaio__io_uring_sqe *sqe, int fd, uint32_t len,
                                  uint16_t group, uint64_t user_data);
/* One CQE per arrival, each with a buffer of `group` and IORING_CQE_F_MORE
 * while it goes on; the last CQE (an error, the end of stream, ENOBUFS when
 * the ring ran dry, ECANCELED) has no F_MORE (6.0). */
void gaio__uring_prep_recv_multishot(struct gaio__io_uring_sqe *sqe, int fd, uint16_t group,
                                     uint64_t user_data);
void gaio__uring_prep_send(struct gaio__io_uring_sqe *sqe, int fd, const void *buf, uint32_t len,
                           uint64_t user_data);
/* MSG_NOSIGNAL; the kernel copies *msg and its iovec array at submission (5.3). */
void gaio__uring_prep_sendmsg(struct gaio__io_uring_sqe *sqe, int fd, const struct msghdr *msg,
                              uint64_t user_data);
/* accept4(fd, NULL, NULL, flags) (5.5); _multishot: one CQE per connection,
 * with F_MORE while it goes on (5.19). */
void gaio__uring_prep_accept(struct gaio__io_uring_sqe *sqe, int fd, int flags, uint64_t user_data);
void gaio__uring_prep_accept_multishot(struct gaio__io_uring_sqe *sqe, int fd, int flags,
                                       uint64_t user_data);
void gaio__uring_prep_poll_add(struct gaio__io_uring_sqe *sqe, int fd, uint32_t events,
                               uint64_t user_data);
/* The same, armed until cancelled: a CQE with F_MORE per wake-up of the
 * socket (5.13), the mask its wake-up said. */
void gaio__uring_prep_poll_multishot(struct gaio__io_uring_sqe *sqe, int fd, uint32_t events,
                                     uint64_t user_data);
void gaio__uring_prep_cancel(struct gaio__io_uring_sqe *sqe, uint64_t target, uint64_t user_data);
void gaio__uring_prep_nop(struct gaio__io_uring_sqe *sqe, uint64_t user_data);

#endif
