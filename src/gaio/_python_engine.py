"""The pure-Python engine: gaio's reference implementation and portable fallback.

Techniques: selectors.DefaultSelector (epoll on Linux, kqueue on BSD/macOS),
level triggered; no thread of its own: wait_io() runs the loop in the
caller's thread. Any thread may make requests, even while wait_io() blocks:
a request checks its arguments and delegates the socket at once, then queues
under the lock and wakes the blocked selector (an eventfd, else a socketpair).

A connection is only read when a read was asked for (back-pressure): interest
in readability is registered while a read waits. It is kept once the reads
are done, because the next read usually follows at once; a readiness report
with no read waiting drops it. Write interest is dropped as soon as the
writes are done, or every wait would report the socket writable.

A new request at the head of its queue is tried at once, inside wait_io(),
before waiting for readiness.

One batch hands out at most the internal buffer's capacity (<= 4 * bufsize).
A read without a buffer that finds it used up is deferred: its connection
stops watching readability and is tried first in the next batch, in the
order deferred. Otherwise epoll, which reports ready descriptors in the same
order every time, would give every batch to the same busy connections.

Descriptors: delegation takes the caller's descriptor with socket.detach()
(the same kernel socket, options and all, no dup), and the caller's object
reads as closed at once.

Version 0.2 (accept, connect, vectored writes, sendfile, standing requests,
back-pressure, quiet writes) lives in _python_special: its requests are
_Special objects, and the paths above test one slot to tell them apart.
fileno() is the selector's own descriptor; once it was asked for, the waker
(registered in that selector) is also signalled when nobody waits.

Locking: one re-entrant lock guards all state. wait_io() holds it except
while blocked in select(), so a request, free() or close() from another
thread never races the I/O on a descriptor (it may wait for the batch being
processed, never for readiness). Re-entrant because the weakref
callback that releases a dropped socket may run in any thread, including one
that holds the lock already (a garbage collection inside our own code).
"""
import os
import selectors
import socket
import sys
import threading
import time
import weakref

from . import _python_args as args
from ._errors import (
    ConnClosedError,
    DeadlineExceededError,
    WatcherClosedError,
)
from ._python_backpressure import WRITE_LOW_DIVISOR, BackPressure
from ._python_deadlines import DeadlineHeap
from ._python_internal_buffer import InternalBuffer
from ._python_signals import SignalWakeup
from ._python_special import SpecialIO
from ._result import Op, OpResult

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
# macOS has no MSG_NOSIGNAL: the socket option instead (R6: a process that set
# SIGPIPE back to SIG_DFL must survive a vanished peer), as engine_kqueue.c does
_SO_NOSIGPIPE = None if _MSG_NOSIGNAL else getattr(
    socket, "SO_NOSIGPIPE", 0x1022 if sys.platform == "darwin" else None)
_monotonic = time.monotonic
_socket_fileno = socket.socket.fileno
_socket_detach = socket.socket.detach
_main_thread = threading.main_thread
_MAX_SELECT_WAIT = 86400.0  # seconds
# Enum member lookups cost more than a global on the hot path.
_OP_READ = Op.READ
_OP_WRITE = Op.WRITE
_OP_ACCEPT = Op.ACCEPT
_OP_CONNECT = Op.CONNECT
_OP_SENDFILE = Op.SENDFILE


def _result_builder():
    """A function building an OpResult straight through its slots.

    Same object as OpResult(...) gives, at less than half the cost of going
    through its __init__ (which sets each slot with object.__setattr__): two
    results per echoed message make this the engine's hottest allocation.
    """
    new = object.__new__
    set_op, set_conn, set_ctx, set_buffer, set_size, set_error, set_swap, set_accepted = (
        getattr(OpResult, name).__set__ for name in (
            "op", "conn", "ctx", "buffer", "size", "error", "is_swap_buffer", "accepted"))

    def build(op, conn, ctx, buffer, size, error, is_swap, accepted=None):
        res = new(OpResult)
        set_op(res, op)
        set_conn(res, conn)
        set_ctx(res, ctx)
        set_buffer(res, buffer)
        set_size(res, size)
        set_error(res, error)
        set_swap(res, is_swap)
        set_accepted(res, accepted)
        return res

    return build


_new_result = _result_builder()


