/* The internal buffer: GAIO_IBUF_CHUNKS chunks of bufsize bytes that reads
 * without a buffer land in, filled one after another within a batch and
 * reused from the start when the binding says the batch's views are gone. */
#include "core_private.h"

#include "alloc.h"

#include <errno.h>
#include <string.h>

size_t gaio_core_ibuf_room(gaio_core *core)
{
    size_t budget = GAIO_IBUF_CHUNKS * core->bufsize;
    return core->ibuf_out >= budget ? 0 : budget - core->ibuf_out;
}

ssize_t gaio_core_ibuf_reserve(gaio_core *core, unsigned char **ptr)
{
    size_t bs = core->bufsize;
    if (!core->waiting || !gaio_core_ibuf_room(core))
        return 0;
    /* a nearly full chunk would make short reads: move on while chunks remain */
    size_t left = bs - core->chunk_off;
    if (core->chunk[core->chunk_cur] && left < bs / 4 + 1) {
        if (core->chunk_cur + 1 >= GAIO_IBUF_CHUNKS) {
            if (left == 0)
                return 0;
        } else {
            core->chunk_cur++;
            core->chunk_off = 0;
            left = bs;
        }
    }
    if (!core->chunk[core->chunk_cur]) {
        core->chunk[core->chunk_cur] = gaio_malloc(bs);
        if (!core->chunk[core->chunk_cur])
            return -ENOMEM;
        core->stats.ibuf_chunks++;
    }
    size_t room = gaio_core_ibuf_room(core);
    *ptr = core->chunk[core->chunk_cur] + core->chunk_off;
    return (ssize_t)(left < room ? left : room);
}

int gaio_core_ibuf_reserve_exact(gaio_core *core, size_t len, unsigned char **ptr)
{
    if (gaio_core_ibuf_room(core) < len)
        return 0;
    for (int moved = 0;; moved = 1) {
        ssize_t room = gaio_core_ibuf_reserve(core, ptr);
        if (room <= 0)
            return (int)room;
        if ((size_t)room >= len)
            return 1;
        if (moved || !gaio_core_ibuf_next_chunk(core))
            return 0;
    }
}

int gaio_core_ibuf_next_chunk(gaio_core *core)
{
    if (core->chunk_cur + 1 >= GAIO_IBUF_CHUNKS || !core->chunk[core->chunk_cur])
        return 0;
    core->chunk_cur++;
    core->chunk_off = 0;
    return 1;
}

/* Datagrams: a datagram is one view, so it may not straddle two chunks. When
 * the room left in this chunk is less than bufsize, the next chunk (made
 * now, while failing costs nothing) stands by: recvmsg's second iovec is
 * the spill buffer, and a datagram longer than the room is copied whole to
 * the next chunk (gaio_core_ibuf_unspill). Without that, one more syscall
 * per datagram (a peek) said whether it fits: measured, a fifth of a
 * standing read's cost per small datagram. */
ssize_t gaio_core_ibuf_reserve_datagram(gaio_core *core, unsigned char **ptr, unsigned char **spill)
{
    size_t bs = core->bufsize;
    ssize_t room = gaio_core_ibuf_reserve(core, ptr);
    if (spill)
        *spill = NULL;
    if (room <= 0 || (size_t)room >= bs)
        return room > 0 ? (ssize_t)bs : room;
    uint32_t next = core->chunk_cur + 1;
    if (!spill || next >= GAIO_IBUF_CHUNKS || gaio_core_ibuf_room(core) < bs)
        return room; /* no fresh chunk (or budget) for the rest: the engine peeks */
    if (!core->spill && !(core->spill = gaio_malloc(bs)))
        return room;
    if (!core->chunk[next]) {
        if (!(core->chunk[next] = gaio_malloc(bs)))
            return room;
        core->stats.ibuf_chunks++;
    }
    *spill = core->spill;
    return room;
}

void gaio_core_ibuf_unspill(gaio_core *core, size_t room, size_t n)
{
    unsigned char *from = core->chunk[core->chunk_cur] + core->chunk_off;
    core->chunk_cur++;
    core->chunk_off = 0;
    unsigned char *to = core->chunk[core->chunk_cur];
    memcpy(to, from, room);
    memcpy(to + room, core->spill, n - room);
}

void gaio_core_ibuf_reset(gaio_core *core)
{
    void *token = gaio__binding_enter(core);
    int shown = 1;
    for (uint32_t i = 0; i < core->nres; i++)
        if (core->res[i].ptr)
            shown = 0; /* a result not yet shown points into the chunks: keep filling after it */
    if (shown) {
        core->chunk_cur = 0;
        core->chunk_off = 0;
        core->ibuf_out = 0;
    }
    gaio__binding_leave(core, token);
}

unsigned char *gaio_core_ibuf_detach(gaio_core *core, unsigned i)
{
    void *token = gaio__binding_enter(core);
    unsigned char *p = core->chunk[i];
    core->chunk[i] = NULL;
    if (p)
        core->stats.ibuf_chunks--;
    gaio__binding_leave(core, token);
    return p;
}
