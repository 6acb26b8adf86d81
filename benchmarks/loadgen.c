/* loadgen.c - load generator for gaio's echo-server benchmarks.
 *
 * One thread, one epoll set, level-triggered: a request is written with one
 * send(), its echo read with as few recv() calls as the kernel allows, so the
 * client spends its core on the server, not on itself. Built by run.py with
 * the system cc (C11, Linux only).
 *
 * Modes (one JSON line on stdout at the end):
 *   rr      N connections, each sends an S-byte request and waits for the full
 *           echo before sending the next (--depth D keeps D requests in flight
 *           per connection). --rate R offers R requests/s in total on a fixed
 *           schedule instead; latency is then measured from the scheduled
 *           send time, so a server that falls behind is not flattered
 *           (no coordinated omission).
 *   stream  N connections send 64 KiB blocks continuously, at most --window
 *           bytes unanswered per connection, and read the echo: MB/s.
 *   burst   N connections (8192) opened at once, each sends S bytes (1 KiB),
 *           reads the echo and closes: seconds until all are done.
 *   idle    N connections, each serviced once (one S-byte echo) then held
 *           open; prints READY and waits until stdin closes or a signal.
 *
 * Every echoed byte is checked against a pattern derived from the
 * connection id and the byte's offset in the stream; a mismatch fails loudly
 * (message on stderr, "error" in the JSON, exit status 2).
 *
 * With --server-pid the server's CPU time over the measured window is
 * reported, so CPU per message covers exactly the messages counted: summed
 * over its threads' /proc/PID/task/TID/schedstat (nanoseconds) for rr and
 * stream, where no connection (hence no thread) ends inside the window;
 * utime+stime from /proc/PID/stat (10 ms ticks, exited threads included)
 * for burst and idle. The client's own CPU time (getrusage) is reported too:
 * client_busy near 1.0 means the client, not the server, was the bottleneck.
 *
 * Built with -DLOADGEN_TLS and loadgen_tls.c (OpenSSL) it is tls_loadgen:
 * the same rr and stream over TLS. Every connection is handshaken before the
 * clock starts (the handshakes are not measured), then requests and echoes
 * are plaintext through the session; --cafile makes it verify the server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef LOADGEN_TLS
#include "loadgen_tls.h"
#endif

enum mode { MODE_RR, MODE_STREAM, MODE_BURST, MODE_IDLE };
static const char *const mode_names[] = {"rr", "stream", "burst", "idle"};

static struct options {
    enum mode mode;
    const char *host;
    int port;
    int conns;
    size_t size;          /* request size (rr, burst, idle) */
    int depth;            /* requests in flight per connection (rr) */
    double rate;          /* offered requests/s in total; 0 = closed loop */
    double duration;      /* measured seconds */
    double warmup;        /* seconds run before measuring */
    double timeout;       /* burst/idle: give up after this many seconds */
    size_t window;        /* stream: unanswered bytes allowed per connection */
    int connect_batch;    /* idle: connections being set up at once */
    int server_pid;
    const char *cafile;   /* tls_loadgen: verify the server with this CA */
} opt = {
    .mode = MODE_RR, .host = "127.0.0.1", .port = 0, .conns = 50, .size = 64,
    .depth = 1, .rate = 0, .duration = 5, .warmup = 1, .timeout = 60,
    .window = 256 * 1024, .connect_batch = 512, .server_pid = 0,
};

/* ---- the byte pattern ------------------------------------------------- */

/* Byte i of connection c's stream is pattern[(c * PATTERN_STRIDE + i) %
 * PATTERN_PERIOD]. The table is PATTERN_PERIOD + MAX_CHUNK long so any chunk
 * up to MAX_CHUNK bytes is one contiguous slice: sending and checking are a
 * plain send() and memcmp() with no copying. */
#define PATTERN_PERIOD 65521u /* prime */
#define PATTERN_STRIDE 7919u
#define MAX_CHUNK (4u << 20)
#define RECV_BUF (256u << 10)
#define STREAM_BLOCK (64u << 10)

static uint8_t *pattern;

