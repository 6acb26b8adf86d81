"""The pure-Python engine's connections, the twin of core_conns.c: a
delegated socket with its read and write queues, what the selector watches
for it, and its release (free(), or the caller dropping the socket).

Descriptors: delegation takes the caller's descriptor with socket.detach()
(the same kernel socket, options and all, no dup), and the caller's object
reads as closed at once.

A connection is only read when a read was asked for (back-pressure): interest
in readability is registered while a read waits. It is kept once the reads
are done, because the next read usually follows at once; a readiness report
with no read waiting drops it. Write interest is dropped as soon as the
writes are done, or every wait would report the socket writable.

`Conns` is a mixin of the engine's `_Core`, under the core's lock.
"""
import os
import selectors
import socket
import sys
import weakref

import _socket

from . import _python_args as args
from ._errors import WatcherClosedError

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
# macOS has no MSG_NOSIGNAL: the socket option instead (R6: a process that set
# SIGPIPE back to SIG_DFL must survive a vanished peer), as engine_kqueue.c does
_SO_NOSIGPIPE = None if _MSG_NOSIGNAL else getattr(
    socket, "SO_NOSIGPIPE", 0x1022 if sys.platform == "darwin" else None)
_socket_fileno = socket.socket.fileno
_socket_detach = socket.socket.detach
# conn.writes while nothing is queued: most connections wait to read with no
# write pending, and an empty list costs each of them 56 bytes (issue 16)
NO_WRITES = ()


class _Conn(weakref.ref):
    """A delegated socket: the watcher's own socket object and two queues.

    `sock` is a bare _socket.socket, which has every call the engine makes
    (accept is its _accept) in 48 bytes, not socket.socket's 88 (issue 16):
    the caller never sees it.

    The connection is itself a weak reference to the caller's socket object
    (its identity; conn() is that object, or None once dropped), whose
    callback releases it: one object instead of a connection and a
    weakref.KeyedRef (88 bytes less per connection; issue 16). Pending
    requests hold the caller's object, the connection does not. `key` is
    id() of that object, the connection's key in the core's `conns`.
    """
    __slots__ = ("key", "sock", "fd", "reads", "writes", "interest", "deferred",
                 "stalled", "connecting", "standing", "dgram", "peer", "routed", "tls")

    def __new__(cls, owner, callback, key, sock, dgram=False, peer=False):
        return weakref.ref.__new__(cls, owner, callback)

    def __init__(self, owner, callback, key, sock, dgram=False, peer=False):
        self.key = key
        self.sock = sock  # None once closed
        self.fd = sock.fileno()
        self.reads = []
        self.writes = NO_WRITES  # a list while writes are queued
        self.interest = 0  # selector events registered
        self.deferred = False  # in the watcher's deferred list
        self.stalled = False  # the head read waits: back-pressure, accept backoff
        # the connect request under way; the requests made on conn meanwhile
        # are its `behind` (kept there, not here: 16 bytes per connection)
        self.connecting = None
        self.standing = None  # the standing read that answers for conn's writes (R21)
        # a datagram socket (R24): its reads and writes go to _python_datagrams
        self.dgram = dgram
        # ... connected, or connect() requested (R25); a stream socket: connect()
        # was requested (True), or the error it failed with (start_tls, R28)
        self.peer = peer
        self.tls = None  # the TLS session (_python_tls), from start_tls() on
        # reads and writes go elsewhere (datagrams, TLS): the one test the
        # stream loops make per pass
        self.routed = dgram


class Conns:
    """Mixin of _Core: see the module docstring. Expects the core's fields."""

    # ------------------------------------------------------------ delegation

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
            sock = _socket.socket(family, kind, proto, fd)
            sock.setblocking(False)
            if _SO_NOSIGPIPE is not None:
                sock.setsockopt(socket.SOL_SOCKET, _SO_NOSIGPIPE, 1)
        except BaseException:
            if sock is not None:
                sock.detach()  # fd is closed once, below
            os.close(fd)
            raise
        dgram = kind == socket.SOCK_DGRAM
        conn = _Conn(owner, self.socket_dropped, key, sock, dgram,
                     dgram and args.has_peer(sock))
        self.conns[key] = conn
        return conn

    # ------------------------------------------------------------ release

    def _socket_dropped(self, dropped):
        """weakref callback of connection `dropped`: the caller dropped its
        last reference to a socket with no request pending. Runs in
        whichever thread dropped it."""
        with self.lock:
            conn = self.conns.get(dropped.key)
            if conn is dropped:
                del self.conns[dropped.key]
                if conn.tls is not None:
                    self._tls_drop(conn)  # sends nothing (R30)
                self._close_conn(conn)

    def free(self, owner):
        with self.lock:
            if self.closed:
                raise WatcherClosedError("watcher is closed")
            key = id(owner)
            conn = self.conns.get(key)
            if conn is None or conn() is not owner:
                return
            self._tls_refuse_close()
            del self.conns[key]
            if conn.tls is not None:
                self._tls_goodbye(conn)  # R30: close_notify, if it goes at once
            self._close_conn(conn)
            ended = [*conn.reads, *conn.writes]
            connect = conn.connecting
            if connect is not None:
                ended.insert(0, connect)
                conn.connecting = None  # first: behind is a list while it is set
                connect.behind = None
            conn.reads = []
            conn.writes = NO_WRITES
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

    # ------------------------------------------------------------ interest

    def _sync_interest(self, conn, keep_read=True):
        """Register for what conn's queues wait on (see the module docstring)."""
        if conn.sock is None:
            return
        want = 0
        if conn.tls is not None and conn.connecting is None:
            want = self._tls_interest(conn)  # the handshake reads and writes by itself
        else:
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
