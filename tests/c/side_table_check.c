/* src/native/side_table.c against a plain array: random puts, replacements
 * and takes over a few keys (runs that wrap, growth, shrinking back to no
 * memory), and puts that meet an allocation failure change nothing.
 * Exit 0 and "ok: ..." on success. */
#include <stdio.h>
#include <stdlib.h>

#include "alloc.h"
#include "side_table.h"

enum { KEYS = 300 };

static gaio_side_table t;
static void *model[KEYS];
static unsigned model_n;

static uint64_t key_of(unsigned k) { return (uint64_t)(k % 97) | (uint64_t)(k / 97 + 1) << 32; }

static int same(void)
{
    if (t.n != model_n || (t.n == 0) != (t.e == NULL))
        return 0;
    for (unsigned k = 0; k < KEYS; k++)
        if (gaio_side_get(&t, key_of(k)) != model[k])
            return 0;
    unsigned seen = 0;
    uint32_t i = 0;
    for (void *v; (v = gaio_side_next(&t, &i));)
        seen++;
    return seen == model_n && (t.cap == 0 || (uint64_t)t.n * 4 <= (uint64_t)t.cap * 3);
}

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            printf("failed at step %ld: %s (line %d)\n", step, #cond, __LINE__);   \
            return 1;                                                              \
        }                                                                          \
    } while (0)

int main(void)
{
    srand(16);
    uint32_t largest = 0;
    for (long step = 0; step < 200000; step++) {
        unsigned k = (unsigned)rand() % KEYS;
        /* phases: fill up to every key, then empty down to none */
        int filling = (step / 20000) % 2 == 0;
        void *v = (void *)(uintptr_t)(step * 8 + 8);
        if (rand() % 4 != 0 ? filling : !filling) {
            int fail = rand() % 16 == 0;
            uint32_t cap = t.cap;
            if (fail)
                gaio__fail_after = 1, gaio__fail_count = 1;
            int rc = gaio_side_put(&t, key_of(k), v);
            gaio__fail_after = 0;
            if (rc == 0) {
                model_n += model[k] == NULL;
                model[k] = v;
            } else {
                CHECK(fail && model[k] == NULL && t.cap == cap); /* only a growth fails */
            }
        } else {
            CHECK(gaio_side_take(&t, key_of(k)) == model[k]);
            model_n -= model[k] != NULL;
            model[k] = NULL;
        }
        CHECK(same());
        if (t.cap > largest)
            largest = t.cap;
    }
    for (unsigned k = 0; k < KEYS; k++)
        gaio_side_take(&t, key_of(k));
    long step = -1;
    CHECK(t.n == 0 && t.e == NULL && t.cap == 0);
    gaio_side_clear(&t);
    printf("ok: largest table %u places\n", largest);
    return 0;
}
