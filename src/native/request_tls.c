/* start_tls (R28-R31): not on the native engines yet (issue 20's next step;
 * engine='python' has it). The call is parsed and its arguments checked as
 * the python engine checks them (gaio._python_args.check_tls_arguments, the
 * same words), then refused with NotImplementedError: a bad call reads the
 * same on every engine, a good one says where TLS runs today. */
#include "binding.h"

PyObject *gaio__watcher_start_tls(Watcher *w, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static PyObject *names[7];
    static PyObject *check;
    enum { C, CONTEXT, SERVER_SIDE, SERVER_HOSTNAME, CTX, TIMEOUT, DEADLINE, N };
    if (w->closed)
        return gaio__closed_error();
    if (!names[0]) {
        static const char *const spelled[N] = {"conn", "context", "server_side",
                                               "server_hostname", "ctx", "timeout", "deadline"};
        for (int i = 0; i < N; i++)
            if (!(names[i] = PyUnicode_InternFromString(spelled[i])))
                return NULL;
    }
    PyObject *a[N] = {NULL};
    if (gaio__parse_args("Watcher.start_tls", args, nargs, kwnames, names, N, 2, 3, a) < 0)
        return NULL;
    int fd; /* the socket's checks as for every stream-only request */
    unsigned flags;
    if (gaio__conn_first_look(w, a[C], &fd, 0, &flags) < 0)
        return NULL;
    if (!check) {
        PyObject *mod = PyImport_ImportModule("gaio._python_args");
        if (!mod)
            return NULL;
        check = PyObject_GetAttrString(mod, "check_tls_arguments");
        Py_DECREF(mod);
        if (!check)
            return NULL;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(check, a[C], a[CONTEXT], a[SERVER_SIDE],
                                               a[SERVER_HOSTNAME] ? a[SERVER_HOSTNAME] : Py_None,
                                               NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    int64_t when;
    if (gaio__deadline_arg(a[TIMEOUT], a[DEADLINE], &when) < 0)
        return NULL;
    PyErr_Format(PyExc_NotImplementedError,
                 "start_tls is not available on engine '%s' yet (engine='python' has it)",
                 w->engine_name);
    return NULL;
}