static void pattern_init(void)
{
    pattern = malloc(PATTERN_PERIOD + MAX_CHUNK);
    if (!pattern) { perror("malloc"); exit(1); }
    for (uint32_t i = 0; i < PATTERN_PERIOD + MAX_CHUNK; i++) {
        uint32_t k = (i % PATTERN_PERIOD) * 2654435761u;
        pattern[i] = (uint8_t)(k >> 24);
    }
}

static inline const uint8_t *pattern_at(uint32_t conn_id, uint64_t offset)
{
    return pattern + (conn_id * (uint64_t)PATTERN_STRIDE + offset) % PATTERN_PERIOD;
}

/* ---- clocks, CPU time ------------------------------------------------- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
         + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime + stime of opt.server_pid in seconds, or -1 if unknown. Counts
 * threads that have exited too, but only in whole clock ticks (10 ms). */
static double server_cpu_ticks_s(void)
{
    if (opt.server_pid <= 0) return -1;
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", opt.server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    /* The command name (field 2) may hold spaces: count fields after ')'. */
    char *p = strrchr(line, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

/* CPU time of opt.server_pid's live threads in seconds, to the nanosecond
 * (first field of /proc/PID/task/TID/schedstat), or -1 if unknown. Threads
 * that exit are lost, so this is only used over windows where the server
 * keeps all its connections (rr, stream). */
static double server_cpu_precise_s(void)
{
    if (opt.server_pid <= 0) return -1;
    char path[320];
    snprintf(path, sizeof path, "/proc/%d/task", opt.server_pid);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    unsigned long long total = 0;
    int found = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", opt.server_pid, de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long long ns;
        if (fscanf(f, "%llu", &ns) == 1) {
            total += ns;
            found++;
        }
        fclose(f);
    }
    closedir(dir);
    return found ? (double)total / 1e9 : -1;
}

/* ---- latency histogram ------------------------------------------------ */

/* Log-linear buckets (32 per power of two): < 3% error, fixed 16 KiB. */
#define SUB_BITS 5
#define HIST_BUCKETS (64 << SUB_BITS)
static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count, hist_max;

static inline void hist_add(uint64_t v)
{
    unsigned idx;
    if (v < (1u << SUB_BITS)) {
        idx = (unsigned)v;
    } else {
        unsigned shift = 63 - __builtin_clzll(v) - SUB_BITS;
        idx = ((shift + 1) << SUB_BITS) + (unsigned)((v >> shift) & ((1u << SUB_BITS) - 1));
    }
    hist[idx]++;
    hist_count++;
    if (v > hist_max) hist_max = v;
}

static double hist_bucket_mid(unsigned idx)
{
    if (idx < (1u << SUB_BITS)) return idx;
    unsigned shift = (idx >> SUB_BITS) - 1;
    uint64_t low = ((uint64_t)((idx & ((1u << SUB_BITS) - 1)) | (1u << SUB_BITS))) << shift;
    return (double)low + (double)(1ull << shift) / 2;
}

static double hist_percentile(double p)
{
    if (!hist_count) return 0;
    uint64_t target = (uint64_t)ceil(p * (double)hist_count), seen = 0;
    if (target < 1) target = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= target) return hist_bucket_mid(i);
    }
    return (double)hist_max;
}

/* ---- connections ------------------------------------------------------ */

#define STAMP_RING 1024 /* rr: request times remembered per connection */

struct conn {
    int fd;
    uint32_t id;
    uint64_t sent;       /* bytes written so far */
    uint64_t to_send;    /* bytes that should have been written by now */
    uint64_t received;   /* bytes echoed back and checked */
    uint64_t issued;     /* rr: requests handed to the socket */
    uint64_t done;       /* rr: requests whose echo is complete */
    uint32_t owed;       /* rr --rate: scheduled but held back by --depth */
    bool want_out;       /* EPOLLOUT is in the interest set */
    bool open;
    uint64_t *stamps;    /* rr: start time of request k at [k % STAMP_RING] */
#ifdef LOADGEN_TLS
    struct tls_session *tls;
#endif
};

