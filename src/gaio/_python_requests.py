"""The pure-Python engine's requests, the twin of core_requests.c: a request
comes in (submit), starts when it reaches the head of its queue, makes
progress as its socket allows (reads, writes, vectored writes, sendfile) and
is aborted with an error (_fail).

`_Special` is the request object of every request that is not a plain 0.1
read or write, and of a write made from a standing read's view (R21); plain
requests keep the smaller `_Request`, whose class attributes give the 0.2
fields their neutral values, so the 0.1 paths test one attribute. A standing
read, all an idle connection holds, is the smallest: `_StandingRead`; a quiet
or accounted write of one buffer (an echo server's one per message) is a
`_DataWrite`.

`Requests` is a mixin of the engine's `_Core`: under the core's lock, submit
in any thread, progress in the thread that runs wait_io().
"""
import os
import signal
import socket

from ._errors import WatcherClosedError
from ._result import Op

_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
# The most items one sendmsg of a vectored write takes: the C engines'
# GAIO_IOV_MAX (src/native/readiness.h), or less where the system says so.
IOV_MAX = 1024
_IOV_MAX = min(getattr(os, "sysconf", lambda name: IOV_MAX)("SC_IOV_MAX") or IOV_MAX, IOV_MAX)
_SENDFILE_CHUNK = 1 << 30
_SIGPIPE = getattr(signal, "SIGPIPE", None)
_PIPE_ONLY = (_SIGPIPE,)
# sigtimedwait is not on macOS: sigwait returns at once for a pending signal
_take_signal = getattr(signal, "sigtimedwait", None)
_take_signal = ((lambda sigset: signal.sigtimedwait(sigset, 0)) if _take_signal
                else signal.sigwait if hasattr(signal, "sigwait") else None)
_MASKS = _SIGPIPE is not None and hasattr(signal, "pthread_sigmask")
# Enum member lookups cost more than a global on the hot path.
_OP_READ = Op.READ
_OP_WRITE = Op.WRITE
_OP_ACCEPT = Op.ACCEPT
_OP_CONNECT = Op.CONNECT
_OP_SENDFILE = Op.SENDFILE
_OP_TLS = Op.TLS


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
    """Every 0.2 request, and a plain write back-pressure accounts for."""
    __slots__ = ("repeat", "quiet", "answer", "held", "timed", "gen",
                 "idle", "owed", "total", "items", "index", "offset", "fd", "address",
                 "retry_at", "reported", "session", "behind")

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
        self.session = None  # start_tls: the TLS session it begins (_python_tls)
        self.behind = None  # connect: the requests made on its socket meanwhile, in order

    def setup(self, op, conn, owner, ctx, buffer, view, full, deadline):
        _Request.__init__(self, op, conn, owner, ctx, buffer, view, full, deadline)
        self.special = True


class _Slim:
    """The fields of _Special that a standing read and a data write never
    change, as class attributes both share (their own slots hold the rest)."""
    __slots__ = ()

    full = False
    special = True
    items = None
    index = 0
    offset = 0
    fd = -1
    address = None
    retry_at = None
    gen = 0  # the deadline heap's generation: only a timed standing read changes it
    idle = None
    reported = None
    session = None


class _StandingRead(_Slim):
    """A standing read (repeat=True) of a stream or datagram socket with
    neither an idle limit nor a deadline: the one request an idle server
    connection holds, so it keeps a slot only for what changes and gives
    every other field of _Special its fixed value as a class attribute (80
    bytes, not _Special's 256; issue 16). _TimedStandingRead has the rest."""
    __slots__ = ("conn", "owner", "ctx", "finished", "held", "owed")

    op = _OP_READ
    buffer = None  # the internal buffer's: no buffer, no view, nothing counted
    view = None
    size = 0
    repeat = True
    quiet = False
    answer = None
    total = 0
    deadline = None  # never set without an idle limit or a deadline
    timed = False

    def __init__(self):
        self.conn = self.owner = self.ctx = None
        self.finished = False
        self.held = False
        self.owed = 0  # unwritten answerable bytes (R21)

    def setup(self, op, conn, owner, ctx, buffer, view, full, deadline):
        self.conn = conn
        self.owner = owner  # the caller's socket object: the results' conn
        self.ctx = ctx


class _TimedStandingRead(_StandingRead):
    """A standing read with an idle limit or a deadline (112 bytes)."""
    __slots__ = ("deadline", "timed", "gen", "idle")

    def __init__(self, idle, deadline):
        super().__init__()
        self.deadline = deadline
        self.timed = False
        self.gen = 0
        self.idle = idle  # the idle limit (seconds), or None


