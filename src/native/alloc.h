/* Every allocation of gaio's C core and engines goes through these (Python
 * objects do not: the binding uses CPython's allocators; nor does the io_uring
 * kernel layer, uring_ring.c, which builds on its own for its C test and
 * allocates only while an engine is created). They are malloc,
 * calloc and realloc, plus a failure injector for the tests
 * (gaio._native._fail_allocations): while gaio__fail_after is 0, as it always
 * is outside tests, the cost is one relaxed load and a predictable branch,
 * which is why it stays in release builds. */
#ifndef GAIO_ALLOC_H
#define GAIO_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

/* 0: off. N > 0: the Nth allocation from now fails, and so do the
 * gaio__fail_count - 1 after it. */
extern long gaio__fail_after;
extern long gaio__fail_count;

int gaio__alloc_should_fail(void); /* the slow path, only when armed */

static inline int gaio__alloc_fails(void)
{
    if (__builtin_expect(__atomic_load_n(&gaio__fail_after, __ATOMIC_RELAXED) == 0, 1))
        return 0;
    return gaio__alloc_should_fail();
}

static inline void *gaio_malloc(size_t n) { return gaio__alloc_fails() ? NULL : malloc(n); }
static inline void *gaio_calloc(size_t n, size_t size)
{
    return gaio__alloc_fails() ? NULL : calloc(n, size);
}
static inline void *gaio_realloc(void *p, size_t n)
{
    return gaio__alloc_fails() ? NULL : realloc(p, n);
}

/* Grow an array whose tail is reserved room, mostly never written (a free()
 * queued for every connection, a result for every live request): realloc
 * would copy the whole old size, making every page of the room resident in
 * the new block; only the used bytes are copied here. A block of
 * GAIO_GROW_REMAP bytes or more is glibc's mmap'd chunk: realloc moves its
 * pages without a copy (mremap), and freeing it would raise glibc's mmap
 * threshold for the whole process. NULL on failure, old kept. */
#define GAIO_GROW_REMAP (128u * 1024u)
static inline void *gaio_grow(void *old, size_t used, size_t old_size, size_t new_size)
{
    if (!old || old_size >= GAIO_GROW_REMAP)
        return gaio_realloc(old, new_size);
    void *p = gaio_malloc(new_size);
    if (p) {
        if (used)
            __builtin_memcpy(p, old, used);
        free(old);
    }
    return p;
}

/* Arm the injector: the after-th allocation from now fails, and count in a
 * row (count >= 1); after == 0 disarms it. Returns how many allocations the
 * previous arming made fail, so a test can tell whether its failure happened. */
long gaio__fail_allocations(long after, long count);

#endif