static struct conn *conns;
static int epfd;
static const uint64_t STDIN_TAG = UINT64_MAX;

static struct {
    bool measuring;
    uint64_t msgs;       /* requests completed inside the window */
    uint64_t bytes;      /* echoed bytes received inside the window */
    uint64_t dropped;    /* rr --rate: schedule overflowed a connection's ring */
    uint64_t peer_closed;
    uint64_t msgs_total; /* every request completed, warmup included */
} stats;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loadgen: FAILED: %s\n", msg);
    /* Escape the message for JSON the simple way: it never holds quotes. */
    printf("{\"mode\":\"%s\",\"error\":\"%s\"}\n", mode_names[opt.mode], msg);
    fflush(stdout);
    exit(2);
}

static void epoll_set(struct conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u64 = c->id};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0)
        fail("epoll_ctl(conn %u): %s", c->id, strerror(errno));
}

static void want_output(struct conn *c, bool on)
{
    if (c->want_out == on) return;
    c->want_out = on;
    epoll_set(c, EPOLLIN | (on ? EPOLLOUT : 0), EPOLL_CTL_MOD);
}

static struct sockaddr_in server_addr(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(opt.port)};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) fail("bad host %s", opt.host);
    return sa;
}

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Local ports are chosen here, not by the kernel: with thousands of
 * connections open, connect()'s own search for a free ephemeral port
 * (__inet_hash_connect) walks the used ports and made setting up 19,800
 * idle connections take seconds of client CPU. Ports 10000-32767 lie below
 * the usual ephemeral range, so they rarely meet other programs' sockets;
 * any port that is taken is skipped. */
#define LOCAL_PORT_LOW 10000
#define LOCAL_PORT_HIGH 32767
static unsigned next_local_port;

/* A TCP_NODELAY socket connected (or connecting, if !blocking) to the server. */
static int open_connection(const struct sockaddr_in *server, bool blocking)
{
    if (!next_local_port)
        next_local_port = LOCAL_PORT_LOW + (unsigned)getpid() % (LOCAL_PORT_HIGH - LOCAL_PORT_LOW);
    for (int attempt = 0; attempt < 4096; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) fail("socket: %s", strerror(errno));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr = server->sin_addr,
                                    .sin_port = htons((unsigned short)next_local_port)};
        if (++next_local_port > LOCAL_PORT_HIGH) next_local_port = LOCAL_PORT_LOW;
        if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
            close(fd);
            continue;
        }
        if (!blocking) set_nonblocking(fd);
        if (connect(fd, (const struct sockaddr *)server, sizeof *server) == 0
            || (!blocking && errno == EINPROGRESS)) {
            if (blocking) set_nonblocking(fd);
            return fd;
        }
        int err = errno;
        close(fd);
        if (err != EADDRNOTAVAIL && err != EADDRINUSE) /* else: 4-tuple taken, next port */
            fail("connect: %s", strerror(err));
    }
    fail("connect: no free local port in %d-%d", LOCAL_PORT_LOW, LOCAL_PORT_HIGH);
}

/* ---- the transport: the socket itself, or a TLS session over it -------- */

static ssize_t conn_send(struct conn *c, const void *buf, size_t n)
{
#ifdef LOADGEN_TLS
    return tls_send(c->tls, buf, n);
#else
    return send(c->fd, buf, n, MSG_NOSIGNAL);
#endif
}

static ssize_t conn_recv(struct conn *c, void *buf, size_t n)
{
#ifdef LOADGEN_TLS
    ssize_t got = tls_recv(c->tls, buf, n);
    if (got < 0 && errno == EPROTO) fail("conn %u: %s", c->id, tls_last_error());
    return got;
#else
    return recv(c->fd, buf, n, 0);
#endif
}

/* Bytes already taken from the socket and not yet read: epoll will not
 * report them. */
static bool conn_pending(struct conn *c)
{
#ifdef LOADGEN_TLS
    return tls_pending(c->tls);
#else
    (void)c;
    return false;
#endif
}

