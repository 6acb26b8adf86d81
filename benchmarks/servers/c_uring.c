/* c_uring.c - the io_uring ceiling: a single-threaded io_uring echo server in
 * C, beside c_epoll.c, without liburing (the kernel's <linux/io_uring.h> and
 * raw syscalls). The best a hand-written server gets from the interface here:
 *   - one multishot ACCEPT on the listener (5.19);
 *   - one multishot RECV per connection on a provided-buffer ring (6.0): a
 *     CQE per arrival, no re-arm, no copy - the buffer the kernel filled is
 *     the one SENT back, and goes back to the ring when the send is done;
 *   - SINGLE_ISSUER + DEFER_TASKRUN (6.1): completions are run in the one
 *     io_uring_enter that submits and waits, never by an interrupt of the task;
 *   - a registered ring descriptor (IORING_REGISTER_RING_FDS, 5.18);
 *   - one SEND in flight per connection (two could pass each other when the
 *     first has to wait for room): the filled buffers queue behind it in order.
 * Backpressure: a connection holds at most the ring's buffers; when the ring
 * is empty its RECV ends with ENOBUFS and is re-armed once a buffer returns,
 * so a fast sender meets TCP backpressure. Without DEFER_TASKRUN or the
 * registered ring (older kernel) the server still runs, without them.
 * Same listener setup as the Python servers: backlog 4096, TCP_NODELAY.
 *
 * usage: c_uring [--port P]   prints "READY <port>" once listening.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BACKLOG 4096
#define ENTRIES 4096
#define NBUF 1024          /* provided buffers (a power of two) */
#define BUF_SIZE 65536
#define BGID 0

enum { OP_ACCEPT, OP_RECV, OP_SEND };
#define UD(op, fd) ((uint64_t)(op) | (uint64_t)(uint32_t)(fd) << 8)

struct conn {
    int head, tail;     /* buffer ids queued for sending (-1: none), linked by next_bid */
    uint32_t off;       /* bytes of the head buffer already sent */
    char recv_on, send_on, dead, starved;
};

static struct conn *conns;   /* indexed by descriptor */
static int next_bid[NBUF];
static uint32_t bid_len[NBUF];
static char *buffers;
static struct io_uring_buf_ring *br;
static uint16_t br_tail;

static int ring_fd, enter_fd, enter_flags;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;
static unsigned sq_local_tail, to_submit;
static int *starved;         /* descriptors whose RECV ended for want of buffers */
static size_t nstarved;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int enter(unsigned submit, unsigned wait)
{
    return (int)syscall(SYS_io_uring_enter, enter_fd, submit, wait,
                        enter_flags | (wait ? IORING_ENTER_GETEVENTS : 0), NULL, 0);
}

static struct io_uring_sqe *sqe_get(void)
{
    if (to_submit >= ENTRIES) {
        if (enter(to_submit, 0) < 0 && errno != EBUSY) die("io_uring_enter");
        to_submit = 0;
    }
    struct io_uring_sqe *sqe = &sqes[sq_local_tail & *sq_mask];
    memset(sqe, 0, sizeof *sqe);
    sq_local_tail++;
    __atomic_store_n(sq_tail, sq_local_tail, __ATOMIC_RELEASE);
    to_submit++;
    return sqe;
}

static void give_buffer(int bid)
{
    struct io_uring_buf *b = &br->bufs[br_tail & (NBUF - 1)];
    b->addr = (uint64_t)(uintptr_t)(buffers + (size_t)bid * BUF_SIZE);
    b->len = BUF_SIZE;
    b->bid = (uint16_t)bid;
    br_tail++;
    __atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *sqe = sqe_get();
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    sqe->user_data = UD(OP_RECV, fd);
    conns[fd].recv_on = 1;
}

static void arm_accept(int listener)
{
    struct io_uring_sqe *sqe = sqe_get();
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = listener;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->accept_flags = SOCK_CLOEXEC;
    sqe->user_data = UD(OP_ACCEPT, listener);
}

static void send_head(int fd)
{
    struct conn *c = &conns[fd];
    struct io_uring_sqe *sqe = sqe_get();
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)(buffers + (size_t)c->head * BUF_SIZE + c->off);
    sqe->len = bid_len[c->head] - c->off;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = UD(OP_SEND, fd);
    c->send_on = 1;
}

/* Nothing of fd is in the kernel any more: give its buffers back, close it. */
static void maybe_close(int fd)
{
    struct conn *c = &conns[fd];
    if (c->recv_on || c->send_on)
        return;
    for (int b = c->head; b >= 0; b = next_bid[b])
        give_buffer(b);
    *c = (struct conn){.head = -1, .tail = -1};
    close(fd);
}

static void kill_conn(int fd)
{
    conns[fd].dead = 1;
    shutdown(fd, SHUT_RDWR); /* ends the multishot RECV */
    maybe_close(fd);
}

