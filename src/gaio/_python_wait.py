"""The pure-Python engine's wait loop, the twin of core_wait.c: wait_io()
runs the loop in the caller's thread (the engine has no thread of its own),
expires deadlines, and is woken from other threads.

Any thread may make requests, even while wait_io() blocks: a request checks
its arguments and delegates the socket at once, then queues under the lock
and wakes the blocked selector (an eventfd, else a socketpair).

A new request at the head of its queue is tried at once, inside wait_io(),
before waiting for readiness.

One batch hands out at most the internal buffer's capacity (<= 4 * bufsize).
A read without a buffer that finds it used up is deferred: its connection
stops watching readability and is tried first in the next batch, in the
order deferred. Otherwise epoll, which reports ready descriptors in the same
order every time, would give every batch to the same busy connections.

fileno() is the selector's own descriptor; once it was asked for, the waker
(registered in that selector) is also signalled when nobody waits.

`WaitLoop` is a mixin of the engine's `_Core`.
"""
import os
import selectors
import socket
import threading
import time

from . import _python_args as args
from ._errors import ConnClosedError, DeadlineExceededError, WatcherClosedError
from ._result import Op

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_monotonic = time.monotonic
_sleep = time.sleep
_main_thread = threading.main_thread
_MAX_SELECT_WAIT = 86400.0  # seconds
_OP_READ = Op.READ
_OP_ACCEPT = Op.ACCEPT
_OP_CONNECT = Op.CONNECT


class _Waker:
    """Wakes a select() blocked in another thread."""

    def __init__(self):
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._peer = None
        else:
            self._peer, reader = socket.socketpair()
            self._peer.setblocking(False)
            reader.setblocking(False)
            self._reader = reader
            self._fd = reader.fileno()

    def fileno(self):
        return self._fd

    def wake(self):
        try:
            if self._peer is None:
                os.eventfd_write(self._fd, 1)
            else:
                self._peer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already pending, or closing

    def drain(self):
        try:
            if self._peer is None:
                os.eventfd_read(self._fd)
            else:
                while self._reader.recv(4096):
                    pass
        except (BlockingIOError, OSError):
            pass

    def close(self):
        if self._peer is None:
            if self._fd >= 0:
                os.close(self._fd)
        else:
            self._peer.close()
            self._reader.close()
        self._fd = -1


