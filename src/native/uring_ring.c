/* io_uring ring setup, probing and system calls; see uring_ring.h. */
#ifdef __linux__

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall(), MAP_POPULATE when built outside setup.py */
#endif

#include "uring_ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int uring_setup(unsigned entries, struct gaio__io_uring_params *params)
{
    return (int)syscall(GAIO__NR_io_uring_setup, entries, params);
}

static int uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                       void *arg, size_t arg_size)
{
    return (int)syscall(GAIO__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg,
                        arg_size);
}

static int uring_register(int fd, unsigned opcode, void *arg, unsigned nr_args)
{
    return (int)syscall(GAIO__NR_io_uring_register, fd, opcode, arg, nr_args);
}

/* /proc/sys/kernel/io_uring_disabled (Linux 6.6): 0 allowed, 1 only for
 * members of kernel.io_uring_group, 2 refused for everyone; -1 if absent. */
static int sysctl_io_uring_disabled(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
    int value = -1;
    if (f != NULL) {
        if (fscanf(f, "%d", &value) != 1)
            value = -1;
        fclose(f);
    }
    return value;
}

static void explain_setup_error(int err, char reason[GAIO__URING_REASON_MAX])
{
    int sysctl = sysctl_io_uring_disabled();
    if (err == ENOSYS)
        snprintf(reason, GAIO__URING_REASON_MAX,
                 "io_uring_setup: ENOSYS (kernel older than 5.1, built without "
                 "CONFIG_IO_URING, or a seccomp filter answering ENOSYS)");
    else if (err == EPERM && sysctl == 2)
        snprintf(reason, GAIO__URING_REASON_MAX,
                 "io_uring_setup: EPERM (sysctl kernel.io_uring_disabled=2)");
    else if (err == EPERM && sysctl == 1)
        snprintf(reason, GAIO__URING_REASON_MAX,
                 "io_uring_setup: EPERM (sysctl kernel.io_uring_disabled=1 and this "
                 "process is not in kernel.io_uring_group)");
    else if (err == EPERM)
        snprintf(reason, GAIO__URING_REASON_MAX,
                 "io_uring_setup: EPERM (refused by a seccomp filter, e.g. the "
                 "default profile of Docker or another container runtime)");
    else if (err == ENOMEM)
        snprintf(reason, GAIO__URING_REASON_MAX,
                 "io_uring_setup: ENOMEM (RLIMIT_MEMLOCK too low for the rings on "
                 "kernels before 5.12)");
    else
        snprintf(reason, GAIO__URING_REASON_MAX, "io_uring_setup: %s", strerror(err));
}

static int setup_with_fallback(unsigned sq_entries, unsigned cq_entries, int taskrun,
                               struct gaio__io_uring_params *params, int *err)
{
    const uint32_t base = GAIO__IORING_SETUP_CQSIZE | GAIO__IORING_SETUP_CLAMP;
    /* fastest first; a kernel that does not know a flag answers EINVAL */
    const uint32_t attempts[] = {
        /* disabled: the issuer is the thread that enables it (gaio__uring_enable),
         * not the one that creates it */
        base | GAIO__IORING_SETUP_SUBMIT_ALL | GAIO__IORING_SETUP_SINGLE_ISSUER |
            GAIO__IORING_SETUP_DEFER_TASKRUN | GAIO__IORING_SETUP_R_DISABLED |
            GAIO__IORING_SETUP_TASKRUN_FLAG,
        base | GAIO__IORING_SETUP_SUBMIT_ALL | GAIO__IORING_SETUP_SINGLE_ISSUER |
            GAIO__IORING_SETUP_DEFER_TASKRUN | GAIO__IORING_SETUP_R_DISABLED,
        base | GAIO__IORING_SETUP_SUBMIT_ALL | GAIO__IORING_SETUP_COOP_TASKRUN |
            GAIO__IORING_SETUP_TASKRUN_FLAG,
        base | GAIO__IORING_SETUP_SUBMIT_ALL,
        base,
    };
    size_t first = taskrun >= GAIO__URING_TASKRUN_SINGLE_THREAD ? 0
                   : taskrun == GAIO__URING_TASKRUN_COOP     ? 2
                                                             : 3;
    for (size_t i = first; i < sizeof attempts / sizeof attempts[0]; i++) {
        memset(params, 0, sizeof *params);
        params->flags = attempts[i];
        params->cq_entries = cq_entries;
        int fd = uring_setup(sq_entries, params);
        if (fd >= 0)
            return fd;
        *err = errno;
        if (*err != EINVAL)
            return -1;
    }
    return -1;
}