/* Write what is owed; false if the peer is gone. */
static bool flush_output(struct conn *c)
{
    while (c->sent < c->to_send) {
        uint64_t left = c->to_send - c->sent;
        size_t n = left > MAX_CHUNK ? MAX_CHUNK : (size_t)left;
        ssize_t w = conn_send(c, pattern_at(c->id, c->sent), n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                want_output(c, true);
                return true;
            }
            if (errno == EINTR) continue;
            return false;
        }
        c->sent += (uint64_t)w;
    }
    want_output(c, false);
    return true;
}

static uint8_t recv_buf[RECV_BUF];

/* Read once and check the bytes: returns bytes read, 0 at EOF, -1 if none yet. */
static ssize_t read_and_check(struct conn *c)
{
    ssize_t n = conn_recv(c, recv_buf, sizeof recv_buf);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
        fail("conn %u: recv: %s", c->id, strerror(errno));
    }
    if (n == 0) return 0;
    if (c->received + (uint64_t)n > c->sent)
        fail("conn %u: %zd bytes echoed at offset %llu but only %llu sent",
             c->id, n, (unsigned long long)c->received, (unsigned long long)c->sent);
    const uint8_t *want = pattern_at(c->id, c->received);
    if (memcmp(recv_buf, want, (size_t)n) != 0) {
        size_t i = 0;
        while (recv_buf[i] == want[i]) i++;
        fail("conn %u: echoed byte at offset %llu is 0x%02x, expected 0x%02x",
             c->id, (unsigned long long)(c->received + i), recv_buf[i], want[i]);
    }
    c->received += (uint64_t)n;
    if (stats.measuring) stats.bytes += (uint64_t)n;
    return n;
}

#ifdef LOADGEN_TLS
static int epoll_wait_ns(struct epoll_event *evs, int max, int64_t timeout_ns);
static double handshake_s;

/* The next step of c's handshake; false while it is not done. Once done,
 * what arrives before the first request (TLS 1.3 session tickets) is read,
 * or level-triggered epoll would report it until every handshake is done. */
static bool handshake_step(struct conn *c, bool done)
{
    if (done) {
        ssize_t n = conn_recv(c, recv_buf, sizeof recv_buf);
        if (n == 0) fail("conn %u: server closed the connection after the handshake", c->id);
        if (n > 0) fail("conn %u: %zd bytes before any request", c->id, n);
        return true;
    }
    bool wants_write = false;
    int r = tls_handshake(c->tls, &wants_write);
    if (r < 0) fail("conn %u: %s", c->id, tls_last_error());
    want_output(c, r == 0 && wants_write);
    return r == 1;
}

/* Every connection's handshake, all in flight at once, before the clock
 * starts: what is measured is the traffic of handshaken sessions. */
static void handshake_all(void)
{
    uint64_t t0 = now_ns(), give_up = t0 + (uint64_t)(opt.timeout * 1e9);
    bool *done = calloc((size_t)opt.conns, sizeof *done);
    if (!done) fail("out of memory");
    int left = opt.conns;
    for (int i = 0; i < opt.conns; i++) {
        conns[i].tls = tls_attach(conns[i].fd);
        if ((done[i] = handshake_step(&conns[i], false))) left--;
    }
    struct epoll_event evs[512];
    while (left > 0) {
        uint64_t now = now_ns();
        if (now >= give_up)
            fail("only %d of %d handshakes done within %.0f s", opt.conns - left, opt.conns,
                 opt.timeout);
        int n = epoll_wait_ns(evs, 512, (int64_t)(give_up - now));
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u64];
            bool was_done = done[c->id];
            if ((done[c->id] = handshake_step(c, was_done)) && !was_done) left--;
        }
    }
    free(done);
    handshake_s = (double)(now_ns() - t0) / 1e9;
}
#endif

/* Connect every connection with a blocking connect() (rr, stream). */
static void connect_all_blocking(void)
{
    struct sockaddr_in sa = server_addr();
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        c->fd = open_connection(&sa, true);
        c->open = true;
        epoll_set(c, EPOLLIN, EPOLL_CTL_ADD);
    }
#ifdef LOADGEN_TLS
    handshake_all();
#endif
}

