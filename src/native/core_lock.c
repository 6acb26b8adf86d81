/* core->lock, and how a thread of the binding takes it without stalling the
 * other threads of its runtime (see gaio_runtime in core.h). */
#include "core_private.h"

void gaio_core_lock(gaio_core *core) { pthread_mutex_lock(&core->lock); }
void gaio_core_unlock(gaio_core *core) { pthread_mutex_unlock(&core->lock); }

/* Take core->lock for a binding thread that holds its runtime lock (the
 * GIL): try first; when another thread has it (the waiter runs a whole batch
 * of recv/send under it), release the runtime lock before blocking so the
 * caller's other threads go on. Returns the token gaio__binding_leave needs. */
void *gaio__binding_enter(gaio_core *core)
{
    /* The TLS pass holds core->lock while the session runs Python code (an
     * SNI callback, a finalizer of a dropped socket): that code's calls
     * into the core, on the pass's own thread, run under the pass's lock. */
    if (core->in_pass && pthread_equal(core->pass_owner, pthread_self()))
        return GAIO__REENTERED;
    if (pthread_mutex_trylock(&core->lock) == 0)
        return NULL;
    if (!core->runtime) {
        pthread_mutex_lock(&core->lock);
        return NULL;
    }
    void *token = core->runtime->release();
    pthread_mutex_lock(&core->lock);
    return token;
}

/* Wait on core->idle for a binding thread: never with the runtime lock. */
void gaio__binding_wait_idle(gaio_core *core, void **token)
{
    if (*token == GAIO__REENTERED)
        return; /* the pass is the waiter: nothing to wait for (see free_conn) */
    if (core->runtime && !*token)
        *token = core->runtime->release();
    pthread_cond_wait(&core->idle, &core->lock);
}

/* Drop core->lock, then retake the runtime lock if gaio__binding_enter let it go. */
void gaio__binding_leave(gaio_core *core, void *token)
{
    if (token == GAIO__REENTERED)
        return;
    pthread_mutex_unlock(&core->lock);
    if (token)
        core->runtime->reacquire(token);
}
