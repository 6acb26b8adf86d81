/* Datagram sockets (R24-R27): what the core does differently for them. The
 * engines' syscalls are in datagram_io.c; the binding's side (address= and
 * the sender's Python object) in request_datagram.c. python engine:
 * _python_datagrams.py.
 *
 * - A datagram is one result, never joined to the bytes of the one before
 *   it in the internal buffer (a stream's standing read joins them), and a
 *   result carries its sender (unconnected sockets) and whether it was cut.
 * - An error is one result too: a standing read delivers it and stands.
 * - A socket error that came while nothing of the connection was pending is
 *   dropped when a request arrives; the kernel keeps it (sk_err) until the
 *   next recv or send, which would otherwise report it to a request that
 *   was not there when it happened.
 */
#include "core_private.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

/* The sender as the result keeps it, or NULL when there is none to tell:
 * a connected socket, an unbound AF_UNIX sender (it cannot be answered). */
static int keep_sender(const gaio_conn *c, const struct sockaddr *addr, socklen_t len)
{
    if (c->peer || !addr || len == 0)
        return 0;
    return !(addr->sa_family == AF_UNIX && len <= offsetof(struct sockaddr_un, sun_path));
}

int gaio_core_datagram(gaio_core *core, gaio_req *r, ssize_t res, const struct sockaddr *addr,
                       socklen_t addrlen, int truncated)
{
    gaio_conn *c = r->conn;
    if (res == -ENOMEM || r->state == GAIO_REQ_CANCELLING)
        return gaio_core_progress(core, r, res);
    if (res < 0) {
        if (!(r->flags & GAIO_F_REPEAT)) {
            gaio__req_complete(core, r, (int)-res);
            return 1;
        }
        gaio__arrival_append(core, r, NULL, 0, (int)-res, -1);
        return r->state == GAIO_REQ_DONE;
    }
    unsigned char *ptr = NULL;
    if (!gaio_req_buf(r)) {
        /* committed where gaio_core_ibuf_reserve pointed, even empty: the
         * result shows an (empty) view of the internal buffer */
        ptr = core->chunk[core->chunk_cur] + core->chunk_off;
        core->chunk_off += (size_t)res;
        core->ibuf_out += (size_t)res;
    }
    core->stats.bytes_read += (uint64_t)res;
    core->stats.datagrams_read++;
    gaio_addr *sender = NULL;
    int error = 0;
    if (keep_sender(c, addr, addrlen)) {
        if (addrlen > sizeof sender->sa)
            addrlen = sizeof sender->sa;
        sender = gaio_malloc(offsetof(gaio_addr, sa) + addrlen);
        if (sender) {
            sender->len = addrlen;
            memcpy(&sender->sa, addr, addrlen);
        } else {
            error = ENOMEM; /* the datagram is taken: say it was lost, never who sent it wrongly */
        }
    }
    gaio_result *e;
    if (r->flags & GAIO_F_REPEAT) {
        e = gaio__arrival_append(core, r, error ? NULL : ptr, error ? 0 : (size_t)res, error, -1);
    } else {
        r->ibuf_ptr = error ? NULL : ptr;
        r->done = error ? 0 : (size_t)res;
        gaio__req_complete(core, r, error);
        /* its result is the last one but for requests a free() ended after it */
        e = NULL;
        for (uint32_t i = core->nres; i-- > 0;)
            if (core->res[i].req == r) {
                e = &core->res[i];
                break;
            }
    }
    if (!e) {
        free(sender);
        return 1;
    }
    e->datagram = 1;
    e->truncated = truncated && !error;
    e->addr = sender;
    return !(r->flags & GAIO_F_REPEAT) || r->state == GAIO_REQ_DONE;
}

int gaio_core_datagram_sent(gaio_core *core, gaio_req *r, ssize_t res)
{
    if (res >= 0)
        core->stats.datagrams_written++;
    return gaio_core_progress(core, r, res);
}

void gaio_core_datagram_call(gaio_core *core, int kind)
{
    if (kind == GAIO_READ)
        core->stats.datagram_recv_calls++;
    else
        core->stats.datagram_send_calls++;
}

gaio_landing **gaio_core_landing(gaio_core *core)
{
    return &core->landing;
}

void gaio_core_datagram_error(gaio_core *core, gaio_conn *c, int err)
{
    gaio_req *r = gaio_conn_head(c, GAIO_READ);
    if (r && r->op == GAIO_OP_READ) {
        gaio_core_datagram(core, r, -err, NULL, 0, 0);
        return;
    }
    r = gaio_conn_head(c, GAIO_WRITE);
    if (r && r->op == GAIO_OP_WRITE)
        gaio_core_datagram_sent(core, r, -err);
}

/* Whether c has a result the binding has not taken yet: a request of c was
 * pending until then (python: its queue is not empty until wait_io()). */
static int has_results(const gaio_core *core, const gaio_conn *c)
{
    uint64_t id = gaio_conn_id(c);
    for (uint32_t i = 0; i < core->nres; i++)
        if (gaio_req_conn_id(core->res[i].req) == id)
            return 1;
    return 0;
}

void gaio__datagram_idle(gaio_core *core, gaio_conn *c)
{
    if (c->head[GAIO_READ] || c->head[GAIO_WRITE] || c->fd < 0 || has_results(core, c))
        return;
    int err;
    socklen_t len = sizeof err;
    (void)getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len); /* reads and clears it */
}

void gaio__datagram_forget(gaio_result *res, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(res[i].addr);
        res[i].addr = NULL;
    }
}
