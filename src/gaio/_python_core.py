"""The pure-Python engine: gaio's reference implementation and portable fallback.

Techniques: select.epoll where it exists, else selectors.DefaultSelector
(kqueue on BSD/macOS), level triggered (_python_poller); no thread of its own
(see _python_wait).

Its files mirror the C core's, by name, to be read side by side:
  _python_core.py            core.c: the core's state, its lifetime and queries
                             (close, stats, fileno, next deadline)
  _python_conns.py           core_conns.c: connections, their queues, delegation, release
  _python_requests.py        core_requests.c: requests in, started, aborted, progressing
  _python_results.py         core_results.c: the batch of results
  _python_accept_connect.py  core_accept_connect.c: accept, connect, their back-offs
  _python_datagrams.py       core_datagrams.c, datagram_io.c: datagram sockets'
                             reads and writes (R24-R27)
  _python_tls.py             tls_session.c, core_tls.c: TLS sessions (R28-R31): start_tls,
                             ciphertext in and out, the pump
  _python_tls_records.py     tls_records.c: the handshake, plaintext reads and writes
  _python_wait.py            core_wait.c: the wait loop, deadlines expiring, wake-ups
  _python_poller.py          epoll.c, kqueue.c: what is watched, what is ready
  _python_backpressure.py _python_deadlines.py _python_internal_buffer.py
  _python_signals.py         backpressure.c deadline_heap.c internal_buffer.c signals.c
  _python_watcher.py         the user-facing PythonWatcher (arguments: _python_args.py)
`_Core` gathers them: one mixin per file, over the state __init__ sets.

Locking: one re-entrant lock guards all state. wait_io() holds it except
while blocked in select(), so a request, free() or close() from another
thread never races the I/O on a descriptor (it may wait for the batch being
processed, never for readiness). Re-entrant because the weakref
callback that releases a dropped socket may run in any thread, including one
that holds the lock already (a garbage collection inside our own code).
"""
import io
import os
import threading
import time

from . import _python_args as args
from ._errors import WatcherClosedError
from ._python_accept_connect import AcceptConnect
from ._python_backpressure import WRITE_LOW_DIVISOR, BackPressure
from ._python_conns import NO_WRITES, Conns
from ._python_datagrams import Datagrams
from ._python_deadlines import DeadlineHeap
from ._python_internal_buffer import InternalBuffer
from ._python_poller import EVENT_READ, Poller
from ._python_requests import Requests
from ._python_results import Results
from ._python_signals import SignalWakeup
from ._python_tls import TLS
from ._python_wait import WaitLoop, _Waker

_monotonic = time.monotonic


