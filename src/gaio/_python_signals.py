"""The python engine's wait_io() and signals: a signal that arrives just before
select() sleeps (the native engines' side is src/native/signals.c).

CPython's C handler only sets a flag; the Python handler runs at the
interpreter's next check, on the main thread. A signal that comes after the
last check before select() but before the kernel wait begins would sleep with
its flag set until some I/O or deadline ends the wait: a server told to stop
by SIGINT/SIGTERM hangs until traffic comes. select() takes no signal mask
(there is no pselect, ppoll or epoll_pwait in Python), so the watcher lends
CPython a pipe of its own, watched by its selector, through
signal.set_wakeup_fd for the duration of each select() that may block: the C
handler writes to it from whatever thread took the signal, and select()
returns at once. Every signal after the swap writes the pipe; those that came
before it have set their flags, and their handlers are run right after the
swap, directly (PyErr_CheckSignals, reached through signal.pthread_kill to the
calling thread with signal 0, which sends nothing), as signals.c does.

Waiting for the interpreter's own next check is not enough: CPython 3.11
re-takes the GIL by recomputing its "something to do" flag (eval_breaker)
with a plain load and store, and a signal whose C handler runs between the
two, on this thread, sets the flag only to see it overwritten: the handler
then waits for the next GIL re-take, which may be the end of a long sleep.
set_wakeup_fd() itself drops the GIL (fstat) just before it installs the
descriptor, so the gap is real: a CI run waited out a 3 s wait_io() that
way (tests/test_signals.py reproduces it deterministically under gdb).

Only on the main thread (set_wakeup_fd works there only, and only there do
handlers run), and only when no one else's descriptor is set (an event
loop's): theirs is left in place, and the gap with it. Peeking at another's
descriptor resets its warn_on_full_buffer to True: Python has no getter.
"""
import os
import signal
import threading

_set_wakeup_fd = signal.set_wakeup_fd
_main_thread = threading.main_thread
_get_ident = threading.get_ident
_pthread_kill = getattr(signal, "pthread_kill", None)  # not on Windows


class SignalWakeup:
    """The pipe lent to signal.set_wakeup_fd while select() may block. Made on
    first use, registered in `selector` with `data` as its key's data."""

    def __init__(self, selector, data):
        self.selector = selector
        self.data = data
        self.rfd = self.wfd = -1
        self.armed = False

    @staticmethod
    def usable(thread_ident):
        return thread_ident == _main_thread().ident

    def arm(self):
        """Lend the pipe, if no other descriptor is set (main thread only)."""
        if self.wfd < 0:
            rfd, wfd = os.pipe()  # non-inheritable
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)  # set_wakeup_fd wants it
            try:
                self.selector.register(rfd, 1, self.data)  # EVENT_READ
            except BaseException:
                os.close(rfd)
                os.close(wfd)
                raise
            self.rfd, self.wfd = rfd, wfd
        # armed first: a handler that raises right after the swap still
        # leaves disarm() the pipe to take back
        self.armed = True
        try:
            previous = _set_wakeup_fd(self.wfd)
        except ValueError:  # not the main interpreter
            self.armed = False
            return
        if previous != -1:
            self.armed = False
            _set_wakeup_fd(previous)
        elif _pthread_kill is not None:
            _pthread_kill(_get_ident(), 0)  # runs the pending handlers: see above

    def disarm(self):
        if self.armed:
            self.armed = False
            previous = _set_wakeup_fd(-1)
            if previous not in (-1, self.wfd):
                _set_wakeup_fd(previous)  # a handler set its own meanwhile

    def drain(self):
        try:
            while os.read(self.rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self):
        """After disarm(); the selector closes with it."""
        if self.rfd >= 0:
            os.close(self.rfd)
            os.close(self.wfd)
            self.rfd = self.wfd = -1
