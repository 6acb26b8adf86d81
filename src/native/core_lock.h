/* Taking core->lock from a binding thread (private to the core's files). */
#ifndef GAIO_CORE_LOCK_H
#define GAIO_CORE_LOCK_H

#include "core.h"

/* Take core->lock; returns the token for gaio__binding_leave. */
void *gaio__binding_enter(gaio_core *core);
/* pthread_cond_wait on core->idle, the runtime lock released first. */
void gaio__binding_wait_idle(gaio_core *core, void **token);
/* Drop core->lock, then retake the runtime lock if it was let go. */
void gaio__binding_leave(gaio_core *core, void *token);

#endif
