/* The io_uring engine's readiness paths: what a POLL_ADD that said ready
 * leads to, readiness.c's and datagram_io.c's syscalls (datagrams; connect,
 * sendfile; accepts and vectored writes when the kernel lacks their
 * operation), as on the readiness engines. */
#if defined(__linux__)

#include "uring_engine.h"
#include "readiness.h"

#include <errno.h>

/* A POLL_ADD for datagram socket c's kind head said ready (or an error,
 * POLLERR: the syscall reports it): a datagram per head while the socket
 * takes them, at most GAIO_DATAGRAMS_PER_PASS (complete_op polls again). */
void gaio__ur_datagrams_ready(gaio__ur_state *st, gaio_conn *c, int kind)
{
    gaio_req *r;
    for (int n = 0; n < GAIO_DATAGRAMS_PER_PASS && (r = gaio_conn_head(c, kind)); n++) {
        int unused; /* a datagram is never short */
        ssize_t res = kind == GAIO_READ ? gaio_recv_datagram(st->core, c, r, (unsigned)n)
                                        : gaio_send_head(st->core, c, r, &unused);
        if (res == GAIO_RECV_NO_ROOM) {
            gaio__ur_starve(st, c); /* this batch's internal buffer is spent */
            return;
        }
        if (res == -EAGAIN || (kind == GAIO_READ && res >= 0 && gaio_recv_drained(st->core, c)))
            return; /* drained: the next poll finds what comes */
    }
}

/* A POLL_ADD for c's kind head said ready: do what the heads ask while the
 * socket takes it (accepts; connect, sendfile, vectored writes). */
void gaio__ur_poll_ready(gaio__ur_state *st, gaio_conn *c, int kind)
{
    gaio_req *r;
    if (c->dgram) {
        gaio__ur_datagrams_ready(st, c, kind);
        return;
    }
    while ((r = gaio_conn_head(c, kind)) && r->op != GAIO_OP_READ &&
           !(r->op == GAIO_OP_WRITE && !r->u.w.vec)) {
        if (kind == GAIO_READ) {
            ssize_t n = gaio_accept_head(st->core, c, r);
            if (n == GAIO_RECV_NO_ROOM) {
                gaio__ur_starve(st, c);
                return;
            }
            if (n == -EAGAIN)
                break;
        } else {
            int short_write;
            ssize_t n = gaio_send_head(st->core, c, r, &short_write);
            if (n == -EAGAIN || short_write)
                break;
        }
    }
}

#endif