class _DataWrite(_Slim):
    """A write of one buffer that is quiet (R22) or that back-pressure
    accounts for (made from a standing read's view, R21): the fields of
    _Special such a write changes have slots, the rest are class attributes
    (128 bytes, not 256: an echo server makes one per message)."""
    __slots__ = ("conn", "owner", "ctx", "buffer", "view", "size", "deadline",
                 "finished", "timed", "quiet", "answer", "total")

    op = _OP_WRITE
    repeat = False
    held = False
    owed = 0

    def __init__(self, quiet, total, already=0):
        self.quiet = quiet
        self.total = total  # the write's bytes in all
        self.size = already  # ... written (try_send took the first ones)
        self.answer = None  # the standing read its view came from (R21)
        self.timed = False

    def setup(self, op, conn, owner, ctx, buffer, view, full, deadline):
        self.conn = conn
        self.owner = owner
        self.ctx = ctx
        self.buffer = buffer
        self.view = view
        self.deadline = deadline
        self.finished = False


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


class Requests:
    """Mixin of _Core: see the module docstring. Expects the core's fields."""

    # ------------------------------------------------------------ in

    def try_send(self, owner, view):
        """A quiet write to a connection with nothing queued to send is tried
        now, as the native engines' gaio_core_try_send (and uv_try_write):
        when the socket takes it all, it needs no request, no copy and no
        result. The bytes the socket took: 0 when it took none or nothing
        could go out before what is queued (an error is the queued write's
        to meet again and report)."""
        with self.lock:
            conn = self.conns.get(id(owner))
            if (self.closed or conn is None or conn() is not owner or conn.writes
                    or conn.routed or conn.connecting is not None or conn.sock is None):
                return 0
            try:
                size = conn.sock.send(view, _MSG_NOSIGNAL)
            except OSError:
                return 0
            self.bytes_written += size
            if size == view.nbytes:
                self.submitted += 1
                self.quiet_done += 1
            return size

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
            if conn is None or conn() is not owner:
                conn = self._delegate(owner)
            elif spec is not None and op is _OP_CONNECT:
                raise ValueError("connect() on a delegated socket")
            if conn.dgram and not (conn.reads or conn.writes or conn.connecting):
                self._drop_socket_error(conn)
            if spec is None:
                if op is _OP_READ or origin is None:
                    # _submitted(), inlined on purpose: every plain 0.1
                    # request comes this way, so it pays no extra call
                    req = _Request(op, conn, owner, ctx, buffer, view, full, deadline)
                    if op is _OP_READ:
                        queue = conn.reads
                    else:
                        queue = conn.writes
                        if not queue:
                            queue = conn.writes = []
                        if conn.standing is not None:  # R21: it answers for plain writes
                            self._owe(conn.standing, view.nbytes)
                    queue.append(req)
                    self.submitted += 1
                    self.pending += 1
                    if conn.connecting is not None:
                        conn.connecting.behind.append(req)
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
                spec = _DataWrite(False, view.nbytes)
            req = spec
            req.setup(op, conn, owner, ctx, buffer, view, full, deadline)
            if op is _OP_CONNECT:
                conn.connecting = req
                req.behind = []
                # a datagram socket is connected from now on (R25); a stream
                # socket counts as connecting for start_tls() (R28)
                conn.peer = True
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
                if queue:
                    queue.append(req)
                else:
                    # a list of one (append would reserve four slots): an idle
                    # connection's standing read is its one request (issue 16)
                    queue = conn.reads = [req]
                if req.repeat and op is _OP_READ and queue[0] is req:
                    self._bp_adopt(conn)
            elif op is _OP_TLS:
                self._tls_begin(conn, req)  # reads wait for the handshake from now on
                queue = conn.writes
                if not queue:
                    queue = conn.writes = []
                queue.append(req)
            else:
                queue = conn.writes
                if not queue:
                    queue = conn.writes = []
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
        if conn.connecting is not None:
            conn.connecting.behind.append(req)
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

    # ------------------------------------------------------------ start

    def _start_fresh(self):
        """Try the requests that came to the head of an idle queue (or a
        connect) since the last pass, before any readiness is awaited."""
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

    # ------------------------------------------------------------ abort

    def _fail(self, req, error):
        if req.view is None and req.op is _OP_READ:  # internal buffer, nothing read
            self._finish(req, 0, error, None, False)
        else:
            self._finish(req, req.size, error, req.buffer, False)

    # ------------------------------------------------------------ progress

    def _pump_reads(self, conn):
        """Perform the reads at the head of conn's queue until one must wait."""
        if conn.routed:
            if conn.dgram:
                return self._pump_datagram_reads(conn)
            return self._tls_pump(conn)
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
        if conn.routed:
            if conn.dgram:
                return self._pump_datagram_writes(conn)
            return self._tls_pump(conn)
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

    def _pump_special_write(self, conn, req):
        """Perform special write `req` (vectored, sendfile, or plain data that
        is quiet or back-pressure accounts for), the head of conn's writes:
        True when it finished, False when it must wait.
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
