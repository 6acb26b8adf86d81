/* The deadline heap: a binary min-heap on gaio_req.deadline_ns; each request
 * knows its index, so one leaves the heap in O(log n) when it ends early. */
#include "core_private.h"

#include "alloc.h"

static void heap_set(gaio_core *core, uint32_t i, gaio_req *r)
{
    core->heap[i] = r;
    r->heap_index = i;
}

static void heap_up(gaio_core *core, uint32_t i)
{
    gaio_req *r = core->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (core->heap[parent]->deadline_ns <= r->deadline_ns)
            break;
        heap_set(core, i, core->heap[parent]);
        i = parent;
    }
    heap_set(core, i, r);
}

static void heap_down(gaio_core *core, uint32_t i)
{
    gaio_req *r = core->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= core->nheap)
            break;
        if (child + 1 < core->nheap &&
            core->heap[child + 1]->deadline_ns < core->heap[child]->deadline_ns)
            child++;
        if (r->deadline_ns <= core->heap[child]->deadline_ns)
            break;
        heap_set(core, i, core->heap[child]);
        i = child;
    }
    heap_set(core, i, r);
}

/* Make room for `need` entries; 0 or -1 (out of memory, nothing changed). */
int gaio__heap_reserve(gaio_core *core, uint64_t need)
{
    if (need <= core->cap_heap)
        return 0;
    uint64_t cap = core->cap_heap ? (uint64_t)core->cap_heap * 2 : 64;
    if (cap < need)
        cap = need;
    if (cap > UINT32_MAX - 1)
        return -1;
    gaio_req **h = gaio_realloc(core->heap, cap * sizeof *h);
    if (!h)
        return -1;
    core->heap = h;
    core->cap_heap = (uint32_t)cap;
    return 0;
}

int gaio__heap_push(gaio_core *core, gaio_req *r)
{
    if (gaio__heap_reserve(core, (uint64_t)core->nheap + 1) != 0)
        return -1;
    heap_set(core, core->nheap++, r);
    heap_up(core, r->heap_index);
    return 0;
}

void gaio__heap_remove(gaio_core *core, gaio_req *r)
{
    if (gaio_req_short(r))
        return; /* never has a deadline */
    uint32_t i = r->heap_index;
    if (i == GAIO__NO_HEAP)
        return;
    r->heap_index = GAIO__NO_HEAP;
    gaio_req *last = core->heap[--core->nheap];
    if (last == r)
        return;
    heap_set(core, i, last);
    heap_up(core, i);
    heap_down(core, last->heap_index);
}

void gaio__heap_rekey(gaio_core *core, gaio_req *r, int64_t deadline_ns)
{
    r->deadline_ns = deadline_ns;
    uint32_t i = r->heap_index;
    if (i == GAIO__NO_HEAP)
        return;
    heap_up(core, i);
    heap_down(core, r->heap_index);
}
