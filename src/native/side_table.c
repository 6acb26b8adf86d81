/* side_table.h's map: linear probing, deletion by backward shift (no
 * tombstones, so a lookup never walks past a run of removed entries). */
#include "side_table.h"

#include <stdlib.h>

#include "alloc.h"

enum { MIN_CAP = 8 };

static uint32_t home(uint64_t key, uint32_t cap)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

/* The place of key, or of the empty place that ends its run. */
static uint32_t place(const gaio_side_table *t, uint64_t key)
{
    uint32_t i = home(key, t->cap);
    while (t->e[i].key && t->e[i].key != key)
        i = (i + 1) & (t->cap - 1);
    return i;
}

/* Move the entries into a table of cap places (0: none): 0, or -1 (nothing changed). */
static int resize(gaio_side_table *t, uint32_t cap)
{
    gaio_side_entry *e = NULL;
    if (cap && !(e = gaio_calloc(cap, sizeof *e)))
        return -1;
    gaio_side_table fresh = {e, cap, t->n};
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->e[i].key)
            fresh.e[place(&fresh, t->e[i].key)] = t->e[i];
    free(t->e);
    *t = fresh;
    return 0;
}

void *gaio_side_get(const gaio_side_table *t, uint64_t key)
{
    return t->n ? t->e[place(t, key)].value : NULL;
}

int gaio_side_put(gaio_side_table *t, uint64_t key, void *value)
{
    if (t->n) {
        gaio_side_entry *at = &t->e[place(t, key)];
        if (at->key) {
            at->value = value;
            return 0;
        }
    }
    /* at most 3/4 full, so a run always ends */
    if ((uint64_t)(t->n + 1) * 4 > (uint64_t)t->cap * 3 &&
        resize(t, t->cap ? t->cap * 2 : MIN_CAP) != 0)
        return -1;
    gaio_side_entry *at = &t->e[place(t, key)];
    at->key = key;
    at->value = value;
    t->n++;
    return 0;
}

void *gaio_side_take(gaio_side_table *t, uint64_t key)
{
    if (!t->n)
        return NULL;
    uint32_t mask = t->cap - 1, i = place(t, key);
    void *value = t->e[i].value;
    if (!t->e[i].key)
        return NULL;
    /* close the gap: an entry after it moves back unless its home lies
     * cyclically in (i, j], where it would no longer be found */
    for (uint32_t j = (i + 1) & mask; t->e[j].key; j = (j + 1) & mask) {
        uint32_t h = home(t->e[j].key, t->cap);
        if (((j - h) & mask) >= ((j - i) & mask)) {
            t->e[i] = t->e[j];
            i = j;
        }
    }
    t->e[i].key = 0;
    t->e[i].value = NULL;
    if (--t->n == 0)
        gaio_side_clear(t);
    else if (t->cap > MIN_CAP && t->n * 8 < t->cap)
        (void)resize(t, t->cap / 2); /* kept as it is when the smaller one cannot be had */
    return value;
}

void *gaio_side_next(const gaio_side_table *t, uint32_t *i)
{
    while (*i < t->cap) {
        const gaio_side_entry *at = &t->e[(*i)++];
        if (at->key)
            return at->value;
    }
    return NULL;
}

void gaio_side_clear(gaio_side_table *t)
{
    free(t->e);
    t->e = NULL;
    t->cap = t->n = 0;
}