class WaitLoop:
    """Mixin of _Core: see the module docstring. Expects the core's fields."""

    # ------------------------------------------------------------ the loop

    def wait_io(self, timeout):
        if self.closed:
            raise WatcherClosedError("watcher is closed")
        seconds = args.wait_seconds(timeout)
        lock = self.lock
        with lock:
            if self.closed:
                raise WatcherClosedError("watcher is closed")
            if self.waiting:
                raise RuntimeError("another thread is already waiting in wait_io()")
            # A signal handler may raise at any call: nothing but plain
            # assignments between setting `waiting` and the try that unsets it.
            self.waiting = True
            try:
                self.waiter = threading.get_ident()
                return self._loop(seconds)
            finally:
                self.signals.disarm()
                self.waiting = False
                self.waiter = None
                self.blocked = False
                if self.closed:
                    self._close_loop()
                    self.left.notify_all()

    def _loop(self, seconds):
        lock = self.lock
        self.internal.release_batch()
        if self.view_owner:
            self.view_owner.clear()
        end = None if seconds is None else _monotonic() + seconds
        while True:
            self._run_queued_work()
            if self.results or self.fresh or self.freed:
                wait = 0
            else:
                wait = None
                if end is not None:
                    wait = end - _monotonic()
                earliest = self.deadlines.earliest()
                if self.backoff:
                    retry = self.backoff_until()
                    earliest = retry if earliest is None else min(earliest, retry)
                if earliest is not None:
                    until = earliest - _monotonic()
                    wait = until if wait is None else min(wait, until)
                if wait is not None:
                    # select() refuses timeouts past the C int/long range; the
                    # loop simply waits again when a capped wait runs out.
                    wait = min(max(wait, 0), _MAX_SELECT_WAIT)
            if wait != 0 and not self.signals.armed and self.waiter == _main_thread().ident:
                self.signals.arm()  # until wait_io() returns; see _python_signals
            slept_at = _monotonic() if wait != 0 and self.batch_wait else None
            self.blocked = True
            try:
                lock.release()  # inside: a handler may raise as it returns
                events = self.selector.select(wait)
            finally:
                lock.acquire()
                self.blocked = False
            if self.closed:
                raise WatcherClosedError("watcher was closed while waiting")
            if self.woken:
                self.woken = False
                self.waker.drain()
            self._handle_events(events)
            self._run_queued_work()
            if slept_at is not None and self.results:
                self._gather(slept_at, end)
            if self.results:
                results = self._take_results()
                if self.external:
                    self._keep_fileno_honest()
                return results
            if end is not None and _monotonic() >= end:
                if self.external:
                    self._keep_fileno_honest()
                return []

    def _gather(self, slept_at, end):
        """batch_wait: the wait slept and has results; what else arrives
        within batch_wait of the start of its sleep joins the batch. One
        sleep and one look, not a wake-up per arrival (core_wait.c's twin)."""
        until = slept_at + self.batch_wait
        if end is not None and end < until:
            until = end
        left = until - _monotonic()
        if left <= 0:
            return
        self.blocked = True
        try:
            self.lock.release()
            _sleep(left)
            events = self.selector.select(0)
        finally:
            self.lock.acquire()
            self.blocked = False
        if self.closed:
            raise WatcherClosedError("watcher was closed while waiting")
        self._handle_events(events)
        self._run_queued_work()

    def _run_queued_work(self):
        """Everything that needs no readiness: ended, deferred, new and expired
        requests."""
        if self.freed:
            freed, self.freed = self.freed, []
            for req in freed:
                if not req.finished:
                    self._fail(req, ConnClosedError("connection freed"))
        if self.deferred:
            self._serve_deferred()
        if self.fresh:
            self._start_fresh()
        if self.backoff:
            self._serve_backoff()
        if len(self.deadlines):
            self._expire_deadlines()

    def _handle_events(self, events):
        for conn, fd, mask in events:
            if conn is None:  # the waker, or the signal pipe
                if fd == self.signals.rfd:
                    self.signals.drain()
                continue
            if conn.sock is None or conn.interest == 0:
                continue  # freed or dropped earlier in this batch
            mask &= conn.interest  # as registered now, not when select() returned
            if conn.connecting is not None:
                self._check_connect(conn)
                continue
            if conn.tls is not None:
                self._tls_pump(conn)  # the session reads and writes for itself
                self._sync_interest(conn)
                continue
            reads_waited = bool(conn.reads)
            if mask & _READ and reads_waited:
                self._pump_reads(conn)
            if mask & _WRITE and conn.writes:
                self._pump_writes(conn)
            # readable with no read asked for: stop watching until one is
            self._sync_interest(conn, keep_read=reads_waited or not mask & _READ)

    def _serve_deferred(self):
        deferred, self.deferred = self.deferred, []
        for index, conn in enumerate(deferred):
            if self.internal.is_full():
                # still no room: they keep their place, ahead of newcomers
                self.deferred[:0] = deferred[index:]
                return
            conn.deferred = False
            if conn.sock is not None:
                self._pump_reads(conn)
                self._sync_interest(conn)

    # ------------------------------------------------------------ deadlines

    def _expire_deadlines(self):
        now = _monotonic()
        while True:
            req = self.deadlines.pop_expired(now)
            if req is None:
                return
            conn = req.conn
            if req.op is _OP_CONNECT:
                if self._expire_connect(req):
                    self.timeouts += 1
                continue
            self.timeouts += 1
            reading = req.op is _OP_READ or req.op is _OP_ACCEPT
            queue = conn.reads if reading else conn.writes
            was_head = bool(queue) and queue[0] is req
            self._fail(req, DeadlineExceededError("deadline exceeded"))
            if was_head and conn.sock is not None and conn.connecting is None:
                # the next request goes on now (a timeout <= 0 is tried once)
                if reading:
                    self._pump_reads(conn)
                else:
                    self._pump_writes(conn)
                self._sync_interest(conn)

    # ------------------------------------------------------------ waking

    def _wake_waiter(self):
        if not self.woken and (self.blocked or (self.external and not self.waiting)):
            self.woken = True
            self.waker.wake()

    def _keep_fileno_honest(self):
        """Leaving wait_io() with work that no readiness will report (R23):
        make fileno() readable for it."""
        if self.fresh or self.freed or self.deferred or (
                self.backoff and self.backoff_until() <= _monotonic()):
            self.woken = True
            self.waker.wake()