class _Conn:
    """A delegated socket: the watcher's own socket object and two queues.

    `ref` is a weak reference to the caller's socket object (its identity):
    pending requests hold that object, the connection does not.
    """
    __slots__ = ("ref", "sock", "fd", "reads", "writes", "interest", "deferred",
                 "stalled", "connecting", "behind", "standing")

    def __init__(self, ref, sock):
        self.ref = ref
        self.sock = sock  # None once closed
        self.fd = sock.fileno()
        self.reads = []
        self.writes = []
        self.interest = 0  # selector events registered
        self.deferred = False  # in the watcher's deferred list
        self.stalled = False  # the head read waits: back-pressure, accept backoff
        self.connecting = None  # the connect request under way
        self.behind = None  # ... and the requests made on conn meanwhile, in order
        self.standing = None  # the standing read that answers for conn's writes (R21)


class _Request:
    __slots__ = ("op", "conn", "owner", "ctx", "buffer", "view", "size", "full",
                 "deadline", "finished", "special")

    def __init__(self, op, conn, owner, ctx, buffer, view, full, deadline):
        self.op = op
        self.conn = conn
        self.owner = owner  # the caller's socket object: the result's conn
        self.ctx = ctx
        self.buffer = buffer
        self.view = view  # flat memoryview of buffer; None for the internal buffer
        self.size = 0
        self.full = full
        self.deadline = deadline
        self.finished = False
        self.special = False  # a _Special: see its fields

    # Neutral values of _Special's fields, read by the shared paths.
    repeat = False
    quiet = False
    answer = None
    held = False
    timed = False
    gen = 0


class _Special(_Request):
    """Every 0.2 request, and a plain write back-pressure accounts for
    (see _python_special)."""
    __slots__ = ("repeat", "quiet", "answer", "held", "timed", "gen",
                 "idle", "owed", "total", "items", "index", "offset", "fd", "address",
                 "retry_at", "reported")

    def __init__(self):
        self.special = True
        self.repeat = False
        self.quiet = False
        self.answer = None
        self.held = False
        self.timed = False
        self.gen = 0
        self.idle = None  # a standing request's idle limit (seconds)
        self.owed = 0  # a standing read's unwritten answerable bytes
        self.total = 0  # a write's bytes in all
        self.items = None  # a vectored write's flat views (non-empty items)
        self.index = 0  # ... where it resumes
        self.offset = 0
        self.fd = -1  # sendfile: our duplicate of the file's descriptor
        self.address = None  # connect
        self.retry_at = None  # a standing accept or a connect in backoff
        self.reported = None  # ... when it last reported a resource error

    def setup(self, op, conn, owner, ctx, buffer, view, full, deadline):
        _Request.__init__(self, op, conn, owner, ctx, buffer, view, full, deadline)
        self.special = True


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


