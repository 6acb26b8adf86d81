"""The pure-Python engine's 0.2 requests: accept, connect, vectored writes,
sendfile, standing reads and accepts (repeat=True), back-pressure (R21) and
quiet writes.

`_Special` (in _python_engine) is the request object of every request that is not a plain
0.1 read or write, and of a write made from a standing read's view (R21);
plain requests keep the smaller `_Request`, whose class attributes give
the 0.2 fields their neutral values, so the 0.1 paths test one attribute.

`SpecialIO` is a mixin of the engine's `_Core`: the I/O of these requests,
under the core's lock, in the thread that runs wait_io().

Back-pressure (R21) is _python_backpressure's: these writes tell it what
they queue, write and leave unwritten.

A standing accept that meets a resource error (EMFILE, ENFILE, ENOBUFS,
ENOMEM) reports it (at most once per 10 ms), stops watching its listener and
waits in `backoff` until 10 ms passed or the watcher closed a descriptor.
An AF_UNIX connect that finds the listener's backlog full (EAGAIN: nothing is
in progress) waits in `backoff` too, watching nothing, and is tried again
10 ms later, until it connects, fails otherwise, meets its deadline or is freed.
"""
import errno
import os
import signal
import socket
import time

from ._errors import DeadlineExceededError
from ._result import Op

_monotonic = time.monotonic
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_OP_READ = Op.READ
_OP_WRITE = Op.WRITE
_OP_ACCEPT = Op.ACCEPT
_OP_CONNECT = Op.CONNECT
_OP_SENDFILE = Op.SENDFILE
# The most items one sendmsg of a vectored write takes: the C engines'
# GAIO_IOV_MAX (src/native/readiness.h), or less where the system says so.
IOV_MAX = 1024
_IOV_MAX = min(getattr(os, "sysconf", lambda name: IOV_MAX)("SC_IOV_MAX") or IOV_MAX, IOV_MAX)
_SENDFILE_CHUNK = 1 << 30
# R16's resource errors, as gaio_resource_error() in src/native/engine.h.
RESOURCE_ERRORS = ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
_RESOURCE_ERRNOS = frozenset(
    getattr(errno, name) for name in RESOURCE_ERRORS if hasattr(errno, name))
# The back-offs, in seconds; the C engines' are GAIO_ACCEPT_RETRY_NS and
# GAIO_CONNECT_RETRY_NS in src/native/core.h (tests/test_static_checks.py
# holds them equal).
ACCEPT_RETRY = 0.010  # between a standing accept's resource errors (R16)
CONNECT_RETRY = 0.010  # between tries of an AF_UNIX connect to a full backlog (R17)
_SIGPIPE = getattr(signal, "SIGPIPE", None)
_PIPE_ONLY = (_SIGPIPE,)
# sigtimedwait is not on macOS: sigwait returns at once for a pending signal
_take_signal = getattr(signal, "sigtimedwait", None)
_take_signal = ((lambda sigset: signal.sigtimedwait(sigset, 0)) if _take_signal
                else signal.sigwait if hasattr(signal, "sigwait") else None)
_MASKS = _SIGPIPE is not None and hasattr(signal, "pthread_sigmask")
# connect()'s SO_ERROR while the kernel is still at it. Not EAGAIN: that is
# Linux's answer for an AF_UNIX listener whose backlog is full, and nothing is
# in progress then (the socket even polls writable, unconnected).
_CONNECT_WAITS = frozenset(
    getattr(errno, name) for name in ("EINPROGRESS", "EALREADY") if hasattr(errno, name))
_AF_UNIX = getattr(socket, "AF_UNIX", None)


def _sendfile(out_fd, in_fd, offset, count):
    """os.sendfile() that never raises SIGPIPE (R6). sendfile(2) has no
    MSG_NOSIGNAL, and a process may have set SIGPIPE back to SIG_DFL (Python
    ignores it at start-up), whose action on a vanished peer kills it. The
    SIGPIPE of a failed write goes to the writing thread: blocked here, it
    stays pending on this thread, and if this call made it (none was pending
    before) it is taken back before the mask is restored - as
    readiness.c's send_file_nosigpipe does for the native engines."""
    if not _MASKS:
        return os.sendfile(out_fd, in_fd, offset, count)
    was_pending = _SIGPIPE in signal.sigpending()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _PIPE_ONLY)
    try:
        return os.sendfile(out_fd, in_fd, offset, count)
    except BrokenPipeError:
        if not was_pending and _SIGPIPE in signal.sigpending() and _take_signal:
            _take_signal(_PIPE_ONLY)
        raise
    finally:
        if _SIGPIPE not in old:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _PIPE_ONLY)


