/* What accept and connect add to a request's life: a connect's outcome
 * decides the requests queued behind it (R17), an AF_UNIX connect that finds
 * the backlog full is tried again later, and a standing accept outlives
 * descriptor exhaustion by backing off (R16). */
#include "core_private.h"

#include <errno.h>
#include <sys/socket.h>

/* seq a came before seq b (they wrap) */
static int before(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

/* Connect r ended (R17): on success the reads queued behind it start (the
 * writes go on as after any write); on failure everything queued behind it
 * ends with its error, in request order. */
static void connect_done(gaio_core *core, gaio_conn *c, int error)
{
    if (c->closing)
        return;
    if (!error) {
        gaio__start_next(core, c, GAIO_READ);
        return;
    }
    for (;;) {
        gaio_req *rd = c->head[GAIO_READ], *wr = c->head[GAIO_WRITE];
        if (rd && rd->state != GAIO_REQ_QUEUED)
            rd = NULL;
        if (wr && wr->state != GAIO_REQ_QUEUED)
            wr = NULL;
        gaio_req *r = rd && (!wr || before(rd->seq, wr->seq)) ? rd : wr;
        if (!r)
            return;
        gaio__req_complete(core, r, error);
    }
}

void gaio__connect_finished(gaio_core *core, gaio_req *r, int error)
{
    gaio_conn *c = r->conn;
    gaio__req_complete(core, r, error);
    connect_done(core, c, error);
}

/* R17: connect r, the head of its writes, found an AF_UNIX listener's backlog
 * full (EAGAIN). Nothing is in progress and no readiness will come (the
 * socket even polls writable, unconnected): it waits, watching nothing, and
 * gaio__serve_backoff tries again after GAIO_CONNECT_RETRY_NS, as a blocking
 * connect would wait; its deadline or a free() ends it meanwhile. */
void gaio__connect_backoff(gaio_core *core, gaio_req *r, int64_t now)
{
    r->error = 0;
    r->flags |= GAIO_F_BACKOFF;
    r->u.c.retry_ns = now + GAIO_CONNECT_RETRY_NS;
    if (!core->nbackoff++ || r->u.c.retry_ns < core->backoff_ns)
        core->backoff_ns = r->u.c.retry_ns;
}

static void connect_retry(gaio_core *core, gaio_conn *c, gaio_req *r, int64_t now)
{
    int rc;
    do
        rc = connect(c->fd, r->u.c.addr, r->u.c.addrlen);
    while (rc < 0 && errno == EINTR);
    int err = rc < 0 ? errno : 0;
    if (err == EAGAIN) {
        gaio__connect_backoff(core, r, now);
    } else if (err == EINPROGRESS || err == EALREADY) {
        core->engine->start(core->engine_state, c, GAIO_WRITE);
    } else {
        gaio__connect_finished(core, r, err);
        gaio__start_next(core, c, GAIO_WRITE);
    }
}

int gaio_core_accepted(gaio_core *core, gaio_req *r, int res)
{
    if (res >= 0) {
        core->stats.accepted++;
        if (r->flags & GAIO_F_REPEAT) {
            gaio__arrival(core, r, NULL, 0, 0, res);
            return r->state == GAIO_REQ_DONE;
        }
        r->u.accepted_fd = res;
        gaio__req_complete(core, r, 0);
        return 1;
    }
    if (res == -ECONNABORTED || res == -EINTR || res == -EAGAIN || res == -EWOULDBLOCK)
        return 0; /* only the connection being accepted is concerned: accept again */
    if (!(r->flags & GAIO_F_REPEAT) || !gaio_resource_error(-res) || r->state != GAIO_REQ_QUEUED) {
        gaio__req_complete(core, r, -res);
        return 1;
    }
    /* R16: a standing accept survives descriptor exhaustion without spinning */
    int64_t now = gaio_now_ns();
    if (now - r->u.reported_ns >= GAIO_ACCEPT_RETRY_NS) {
        r->u.reported_ns = now;
        gaio__arrival(core, r, NULL, 0, -res, -1);
        if (r->state == GAIO_REQ_DONE)
            return 1;
    }
    r->flags |= GAIO_F_BACKOFF;
    r->retry_ns = now + GAIO_ACCEPT_RETRY_NS;
    if (!core->nbackoff++ || r->retry_ns < core->backoff_ns)
        core->backoff_ns = r->retry_ns;
    core->fd_closed = 0; /* only a descriptor closed from now on counts */
    return 0;
}

/* R16: standing accepts whose backoff is over, or all after a descriptor was
 * closed; R17: connects whose time to try again came (time only: a closed
 * descriptor makes no room in another socket's backlog). */
void gaio__serve_backoff(gaio_core *core, int64_t now)
{
    if (!core->nbackoff || (!core->fd_closed && now < core->backoff_ns))
        return;
    int all = core->fd_closed;
    core->fd_closed = 0;
    int64_t next = GAIO_NO_DEADLINE;
    core->backoff_ns = GAIO_NO_DEADLINE; /* a request that backs off again sets it */
    uint32_t s = 0;
    for (gaio_conn *c; core->nbackoff && (c = gaio_core_next_conn(core, &s));) {
        gaio_req *r = c->head[GAIO_WRITE];
        if (r && (r->flags & GAIO_F_BACKOFF)) {
            if (now >= r->u.c.retry_ns) {
                r->flags &= ~GAIO_F_BACKOFF;
                core->nbackoff--;
                connect_retry(core, c, r, now);
                if (c->head[GAIO_WRITE] == r && (r->flags & GAIO_F_BACKOFF) && r->u.c.retry_ns < next)
                    next = r->u.c.retry_ns;
            } else if (r->u.c.retry_ns < next) {
                next = r->u.c.retry_ns;
            }
        }
        r = c->head[GAIO_READ];
        if (!r || !(r->flags & GAIO_F_BACKOFF))
            continue;
        if (all || now >= r->retry_ns) {
            r->flags &= ~GAIO_F_BACKOFF;
            core->nbackoff--;
            gaio__start_next(core, c, GAIO_READ);
        } else if (r->retry_ns < next) {
            next = r->retry_ns;
        }
    }
    if (next < core->backoff_ns)
        core->backoff_ns = next;
}
