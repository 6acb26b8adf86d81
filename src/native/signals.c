/* wait_io() and signals: a signal that arrives just before the wait sleeps.
 *
 * CPython's C handler only sets a flag; the Python handler runs later, on the
 * main thread, when the interpreter checks that flag. A signal that comes
 * after wait_io()'s last check but before the kernel wait begins would sleep
 * with its flag set until some I/O or deadline ends the wait - a server told
 * to stop by SIGINT/SIGTERM hangs until traffic comes. The check and the
 * sleep must be made one, as pselect does:
 *
 *   - epoll and io_uring (engine wait_sigmask): every signal but the
 *     synchronous ones is blocked, Python's pending handlers run
 *     (PyErr_CheckSignals), and the kernel wait sleeps with the caller's own
 *     mask (epoll_pwait; io_uring_enter's EXT_ARG sigmask), which it sets and
 *     restores atomically. A signal of the gap stays pending and ends the
 *     sleep at once with EINTR. Limit (CPython's own sleeps share it): a
 *     process-directed signal the kernel hands to another thread that does
 *     not block it sets the flag there and wakes nobody.
 *   - kqueue (engine signal_fd): kevent() takes no mask. EVFILT_SIGNAL does
 *     not suit: libkqueue implements it with a signalfd, blocking the signal
 *     for the process, and Python's handler would never run; ppoll() on the
 *     kqueue descriptor is not on macOS and a libkqueue descriptor is never
 *     readable. Instead the engine's pipe is given to signal.set_wakeup_fd
 *     for the wait - unless someone else's is set, which is left alone (and
 *     the gap with it) - so CPython's C handler, in whatever thread, wakes
 *     the kevent(). Restoring another's descriptor after peeking at it sets
 *     its warn_on_full_buffer back to True: there is no getter.
 *
 * Only the main thread of the main interpreter runs Python handlers, and only
 * a wait that sleeps has a gap: wait_io() asks the core to stop before it
 * would sleep (GAIO_WAIT_SLEEPY) and only then guards it and calls again, so
 * a wait that finds work ready pays nothing.
 */
#include "binding.h"

#include <pthread.h>
#include <signal.h>

static unsigned long main_thread;
static PyObject *set_wakeup_fd; /* signal.set_wakeup_fd */
static sigset_t async_signals;  /* what the guard blocks */

static PyObject *after_fork_child(PyObject *mod, PyObject *unused)
{
    main_thread = PyThread_get_thread_ident(); /* the forking thread is the child's main */
    Py_RETURN_NONE;
}

static PyMethodDef after_fork_def = {"_after_fork_child", after_fork_child, METH_NOARGS, NULL};

int gaio__signals_init(PyObject *module)
{
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *main = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    PyObject *ident = main ? PyObject_GetAttrString(main, "ident") : NULL;
    Py_XDECREF(threading);
    Py_XDECREF(main);
    if (!ident)
        return -1;
    main_thread = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (PyErr_Occurred())
        return -1;
    PyObject *signal = PyImport_ImportModule("signal");
    if (!signal)
        return -1;
    set_wakeup_fd = PyObject_GetAttrString(signal, "set_wakeup_fd");
    Py_DECREF(signal);
    if (!set_wakeup_fd)
        return -1;
    PyObject *os = PyImport_ImportModule("os");
    PyObject *hook = os ? PyCFunction_New(&after_fork_def, module) : NULL;
    PyObject *reg = os ? PyObject_GetAttrString(os, "register_at_fork") : NULL;
    PyObject *kw = hook && reg ? Py_BuildValue("{sO}", "after_in_child", hook) : NULL;
    PyObject *empty = kw ? PyTuple_New(0) : NULL;
    PyObject *done = empty ? PyObject_Call(reg, empty, kw) : NULL;
    Py_XDECREF(os);
    Py_XDECREF(hook);
    Py_XDECREF(reg);
    Py_XDECREF(kw);
    Py_XDECREF(empty);
    if (!done)
        return -1;
    Py_DECREF(done);
    /* A fault blocked is fatal at once (the kernel forces the default
     * action), skipping faulthandler: those stay deliverable. */
    sigfillset(&async_signals);
    static const int synchronous[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT};
    for (size_t i = 0; i < sizeof synchronous / sizeof synchronous[0]; i++)
        sigdelset(&async_signals, synchronous[i]);
    return 0;
}

/* set_wakeup_fd(fd): the previous descriptor, or -2 on error (an exception set). */
static int swap_wakeup_fd(int fd)
{
    PyObject *arg = PyLong_FromLong(fd);
    PyObject *old = arg ? PyObject_CallOneArg(set_wakeup_fd, arg) : NULL;
    Py_XDECREF(arg);
    if (!old)
        return -2;
    long prev = PyLong_AsLong(old);
    Py_DECREF(old);
    return prev == -1 && PyErr_Occurred() ? -2 : (int)prev;
}

int gaio__sig_guard_wanted(void)
{
    return PyThread_get_thread_ident() == main_thread &&
           PyInterpreterState_Get() == PyInterpreterState_Main();
}

int gaio__sig_guard_enter(Watcher *w, gaio__sig_guard *g)
{
    g->how = GAIO_GUARD_NONE;
    if (gaio_core_wait_sigmask(w->core)) {
        pthread_sigmask(SIG_BLOCK, &async_signals, &g->old);
        g->how = GAIO_GUARD_MASK;
    } else {
        int fd = gaio_core_signal_fd(w->core);
        if (fd < 0)
            return 0; /* none (or no descriptor left): the gap stays */
        int prev = swap_wakeup_fd(fd);
        if (prev == -2)
            return -1;
        if (prev != -1) {
            /* someone else's (an event loop's): theirs stays */
            return swap_wakeup_fd(prev) == -2 ? -1 : 0;
        }
        g->how = GAIO_GUARD_WAKEUP;
        g->fd = fd;
    }
    if (PyErr_CheckSignals() < 0) {
        gaio__sig_guard_leave(g);
        return -1;
    }
    return 0;
}

/* The TLS record layer's pass (tls_session.c) calls ssl.SSLObject methods,
 * and _ssl's loops run Python's signal handlers themselves
 * (PyErr_CheckSignals after each SSL_read/SSL_write/SSL_do_handshake): a
 * handler's exception - a server's KeyboardInterrupt - would end inside the
 * record layer, taken for a TLS failure of one connection, and never reach
 * wait_io()'s caller (and bytes SSL_read had produced would be dropped with
 * it). So the pending handlers run here first, and asynchronous signals are
 * blocked until gaio__sig_guard_leave, after the pass; one that arrives
 * meanwhile is taken by the next guarded wait or check. */
int gaio__sig_hold(gaio__sig_guard *g)
{
    g->how = GAIO_GUARD_NONE;
    if (!gaio__sig_guard_wanted())
        return 0; /* handlers run on the main thread only: none can run here */
    pthread_sigmask(SIG_BLOCK, &async_signals, &g->old);
    g->how = GAIO_GUARD_MASK;
    if (PyErr_CheckSignals() < 0) {
        gaio__sig_guard_leave(g);
        return -1;
    }
    return 0;
}

void gaio__sig_guard_leave(gaio__sig_guard *g)
{
    if (g->how == GAIO_GUARD_MASK) {
        pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    } else if (g->how == GAIO_GUARD_WAKEUP) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb); /* leaving with a handler's exception, perhaps */
        int prev = swap_wakeup_fd(-1);
        if (prev >= 0 && prev != g->fd)
            swap_wakeup_fd(prev); /* a handler set its own meanwhile: keep it */
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    g->how = GAIO_GUARD_NONE;
}
