/* PLACEHOLDER written by the native-core helper so the module links before the
 * io_uring engine exists. The io_uring helper owns this file: overwrite it
 * freely (define gaio_engine_uring against engine.h). */
#include "engine.h"

#include <stdio.h>

static int uring_create(gaio_core *core, void **state, char *why, size_t whylen)
{
    snprintf(why, whylen, "io_uring engine not built yet");
    return -1;
}

const gaio_engine_ops gaio_engine_uring = {
    .name = "uring",
    .create = uring_create,
};