static int epoll_wait_ns(struct epoll_event *evs, int max, int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
    static bool no_pwait2;
    if (!no_pwait2) {
        struct timespec ts, *tsp = NULL;
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            tsp = &ts;
        }
        int n = (int)syscall(SYS_epoll_pwait2, epfd, evs, max, tsp, NULL, 8);
        if (n >= 0 || errno != ENOSYS) return n;
        no_pwait2 = true;
    }
#endif
    int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
    return epoll_wait(epfd, evs, max, ms);
}

/* ---- rr --------------------------------------------------------------- */

static void rr_issue(struct conn *c, uint64_t stamp)
{
    c->stamps[c->issued % STAMP_RING] = stamp;
    c->issued++;
    c->to_send += opt.size;
}

/* --rate: one more request is due on c, scheduled at `stamp`. */
static void rr_schedule(struct conn *c, uint64_t stamp)
{
    uint64_t in_flight = c->issued - c->done;
    if (in_flight < (uint64_t)opt.depth) {
        rr_issue(c, stamp);
        if (!flush_output(c)) fail("conn %u: send failed", c->id);
    } else if (in_flight + c->owed < STAMP_RING) {
        c->stamps[(c->issued + c->owed) % STAMP_RING] = stamp;
        c->owed++;
    } else {
        stats.dropped++;
    }
}

static void rr_on_readable(struct conn *c)
{
    ssize_t n = read_and_check(c);
    if (n < 0) return;
    if (n == 0) fail("conn %u: server closed the connection", c->id);
    uint64_t now = now_ns();
    while (c->done < c->issued && c->received >= (c->done + 1) * opt.size) {
        uint64_t started = c->stamps[c->done % STAMP_RING];
        c->done++;
        stats.msgs_total++;
        if (stats.measuring) {
            stats.msgs++;
            hist_add(now - started);
        }
        if (opt.rate > 0) {
            if (c->owed) {
                c->owed--;
                c->issued++; /* its stamp is already in the ring */
                c->to_send += opt.size;
            }
        } else {
            rr_issue(c, now);
        }
    }
    if (!flush_output(c)) fail("conn %u: send failed", c->id);
}

/* ---- stream ----------------------------------------------------------- */

static void stream_top_up(struct conn *c)
{
    /* Keep `window` bytes unanswered, sent in whole 64 KiB blocks. */
    while (c->to_send + STREAM_BLOCK <= c->received + opt.window)
        c->to_send += STREAM_BLOCK;
    if (!flush_output(c)) fail("conn %u: send failed", c->id);
}

static void stream_on_readable(struct conn *c)
{
    ssize_t n = read_and_check(c);
    if (n < 0) return;
    if (n == 0) fail("conn %u: server closed the connection", c->id);
    stream_top_up(c);
}

/* ---- the measured loop for rr and stream ------------------------------ */

