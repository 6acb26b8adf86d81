/* The io_uring kernel ABI, re-declared (as libuv's src/unix/linux.c does).
 *
 * Why not <linux/io_uring.h>: the header a build machine ships lags the
 * kernel it runs on (and older ones lack the buffer ring), and its unions
 * change shape between releases. These are the kernel's own values; the
 * layouts are pinned with static asserts, so a mistake fails the build.
 * Only what uring_ring.c and engine_uring.c use is declared.
 * Reference: include/uapi/linux/io_uring.h in the kernel tree.
 */
#ifndef GAIO_URING_ABI_H
#define GAIO_URING_ABI_H

#include <stddef.h>
#include <stdint.h>

/* Same numbers on every architecture since 5.1 (the unified syscall table),
 * alpha aside, which gaio does not support. */
#define GAIO__NR_io_uring_setup 425
#define GAIO__NR_io_uring_enter 426
#define GAIO__NR_io_uring_register 427

/* io_uring_setup() flags */
#define GAIO__IORING_SETUP_CQSIZE (1U << 3)        /* 5.5 */
#define GAIO__IORING_SETUP_CLAMP (1U << 4)         /* 5.6 */
#define GAIO__IORING_SETUP_R_DISABLED (1U << 6)    /* 5.10: no submission until ENABLE_RINGS */
#define GAIO__IORING_SETUP_SUBMIT_ALL (1U << 7)    /* 5.18 */
#define GAIO__IORING_SETUP_COOP_TASKRUN (1U << 8)  /* 5.19 */
#define GAIO__IORING_SETUP_TASKRUN_FLAG (1U << 9)  /* 5.19 */
#define GAIO__IORING_SETUP_SINGLE_ISSUER (1U << 12) /* 6.0 */
#define GAIO__IORING_SETUP_DEFER_TASKRUN (1U << 13) /* 6.1 */

/* io_uring_params.features */
#define GAIO__IORING_FEAT_SINGLE_MMAP (1U << 0) /* 5.4 */
#define GAIO__IORING_FEAT_NODROP (1U << 1)      /* 5.5 */
#define GAIO__IORING_FEAT_FAST_POLL (1U << 5)   /* 5.7 */
#define GAIO__IORING_FEAT_EXT_ARG (1U << 8)     /* 5.11 */
#define GAIO__IORING_FEAT_MIN_TIMEOUT (1U << 15) /* 6.12 */

/* opcodes */
enum {
    GAIO__IORING_OP_NOP = 0,
    GAIO__IORING_OP_POLL_ADD = 6,      /* 5.1 */
    GAIO__IORING_OP_SENDMSG = 9,       /* 5.3 */
    GAIO__IORING_OP_ACCEPT = 13,       /* 5.5 */
    GAIO__IORING_OP_ASYNC_CANCEL = 14, /* 5.5 */
    GAIO__IORING_OP_READ = 22,         /* 5.6 */
    GAIO__IORING_OP_SEND = 26,         /* 5.6 */
    GAIO__IORING_OP_RECV = 27,         /* 5.6 */
    /* Not used, only probed: the release that brought each also brought a
     * flag the probe cannot see (see uring_ring.h, gaio__uring_has_op). */
    GAIO__IORING_OP_MKDIRAT = 37,      /* 5.15, with IORING_POLL_ADD_MULTI's fixes */
    GAIO__IORING_OP_SOCKET = 45,       /* 5.19, with IORING_ACCEPT_MULTISHOT */
    GAIO__IORING_OP_SEND_ZC = 47,      /* 6.0, with IORING_RECV_MULTISHOT */
    GAIO__IORING_OP_LAST_KNOWN = 48,
};

/* io_uring_sqe.flags */
#define GAIO__IOSQE_BUFFER_SELECT (1U << 5) /* 5.7 */

/* io_uring_sqe.ioprio of RECV and ACCEPT */
#define GAIO__IORING_RECVSEND_POLL_FIRST (1U << 0) /* 5.19: arm the poll, no first try */
#define GAIO__IORING_RECV_MULTISHOT (1U << 1)   /* 6.0: a CQE per arrival, needs BUFFER_SELECT */
#define GAIO__IORING_ACCEPT_MULTISHOT (1U << 0) /* 5.19: a CQE per connection */

/* io_uring_sqe.len of POLL_ADD */
#define GAIO__IORING_POLL_ADD_MULTI (1U << 0) /* 5.13: a CQE per wake-up, armed until cancelled */

/* io_uring_enter() flags */
#define GAIO__IORING_ENTER_GETEVENTS (1U << 0)
#define GAIO__IORING_ENTER_EXT_ARG (1U << 3) /* 5.11 */

/* Shared SQ ring flags, written by the kernel. */
#define GAIO__IORING_SQ_CQ_OVERFLOW (1U << 1) /* 5.8: completions wait in the kernel */
#define GAIO__IORING_SQ_TASKRUN (1U << 2)     /* 5.19: task work pending (TASKRUN_FLAG) */

