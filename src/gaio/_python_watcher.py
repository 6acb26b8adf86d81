"""The pure-Python engine's user-facing watcher, PythonWatcher: the front of
a _Core (_python_core). It checks a request's arguments (_python_args), makes
its request object and hands it to the core.
"""
import os
import socket

from . import _python_args as args
from ._errors import WatcherClosedError
from ._python_core import _Core
from ._python_requests import _DataWrite, _Special, _StandingRead, _TimedStandingRead
from ._python_tls import Session
from ._result import Op

# Enum member lookups cost more than a global on the hot path.
_OP_READ = Op.READ
_OP_WRITE = Op.WRITE
_OP_ACCEPT = Op.ACCEPT
_OP_CONNECT = Op.CONNECT
_OP_SENDFILE = Op.SENDFILE
_OP_TLS = Op.TLS
_DGRAM = socket.SOCK_DGRAM


class PythonWatcher:
    # A gaio.Watcher by registration (_watcher.py), which also gives it the
    # interface's docstring: this module imports nothing that imports it.

    def __init__(self, bufsize=args.DEFAULT_BUFSIZE, *, engine="python",
                 write_high=args.DEFAULT_WRITE_HIGH, batch_wait=None):
        args.check_bufsize(bufsize)
        if engine not in ("python", "auto"):
            raise ValueError("PythonWatcher runs engine 'python', not %r" % (engine,))
        self._core = _Core(bufsize, args.check_write_high(write_high))
        self._core.batch_wait = args.check_batch_wait(batch_wait)

    @property
    def engine(self):
        return "python"

    @property
    def bufsize(self):
        return self._core.bufsize

    def _checked(self, conn, timeout, deadline, check=args.check_io_conn):
        """The core, the deadline and the connection (None: not delegated yet)
        of a request, after the checks every request makes (a closed watcher
        first, then the connection, then the times). `check` is the
        connection's check: stream-only requests give args.check_conn."""
        core = self._core
        if core.closed:
            raise WatcherClosedError("watcher is closed")
        known = core.conns.get(id(conn))
        if known is None or known() is not conn:
            known = None
            check(conn)
        elif known.dgram and check is args.check_conn:
            check(conn)  # refuses it, worded as for a new one (conn keeps its type)
        when = None
        if timeout is not None or deadline is not None:
            when = args.deadline_of(timeout, deadline)
        return core, when, known

    @staticmethod
    def _submit(core, op, conn, ctx, buf, view, full, when):
        try:
            core.submit(op, conn, ctx, buf, view, full, when)
        except BaseException:
            view.release()  # nothing raised leaves an export behind
            raise

    @args.signature_checked("Watcher.read")
    def read(self, conn, buf=None, *, ctx=None, timeout=None, deadline=None, repeat=False):
        core, when, _ = self._checked(conn, timeout, deadline)
        if repeat:
            if buf is not None:
                raise ValueError("a standing read (repeat=True) takes no buffer")
            idle = None if timeout is None else args.idle_limit(timeout)
            spec = _StandingRead() if idle is None and when is None else _TimedStandingRead(idle, when)
            core.submit(_OP_READ, conn, ctx, None, None, False, when, spec)
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
        core, when, _ = self._checked(conn, timeout, deadline, args.check_conn)
        self._submit(core, _OP_READ, conn, ctx, buf, args.writable_view(buf), True, when)

    @args.signature_checked("Watcher.write")
    def write(self, conn, data, *, ctx=None, timeout=None, deadline=None, quiet=False,
              address=None):
        core, when, known = self._checked(conn, timeout, deadline)
        # one test for a stream's write; a new socket's kind is read once
        if address is not None or (known.dgram if known is not None else conn.type == _DGRAM):
            self._write_datagram(core, conn, known, data, ctx, when, quiet, address)
            return
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
            sent = core.try_send(conn, view) if view.nbytes else 0
            if sent and sent == view.nbytes:
                view.release()
                return
            spec = _DataWrite(True, view.nbytes, sent)
            try:
                core.submit(_OP_WRITE, conn, ctx, data, view, False, when, spec)
            except BaseException:
                view.release()
                raise
        else:
            self._submit(core, _OP_WRITE, conn, ctx, data, args.data_view(data), False, when)

    def _write_datagram(self, core, conn, known, data, ctx, when, quiet, address):
        """write() on a datagram socket (R24, R25), or with address=: one
        datagram, which may be empty, to the peer or to `address`."""
        if known is not None:
            dgram, sock = known.dgram, known.sock
        else:
            dgram, sock = conn.type == _DGRAM, conn
            if dgram and conn.fileno() == -1:
                raise ValueError(args.CLOSED_CONN)
        if not dgram:
            raise ValueError(args.ADDRESS_ON_STREAM)
        connected = known.peer if known is not None else args.has_peer(sock)
        address = args.datagram_address(sock.family, address, connected)
        spec = _Special()
        spec.quiet = bool(quiet)
        spec.address = address
        if isinstance(data, (list, tuple)):
            pairs = args.vector_views(data, empty_ok=True)
            spec.items = [view for _, view in pairs]
            spec.buffer = [item for item, _ in pairs]  # until submit: the originals
            spec.total = sum(view.nbytes for view in spec.items)
            view = None
        else:
            view = args.datagram_view(data)
            spec.total = view.nbytes
        try:
            core.submit(_OP_WRITE, conn, ctx, data, view, False, when, spec)
        except BaseException:
            for item in spec.items or (view,):
                item.release()
            raise

    @args.signature_checked("Watcher.accept")
    def accept(self, listener, *, ctx=None, timeout=None, deadline=None, repeat=False):
        core, when, _ = self._checked(listener, timeout, deadline, args.check_conn)
        known = core.conns.get(id(listener))
        if known is not None and known() is listener:
            if known.sock is None or not args.is_listening(known.sock):
                raise ValueError("accept() needs a listening socket (call listen() first)")
        else:
            args.check_listener(listener)
        spec = self._standing(timeout, when) if repeat else _Special()
        spec.deadline = when
        core.submit(_OP_ACCEPT, listener, ctx, None, None, False, when, spec)

    @args.signature_checked("Watcher.connect")
    def connect(self, sock, address, *, ctx=None, timeout=None, deadline=None):
        core, when, known = self._checked(sock, timeout, deadline)
        if known is not None:
            raise ValueError("connect() on a delegated socket")
        args.check_connect_socket(sock)
        args.check_address(sock.family, address)
        spec = _Special()
        spec.address = address
        core.submit(_OP_CONNECT, sock, ctx, None, None, False, when, spec)

    @args.signature_checked("Watcher.sendfile")
    def sendfile(self, conn, file, offset=0, count=None, *, ctx=None, timeout=None,
                 deadline=None, quiet=False):
        core, when, _ = self._checked(conn, timeout, deadline, args.check_conn)
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

    @args.signature_checked("Watcher.start_tls")
    def start_tls(self, conn, context, *, server_side, server_hostname=None, ctx=None,
                  timeout=None, deadline=None):
        try:
            core, known, when = self._tls_checked(conn, context, server_side, server_hostname,
                                                  timeout, deadline)
        except ValueError:
            # Another thread's request may have delegated conn meanwhile: its
            # descriptor is the watcher's now and the caller's object reads
            # as closed. Checked again as the delegated socket it is (a
            # racing second start_tls then gets TLS_AGAIN, here or from submit).
            # Delegation happens under the lock: taken, it is over.
            with self._core.lock:
                known = self._core.conns.get(id(conn))
            if known is None or known() is not conn:
                raise
            core, known, when = self._tls_checked(conn, context, server_side, server_hostname,
                                                  timeout, deadline)
        spec = _Special()
        # made now: what wrap_bio refuses (a bad host name) is raised here
        spec.session = Session(context, server_side, server_hostname)
        core.submit(_OP_TLS, conn, ctx, None, None, False, when, spec)

    def _tls_checked(self, conn, context, server_side, server_hostname, timeout, deadline):
        """start_tls()'s checks, in the order of the native engines' (the
        socket, the TLS arguments, then the times): (core, known, when)."""
        core, _, known = self._checked(conn, None, None, args.check_conn)
        if known is None and conn.fileno() == -1:
            raise ValueError(args.CLOSED_CONN)
        # delegated or not, the caller's object still tells its kind
        args.check_tls_arguments(conn, context, server_side, server_hostname)
        when = None
        if timeout is not None or deadline is not None:
            when = args.deadline_of(timeout, deadline)
        if known is None:
            args.check_tls_socket(conn)
        elif known.tls is not None:
            raise ValueError(args.TLS_AGAIN)
        elif not known.peer:  # no connect() requested: it must be connected
            args.check_tls_socket(known.sock)
        return core, known, when

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

