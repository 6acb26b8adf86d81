/* Argument parsing for the Watcher's methods (METH_FASTCALL | METH_KEYWORDS),
 * laid out as _python_args.py so the two can be read side by side. */
#include "binding.h"

#include <math.h>
#include <string.h>

int gaio__parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, PyObject *const *names, int nnames, int maxpos,
                      int required, PyObject **out)
{
    for (int i = 0; i < nnames; i++)
        out[i] = NULL;
    if (nargs > maxpos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional argument%s (%zd given)",
                     fname, maxpos, maxpos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < nnames && found < 0; i++)
            if (key == names[i])
                found = i;
        for (int i = 0; i < nnames && found < 0; i++)
            if (PyUnicode_Compare(key, names[i]) == 0)
                found = i;
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", fname, key);
            return -1;
        }
        if (out[found]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%S'", fname, key);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < required; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%S'", fname, names[i]);
            return -1;
        }
    return 0;
}

/* seconds -> double: any real number, i.e. what float() takes through
 * __float__ or __index__ (int, float, Decimal, Fraction), but a bool. NaN is
 * a ValueError; an int too big for a double the OverflowError float() gives. */
int gaio__seconds_arg(PyObject *o, const char *what, double *out)
{
    PyNumberMethods *nb = Py_TYPE(o)->tp_as_number;
    if (!PyFloat_Check(o) &&
        (PyBool_Check(o) || !nb || (!nb->nb_float && !nb->nb_index))) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, not %.100s", what,
                     gaio__type_name(o));
        return -1;
    }
    double d = PyFloat_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(d)) {
        PyErr_Format(PyExc_ValueError, "%s must not be NaN", what);
        return -1;
    }
    *out = d;
    return 0;
}

int64_t gaio__ns_clamp(double ns)
{
    if (ns >= 9.2e18)
        return INT64_MAX;
    if (ns <= -9.2e18)
        return INT64_MIN + 1;
    return (int64_t)ns;
}

/* The request's absolute deadline in ns, INT64_MAX for none. */
int gaio__deadline_arg(PyObject *timeout, PyObject *deadline, int64_t *out)
{
    double d;
    if (timeout == Py_None)
        timeout = NULL;
    if (deadline == Py_None)
        deadline = NULL;
    *out = INT64_MAX;
    if (timeout && deadline) {
        PyErr_SetString(PyExc_ValueError, "give timeout or deadline, not both");
        return -1;
    }
    if (timeout) {
        if (gaio__seconds_arg(timeout, "timeout", &d) < 0)
            return -1;
        int64_t now = gaio_now_ns();
        *out = d <= 0 ? now : gaio__ns_clamp((double)now + d * 1e9);
    } else if (deadline) {
        if (gaio__seconds_arg(deadline, "deadline", &d) < 0)
            return -1;
        *out = gaio__ns_clamp(d * 1e9);
    }
    return 0;
}

int gaio__buffer_arg(PyObject *obj, Py_buffer *view, int writable)
{
    const char *what = writable ? "buf" : "data";
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %sbytes-like object, not %.100s", what,
                     writable ? "writable " : "", gaio__type_name(obj));
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        /* what PyBUF_SIMPLE refuses of a buffer: one that is not C-contiguous */
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a contiguous buffer, not a non-contiguous %.100s",
                         what, gaio__type_name(obj));
        }
        return -1;
    }
    /* a read-only buffer for a read is a TypeError even when empty: the
     * kind is wrong before the size is */
    if (writable && view->readonly) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s must be writable, not a read-only %.100s", what,
                     gaio__type_name(obj));
        return -1;
    }
    return 0;
}

/* type(o).__name__, as Python's messages name a type: tp_name without the
 * module a static type's name carries ("_io.BufferedReader") */
const char *gaio__type_name(PyObject *o)
{
    const char *name = Py_TYPE(o)->tp_name;
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}
