"""The pure-Python engine's accept and connect, the twin of
core_accept_connect.c: a connect's outcome and its retry, accept and its
back-off after a resource error.

A standing accept that meets a resource error (EMFILE, ENFILE, ENOBUFS,
ENOMEM) reports it (at most once per 10 ms), stops watching its listener and
waits in `backoff` until 10 ms passed or the watcher closed a descriptor.
An AF_UNIX connect that finds the listener's backlog full (EAGAIN: nothing is
in progress) waits in `backoff` too, watching nothing, and is tried again
10 ms later, until it connects, fails otherwise, meets its deadline or is freed.

`AcceptConnect` is a mixin of the engine's `_Core`, under the core's lock,
in the thread that runs wait_io().
"""
import errno
import os
import socket
import time

from ._errors import DeadlineExceededError
from ._python_results import new_result
from ._result import Op

_monotonic = time.monotonic
_OP_ACCEPT = Op.ACCEPT
_OP_CONNECT = Op.CONNECT
# R16's resource errors, as gaio_resource_error() in src/native/engine.h.
RESOURCE_ERRORS = ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
_RESOURCE_ERRNOS = frozenset(
    getattr(errno, name) for name in RESOURCE_ERRORS if hasattr(errno, name))
# The back-offs, in seconds; the C engines' are GAIO_ACCEPT_RETRY_NS and
# GAIO_CONNECT_RETRY_NS in src/native/core.h (tests/test_static_checks.py
# holds them equal).
ACCEPT_RETRY = 0.010  # between a standing accept's resource errors (R16)
CONNECT_RETRY = 0.010  # between tries of an AF_UNIX connect to a full backlog (R17)
# connect()'s SO_ERROR while the kernel is still at it. Not EAGAIN: that is
# Linux's answer for an AF_UNIX listener whose backlog is full, and nothing is
# in progress then (the socket even polls writable, unconnected).
_CONNECT_WAITS = frozenset(
    getattr(errno, name) for name in ("EINPROGRESS", "EALREADY") if hasattr(errno, name))
_AF_UNIX = getattr(socket, "AF_UNIX", None)


_IN_PROGRESS = object()


def _connect_outcome(sock):
    """How a connect in progress stands without waiting: None (connected),
    the OSError it failed with, or _IN_PROGRESS. SO_ERROR is 0 both while
    the kernel is at it and once connected: getpeername() tells them apart."""
    try:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError as exc:
        err = exc.errno
    if err in _CONNECT_WAITS:
        return _IN_PROGRESS
    if err:
        return OSError(err, os.strerror(err))
    try:
        sock.getpeername()
    except OSError:
        return _IN_PROGRESS
    return None


def _clone_error(error):
    """A new exception of the same class as `error` (for the requests queued
    behind a connect that failed)."""
    try:
        clone = type(error)(*error.args)
    except (TypeError, ValueError):  # an exception class with an unusual constructor
        # (not `except Exception`: a signal handler's exception raised here
        # must reach the caller, and the native engines call this too)
        clone = OSError(*getattr(error, "args", ()))
    return clone


class AcceptConnect:
    """Mixin of _Core: see the module docstring. Expects the core's fields."""

    # ------------------------------------------------------------ accept

    def _pump_accept(self, conn, req):
        """Accept for `req`, the head of conn's reads: True when it finished
        (the next read goes on), False when it must wait."""
        sock = conn.sock
        while True:
            try:
                # socket.socket.accept()'s steps, on the watcher's bare
                # _socket.socket: the caller's new socket object, whose
                # blocking mode follows socket.getdefaulttimeout()
                fd, _ = sock._accept()
                new = socket.socket(sock.family, sock.type, sock.proto, fd)
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
                    self.results.append(new_result(
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
            self.results.append(new_result(
                _OP_ACCEPT, req.owner, req.ctx, None, 0, None, False, new))
            if req.idle is not None:
                req.deadline = _monotonic() + req.idle

    # ------------------------------------------------------------ backoff

    def _serve_backoff(self):
        """Standing accepts in backoff whose time came, or all of them after
        the watcher closed a descriptor; connects whose retry time came."""
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
        behind, req.behind = req.behind, None
        if error is not None and not conn.dgram:
            conn.peer = error  # a later start_tls() completes with its class (R28)
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
        """A connect's deadline came: False if it had finished after all.
        A loopback connect finishes inside connect() itself, so one with
        `timeout=0` was tried once and finished at once, as the native
        engines find when they look at its readiness before its deadline."""
        conn = req.conn
        if conn.connecting is req:
            outcome = _connect_outcome(conn.sock)
            if outcome is not _IN_PROGRESS:
                self._connected(conn, req, outcome)
                return False
            self._connected(conn, req, DeadlineExceededError("deadline exceeded"))
        else:
            self._fail(req, DeadlineExceededError("deadline exceeded"))
        return True