class _Core(SpecialIO, BackPressure):
    """All of a watcher's state; the PythonWatcher object is its front.

    Kept apart so that the weakref callbacks and the connections, which
    refer to the core, never keep the front alive: the front closes the core
    from __del__ once the caller drops it.
    """

    def __init__(self, bufsize, write_high=args.DEFAULT_WRITE_HIGH):
        self.bufsize = bufsize
        self.write_high = write_high  # back-pressure (R21); None: off
        self.write_low = None if write_high is None else write_high // WRITE_LOW_DIVISOR
        # id(view) -> the standing read that produced it, for this batch's
        # internal-buffer views (None when back-pressure is off)
        self.view_owner = None if write_high is None else {}
        self.new_result = _new_result
        self.lock = threading.RLock()
        self.closed = False
        # connections: id(caller's socket) -> _Conn
        self.conns = {}
        # the loop
        self.selector = selectors.DefaultSelector()
        try:
            self.waker = _Waker()
        except BaseException:  # EMFILE and the like: no half-made watcher left open
            self.selector.close()
            raise
        self.selector.register(self.waker.fileno(), _READ, None)
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

    # ------------------------------------------------------------ requests

    def submit(self, op, owner, ctx, buffer, view, full, deadline, spec=None):
        with self.lock:
            if self.closed:
                raise WatcherClosedError("watcher is closed")
            arena = self.internal.arena
            origin = None  # R21: the standing read(s) the written views came from
            if spec is not None and spec.items is not None and arena is not None:
                origin = self._copy_items(spec, arena)
            if arena is not None and view is not None and view.obj is arena:
                origin = self._bp_origin(buffer)
                # A result's internal-buffer view written back: copy it now, the
                # arena is reused after the next wait_io(). Under the lock, so
                # not while wait_io() revokes the views; copied from the
                # caller's own view when it is one, so a revoked view raises
                # ValueError instead of copying another connection's bytes.
                source = buffer if isinstance(buffer, memoryview) else view
                buffer = source.tobytes()
                view.release()
                view = memoryview(buffer)
            conn = self.conns.get(id(owner))
            if conn is None or conn.ref() is not owner:
                conn = self._delegate(owner)
            elif spec is not None and op is _OP_CONNECT:
                raise ValueError("connect() on a delegated socket")
            if spec is None:
                if op is _OP_READ or origin is None:
                    # _submitted(), inlined on purpose: every plain 0.1
                    # request comes this way, so it pays no extra call
                    req = _Request(op, conn, owner, ctx, buffer, view, full, deadline)
                    if op is _OP_READ:
                        queue = conn.reads
                    else:
                        queue = conn.writes
                        if conn.standing is not None:  # R21: it answers for plain writes
                            self._owe(conn.standing, view.nbytes)
                    queue.append(req)
                    self.submitted += 1
                    self.pending += 1
                    if conn.behind is not None:
                        conn.behind.append(req)
                    wake = False
                    if len(queue) == 1:
                        self.fresh.append(req)
                        wake = True
                    if deadline is not None:
                        self.deadlines.push(deadline, req)
                        wake = True  # perhaps earlier than the one select() waits for
                    if wake and (self.blocked or self.external):
                        self._wake_waiter()
                    return
                spec = _Special()
                spec.total = view.nbytes
            req = spec
            req.setup(op, conn, owner, ctx, buffer, view, full, deadline)
            if op is _OP_CONNECT:
                conn.connecting = req
                conn.behind = []
                self.submitted += 1
                self.pending += 1
                self.fresh.append(req)
                if deadline is not None:
                    req.timed = True
                    self.deadlines.push(deadline, req)
                self._wake_waiter()
                return
            if op is _OP_READ or op is _OP_ACCEPT:
                queue = conn.reads
                queue.append(req)
                if req.repeat and op is _OP_READ and queue[0] is req:
                    self._bp_adopt(conn)
            else:
                queue = conn.writes
                req.answer = origin
                self._bp_queued(req, conn)
                if req.fd >= 0:
                    self.files.add(req)
                queue.append(req)
            if deadline is not None:
                req.timed = True
            self._submitted(req, conn, queue, deadline)

    def _submitted(self, req, conn, queue, deadline):
        """Count request `req`, just queued, and get it started."""
        self.submitted += 1
        self.pending += 1
        if conn.behind is not None:
            conn.behind.append(req)
        wake = False
        if len(queue) == 1:
            self.fresh.append(req)
            wake = True
        if deadline is not None:
            self.deadlines.push(deadline, req)
            wake = True  # perhaps earlier than the one select() waits for
        if wake and (self.blocked or self.external):
            self._wake_waiter()

    def _copy_items(self, spec, arena):
        """Copy a vectored write's internal-buffer items (as for a plain
        write's view, R6): the standing read each item came from (a list
        parallel to the items, R21), or None when none did."""
        origins = None
        items = spec.items
        originals = spec.buffer  # the items given, parallel to `items`, until setup
        for index, view in enumerate(items):
            if view.obj is not arena:
                continue
            item = originals[index]
            source = item if isinstance(item, memoryview) else view
            copy = source.tobytes()
            view.release()
            items[index] = memoryview(copy)
            owner_read = self._bp_origin(item)
            if owner_read is not None:
                if origins is None:
                    origins = [None] * len(items)
                origins[index] = owner_read
        return origins

    def _delegate(self, owner):
        """Delegate socket object `owner`, new to this watcher: its connection."""
        key = id(owner)
        # socket.socket's own fileno() and detach(), not a subclass's: the
        # watcher takes the socket's real descriptor (as the native engines do)
        if _socket_fileno(owner) == -1:
            raise ValueError(args.CLOSED_CONN)
        family, kind, proto = owner.family, owner.type, owner.proto
        # detach() closes the caller's object (fileno() becomes -1, so direct
        # I/O fails at once) and hands us its descriptor: the same kernel
        # socket, options and all, without a dup().
        fd = _socket_detach(owner)
        sock = None
        try:
            sock = socket.socket(family, kind, proto, fd)
            sock.setblocking(False)
            if _SO_NOSIGPIPE is not None:
                sock.setsockopt(socket.SOL_SOCKET, _SO_NOSIGPIPE, 1)
        except BaseException:
            if sock is not None:
                sock.detach()  # fd is closed once, below
            os.close(fd)
            raise
        conn = _Conn(weakref.KeyedRef(owner, self.socket_dropped, key), sock)
        self.conns[key] = conn
        return conn

    def _socket_dropped(self, ref):
        """weakref callback: the caller dropped its last reference to a socket
        with no request pending. Runs in whichever thread dropped it."""
        with self.lock:
            conn = self.conns.get(ref.key)
            if conn is not None and conn.ref is ref:
                del self.conns[ref.key]
                self._close_conn(conn)

    def free(self, owner):
        with self.lock:
            if self.closed:
                raise WatcherClosedError("watcher is closed")
            key = id(owner)
            conn = self.conns.get(key)
            if conn is None or conn.ref() is not owner:
                return
            del self.conns[key]
            self._close_conn(conn)
            ended = conn.reads + conn.writes
            if conn.connecting is not None:
                ended.insert(0, conn.connecting)
                conn.connecting = None
                conn.behind = None
            conn.reads = []
            conn.writes = []
            for req in ended:
                self.freed.append(req)
            if ended:
                self._wake_waiter()

    def _close_conn(self, conn):
        if conn.interest:
            try:
                self.selector.unregister(conn.fd)
            except (KeyError, ValueError):
                pass
            conn.interest = 0
        conn.sock.close()
        conn.sock = None
        self.fd_closed = True

    def _wake_waiter(self):
        if not self.woken and (self.blocked or (self.external and not self.waiting)):
            self.woken = True
            self.waker.wake()

    # ------------------------------------------------------------ completing

    def _finish(self, req, size, error, buffer, is_swap, accepted=None):
        """Turn `req` into a result (none for a quiet write that succeeded);
        it leaves its queue."""
        req.finished = True
        self.pending -= 1
        conn = req.conn
        op = req.op
        if op is _OP_READ:
            queue = conn.reads
        elif op is _OP_WRITE:
            queue = conn.writes
        elif op is _OP_ACCEPT:
            queue = conn.reads
        else:
            queue = conn.writes if op is _OP_SENDFILE else ()
        if queue and queue[0] is req:
            del queue[0]
        elif req in queue:
            queue.remove(req)
        if not req.special:
            if req.deadline is not None:
                self.deadlines.forget(req)
            if op is _OP_WRITE and error is not None and conn.standing is not None:
                self._bp_plain_ended(req)
            self.results.append(_new_result(op, req.owner, req.ctx, buffer, size, error,
                                            is_swap))
        else:
            if req.timed:
                self.deadlines.forget(req)
            self._finish_special(req)
            if req.quiet and error is None:
                self.quiet_done += 1
            else:
                self.results.append(_new_result(op, req.owner, req.ctx, buffer, size, error,
                                                is_swap, accepted))
        if op is _OP_READ and queue:
            head = queue[0]
            if head.repeat and head.op is _OP_READ and conn.standing is not head:
                self._bp_adopt(conn)  # R21: the new head read answers from now on
        if req.view is not None:
            req.view.release()
        # the result holds these now; a lingering request must not keep them
        req.owner = req.ctx = req.buffer = req.view = None

    def _fail(self, req, error):
        if req.view is None and req.op is _OP_READ:  # internal buffer, nothing read
            self._finish(req, 0, error, None, False)
        else:
            self._finish(req, req.size, error, req.buffer, False)

    # ------------------------------------------------------------ doing I/O

    def _pump_reads(self, conn):
        """Perform the reads at the head of conn's queue until one must wait."""
        reads = conn.reads
        sock = conn.sock
        while reads:
            req = reads[0]
            view = req.view
            try:
                if view is None:
                    special = req.special
                    if special:
                        if req.op is _OP_ACCEPT:
                            if conn.stalled or not self._pump_accept(conn, req):
                                return
                            continue
                        if req.held:
                            conn.stalled = True
                            return
                    if self.internal.is_full():
                        if not conn.deferred:
                            conn.deferred = True
                            self.deferred.append(conn)
                        return
                    size, out = self.internal.recv(sock)
                    if size:
                        self.bytes_read += size
                        if special and req.repeat:
                            # one result per arrival; level-triggered readiness
                            # reports what is left in the next pass
                            self._deliver_standing(req, size, out)
                            return
                        self._finish(req, size, None, out, True)
                    else:
                        self._finish(req, 0, EOFError("end of stream"), None, False)
                    continue
                while True:
                    if req.full and req.size:
                        with view[req.size:] as rest:
                            size = sock.recv_into(rest)
                    else:
                        size = sock.recv_into(view)
                    if size == 0:
                        self._fail(req, EOFError("end of stream"))
                        break
                    req.size += size
                    self.bytes_read += size
                    if not req.full or req.size == view.nbytes:
                        self._finish(req, req.size, None, req.buffer, False)
                        break
            except BlockingIOError:
                return
            except OSError as exc:
                exc.__traceback__ = None
                self._fail(req, exc)

    def _pump_writes(self, conn):
        """Perform the writes at the head of conn's queue until one must wait."""
        writes = conn.writes
        sock = conn.sock
        while writes:
            req = writes[0]
            view = req.view
            try:
                if req.special:
                    self._pump_special_write(conn, req)
                    continue
                while True:
                    if req.size:
                        with view[req.size:] as rest:
                            size = sock.send(rest, _MSG_NOSIGNAL)
                    else:
                        size = sock.send(view, _MSG_NOSIGNAL)
                    req.size += size
                    self.bytes_written += size
                    if conn.standing is not None:  # R21: plain bytes written
                        self._pay(conn.standing, size)
                    if req.size == view.nbytes:
                        self._finish(req, req.size, None, req.buffer, False)
                        break
            except BlockingIOError:
                return
            except OSError as exc:
                exc.__traceback__ = None
                self._fail(req, exc)

    def _sync_interest(self, conn, keep_read=True):
        """Register for what conn's queues wait on (see the module docstring)."""
        if conn.sock is None:
            return
        want = 0
        if conn.deferred or conn.stalled:
            pass  # tried directly next batch, or held: readiness would only be noise
        elif conn.connecting is not None:
            if conn.connecting.retry_at is not None:
                if conn.interest:  # a connect to try again (EAGAIN): no readiness will tell
                    self.selector.unregister(conn.fd)
                    conn.interest = 0
                return
            want = _WRITE  # reads and writes start once it is connected
        elif conn.reads or (keep_read and conn.interest & _READ):
            want = _READ
        if conn.writes:
            want |= _WRITE
        if want == conn.interest:
            return
        if not want:
            self.selector.unregister(conn.fd)
        elif not conn.interest:
            self.selector.register(conn.fd, want, conn)
        else:
            self.selector.modify(conn.fd, want, conn)
        conn.interest = want

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
            fresh, self.fresh = self.fresh, []
            for req in fresh:
                conn = req.conn
                if req.finished or conn.sock is None:
                    continue
                if conn.connecting is not None:
                    if conn.connecting is req:
                        self._start_connect(conn, req)
                    self._sync_interest(conn)
                    continue
                if req.op is _OP_READ or req.op is _OP_ACCEPT:
                    if conn.reads and conn.reads[0] is req:
                        self._pump_reads(conn)
                elif conn.writes and conn.writes[0] is req:
                    self._pump_writes(conn)
                self._sync_interest(conn)
        if self.backoff:
            self._serve_backoff()
        if len(self.deadlines):
            now = _monotonic()
            while True:
                req = self.deadlines.pop_expired(now)
                if req is None:
                    break
                conn = req.conn
                self.timeouts += 1
                if req.op is _OP_CONNECT:
                    self._expire_connect(req)
                    continue
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

    def _handle_events(self, events):
        for key, mask in events:
            conn = key.data
            if conn is None:  # the waker, or the signal pipe
                if key.fd == self.signals.rfd:
                    self.signals.drain()
                continue
            if conn.sock is None or conn.interest == 0:
                continue  # freed or dropped earlier in this batch
            if conn.connecting is not None:
                self._check_connect(conn)
                continue
            reads_waited = bool(conn.reads)
            if mask & _READ and reads_waited:
                self._pump_reads(conn)
            if mask & _WRITE and conn.writes:
                self._pump_writes(conn)
            # readable with no read asked for: stop watching until one is
            self._sync_interest(conn, keep_read=reads_waited or not mask & _READ)

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
            if self.results:
                results, self.results = self.results, []
                self.completed += len(results)
                if self.external:
                    self._keep_fileno_honest()
                return results
            if end is not None and _monotonic() >= end:
                if self.external:
                    self._keep_fileno_honest()
                return []

    def _keep_fileno_honest(self):
        """Leaving wait_io() with work that no readiness will report (R23):
        make fileno() readable for it."""
        if self.fresh or self.freed or self.deferred or (
                self.backoff and self.backoff_until() <= _monotonic()):
            self.woken = True
            self.waker.wake()

    # ------------------------------------------------------------ closing

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            conns = list(self.conns.values())
            self.conns.clear()
            for conn in conns:
                conn.reads = []
                conn.writes = []
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

    def fileno(self):
        with self.lock:
            if self.closed:
                raise WatcherClosedError("watcher is closed")
            fileno = getattr(self.selector, "fileno", None)
            if fileno is None:
                import io
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
                "threads": 0,
                "internal_buffer_views": self.internal.views_out(),
                "internal_buffers_abandoned": self.internal.abandoned,
            }


