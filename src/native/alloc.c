/* The allocation failure injector of alloc.h (test-only; see there). */
#include "alloc.h"

long gaio__fail_after;
long gaio__fail_count;
static long failed; /* failures injected since the last arming */

int gaio__alloc_should_fail(void)
{
    /* Several threads may allocate (a request thread, the one in wait_io):
     * each decrement is atomic, so exactly the chosen allocations fail. */
    long left = __atomic_sub_fetch(&gaio__fail_after, 1, __ATOMIC_RELAXED);
    if (left > 0)
        return 0;
    if (left < 0) { /* another thread disarmed it meanwhile */
        __atomic_store_n(&gaio__fail_after, 0, __ATOMIC_RELAXED);
        return 0;
    }
    if (__atomic_sub_fetch(&gaio__fail_count, 1, __ATOMIC_RELAXED) > 0)
        __atomic_store_n(&gaio__fail_after, 1, __ATOMIC_RELAXED); /* the next one fails too */
    __atomic_add_fetch(&failed, 1, __ATOMIC_RELAXED);
    return 1;
}

long gaio__fail_allocations(long after, long count)
{
    long before = __atomic_exchange_n(&failed, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&gaio__fail_count, count > 0 ? count : 1, __ATOMIC_RELAXED);
    __atomic_store_n(&gaio__fail_after, after > 0 ? after : 0, __ATOMIC_RELAXED);
    return before;
}