/* io_uring_cqe.flags */
#define GAIO__IORING_CQE_F_BUFFER (1U << 0)
#define GAIO__IORING_CQE_F_MORE (1U << 1)     /* a multishot operation goes on after this CQE */
#define GAIO__IORING_CQE_F_SOCK_NONEMPTY (1U << 2) /* 5.19: bytes were left in the socket */
#define GAIO__IORING_CQE_F_BUF_MORE (1U << 4) /* 6.12: the buffer has room left, stays in the ring */
#define GAIO__IORING_CQE_BUFFER_SHIFT 16

/* io_uring_buf_reg.flags */
#define GAIO__IOU_PBUF_RING_INC 2U /* 6.12: buffers are consumed a piece at a time */

/* ASYNC_CANCEL flags (sqe op_flags) */
#define GAIO__IORING_ASYNC_CANCEL_ALL (1U << 0) /* 5.19 */

/* mmap() offsets on the ring descriptor */
#define GAIO__IORING_OFF_SQ_RING 0ULL
#define GAIO__IORING_OFF_CQ_RING 0x8000000ULL
#define GAIO__IORING_OFF_SQES 0x10000000ULL

/* io_uring_register() opcodes */
#define GAIO__IORING_REGISTER_PROBE 8         /* 5.6 */
#define GAIO__IORING_REGISTER_ENABLE_RINGS 12 /* 5.10 */
#define GAIO__IORING_REGISTER_PBUF_RING 22    /* 5.19 */
#define GAIO__IORING_UNREGISTER_PBUF_RING 23  /* 5.19 */

#define GAIO__IO_URING_OP_SUPPORTED (1U << 0)

struct gaio__io_uring_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;
    uint64_t addr;
    uint32_t len;
    uint32_t op_flags; /* msg_flags, accept_flags, cancel_flags, timeout_flags, ... */
    uint64_t user_data;
    uint16_t buf_group; /* buf_index */
    uint16_t personality;
    uint32_t file_index;
    uint64_t addr3;
    uint64_t pad2;
};

struct gaio__io_uring_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct gaio__io_sqring_offsets {
    uint32_t head;
    uint32_t tail;
    uint32_t ring_mask;
    uint32_t ring_entries;
    uint32_t flags;
    uint32_t dropped;
    uint32_t array;
    uint32_t resv1;
    uint64_t user_addr;
};

struct gaio__io_cqring_offsets {
    uint32_t head;
    uint32_t tail;
    uint32_t ring_mask;
    uint32_t ring_entries;
    uint32_t overflow;
    uint32_t cqes;
    uint32_t flags;
    uint32_t resv1;
    uint64_t user_addr;
};

struct gaio__io_uring_params {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t flags;
    uint32_t sq_thread_cpu;
    uint32_t sq_thread_idle;
    uint32_t features;
    uint32_t wq_fd;
    uint32_t resv[3];
    struct gaio__io_sqring_offsets sq_off;
    struct gaio__io_cqring_offsets cq_off;
};

struct gaio__io_uring_probe_op {
    uint8_t op;
    uint8_t resv;
    uint16_t flags;
    uint32_t resv2;
};

struct gaio__io_uring_probe {
    uint8_t last_op; /* the last opcode this kernel knows */
    uint8_t ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct gaio__io_uring_probe_op ops[];
};

/* One provided buffer. In the ring's memory the first entry's `resv` field
 * is the ring tail (the kernel overlays them). */
struct gaio__io_uring_buf {
    uint64_t addr;
    uint32_t len;
    uint16_t bid;
    uint16_t resv;
};

struct gaio__io_uring_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid;
    uint16_t flags;
    uint64_t resv[3];
};

struct gaio__kernel_timespec {
    int64_t tv_sec;
    long long tv_nsec;
};

struct gaio__io_uring_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec; /* 6.12 (IORING_FEAT_MIN_TIMEOUT); 0 = none, before it "pad" */
    uint64_t ts;
};

#define GAIO__ABI_ASSERT(cond) _Static_assert(cond, #cond)
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_sqe) == 64);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, off) == 8);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, addr) == 16);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, len) == 24);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, op_flags) == 28);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, user_data) == 32);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, buf_group) == 40);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, file_index) == 44);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_sqe, addr3) == 48);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_cqe) == 16);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_sqring_offsets) == 40);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_cqring_offsets) == 40);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_params) == 120);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_params, sq_off) == 40);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_params, cq_off) == 80);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_probe_op) == 8);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_probe) == 16);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_buf) == 16);
GAIO__ABI_ASSERT(offsetof(struct gaio__io_uring_buf, resv) == 14);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_buf_reg) == 40);
GAIO__ABI_ASSERT(sizeof(struct gaio__kernel_timespec) == 16);
GAIO__ABI_ASSERT(sizeof(struct gaio__io_uring_getevents_arg) == 24);

#endif
