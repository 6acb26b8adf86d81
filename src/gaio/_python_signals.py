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
returns at once. Installing it is a C call, after which the interpreter runs
the handlers of signals that came before; every later one writes the pipe.

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