static void on_recv(int fd, int res, unsigned flags)
{
    struct conn *c = &conns[fd];
    if (res > 0) {
        int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
        bid_len[bid] = (uint32_t)res;
        next_bid[bid] = -1;
        if (c->dead) {
            give_buffer(bid);
        } else {
            if (c->tail >= 0) next_bid[c->tail] = bid;
            else c->head = bid;
            c->tail = bid;
            if (!c->send_on) send_head(fd);
        }
    }
    if (flags & IORING_CQE_F_MORE)
        return;
    c->recv_on = 0;
    if (res == -ENOBUFS && !c->dead) {
        c->starved = 1;    /* re-armed when buffers come back */
        starved[nstarved++] = fd;
    } else if (res > 0 && !c->dead) {
        arm_recv(fd);      /* the kernel ended it (a full CQ ring): on again */
    } else {
        kill_conn(fd);     /* end of stream or an error */
    }
}

static void on_send(int fd, int res)
{
    struct conn *c = &conns[fd];
    c->send_on = 0;
    if (res < 0) {
        kill_conn(fd);
        return;
    }
    c->off += (uint32_t)res;
    if (c->off == bid_len[c->head]) {
        int done = c->head;
        c->head = next_bid[done];
        if (c->head < 0) c->tail = -1;
        c->off = 0;
        give_buffer(done);
    }
    if (c->dead)
        maybe_close(fd);
    else if (c->head >= 0)
        send_head(fd);
}

static void on_accept(int listener, int res, unsigned flags)
{
    if (res >= 0) {
        int one = 1;
        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[res] = (struct conn){.head = -1, .tail = -1};
        arm_recv(res);
    }
    if (!(flags & IORING_CQE_F_MORE))
        arm_accept(listener); /* EMFILE and the like end it: on again */
}

static void setup_ring(void)
{
    struct io_uring_params p;
    unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, 0};
    for (unsigned i = 0; i < 2; i++) {
        memset(&p, 0, sizeof p);
        p.flags = tries[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = 4 * ENTRIES;
        ring_fd = (int)syscall(SYS_io_uring_setup, ENTRIES, &p);
        if (ring_fd >= 0) break;
    }
    if (ring_fd < 0) die("io_uring_setup");
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) { fprintf(stderr, "kernel too old\n"); exit(1); }
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t size = sq_size > cq_size ? sq_size : cq_size;
    char *sq = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd,
                    IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED) die("mmap");
    sqes = mmap(NULL, p.sq_entries * sizeof *sqes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                ring_fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) die("mmap");
    sq_tail = (unsigned *)(sq + p.sq_off.tail);
    sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    sq_array = (unsigned *)(sq + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; i++) sq_array[i] = i;
    sq_local_tail = *sq_tail;
    cq_head = (unsigned *)(sq + p.cq_off.head);
    cq_tail = (unsigned *)(sq + p.cq_off.tail);
    cq_mask = (unsigned *)(sq + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);

    enter_fd = ring_fd;
    struct io_uring_rsrc_update reg = {.offset = -1U, .data = (uint64_t)ring_fd};
    if (syscall(SYS_io_uring_register, ring_fd, IORING_REGISTER_RING_FDS, &reg, 1) == 1) {
        enter_fd = (int)reg.offset;
        enter_flags = IORING_ENTER_REGISTERED_RING;
    }

    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    buffers = mmap(NULL, (size_t)NBUF * BUF_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED || buffers == MAP_FAILED) die("mmap");
    struct io_uring_buf_reg breg = {.ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = NBUF,
                                    .bgid = BGID};
    if (syscall(SYS_io_uring_register, ring_fd, IORING_REGISTER_PBUF_RING, &breg, 1) < 0)
        die("IORING_REGISTER_PBUF_RING");
    for (int b = 0; b < NBUF; b++) give_buffer(b);
}

int main(int argc, char **argv)
{
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else { fprintf(stderr, "usage: c_uring [--port P]\n"); return 64; }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    size_t max_fds = rl.rlim_max == RLIM_INFINITY ? 1 << 20 : (size_t)rl.rlim_max;
    conns = calloc(max_fds, sizeof *conns);
    starved = calloc(max_fds, sizeof *starved);
    if (!conns || !starved) die("calloc");
    signal(SIGPIPE, SIG_IGN);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(listener, BACKLOG) < 0) die("listen");
    socklen_t len = sizeof sa;
    getsockname(listener, (struct sockaddr *)&sa, &len);

    setup_ring();
    arm_accept(listener);
    printf("READY %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    for (;;) {
        if (enter(to_submit, 1) < 0 && errno != EINTR && errno != EBUSY && errno != EAGAIN)
            die("io_uring_enter");
        to_submit = 0;
        unsigned head = *cq_head, tail = __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE);
        int returned = 0;
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &cqes[head & *cq_mask];
            int op = (int)(cqe->user_data & 0xff), fd = (int)(uint32_t)(cqe->user_data >> 8);
            if (op == OP_RECV) on_recv(fd, cqe->res, cqe->flags);
            else if (op == OP_SEND) { on_send(fd, cqe->res); returned = 1; }
            else on_accept(fd, cqe->res, cqe->flags);
        }
        __atomic_store_n(cq_head, head, __ATOMIC_RELEASE);
        if (returned && nstarved) {
            for (size_t i = 0; i < nstarved; i++) {
                int fd = starved[i];
                if (conns[fd].starved && !conns[fd].dead) arm_recv(fd); /* not closed since */
                conns[fd].starved = 0;
            }
            nstarved = 0;
        }
    }
}
