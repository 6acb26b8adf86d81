/* A map from a connection's id to one pointer, for what an engine keeps for a
 * few connections only (io_uring's parked bytes, uring_recv.c): a field in
 * gaio_conn would be paid by every connection. Open addressing with linear
 * probing; empty, it holds no memory, and it shrinks as entries go. The
 * engine marks a connection that has an entry in its engine_flags, so a
 * connection without one never looks here. */
#ifndef GAIO_SIDE_TABLE_H
#define GAIO_SIDE_TABLE_H

#include <stdint.h>

typedef struct gaio_side_entry {
    uint64_t key;   /* a connection's id (gaio_conn_id: never 0), or 0: empty */
    void *value;
} gaio_side_entry;

typedef struct gaio_side_table {
    gaio_side_entry *e; /* NULL while empty */
    uint32_t cap, n;    /* cap: a power of two, or 0 */
} gaio_side_table;

/* key's value, or NULL. */
void *gaio_side_get(const gaio_side_table *t, uint64_t key);
/* Keep value (not NULL) for key, replacing the one kept: 0, or -1 when the
 * table could not grow (nothing changed; replacing never allocates). */
int gaio_side_put(gaio_side_table *t, uint64_t key, void *value);
/* Remove key's entry: its value, or NULL when it had none. */
void *gaio_side_take(gaio_side_table *t, uint64_t key);
/* The entries one by one, from *i = 0: a value, or NULL when none is left.
 *     uint32_t i = 0;
 *     for (void *v; (v = gaio_side_next(t, &i));) ... */
void *gaio_side_next(const gaio_side_table *t, uint32_t *i);
/* Forget every entry (their values are the caller's to free first). */
void gaio_side_clear(gaio_side_table *t);

#endif