static void run_timed(void)
{
    connect_all_blocking();
    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(opt.warmup * 1e9);
    uint64_t measure_to = measure_from + (uint64_t)(opt.duration * 1e9);
    double ns_per_request = opt.rate > 0 ? 1e9 / opt.rate : 0;
    uint64_t scheduled = 0;
    int next_conn = 0;

    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        if (opt.mode == MODE_STREAM) {
            stream_top_up(c);
        } else if (opt.rate == 0) {
            for (int d = 0; d < opt.depth; d++) rr_issue(c, start);
            if (!flush_output(c)) fail("conn %u: send failed", c->id);
        }
    }

    double cpu0 = 0, server0 = 0;
    uint64_t t0 = 0;
    struct epoll_event evs[512];
    for (;;) {
        uint64_t now = now_ns();
        if (!stats.measuring && now >= measure_from) {
            stats.measuring = true;
            t0 = now;
            cpu0 = self_cpu_s();
            server0 = server_cpu_precise_s();
        }
        if (now >= measure_to) break;
        int64_t wait_ns = (int64_t)((stats.measuring ? measure_to : measure_from) - now);
        if (opt.rate > 0) {
            uint64_t due = (uint64_t)((double)(now - start) / ns_per_request) + 1;
            for (; scheduled < due; scheduled++) {
                rr_schedule(&conns[next_conn], start + (uint64_t)(scheduled * ns_per_request));
                if (++next_conn == opt.conns) next_conn = 0;
            }
            int64_t next = (int64_t)(start + (uint64_t)(scheduled * ns_per_request)) - (int64_t)now;
            if (next < wait_ns) wait_ns = next < 0 ? 0 : next;
        }
        int n = epoll_wait_ns(evs, 512, wait_ns);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u64];
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                do {
                    if (opt.mode == MODE_STREAM) stream_on_readable(c);
                    else rr_on_readable(c);
                } while (conn_pending(c));
            }
            if ((evs[i].events & EPOLLOUT) && !flush_output(c))
                fail("conn %u: send failed", c->id);
        }
    }
    uint64_t t1 = now_ns();
    double cpu = self_cpu_s() - cpu0;
    double server1 = server_cpu_precise_s();
    double wall = (double)(t1 - t0) / 1e9;

    printf("{\"mode\":\"%s\",\"conns\":%d,\"size\":%zu,\"depth\":%d,\"rate\":%.0f,"
           "\"duration_s\":%.3f,\"msgs\":%llu,\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,",
           mode_names[opt.mode], opt.conns,
           opt.mode == MODE_STREAM ? (size_t)STREAM_BLOCK : opt.size,
           opt.depth, opt.rate, wall, (unsigned long long)stats.msgs,
           stats.msgs / wall, stats.bytes / wall / 1e6);
    if (opt.mode == MODE_RR)
        printf("\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},"
               "\"dropped\":%llu,",
               hist_percentile(0.50) / 1e3, hist_percentile(0.99) / 1e3,
               hist_percentile(0.999) / 1e3, hist_max / 1e3,
               (unsigned long long)stats.dropped);
    printf("\"client_cpu_s\":%.3f,\"client_busy\":%.3f", cpu, cpu / wall);
#ifdef LOADGEN_TLS
    printf(",\"tls\":\"%s\",\"handshake_s\":%.3f", tls_describe(conns[0].tls), handshake_s);
#endif
    if (server0 >= 0 && server1 >= 0) {
        double scpu = server1 - server0;
        printf(",\"server_cpu_s\":%.3f,\"server_busy\":%.3f", scpu, scpu / wall);
        if (stats.msgs) printf(",\"server_cpu_us_per_msg\":%.3f", scpu / stats.msgs * 1e6);
        if (stats.bytes) printf(",\"server_cpu_us_per_mb\":%.1f", scpu / (stats.bytes / 1e6) * 1e6);
    }
    printf(",\"errors\":0}\n"); /* any error ends the run early, with "error" */
}

/* ---- burst and idle: connect, one echo, then close or hold ------------ */

enum { ST_UNOPENED, ST_CONNECTING, ST_ECHOING, ST_DONE };
static uint8_t *conn_state;

static int opened, in_progress, finished;

static void connect_more(const struct sockaddr_in *sa, int limit)
{
    while (opened < opt.conns && in_progress < limit) {
        struct conn *c = &conns[opened++];
        c->fd = open_connection(sa, false);
        c->open = true;
        c->to_send = opt.size;
        conn_state[c->id] = ST_CONNECTING;
        c->want_out = true;
        epoll_set(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_ADD);
        in_progress++;
    }
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    c->open = false;
}

static void echo_once_event(struct conn *c, uint32_t events, bool hold)
{
    switch (conn_state[c->id]) {
    case ST_CONNECTING: {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) fail("connect (conn %u of %d): %s", c->id, opt.conns, strerror(err));
        conn_state[c->id] = ST_ECHOING;
        if (!flush_output(c)) fail("conn %u: send failed", c->id);
        return;
    }
    case ST_ECHOING:
        if (events & EPOLLOUT && !flush_output(c)) fail("conn %u: send failed", c->id);
        if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
        ssize_t n = read_and_check(c);
        if (n < 0) return;
        if (n == 0) fail("conn %u: server closed the connection before echoing", c->id);
        if (c->received < opt.size) return;
        conn_state[c->id] = ST_DONE;
        in_progress--;
        finished++;
        stats.msgs_total++;
        if (!hold) conn_close(c);
        return;
    case ST_DONE: {
        /* Held idle connection: only the server closing it wakes us. */
        ssize_t m = recv(c->fd, recv_buf, sizeof recv_buf, 0);
        if (m == 0 || (m < 0 && errno != EAGAIN && errno != EINTR)) {
            stats.peer_closed++;
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            conn_close(c);
        } else if (m > 0) {
            fail("conn %u: %zd unexpected bytes on an idle connection", c->id, m);
        }
        return;
    }
    }
}

