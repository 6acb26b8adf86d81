/* Back-pressure (R21): the whole rule, for the core and the binding.
 *
 * A standing read is answerable for
 *   - the unwritten bytes of every write made from one of its own results'
 *     views, whichever connection the write goes to (the write names the
 *     read: gaio_answer, per item for a vectored write), and
 *   - the unwritten bytes of every other write queued on its own connection
 *     (plain data, copies, sendfile), whenever it was queued: when the read
 *     becomes its connection's head read it takes on what is queued there
 *     (GAIO_F_COUNTING), and from then on every such write queued, written
 *     or ended changes its count.
 * It holds (GAIO_F_HELD: the engines do not read for it) while that count
 * exceeds write_high and goes on at write_high / 4 or less. A view's bytes
 * count for the view's read only, never for the destination's read: a proxy
 * writing each side's views to the other side is held back by the slow side
 * only. python engine: _python_backpressure.py, the same rule.
 */
#ifndef GAIO_BACKPRESSURE_H
#define GAIO_BACKPRESSURE_H

#include "core.h"

/* A held standing read goes on when what it owes falls to
 * write_high / GAIO_WRITE_LOW_DIVISOR or less; the python engine's is
 * WRITE_LOW_DIVISOR in gaio/_python_backpressure.py (tests/test_static_checks.py
 * holds them equal). */
#define GAIO_WRITE_LOW_DIVISOR 4

/* ---- for the core (core_*.c), with core->lock held; no-ops when write_high is 0 ---- */

/* Write w was appended to its connection's queue. */
void gaio__bp_write_queued(gaio_core *core, gaio_req *w);
/* n bytes of write w went out (call before its vector cursor moves). */
void gaio__bp_written(gaio_core *core, gaio_req *w, size_t n);
/* Write w ends: what it did not write never will be. */
void gaio__bp_write_ended(gaio_core *core, gaio_req *w);
/* The head of c's reads may have changed: a standing read there takes on
 * the bytes queued on its connection. */
void gaio__bp_read_head(gaio_core *core, gaio_conn *c);
/* Standing reads released since the last call read again (the engine is
 * told once the I/O under way is reported). */
void gaio__bp_restart_released(gaio_core *core);

/* ---- for the binding: which standing read a view of the last batch came from ---- */

typedef struct {
    const void *view;        /* the view object handed out (compared, never dereferenced) */
    gaio_answer read;
} gaio_origin;

typedef struct {
    gaio_origin *v;
    size_t n, cap, hint;
} gaio_origins;

/* Remember that view came from standing read (conn_id, seq): 0, or -1 (out of memory). */
int gaio_origins_note(gaio_origins *t, const void *view, uint64_t conn_id, uint32_t seq);
/* The standing read view came from; conn_id 0 when it is not one of this batch's views. */
gaio_answer gaio_origins_find(gaio_origins *t, const void *view);
/* A new batch: the last batch's views are gone. */
static inline void gaio_origins_reset(gaio_origins *t) { t->n = t->hint = 0; }
void gaio_origins_free(gaio_origins *t);

#endif
