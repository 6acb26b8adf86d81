/* Shared by the Python binding's files (module.c, result.c): the only place
 * that touches Python objects. */
#ifndef GAIO_BINDING_H
#define GAIO_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "engine.h"

/* OpResult: the native completion type (result.c) */
extern PyTypeObject gaio__OpResult_Type;
PyObject *gaio__opresult_new(PyObject *op, PyObject *conn, PyObject *ctx, PyObject *buffer,
                             Py_ssize_t size, PyObject *error, int is_swap);

/* SwapMem: owner of internal-buffer memory shown to Python. A view is made by
 * arming one region and calling PyMemoryView_FromObject; the memory is freed
 * (if owned) when the last view of it goes. */
typedef struct {
    PyObject_HEAD
    unsigned char *mem;      /* the chunk / engine region */
    void *owned;             /* free()d at dealloc when set */
    Py_ssize_t exports;      /* live Py_buffer exports */
    unsigned char *armed;    /* region the next getbuffer exports */
    Py_ssize_t armed_len;
} gaio__SwapMem;
extern PyTypeObject gaio__SwapMem_Type;
gaio__SwapMem *gaio__swapmem_new(unsigned char *mem);
PyObject *gaio__swapmem_view(gaio__SwapMem *m, unsigned char *ptr, Py_ssize_t len);

#endif