static void run_echo_once(bool hold)
{
    struct sockaddr_in sa = server_addr();
    int limit = hold ? opt.connect_batch : opt.conns;
    uint64_t start = now_ns();
    uint64_t give_up = start + (uint64_t)(opt.timeout * 1e9);
    double cpu0 = self_cpu_s(), server0 = server_cpu_ticks_s();
    uint64_t *finish_ns = calloc((size_t)opt.conns, sizeof *finish_ns);
    struct epoll_event evs[1024];

    connect_more(&sa, limit);
    while (finished < opt.conns) {
        uint64_t now = now_ns();
        if (now >= give_up)
            fail("only %d of %d connections echoed within %.0f s", finished, opt.conns, opt.timeout);
        int n = epoll_wait_ns(evs, 1024, (int64_t)(give_up - now));
        if (n < 0) {
            if (errno == EINTR) {
                if (stop_signal) fail("interrupted by signal %d", (int)stop_signal);
                continue;
            }
            fail("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u64];
            int before = finished;
            echo_once_event(c, evs[i].events, hold);
            if (finished != before) finish_ns[c->id] = now_ns() - start;
        }
        connect_more(&sa, limit);
    }
    uint64_t t1 = now_ns();
    double wall = (double)(t1 - start) / 1e9;
    double cpu = self_cpu_s() - cpu0, server1 = server_cpu_ticks_s();
    for (int i = 0; i < opt.conns; i++) hist_add(finish_ns[i]);
    free(finish_ns);

    if (hold) {
        /* Every connection is now idle: tell the harness, then wait. */
        printf("READY\n");
        fflush(stdout);
        /* stdin may be a terminal or /dev/null (not pollable): then only a
         * signal ends the wait. */
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
        epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
        while (!stop_signal) {
            int n = epoll_wait(epfd, evs, 1024, -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("epoll_wait: %s", strerror(errno));
            }
            bool stdin_closed = false;
            for (int i = 0; i < n; i++) {
                if (evs[i].data.u64 == STDIN_TAG) {
                    char b[256];
                    if (read(0, b, sizeof b) <= 0) stdin_closed = true;
                    continue;
                }
                echo_once_event(&conns[evs[i].data.u64], evs[i].events, true);
            }
            if (stdin_closed) break;
        }
    }

    printf("{\"mode\":\"%s\",\"conns\":%d,\"size\":%zu,\"seconds\":%.3f,"
           "\"conns_per_s\":%.1f,\"done_ms\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
           "\"client_cpu_s\":%.3f,\"client_busy\":%.3f",
           mode_names[opt.mode], opt.conns, opt.size, wall, opt.conns / wall,
           hist_percentile(0.5) / 1e6, hist_percentile(0.99) / 1e6, hist_max / 1e6,
           cpu, cpu / wall);
    if (server0 >= 0 && server1 >= 0)
        printf(",\"server_cpu_s\":%.3f", server1 - server0);
    if (hold) printf(",\"peer_closed\":%llu", (unsigned long long)stats.peer_closed);
    printf(",\"errors\":0}\n"); /* any error ends the run early, with "error" */
}

/* ---- command line ----------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
        "usage: loadgen MODE --port P [options]\n"
        "  MODE: rr | stream | burst | idle\n"
        "  --host H          server address (127.0.0.1)\n"
        "  --conns N         connections (50)\n"
        "  --size S          request bytes for rr, burst, idle (64)\n"
        "  --depth D         rr: requests in flight per connection (1)\n"
        "  --rate R          rr: offered requests/s in total, fixed schedule (closed loop)\n"
        "  --duration SEC    rr, stream: measured seconds (5)\n"
        "  --warmup SEC      rr, stream: unmeasured seconds first (1)\n"
        "  --window BYTES    stream: unanswered bytes per connection (262144)\n"
        "  --timeout SEC     burst, idle, TLS handshakes: give up after (60)\n"
        "  --connect-batch N idle: connections set up at once (512)\n"
        "  --server-pid PID  report that process's CPU time over the window\n"
#ifdef LOADGEN_TLS
        "  --cafile PEM      verify the server's certificate (and --host) with this CA\n"
        "  (tls_loadgen: rr and stream only, over TLS)\n"
#endif
        );
    exit(64);
}

static double arg_num(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) usage();
    char *end;
    double v = strtod(argv[++*i], &end);
    if (*end || v < 0) usage();
    return v;
}

static void parse_args(int argc, char **argv)
{
    if (argc < 2) usage();
    int m;
    for (m = 0; m < 4; m++)
        if (!strcmp(argv[1], mode_names[m])) break;
    if (m == 4) usage();
    opt.mode = (enum mode)m;
    if (opt.mode == MODE_BURST) { opt.conns = 8192; opt.size = 1024; }
    if (opt.mode == MODE_STREAM) opt.conns = 4;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--host") && i + 1 < argc) opt.host = argv[++i];
        else if (!strcmp(a, "--port")) opt.port = (int)arg_num(argc, argv, &i);
        else if (!strcmp(a, "--conns")) opt.conns = (int)arg_num(argc, argv, &i);
        else if (!strcmp(a, "--size")) opt.size = (size_t)arg_num(argc, argv, &i);
        else if (!strcmp(a, "--depth")) opt.depth = (int)arg_num(argc, argv, &i);
        else if (!strcmp(a, "--rate")) opt.rate = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--duration")) opt.duration = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--warmup")) opt.warmup = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--window")) opt.window = (size_t)arg_num(argc, argv, &i);
        else if (!strcmp(a, "--timeout")) opt.timeout = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--connect-batch")) opt.connect_batch = (int)arg_num(argc, argv, &i);
        else if (!strcmp(a, "--server-pid")) opt.server_pid = (int)arg_num(argc, argv, &i);
#ifdef LOADGEN_TLS
        else if (!strcmp(a, "--cafile") && i + 1 < argc) opt.cafile = argv[++i];
#endif
        else usage();
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.conns < 1 || opt.size < 1 || opt.depth < 1
        || opt.size * (size_t)opt.depth > MAX_CHUNK || opt.depth >= STAMP_RING
        || opt.window < STREAM_BLOCK || opt.connect_batch < 1)
        usage();
#ifdef LOADGEN_TLS
    if (opt.mode != MODE_RR && opt.mode != MODE_STREAM) usage();
#endif
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    /* The soft descriptor limit is often 1024; the hard one is what we may use. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)opt.conns + 16 > rl.rlim_cur)
        fail("%d connections need more descriptors than RLIMIT_NOFILE (%llu)",
             opt.conns, (unsigned long long)rl.rlim_cur);

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pattern_init();
    conns = calloc((size_t)opt.conns, sizeof *conns);
    conn_state = calloc((size_t)opt.conns, 1);
    if (!conns || !conn_state) fail("out of memory");
    for (int i = 0; i < opt.conns; i++) {
        conns[i].id = (uint32_t)i;
        conns[i].fd = -1;
        if (opt.mode == MODE_RR) {
            conns[i].stamps = malloc(STAMP_RING * sizeof(uint64_t));
            if (!conns[i].stamps) fail("out of memory");
        }
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
#ifdef LOADGEN_TLS
    tls_setup(opt.cafile, opt.host);
#endif

    switch (opt.mode) {
    case MODE_RR:
    case MODE_STREAM: run_timed(); break;
    case MODE_BURST: run_echo_once(false); break;
    case MODE_IDLE: run_echo_once(true); break;
    }
    fflush(stdout);
    return 0;
}
