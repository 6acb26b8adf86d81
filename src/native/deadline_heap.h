/* The core's deadline heap (private to the core's files). */
#ifndef GAIO_DEADLINE_HEAP_H
#define GAIO_DEADLINE_HEAP_H

#include "core.h"

#define GAIO__NO_HEAP UINT32_MAX /* gaio_req.heap_index of a request not in the heap */

/* Room for `need` entries: 0, or -1 (out of memory, nothing changed). */
int gaio__heap_reserve(gaio_core *core, uint64_t need);
/* 0, or -1 when out of memory (then r is not in the heap). */
int gaio__heap_push(gaio_core *core, gaio_req *r);
/* Take r out of the heap; nothing when it is not in it. */
void gaio__heap_remove(gaio_core *core, gaio_req *r);

/* Move r (in the heap) to a new deadline: a standing request's idle limit,
 * counted again from its last result, is moved lazily when it comes up. */
void gaio__heap_rekey(gaio_core *core, gaio_req *r, int64_t deadline_ns);

#endif