static int missing_feature(uint32_t features, char reason[GAIO__URING_REASON_MAX])
{
    static const struct { uint32_t bit; const char *name; const char *kernel; } needed[] = {
        {GAIO__IORING_FEAT_SINGLE_MMAP, "IORING_FEAT_SINGLE_MMAP", "5.4"},
        {GAIO__IORING_FEAT_NODROP, "IORING_FEAT_NODROP", "5.5"},
        {GAIO__IORING_FEAT_FAST_POLL, "IORING_FEAT_FAST_POLL", "5.7"},
        {GAIO__IORING_FEAT_EXT_ARG, "IORING_FEAT_EXT_ARG", "5.11"},
    };
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        if (!(features & needed[i].bit)) {
            snprintf(reason, GAIO__URING_REASON_MAX, "io_uring lacks %s (needs Linux %s)",
                     needed[i].name, needed[i].kernel);
            return 1;
        }
    }
    return 0;
}

/* Probes the opcodes (kept in ring->ops) and checks those gaio needs. */
static int missing_opcode(struct gaio__uring *ring, char reason[GAIO__URING_REASON_MAX])
{
    static const struct { uint8_t op; const char *name; } needed[] = {
        {GAIO__IORING_OP_RECV, "IORING_OP_RECV"},
        {GAIO__IORING_OP_SEND, "IORING_OP_SEND"},
        {GAIO__IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD"},
        {GAIO__IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"},
    };
    const unsigned nops = 256;
    size_t size = sizeof(struct gaio__io_uring_probe) + nops * sizeof(struct gaio__io_uring_probe_op);
    struct gaio__io_uring_probe *probe = calloc(1, size);
    if (probe == NULL) {
        snprintf(reason, GAIO__URING_REASON_MAX, "out of memory probing io_uring");
        return 1;
    }
    if (uring_register(ring->fd, GAIO__IORING_REGISTER_PROBE, probe, nops) < 0) {
        snprintf(reason, GAIO__URING_REASON_MAX, "IORING_REGISTER_PROBE: %s (needs Linux 5.6)",
                 strerror(errno));
        free(probe);
        return 1;
    }
    for (unsigned op = 0; op < probe->ops_len && op <= probe->last_op && op < nops; op++)
        if (probe->ops[op].flags & GAIO__IO_URING_OP_SUPPORTED)
            ring->ops[op >> 3] |= (uint8_t)(1u << (op & 7));
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        if (!gaio__uring_has_op(ring, needed[i].op)) {
            snprintf(reason, GAIO__URING_REASON_MAX, "io_uring does not support %s",
                     needed[i].name);
            free(probe);
            return 1;
        }
    }
    free(probe);
    return 0;
}

static int map_rings(struct gaio__uring *ring, const struct gaio__io_uring_params *p,
                     char reason[GAIO__URING_REASON_MAX])
{
    size_t sq_len = p->sq_off.array + p->sq_entries * sizeof(uint32_t);
    size_t cq_len = p->cq_off.cqes + p->cq_entries * sizeof(struct gaio__io_uring_cqe);
    /* FEAT_SINGLE_MMAP: one mapping holds both rings */
    ring->ring_len = sq_len > cq_len ? sq_len : cq_len;
    ring->ring_mem = mmap(NULL, ring->ring_len, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_POPULATE, ring->fd, GAIO__IORING_OFF_SQ_RING);
    if (ring->ring_mem == MAP_FAILED) {
        ring->ring_mem = NULL;
        snprintf(reason, GAIO__URING_REASON_MAX, "mmap of io_uring rings: %s", strerror(errno));
        return -1;
    }
    ring->sqe_len = p->sq_entries * sizeof(struct gaio__io_uring_sqe);
    ring->sqe_mem = mmap(NULL, ring->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         ring->fd, GAIO__IORING_OFF_SQES);
    if (ring->sqe_mem == MAP_FAILED) {
        ring->sqe_mem = NULL;
        snprintf(reason, GAIO__URING_REASON_MAX, "mmap of io_uring SQEs: %s", strerror(errno));
        return -1;
    }
    char *base = ring->ring_mem;
    ring->sq_head = (uint32_t *)(base + p->sq_off.head);
    ring->sq_tail = (uint32_t *)(base + p->sq_off.tail);
    ring->sq_flags = (uint32_t *)(base + p->sq_off.flags);
    ring->sq_mask = *(uint32_t *)(base + p->sq_off.ring_mask);
    ring->sq_entries = *(uint32_t *)(base + p->sq_off.ring_entries);
    ring->sqes = ring->sqe_mem;
    ring->cq_head = (uint32_t *)(base + p->cq_off.head);
    ring->cq_tail = (uint32_t *)(base + p->cq_off.tail);
    ring->cq_mask = *(uint32_t *)(base + p->cq_off.ring_mask);
    ring->cq_entries = *(uint32_t *)(base + p->cq_off.ring_entries);
    ring->cqes = (struct gaio__io_uring_cqe *)(base + p->cq_off.cqes);
    /* The SQ index array maps slot i to SQE i once and for all. */
    uint32_t *array = (uint32_t *)(base + p->sq_off.array);
    for (uint32_t i = 0; i < ring->sq_entries; i++)
        array[i] = i;
    ring->sq_local_tail = *ring->sq_tail;
    return 0;
}

static int disabled_by_environment(char reason[GAIO__URING_REASON_MAX])
{
    const char *value = getenv("GAIO_URING_DISABLE");
    if (value == NULL || value[0] == '\0' || strcmp(value, "0") == 0)
        return 0;
    snprintf(reason, GAIO__URING_REASON_MAX, "io_uring disabled by GAIO_URING_DISABLE=%.32s",
             value);
    return 1;
}

int gaio__uring_open(struct gaio__uring *ring, unsigned sq_entries, unsigned cq_entries,
                     int taskrun, char reason[GAIO__URING_REASON_MAX])
{
    memset(ring, 0, sizeof *ring);
    ring->fd = -1;
    reason[0] = '\0';
    if (disabled_by_environment(reason))
        return -1;
    struct gaio__io_uring_params params;
    int err = 0;
    ring->fd = setup_with_fallback(sq_entries, cq_entries, taskrun, &params, &err);
    if (ring->fd < 0) {
        explain_setup_error(err, reason);
        errno = err;
        return -1;
    }
    ring->setup_flags = params.flags;
    ring->features = params.features;
    if (missing_feature(params.features, reason) || missing_opcode(ring, reason) ||
        map_rings(ring, &params, reason) < 0) {
        gaio__uring_close(ring);
        errno = 0;
        return -1;
    }
    return 0;
}

int gaio__uring_enable(struct gaio__uring *ring)
{
    return uring_register(ring->fd, GAIO__IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0 ? -errno : 0;
}

void gaio__uring_close(struct gaio__uring *ring)
{
    if (ring->sqe_mem != NULL)
        munmap(ring->sqe_mem, ring->sqe_len);
    if (ring->ring_mem != NULL)
        munmap(ring->ring_mem, ring->ring_len);
    if (ring->fd >= 0)
        close(ring->fd);
    ring->sqe_mem = ring->ring_mem = NULL;
    ring->fd = -1;
}

struct gaio__io_uring_sqe *gaio__uring_get_sqe(struct gaio__uring *ring)
{
    uint32_t head = __atomic_load_n(ring->sq_head, __ATOMIC_ACQUIRE);
    if (ring->sq_local_tail - head >= ring->sq_entries)
        return NULL;
    struct gaio__io_uring_sqe *sqe = &ring->sqes[ring->sq_local_tail & ring->sq_mask];
    ring->sq_local_tail++;
    memset(sqe, 0, sizeof *sqe);
    return sqe;
}

unsigned gaio__uring_sq_unsubmitted(const struct gaio__uring *ring)
{
    return ring->sq_local_tail - __atomic_load_n(ring->sq_head, __ATOMIC_ACQUIRE);
}

int gaio__uring_nothing_to_get(const struct gaio__uring *ring)
{
    const uint32_t both = GAIO__IORING_SETUP_DEFER_TASKRUN | GAIO__IORING_SETUP_TASKRUN_FLAG;
    if ((ring->setup_flags & both) != both || ring->sq_local_tail != __atomic_load_n(ring->sq_head, __ATOMIC_ACQUIRE))
        return 0;
    /* acquire: the kernel sets the flag after queueing the work it stands for */
    return !(__atomic_load_n(ring->sq_flags, __ATOMIC_ACQUIRE) &
             (GAIO__IORING_SQ_TASKRUN | GAIO__IORING_SQ_CQ_OVERFLOW));
}

static unsigned publish_sqes(struct gaio__uring *ring)
{
    /* release: the SQE contents must be visible before the kernel sees the tail */
    __atomic_store_n(ring->sq_tail, ring->sq_local_tail, __ATOMIC_RELEASE);
    return gaio__uring_sq_unsubmitted(ring);
}

int gaio__uring_submit(struct gaio__uring *ring)
{
    unsigned pending = publish_sqes(ring);
    if (pending == 0)
        return 0;
    int ret = uring_enter(ring->fd, pending, 0, 0, NULL, 0);
    return ret < 0 ? -errno : ret;
}

int gaio__uring_submit_and_wait(struct gaio__uring *ring, int64_t timeout_ns)
{
    return gaio__uring_submit_and_wait_sigmask(ring, timeout_ns, NULL);
}

int gaio__uring_submit_and_wait_sigmask(struct gaio__uring *ring, int64_t timeout_ns,
                                        const sigset_t *sigmask)
{
    return gaio__uring_submit_and_wait_min(ring, timeout_ns, 0, sigmask);
}

int gaio__uring_submit_and_wait_min(struct gaio__uring *ring, int64_t timeout_ns,
                                    int64_t min_wait_ns, const sigset_t *sigmask)
{
    unsigned pending = publish_sqes(ring);
    struct gaio__kernel_timespec ts;
    struct gaio__io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    if (timeout_ns == 0) {
        /* A look asks for no completion and gives no timeout: GETEVENTS
         * still runs the deferred task work and flushes the overflow list,
         * then returns (liburing's io_uring_get_events). With a timeout, even
         * a zero one, io_cqring_wait arms an hrtimer for it and waits for it
         * to fire (io_cqring_schedule_timeout): on a VM, the look before each
         * sleep of wait_io() paid a timer interrupt, 17% of the server's
         * profile at 10,000 msgs/s. No sleep, so no signal mask to set. */
        int ret = uring_enter(ring->fd, pending, 0, GAIO__IORING_ENTER_GETEVENTS, NULL, 0);
        if (ret < 0)
            return -errno;
        uint32_t first;
        return ret > 0 && gaio__uring_cq_ready(ring, &first) == 0 ? -ETIME : ret; /* as the timeout said */
    }
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        arg.ts = (uint64_t)(uintptr_t)&ts;
    }
    if (sigmask) {
        /* the kernel's sigset_t: _NSIG bits (glibc's epoll_pwait passes the same) */
        arg.sigmask = (uint64_t)(uintptr_t)sigmask;
        arg.sigmask_sz = _NSIG / 8;
    }
    /* EXT_ARG (5.11) carries the timeout in the call itself: no TIMEOUT SQE
     * to arm and reap. A zero timeout still runs deferred task work. */
    unsigned want = 1;
    if (min_wait_ns > 0 && timeout_ns != 0) {
        /* The kernel ends the wait early only once `want` completions are
         * there, so ask for more than can come: the min-wait ends it. With
         * no timeout of ours, one that never comes: without one the kernel
         * ends the wait at the min-wait even with nothing (io_cqring_min_timer_wakeup). */
        want = ring->cq_entries;
        arg.min_wait_usec = (uint32_t)((min_wait_ns + 999) / 1000);
        if (timeout_ns < 0) {
            ts.tv_sec = 86400;
            ts.tv_nsec = 0;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
    }
    struct timespec start = {0, 0};
    if (pending && timeout_ns > 0)
        clock_gettime(CLOCK_MONOTONIC, &start);
    int ret = uring_enter(ring->fd, pending, want,
                          GAIO__IORING_ENTER_GETEVENTS | GAIO__IORING_ENTER_EXT_ARG, &arg,
                          sizeof arg);
    if (ret < 0)
        return -errno;
    /* When it submitted something, io_uring_enter returns that count and
     * hides the wait's own -EINTR / -ETIME (io_uring/io_uring.c: "if (!ret)
     * ret = ret2"). An empty completion ring before the timeout means a
     * signal ended the wait: say so, or Python's handlers would not run. */
    uint32_t first;
    if (pending && ret > 0 && gaio__uring_cq_ready(ring, &first) == 0) {
        if (timeout_ns < 0)
            return -EINTR;
        if (timeout_ns > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t elapsed = (int64_t)(now.tv_sec - start.tv_sec) * 1000000000 +
                              (now.tv_nsec - start.tv_nsec);
            return elapsed < timeout_ns ? -EINTR : -ETIME;
        }
        return -ETIME;
    }
    return ret;
}

int gaio__uring_bufring_open(struct gaio__uring *ring, struct gaio__uring_bufring *bufs,
                             uint16_t group, uint16_t count, uint32_t size, uint16_t flags,
                             char reason[GAIO__URING_REASON_MAX])
{
    memset(bufs, 0, sizeof *bufs);
    if (count == 0 || (count & (count - 1)) != 0 || size == 0) {
        snprintf(reason, GAIO__URING_REASON_MAX, "bad provided-buffer ring geometry");
        return -1;
    }
    bufs->count = count;
    bufs->size = size;
    bufs->group = group;
    bufs->ring_len = (size_t)count * sizeof(struct gaio__io_uring_buf);
    /* the kernel wants a page-aligned ring; mmap gives one */
    bufs->entries = mmap(NULL, bufs->ring_len, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bufs->entries == MAP_FAILED) {
        bufs->entries = NULL;
        snprintf(reason, GAIO__URING_REASON_MAX, "mmap of buffer ring: %s", strerror(errno));
        return -1;
    }
    /* anonymous memory is only backed where data lands, so a large bufsize
     * costs address space, not RAM, until used */
    bufs->memory_len = (size_t)count * size;
    bufs->memory = mmap(NULL, bufs->memory_len, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (bufs->memory == MAP_FAILED) {
        bufs->memory = NULL;
        snprintf(reason, GAIO__URING_REASON_MAX, "mmap of %zu buffer bytes: %s",
                 bufs->memory_len, strerror(errno));
        gaio__uring_bufring_close(ring, bufs);
        return -1;
    }
    struct gaio__io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)bufs->entries;
    reg.ring_entries = count;
    reg.bgid = group;
    reg.flags = flags;
    if (uring_register(ring->fd, GAIO__IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        snprintf(reason, GAIO__URING_REASON_MAX,
                 "IORING_REGISTER_PBUF_RING: %s (provided buffer rings need Linux 5.19, "
                 "incremental ones 6.12)",
                 strerror(errno));
        munmap(bufs->memory, bufs->memory_len);
        bufs->memory = NULL;
        gaio__uring_bufring_close(ring, bufs);
        return -1;
    }
    for (uint16_t id = 0; id < count; id++)
        gaio__uring_bufring_recycle(bufs, id);
    return 0;
}

void gaio__uring_bufring_close(struct gaio__uring *ring, struct gaio__uring_bufring *bufs)
{
    if (bufs->memory != NULL) { /* registered */
        struct gaio__io_uring_buf_reg reg;
        memset(&reg, 0, sizeof reg);
        reg.bgid = bufs->group;
        uring_register(ring->fd, GAIO__IORING_UNREGISTER_PBUF_RING, &reg, 1);
        munmap(bufs->memory, bufs->memory_len);
    }
    if (bufs->entries != NULL)
        munmap(bufs->entries, bufs->ring_len);
    bufs->memory = NULL;
    bufs->entries = NULL;
}

void gaio__uring_bufring_recycle(struct gaio__uring_bufring *bufs, uint16_t id)
{
    struct gaio__io_uring_buf *slot = &bufs->entries[bufs->local_tail & (bufs->count - 1)];
    slot->addr = (uint64_t)(uintptr_t)gaio__uring_bufring_data(bufs, id);
    slot->len = bufs->size;
    slot->bid = id;
    bufs->local_tail++;
    /* The tail overlays entries[0].resv; release orders the slot write before it. */
    __atomic_store_n(&bufs->entries[0].resv, bufs->local_tail, __ATOMIC_RELEASE);
}

void gaio__uring_prep_recv(struct gaio__io_uring_sqe *sqe, int fd, void *buf, uint32_t len,
                           uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_RECV;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->user_data = user_data;
}

void gaio__uring_prep_recv_select(struct gaio__io_uring_sqe *sqe, int fd, uint32_t len,
                                  uint16_t group, uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_RECV;
    sqe->fd = fd;
    sqe->len = len;
    sqe->flags = GAIO__IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
    sqe->user_data = user_data;
}

void gaio__uring_prep_recv_multishot(struct gaio__io_uring_sqe *sqe, int fd, uint16_t group,
                                     uint64_t user_data)
{
    /* len 0: each arrival may fill what is left of the buffer it gets */
    gaio__uring_prep_recv_select(sqe, fd, 0, group, user_data);
    sqe->ioprio = GAIO__IORING_RECV_MULTISHOT;
}

void gaio__uring_prep_send(struct gaio__io_uring_sqe *sqe, int fd, const void *buf, uint32_t len,
                           uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->op_flags = MSG_NOSIGNAL;
    sqe->user_data = user_data;
}

void gaio__uring_prep_sendmsg(struct gaio__io_uring_sqe *sqe, int fd, const struct msghdr *msg,
                              uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_SENDMSG;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)msg;
    sqe->len = 1;
    sqe->op_flags = MSG_NOSIGNAL;
    sqe->user_data = user_data;
}

void gaio__uring_prep_accept(struct gaio__io_uring_sqe *sqe, int fd, int flags, uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_ACCEPT;
    sqe->fd = fd;
    sqe->op_flags = (uint32_t)flags;
    sqe->user_data = user_data;
}

void gaio__uring_prep_accept_multishot(struct gaio__io_uring_sqe *sqe, int fd, int flags,
                                       uint64_t user_data)
{
    gaio__uring_prep_accept(sqe, fd, flags, user_data);
    sqe->ioprio = GAIO__IORING_ACCEPT_MULTISHOT;
}

void gaio__uring_prep_poll_add(struct gaio__io_uring_sqe *sqe, int fd, uint32_t events,
                               uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_POLL_ADD;
    sqe->fd = fd;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    events = events << 16 | events >> 16; /* the kernel swaps poll32_events' halves there */
#endif
    sqe->op_flags = events;
    sqe->user_data = user_data;
}

void gaio__uring_prep_poll_multishot(struct gaio__io_uring_sqe *sqe, int fd, uint32_t events,
                                     uint64_t user_data)
{
    gaio__uring_prep_poll_add(sqe, fd, events, user_data);
    sqe->len = GAIO__IORING_POLL_ADD_MULTI;
}

void gaio__uring_prep_cancel(struct gaio__io_uring_sqe *sqe, uint64_t target, uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = target;
    sqe->user_data = user_data;
}

void gaio__uring_prep_nop(struct gaio__io_uring_sqe *sqe, uint64_t user_data)
{
    sqe->opcode = GAIO__IORING_OP_NOP;
    sqe->fd = -1;
    sqe->user_data = user_data;
}

#endif /* __linux__ */