class PythonWatcher:
    # A gaio.Watcher by registration (_watcher.py), which also gives it the
    # interface's docstring: this module imports nothing that imports it.

    def __init__(self, bufsize=args.DEFAULT_BUFSIZE, *, engine="python",
                 write_high=args.DEFAULT_WRITE_HIGH):
        args.check_bufsize(bufsize)
        if engine not in ("python", "auto"):
            raise ValueError("PythonWatcher runs engine 'python', not %r" % (engine,))
        self._core = _Core(bufsize, args.check_write_high(write_high))

    @property
    def engine(self):
        return "python"

    @property
    def bufsize(self):
        return self._core.bufsize

    def _checked(self, conn, timeout, deadline):
        """The core and the deadline of a request, after the checks every request makes
        (a closed watcher first, then the connection, then the times)."""
        core = self._core
        if core.closed:
            raise WatcherClosedError("watcher is closed")
        known = core.conns.get(id(conn))
        if known is None or known.ref() is not conn:
            args.check_conn(conn)
        when = None
        if timeout is not None or deadline is not None:
            when = args.deadline_of(timeout, deadline)
        return core, when

    @staticmethod
    def _submit(core, op, conn, ctx, buf, view, full, when):
        try:
            core.submit(op, conn, ctx, buf, view, full, when)
        except BaseException:
            view.release()  # nothing raised leaves an export behind
            raise

    @args.signature_checked("Watcher.read")
    def read(self, conn, buf=None, *, ctx=None, timeout=None, deadline=None, repeat=False):
        core, when = self._checked(conn, timeout, deadline)
        if repeat:
            if buf is not None:
                raise ValueError("a standing read (repeat=True) takes no buffer")
            spec = self._standing(timeout, when)
            core.submit(_OP_READ, conn, ctx, None, None, False, spec.deadline, spec)
        elif buf is None:
            core.submit(_OP_READ, conn, ctx, None, None, False, when)
        else:
            self._submit(core, _OP_READ, conn, ctx, buf, args.writable_view(buf), False, when)

    @staticmethod
    def _standing(timeout, when):
        """A standing request's _Special: `timeout` is an idle limit."""
        spec = _Special()
        spec.repeat = True
        if timeout is not None:
            spec.idle = args.idle_limit(timeout)
        spec.deadline = when
        return spec

    @args.signature_checked("Watcher.read_full")
    def read_full(self, conn, buf, *, ctx=None, timeout=None, deadline=None):
        core, when = self._checked(conn, timeout, deadline)
        self._submit(core, _OP_READ, conn, ctx, buf, args.writable_view(buf), True, when)

    @args.signature_checked("Watcher.write")
    def write(self, conn, data, *, ctx=None, timeout=None, deadline=None, quiet=False):
        core, when = self._checked(conn, timeout, deadline)
        if isinstance(data, (list, tuple)):
            pairs = args.vector_views(data)
            spec = _Special()
            spec.quiet = bool(quiet)
            spec.items = [view for _, view in pairs]
            spec.buffer = [item for item, _ in pairs]  # until submit: the originals
            spec.total = sum(view.nbytes for view in spec.items)
            try:
                core.submit(_OP_WRITE, conn, ctx, data, None, False, when, spec)
            except BaseException:
                for view in spec.items:
                    view.release()
                raise
        elif quiet:
            view = args.data_view(data)
            spec = _Special()
            spec.quiet = True
            spec.total = view.nbytes
            try:
                core.submit(_OP_WRITE, conn, ctx, data, view, False, when, spec)
            except BaseException:
                view.release()
                raise
        else:
            self._submit(core, _OP_WRITE, conn, ctx, data, args.data_view(data), False, when)

    @args.signature_checked("Watcher.accept")
    def accept(self, listener, *, ctx=None, timeout=None, deadline=None, repeat=False):
        core, when = self._checked(listener, timeout, deadline)
        known = core.conns.get(id(listener))
        if known is not None and known.ref() is listener:
            if known.sock is None or not args.is_listening(known.sock):
                raise ValueError("accept() needs a listening socket (call listen() first)")
        else:
            args.check_listener(listener)
        spec = self._standing(timeout, when) if repeat else _Special()
        spec.deadline = when
        core.submit(_OP_ACCEPT, listener, ctx, None, None, False, when, spec)

    @args.signature_checked("Watcher.connect")
    def connect(self, sock, address, *, ctx=None, timeout=None, deadline=None):
        core, when = self._checked(sock, timeout, deadline)
        known = core.conns.get(id(sock))
        if known is not None and known.ref() is sock:
            raise ValueError("connect() on a delegated socket")
        args.check_connect_socket(sock)
        args.check_address(sock.family, address)
        spec = _Special()
        spec.address = address
        core.submit(_OP_CONNECT, sock, ctx, None, None, False, when, spec)

    @args.signature_checked("Watcher.sendfile")
    def sendfile(self, conn, file, offset=0, count=None, *, ctx=None, timeout=None,
                 deadline=None, quiet=False):
        core, when = self._checked(conn, timeout, deadline)
        fd, count = args.sendfile_source(file, offset, count)
        spec = _Special()
        spec.quiet = bool(quiet)
        spec.offset = offset
        spec.total = count
        if count:
            # our own descriptor of the file: the caller may close theirs
            spec.fd = os.dup(fd)
        try:
            core.submit(_OP_SENDFILE, conn, ctx, None, None, False, when, spec)
        except BaseException:
            if spec.fd >= 0:
                os.close(spec.fd)
            raise

    @args.signature_checked("Watcher.fileno")
    def fileno(self):
        return self._core.fileno()

    @args.signature_checked("Watcher.next_timeout")
    def next_timeout(self):
        return self._core.next_timeout()

    @args.signature_checked("Watcher.free")
    def free(self, conn, /):
        core = self._core
        if core.closed:
            raise WatcherClosedError("watcher is closed")
        args.check_free_target(conn)
        core.free(conn)

    @args.signature_checked("Watcher.wait_io")
    def wait_io(self, timeout=None):
        return self._core.wait_io(timeout)

    @args.signature_checked("Watcher.close")
    def close(self):
        self._core.close()

    @args.signature_checked("Watcher.stats")
    def stats(self):
        return self._core.stats()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # A copy would share the core and close it when collected.
    def __copy__(self):
        raise TypeError("a Watcher cannot be copied")

    def __deepcopy__(self, memo):
        raise TypeError("a Watcher cannot be copied")

    def __reduce__(self):
        raise TypeError("a Watcher cannot be pickled")

    def __del__(self):
        # A watcher that is garbage collected is closed (R11). __del__, not
        # weakref.finalize: a finalizer would hold the core, and through a
        # pending request's ctx the core may hold this watcher, which would
        # then never be collected.
        core = self.__dict__.get("_core")
        if core is not None:
            core.close()

    def __repr__(self):
        core = self._core
        state = "closed" if core.closed else "%d watched" % len(core.conns)
        return "<gaio.Watcher engine='python' bufsize=%d %s>" % (core.bufsize, state)

