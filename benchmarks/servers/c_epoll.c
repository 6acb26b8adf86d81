/* c_epoll.c - the ceiling: a plain single-threaded epoll echo server in C.
 *
 * Level-triggered, one recv() per readable event into a 64 KiB stack
 * buffer, echoed at once with send(). What the kernel does not take is kept
 * per connection; until it is written the connection is not read (EPOLLOUT
 * instead of EPOLLIN), so a fast sender meets TCP backpressure, not an
 * ever-growing buffer. Same listener setup as the Python servers: backlog
 * 4096, TCP_NODELAY on every accepted socket.
 *
 * usage: c_epoll [--port P]   prints "READY <port>" once listening.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BACKLOG 4096
#define BUF_SIZE 65536

struct pending {  /* bytes the kernel did not take yet */
    char *data;
    size_t off, len;
};

static struct pending *pending; /* indexed by descriptor */
static int epfd;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void watch(int fd, unsigned events, int op)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epfd, op, fd, &ev) < 0) die("epoll_ctl");
}

static void drop(int fd)
{
    free(pending[fd].data);
    pending[fd] = (struct pending){0};
    close(fd); /* also leaves the epoll set */
}

/* Write out what is pending on fd; 1 when all is written, 0 if not yet, -1 on error. */
static int flush_pending(int fd)
{
    struct pending *p = &pending[fd];
    while (p->off < p->len) {
        ssize_t n = send(fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL);
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        p->off += (size_t)n;
    }
    free(p->data);
    *p = (struct pending){0};
    return 1;
}

static void on_readable(int fd)
{
    static char buf[BUF_SIZE];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(fd);
        return;
    }
    if (n < 0) return;
    ssize_t w = send(fd, buf, (size_t)n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN) { drop(fd); return; }
        w = 0;
    }
    if (w == n) return;
    struct pending *p = &pending[fd];
    p->len = (size_t)(n - w);
    p->off = 0;
    p->data = malloc(p->len);
    if (!p->data) die("malloc");
    memcpy(p->data, buf + w, p->len);
    watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
}

static void on_writable(int fd)
{
    int r = flush_pending(fd);
    if (r < 0) drop(fd);
    else if (r > 0) watch(fd, EPOLLIN, EPOLL_CTL_MOD);
}

static void accept_all(int listener)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN) perror("accept4"); /* EMFILE: retried on next event */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
}

int main(int argc, char **argv)
{
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else { fprintf(stderr, "usage: c_epoll [--port P]\n"); return 64; }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    size_t max_fds = rl.rlim_max == RLIM_INFINITY ? 1 << 20 : (size_t)rl.rlim_max;
    pending = calloc(max_fds, sizeof *pending);
    if (!pending) die("calloc");
    signal(SIGPIPE, SIG_IGN);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(listener, BACKLOG) < 0) die("listen");
    socklen_t len = sizeof sa;
    getsockname(listener, (struct sockaddr *)&sa, &len);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    watch(listener, EPOLLIN, EPOLL_CTL_ADD);
    printf("READY %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == listener) accept_all(listener);
            else if (evs[i].events & EPOLLOUT) on_writable(fd);
            else on_readable(fd);
        }
    }
}