class _Core(Requests, Results, Conns, AcceptConnect, Datagrams, TLS, WaitLoop, BackPressure):
    """All of a watcher's state; the PythonWatcher object is its front.

    Kept apart so that the weakref callbacks and the connections, which
    refer to the core, never keep the front alive: the front closes the core
    from __del__ once the caller drops it.
    """

    def __init__(self, bufsize, write_high=args.DEFAULT_WRITE_HIGH):
        self.bufsize = bufsize
        self.write_high = write_high  # back-pressure (R21); None: off
        # Watcher(batch_wait=): seconds a wait_io() that slept gathers for
        # (0.0: off; _python_wait.py), set by PythonWatcher
        self.batch_wait = 0.0
        self.write_low = None if write_high is None else write_high // WRITE_LOW_DIVISOR
        # id(view) -> the standing read that produced it, for this batch's
        # internal-buffer views (None when back-pressure is off)
        self.view_owner = None if write_high is None else {}
        self.lock = threading.RLock()
        self.closed = False
        # connections: id(caller's socket) -> _Conn
        self.conns = {}
        # the loop
        self.selector = Poller()
        try:
            self.waker = _Waker()
        except BaseException:  # EMFILE and the like: no half-made watcher left open
            self.selector.close()
            raise
        self.selector.register(self.waker.fileno(), EVENT_READ, None)
        self.signals = SignalWakeup(self.selector, None)  # _python_signals
        # one bound method for every connection's weakref callback
        self.socket_dropped = self._socket_dropped
        self.waiting = False  # a thread is inside wait_io()
        self.waiter = None  # ... its threading.get_ident()
        self.left = threading.Condition(self.lock)  # notified when it leaves, closed
        self.blocked = False  # ... and blocked in select()
        self.woken = False  # a wake is in flight
        # work for the loop
        self.fresh = []  # requests that were at the head of an idle queue
        # connections whose internal-buffer read found this batch's share of
        # the internal buffer used up: served first in the next batch, in
        # order, so a few busy connections cannot starve the others
        self.deferred = []
        self.freed = []  # requests ended by free(), to complete with ConnClosedError
        self.deadlines = DeadlineHeap()
        self.internal = InternalBuffer(bufsize)
        self.results = []
        self.backoff = []  # standing accepts waiting after a resource error
        self.fd_closed = False  # the watcher closed a descriptor (ends a backoff)
        self.files = set()  # sendfile requests holding a descriptor
        self.external = False  # fileno() was asked for: keep the waker honest
        # counters
        self.submitted = 0
        self.completed = 0
        self.pending = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.timeouts = 0
        self.accepted = 0
        self.quiet_done = 0
        self.datagrams_read = 0
        self.datagrams_written = 0
        # system calls that carried datagrams: one per datagram here (no recvmmsg)
        self.datagram_recv_calls = 0
        self.datagram_send_calls = 0
        self.tls_handshakes = 0

    # ------------------------------------------------------------ closing

    def close(self):
        with self.lock:
            if self.closed:
                return
            self._tls_refuse_close()
            self.closed = True
            conns = list(self.conns.values())
            self.conns.clear()
            for conn in conns:
                conn.reads = []
                conn.writes = NO_WRITES
                conn.interest = 0  # the selector goes too
                conn.sock.close()
                conn.sock = None
            self.fresh = []
            self.deferred = []
            self.freed = []
            self.results = []
            self.backoff = []
            self._close_files()
            self.deadlines.clear()
            self.internal.drop()
            self.pending = 0
            if self.waiting:
                # The selector and the waker must outlive the waiter's select():
                # closed under it, their numbers could be reused and watched by
                # mistake. Wake it and let it close them on its way out; wait
                # for that, so they are closed when close() returns - unless
                # the waiter is this very thread (a signal handler or a
                # finalizer run inside wait_io()), which closes them as soon as
                # wait_io() unwinds.
                self.waker.wake()
                if self.waiter == threading.get_ident():
                    return
                while self.waiting:
                    self.left.wait()
            self._close_loop()

    def _close_loop(self):
        if self.selector is not None:
            self.selector.close()
            self.selector = None
            self.waker.close()
            self.signals.close()

    def _close_files(self):
        for req in self.files:
            if req.fd >= 0:
                os.close(req.fd)
                req.fd = -1
        self.files = set()

    # ------------------------------------------------------------ queries

    def fileno(self):
        with self.lock:
            if self.closed:
                raise WatcherClosedError("watcher is closed")
            fileno = getattr(self.selector, "fileno", None)
            if fileno is None:
                raise io.UnsupportedOperation(
                    "fileno() needs an epoll, kqueue or devpoll selector; this "
                    "platform's selectors.DefaultSelector has no descriptor")
            if not self.external:
                self.external = True
                if self.fresh or self.freed or self.deferred or self.results:
                    self.woken = True
                    self.waker.wake()
            return fileno()

    def next_timeout(self):
        with self.lock:
            if self.closed:
                raise WatcherClosedError("watcher is closed")
            earliest = self.deadlines.earliest()
            if self.backoff:
                retry = self.backoff_until()
                earliest = retry if earliest is None else min(earliest, retry)
            if earliest is None:
                return None
            return max(earliest - _monotonic(), 0.0)

    def stats(self):
        with self.lock:
            return {
                "submitted": self.submitted,
                "completed": self.completed,
                "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written,
                "watched": len(self.conns),
                "pending": self.pending,
                "timeouts": self.timeouts,
                "accepted": self.accepted,
                "quiet_done": self.quiet_done,
                "datagrams_read": self.datagrams_read,
                "datagrams_written": self.datagrams_written,
                "datagram_recv_calls": self.datagram_recv_calls,
                "datagram_send_calls": self.datagram_send_calls,
                "tls_handshakes": self.tls_handshakes,
                "threads": 0,
                "internal_buffer_views": self.internal.views_out(),
                "internal_buffers_abandoned": self.internal.abandoned,
            }