def _clone_error(error):
    """A new exception of the same class as `error` (for the requests queued
    behind a connect that failed)."""
    try:
        clone = type(error)(*error.args)
    except Exception:  # an exception class with an unusual constructor
        clone = OSError(*getattr(error, "args", ()))
    return clone


class SpecialIO:
    """Mixin of _Core: see the module docstring. Expects the core's fields."""

    # ------------------------------------------------------------ standing reads

    def _deliver_standing(self, req, size, out):
        """A result of standing read `req`; the request stays at its head."""
        self.results.append(self.new_result(_OP_READ, req.owner, req.ctx, out, size,
                                            None, True))
        self._bp_note_view(out, req)
        if req.idle is not None:
            req.deadline = _monotonic() + req.idle  # the heap catches up lazily

    # ------------------------------------------------------------ finishing

    def _finish_special(self, req):
        """The 0.2 part of _finish: what a finished special request lets go."""
        if req.op is _OP_WRITE or req.op is _OP_SENDFILE:
            self._bp_ended(req)
            req.answer = None
        if req.items is not None:
            for view in req.items:
                view.release()
            req.items = None
        if req.fd >= 0:
            os.close(req.fd)
            req.fd = -1
            self.files.discard(req)
            self.fd_closed = True
        conn = req.conn
        if req.repeat and conn.standing is req:
            conn.standing = None
        if conn.stalled and (req.op is _OP_READ or req.op is _OP_ACCEPT):
            conn.stalled = False

    # ------------------------------------------------------------ accept

    def _pump_accept(self, conn, req):
        """Accept for `req`, the head of conn's reads: True when it finished
        (the next read goes on), False when it must wait."""
        sock = conn.sock
        while True:
            try:
                new, _ = sock.accept()
            except BlockingIOError:
                return False
            except ConnectionAbortedError:
                continue  # concerns only the connection being accepted
            except OSError as exc:
                exc.__traceback__ = None
                if exc.errno not in _RESOURCE_ERRNOS or not req.repeat:
                    self._fail(req, exc)
                    return True
                now = _monotonic()
                if req.reported is None or now - req.reported >= ACCEPT_RETRY:
                    req.reported = now
                    self.results.append(self.new_result(
                        _OP_ACCEPT, req.owner, req.ctx, None, 0, exc, False, None))
                    if req.idle is not None:
                        req.deadline = now + req.idle
                req.retry_at = now + ACCEPT_RETRY
                conn.stalled = True
                self.backoff.append(req)
                self.fd_closed = False  # only a descriptor closed from now on counts
                return False
            self.accepted += 1
            if not req.repeat:
                self._finish(req, 0, None, None, False, new)
                return True
            self.results.append(self.new_result(
                _OP_ACCEPT, req.owner, req.ctx, None, 0, None, False, new))
            if req.idle is not None:
                req.deadline = _monotonic() + req.idle

    def _serve_backoff(self):
        """Standing accepts in backoff whose time came, or all of them after
        the watcher closed a descriptor."""
        now = _monotonic()
        closed = self.fd_closed
        self.fd_closed = False
        waiting, self.backoff = self.backoff, []
        for req in waiting:
            if req.finished:
                continue
            if now < req.retry_at and (not closed or req.op is _OP_CONNECT):
                self.backoff.append(req)
                continue
            req.retry_at = None
            conn = req.conn
            if req.op is _OP_CONNECT:
                if conn.sock is not None and conn.connecting is req:
                    self._start_connect(conn, req)
                    self._sync_interest(conn)
                continue
            if conn.sock is None or not conn.reads or conn.reads[0] is not req:
                continue
            conn.stalled = False
            self._pump_reads(conn)
            self._sync_interest(conn)

    def backoff_until(self):
        """The earliest time a standing accept or a connect in backoff tries again."""
        if self.fd_closed:
            return 0.0
        return min(req.retry_at for req in self.backoff)

    # ------------------------------------------------------------ connect

    def _start_connect(self, conn, req):
        try:
            err = conn.sock.connect_ex(req.address)
        except OSError as exc:
            exc.__traceback__ = None
            self._connected(conn, req, exc)
            return
        if err == 0:
            self._connected(conn, req, None)
        elif err == errno.EAGAIN and conn.sock.family == _AF_UNIX:
            # the backlog is full: try again later, as a blocking connect waits
            req.retry_at = _monotonic() + CONNECT_RETRY
            self.backoff.append(req)
        elif err not in _CONNECT_WAITS:
            self._connected(conn, req, OSError(err, os.strerror(err)))
        # else: writable when it is done (_sync_interest watches for it)

    def _check_connect(self, conn):
        """A readiness report on a connecting socket."""
        req = conn.connecting
        try:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            err = exc.errno
        if err in _CONNECT_WAITS:
            return
        self._connected(conn, req, None if err == 0 else OSError(err, os.strerror(err)))

    def _connected(self, conn, req, error):
        """Connect `req` is done: deliver it, then start (or fail, with an
        error of the same class, in request order) what queued behind it."""
        conn.connecting = None
        behind = conn.behind
        conn.behind = None
        self._finish(req, 0, error, None, False)
        if conn.sock is None:
            return
        if error is not None:
            for queued in behind:
                if not queued.finished:
                    self._fail(queued, _clone_error(error))
        else:
            if conn.reads:
                self._pump_reads(conn)
            if conn.writes:
                self._pump_writes(conn)
        self._sync_interest(conn)

    def _expire_connect(self, req):
        conn = req.conn
        if conn.connecting is req:
            self._connected(conn, req, DeadlineExceededError("deadline exceeded"))
        else:
            self._fail(req, DeadlineExceededError("deadline exceeded"))

    # ------------------------------------------------------------ writes

    def _pump_special_write(self, conn, req):
        """Perform special write `req` (vectored, sendfile, or plain data that
        is quiet or back-pressure accounts for), the head of conn's writes: True when it finished, False when it must wait.
        Raises what the send raises (BlockingIOError: must wait)."""
        if req.op is _OP_SENDFILE:
            return self._send_file(conn, req)
        if req.items is not None:
            return self._send_vector(conn, req)
        return self._send_data(conn, req)

    def _send_data(self, conn, req):
        """A plain write that is quiet or that back-pressure accounts for."""
        view = req.view
        sock = conn.sock
        while True:
            if req.size:
                with view[req.size:] as rest:
                    size = sock.send(rest, _MSG_NOSIGNAL)
            else:
                size = sock.send(view, _MSG_NOSIGNAL)
            self._bp_written(req, size)
            req.size += size
            self.bytes_written += size
            if req.size == req.total:
                self._finish(req, req.size, None, req.buffer, False)
                return True

    def _send_vector(self, conn, req):
        items = req.items
        sock = conn.sock
        while True:
            index = req.index
            first = items[index]
            if req.offset:
                first = first[req.offset:]
            batch = [first]
            batch.extend(items[index + 1:index + _IOV_MAX])
            try:
                size = sock.sendmsg(batch, (), _MSG_NOSIGNAL)
            finally:
                if req.offset:
                    first.release()
            self._bp_written(req, size)
            req.size += size
            self.bytes_written += size
            if req.size == req.total:
                self._finish(req, req.size, None, req.buffer, False)
                return True
            offset = req.offset + size
            while offset >= items[index].nbytes:
                offset -= items[index].nbytes
                index += 1
            req.index = index
            req.offset = offset

    def _send_file(self, conn, req):
        while req.size < req.total:
            size = _sendfile(conn.fd, req.fd, req.offset + req.size,
                             min(req.total - req.size, _SENDFILE_CHUNK))
            if size == 0:
                self._fail(req, EOFError("end of file after %d bytes" % req.size))
                return True
            self._bp_written(req, size)
            req.size += size
            self.bytes_written += size
        self._finish(req, req.size, None, None, False)
        return True

    # ------------------------------------------------------------ closing

    def _close_files(self):
        for req in self.files:
            if req.fd >= 0:
                os.close(req.fd)
                req.fd = -1
        self.files = set()

