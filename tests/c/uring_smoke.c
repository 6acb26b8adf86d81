/* Smoke test of gaio's io_uring kernel layer (src/native/uring_ring.c) on
 * its own, without Python: recv/send on a socketpair, a buffer-select recv,
 * a timed wait, cancelling an in-flight recv, and more SQEs than the
 * submission ring holds. With the argument "multishot": a multishot recv on
 * an incremental buffer ring, sendmsg, one-shot and multishot accepts.
 * Exit 0 = pass, 77 = io_uring (or, for "multishot", a feature it needs) is
 * missing here (skip; the reason is printed), anything else = failure.
 * Built and run by tests/test_uring_kernel_layer.py.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "uring_ring.h"

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static struct gaio__uring ring;

/* Waits for one completion (at most 2 s) and returns a copy of it. */
static struct gaio__io_uring_cqe wait_one(void)
{
    uint32_t first;
    while (gaio__uring_cq_ready(&ring, &first) == 0) {
        int ret = gaio__uring_submit_and_wait(&ring, 2000000000LL);
        CHECK(ret >= 0 || ret == -EINTR);
    }
    struct gaio__io_uring_cqe cqe = *gaio__uring_cqe_at(&ring, first);
    gaio__uring_cq_advance(&ring, 1);
    return cqe;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_send_recv(int a, int b)
{
    char out[6] = "hello", in[16] = {0};
    gaio__uring_prep_send(gaio__uring_get_sqe(&ring), a, out, 5, 1);
    gaio__uring_prep_recv(gaio__uring_get_sqe(&ring), b, in, sizeof in, 2);
    struct gaio__io_uring_cqe c1 = wait_one(), c2 = wait_one();
    struct gaio__io_uring_cqe *send = c1.user_data == 1 ? &c1 : &c2;
    struct gaio__io_uring_cqe *recv = c1.user_data == 2 ? &c1 : &c2;
    CHECK(send->user_data == 1 && send->res == 5);
    CHECK(recv->user_data == 2 && recv->res == 5);
    CHECK(memcmp(in, "hello", 5) == 0);
}

static void test_buffer_select(int a, int b)
{
    char reason[GAIO__URING_REASON_MAX];
    struct gaio__uring_bufring bufs;
    CHECK(gaio__uring_bufring_open(&ring, &bufs, 7, 4, 64, 0, reason) == 0);
    /* armed before any data: the kernel polls, no buffer is taken yet */
    gaio__uring_prep_recv_select(gaio__uring_get_sqe(&ring), b, 64, 7, 3);
    CHECK(gaio__uring_submit(&ring) == 1);
    CHECK(write(a, "world", 5) == 5);
    struct gaio__io_uring_cqe cqe = wait_one();
    CHECK(cqe.user_data == 3 && cqe.res == 5);
    CHECK(cqe.flags & GAIO__IORING_CQE_F_BUFFER);
    uint16_t id = (uint16_t)(cqe.flags >> GAIO__IORING_CQE_BUFFER_SHIFT);
    CHECK(id < 4);
    CHECK(memcmp(gaio__uring_bufring_data(&bufs, id), "world", 5) == 0);
    gaio__uring_bufring_recycle(&bufs, id);

    /* an empty buffer ring: the read completes with ENOBUFS, never blocks */
    for (int i = 0; i < 4; i++) {
        CHECK(write(a, "x", 1) == 1);
        gaio__uring_prep_recv_select(gaio__uring_get_sqe(&ring), b, 64, 7, 10 + i);
        cqe = wait_one();
        CHECK(cqe.res == 1 && (cqe.flags & GAIO__IORING_CQE_F_BUFFER));
    }
    CHECK(write(a, "y", 1) == 1);
    gaio__uring_prep_recv_select(gaio__uring_get_sqe(&ring), b, 64, 7, 20);
    cqe = wait_one();
    CHECK(cqe.user_data == 20 && cqe.res == -ENOBUFS);
    char drain[8];
    CHECK(read(b, drain, sizeof drain) == 1);
    gaio__uring_bufring_close(&ring, &bufs);
}

/* Incremental buffers (6.12): two reads share one buffer, back to back. */
static void test_incremental_buffers(int a, int b)
{
    char reason[GAIO__URING_REASON_MAX];
    struct gaio__uring_bufring bufs;
    if (gaio__uring_bufring_open(&ring, &bufs, 8, 4, 64, GAIO__IOU_PBUF_RING_INC, reason) < 0) {
        printf("note: %s\n", reason);
        return;
    }
    const char *words[2] = {"abc", "defgh"};
    uint32_t offset = 0;
    for (int i = 0; i < 2; i++) {
        CHECK(write(a, words[i], strlen(words[i])) == (ssize_t)strlen(words[i]));
        gaio__uring_prep_recv_select(gaio__uring_get_sqe(&ring), b, 64, 8, 40 + i);
        struct gaio__io_uring_cqe cqe = wait_one();
        CHECK(cqe.res == (int32_t)strlen(words[i]));
        CHECK(cqe.flags & GAIO__IORING_CQE_F_BUFFER);
        CHECK(cqe.flags & GAIO__IORING_CQE_F_BUF_MORE);
        CHECK((cqe.flags >> GAIO__IORING_CQE_BUFFER_SHIFT) == 0);
        CHECK(memcmp(gaio__uring_bufring_data(&bufs, 0) + offset, words[i], cqe.res) == 0);
        offset += cqe.res;
    }
    gaio__uring_bufring_close(&ring, &bufs);
}

static void test_timed_wait(void)
{
    double start = now();
    int ret = gaio__uring_submit_and_wait(&ring, 50000000LL);
    double elapsed = now() - start;
    CHECK(ret == -ETIME);
    CHECK(elapsed >= 0.049 && elapsed < 1.0);
}

static void test_cancel_in_flight(int b)
{
    char in[16];
    gaio__uring_prep_recv(gaio__uring_get_sqe(&ring), b, in, sizeof in, 30);
    CHECK(gaio__uring_submit(&ring) == 1);
    gaio__uring_prep_cancel(gaio__uring_get_sqe(&ring), 30, 31);
    struct gaio__io_uring_cqe c1 = wait_one(), c2 = wait_one();
    struct gaio__io_uring_cqe *recv = c1.user_data == 30 ? &c1 : &c2;
    struct gaio__io_uring_cqe *cancel = c1.user_data == 31 ? &c1 : &c2;
    CHECK(recv->user_data == 30 && recv->res == -ECANCELED);
    CHECK(cancel->user_data == 31 && cancel->res == 0);
}

static void test_sq_full(void)
{
    unsigned total = ring.sq_entries * 3 + 1, seen = 0;
    for (unsigned i = 0; i < total; i++) {
        struct gaio__io_uring_sqe *sqe = gaio__uring_get_sqe(&ring);
        if (sqe == NULL) { /* full: hand what we have to the kernel, then retry */
            CHECK(gaio__uring_submit(&ring) > 0);
            sqe = gaio__uring_get_sqe(&ring);
        }
        CHECK(sqe != NULL);
        gaio__uring_prep_nop(sqe, 1000 + i);
    }
    while (seen < total) {
        struct gaio__io_uring_cqe cqe = wait_one();
        CHECK(cqe.res == 0 && cqe.user_data >= 1000 && cqe.user_data < 1000 + total);
        seen++;
        if (gaio__uring_cq_overflowed(&ring))
            gaio__uring_submit_and_wait(&ring, 0);
    }
}

/* A multishot recv: one CQE per arrival with F_MORE, each in the next part
 * of the same incremental buffer; cancelled, its last CQE has no F_MORE. */
static void test_recv_multishot(int a, int b)
{
    char reason[GAIO__URING_REASON_MAX];
    struct gaio__uring_bufring bufs;
    CHECK(gaio__uring_bufring_open(&ring, &bufs, 9, 4, 64, GAIO__IOU_PBUF_RING_INC, reason) == 0);
    gaio__uring_prep_recv_multishot(gaio__uring_get_sqe(&ring), b, 9, 50);
    CHECK(gaio__uring_submit(&ring) == 1);
    const char *words[3] = {"one", "two", "three"};
    uint32_t offset = 0;
    for (int i = 0; i < 3; i++) {
        CHECK(write(a, words[i], strlen(words[i])) == (ssize_t)strlen(words[i]));
        struct gaio__io_uring_cqe cqe = wait_one();
        CHECK(cqe.user_data == 50 && cqe.res == (int32_t)strlen(words[i]));
        CHECK((cqe.flags & GAIO__IORING_CQE_F_MORE) && (cqe.flags & GAIO__IORING_CQE_F_BUFFER));
        uint16_t id = (uint16_t)(cqe.flags >> GAIO__IORING_CQE_BUFFER_SHIFT);
        CHECK(memcmp(gaio__uring_bufring_data(&bufs, id) + offset, words[i], cqe.res) == 0);
        offset += (uint32_t)cqe.res;
    }
    gaio__uring_prep_cancel(gaio__uring_get_sqe(&ring), 50, 51);
    int ended = 0, cancelled = 0;
    while (!ended || !cancelled) {
        struct gaio__io_uring_cqe cqe = wait_one();
        if (cqe.user_data == 51) {
            CHECK(cqe.res == 0);
            cancelled = 1;
        } else {
            CHECK(cqe.user_data == 50 && cqe.res == -ECANCELED);
            CHECK(!(cqe.flags & GAIO__IORING_CQE_F_MORE));
            ended = 1;
        }
    }
    gaio__uring_bufring_close(&ring, &bufs);
}

static void test_sendmsg(int a, int b)
{
    char x[] = "ab", y[] = "", z[] = "cde", in[16] = {0};
    struct iovec iov[3] = {{x, 2}, {y, 0}, {z, 3}};
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = 3;
    gaio__uring_prep_sendmsg(gaio__uring_get_sqe(&ring), a, &msg, 60);
    struct gaio__io_uring_cqe cqe = wait_one();
    CHECK(cqe.user_data == 60 && cqe.res == 5);
    CHECK(read(b, in, sizeof in) == 5 && memcmp(in, "abcde", 5) == 0);
}

/* One-shot accept, then a multishot one for two more connections; the
 * accepted descriptors are blocking and close-on-exec. */
static void test_accept(void)
{
    int lis = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    CHECK(lis >= 0 && bind(lis, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(lis, 8) == 0);
    CHECK(getsockname(lis, (struct sockaddr *)&addr, &len) == 0);
    int clients[3];
    for (int i = 0; i < 3; i++) {
        clients[i] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(clients[i] >= 0 && connect(clients[i], (struct sockaddr *)&addr, sizeof addr) == 0);
    }
    gaio__uring_prep_accept(gaio__uring_get_sqe(&ring), lis, SOCK_CLOEXEC, 70);
    struct gaio__io_uring_cqe cqe = wait_one();
    CHECK(cqe.user_data == 70 && cqe.res >= 0 && !(cqe.flags & GAIO__IORING_CQE_F_MORE));
    CHECK((fcntl(cqe.res, F_GETFL) & O_NONBLOCK) == 0 && (fcntl(cqe.res, F_GETFD) & FD_CLOEXEC));
    close(cqe.res);
    gaio__uring_prep_accept_multishot(gaio__uring_get_sqe(&ring), lis, SOCK_CLOEXEC, 71);
    for (int i = 0; i < 2; i++) {
        cqe = wait_one();
        CHECK(cqe.user_data == 71 && cqe.res >= 0 && (cqe.flags & GAIO__IORING_CQE_F_MORE));
        close(cqe.res);
    }
    gaio__uring_prep_cancel(gaio__uring_get_sqe(&ring), 71, 72);
    for (int i = 0; i < 2; i++) {
        cqe = wait_one();
        CHECK(cqe.user_data == 72 ? cqe.res == 0
                                  : cqe.user_data == 71 && cqe.res == -ECANCELED &&
                                        !(cqe.flags & GAIO__IORING_CQE_F_MORE));
    }
    for (int i = 0; i < 3; i++)
        close(clients[i]);
    close(lis);
}

static int multishot_main(int a, int b)
{
    static const struct { uint8_t op; const char *says; } dated[] = {
        {GAIO__IORING_OP_SEND_ZC, "multishot recv (Linux 6.0)"},
        {GAIO__IORING_OP_SOCKET, "multishot accept (Linux 5.19)"},
        {GAIO__IORING_OP_ACCEPT, "IORING_OP_ACCEPT"},
        {GAIO__IORING_OP_SENDMSG, "IORING_OP_SENDMSG"},
    };
    char reason[GAIO__URING_REASON_MAX];
    struct gaio__uring_bufring probe;
    for (size_t i = 0; i < sizeof dated / sizeof dated[0]; i++) {
        if (!gaio__uring_has_op(&ring, dated[i].op)) {
            printf("skip: this kernel lacks %s\n", dated[i].says);
            return 77;
        }
    }
    if (gaio__uring_bufring_open(&ring, &probe, 10, 4, 64, GAIO__IOU_PBUF_RING_INC, reason) < 0) {
        printf("skip: %s\n", reason);
        return 77;
    }
    gaio__uring_bufring_close(&ring, &probe);
    test_recv_multishot(a, b);
    test_sendmsg(a, b);
    test_accept();
    printf("ok: multishot recv, sendmsg, accept, multishot accept\n");
    return 0;
}

int main(int argc, char **argv)
{
    char reason[GAIO__URING_REASON_MAX];
    if (gaio__uring_open(&ring, 8, 16, GAIO__URING_TASKRUN_SINGLE_THREAD, reason) < 0) {
        printf("skip: %s\n", reason);
        return 77;
    }
    /* a SINGLE_THREAD ring opens disabled: this thread becomes its issuer */
    if (ring.setup_flags & GAIO__IORING_SETUP_R_DISABLED)
        CHECK(gaio__uring_enable(&ring) == 0);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    if (argc > 1 && strcmp(argv[1], "multishot") == 0) {
        int rc = multishot_main(sv[0], sv[1]);
        close(sv[0]);
        close(sv[1]);
        gaio__uring_close(&ring);
        return rc;
    }
    test_send_recv(sv[0], sv[1]);
    test_buffer_select(sv[0], sv[1]);
    test_incremental_buffers(sv[0], sv[1]);
    test_timed_wait();
    test_cancel_in_flight(sv[1]);
    test_sq_full();
    printf("ok: setup flags 0x%x features 0x%x sq %u cq %u\n", ring.setup_flags,
           ring.features, ring.sq_entries, ring.cq_entries);
    close(sv[0]);
    close(sv[1]);
    gaio__uring_close(&ring);
    return 0;
}
