"""The pure-Python engine's datagram sockets (R24-R27): reads and writes of
SOCK_DGRAM sockets of AF_INET, AF_INET6 and AF_UNIX. The native engines'
twins: core_datagrams.c (results, errors), datagram_io.c (the syscalls),
request_datagram.c (address=, the sender's object).

A connection is a datagram socket from delegation on (`conn.dgram`): the
core's read and write loops hand such a connection here, once per pass, so a
stream's request pays nothing for datagrams.

- A read takes exactly one datagram (recvmsg_into: its sender, and MSG_TRUNC
  when it was longer than the buffer). Without a buffer it lands in the
  internal buffer, cut at bufsize; one that might not fit in what is left of
  the batch's bound waits, whole, for the next batch (R4, R24).
- A standing read takes datagrams while there are some, up to
  DATAGRAMS_PER_PASS per readiness pass, one result each (R26). Python has no
  recvmmsg: one system call per datagram (stats: datagram_recv_calls and
  datagram_send_calls equal the datagrams); the native engines batch them
  (datagram_batch.c).
- A write sends exactly one datagram with one sendmsg (its items gathered,
  joined first past IOV_MAX), to its address= or to the peer, or fails whole.
- A socket error (ICMP port unreachable, ...: Linux reports these on connected
  sockets) ends the pending read it reaches, or, with no read pending, the
  write whose send meets it; a standing read delivers it and stays (R27). A
  refusal a UDP send meets while a read is pending goes to the read, and the
  send is tried again. An error that came while nothing was pending is
  dropped when a request arrives (submit calls _drop_socket_error). Back-pressure never counts a datagram
  socket's standing read: it neither adopts writes nor names its views.

`Datagrams` is a mixin of the engine's `_Core`, under the core's lock.
"""
import socket
import time

from ._python_requests import _IOV_MAX, _MSG_NOSIGNAL
from ._python_results import new_datagram_result, new_result
from ._result import Op

_OP_READ = Op.READ
_MSG_TRUNC = socket.MSG_TRUNC
_SO_ERROR = socket.SO_ERROR
_SOL_SOCKET = socket.SOL_SOCKET
_AF_UNIX = getattr(socket, "AF_UNIX", None)
_monotonic = time.monotonic
# The most datagrams a standing read takes in one readiness pass, so that a
# flood on one socket cannot keep a pass from the others (what is left is
# reported ready again: the selector is level-triggered). C: readiness.h's
# GAIO_DATAGRAMS_PER_PASS.
DATAGRAMS_PER_PASS = 64


class Datagrams:
    """Mixin of _Core: see the module docstring. Expects the core's fields."""

    def _drop_socket_error(self, conn):
        """conn, a datagram socket with nothing pending, gets a request: an
        error that came meanwhile concerned nobody (R27)."""
        try:
            conn.sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
        except OSError:
            pass

    def _pump_datagram_reads(self, conn):
        """Perform the reads at the head of conn's queue until one must wait."""
        reads = conn.reads
        sock = conn.sock
        internal = self.internal
        unix = sock.family == _AF_UNIX
        taken = 0
        while reads:
            req = reads[0]
            view = req.view
            try:
                if view is None:
                    got = None if internal.is_full() else internal.recv_datagram(sock)
                    if got is None:  # the next batch takes it, whole
                        if not conn.deferred:
                            conn.deferred = True
                            self.deferred.append(conn)
                        return
                    size, out, address, truncated = got
                else:
                    size, _, flags, address = sock.recvmsg_into([view])
                    out = req.buffer
                    truncated = bool(flags & _MSG_TRUNC)
            except BlockingIOError:
                return
            except OSError as exc:
                exc.__traceback__ = None
                self._read_meets(conn, exc)
                continue
            self.bytes_read += size
            self.datagrams_read += 1
            self.datagram_recv_calls += 1
            if conn.peer:
                address = None
            elif unix and not address:
                address = None  # an unbound sender: it cannot be answered (R25)
            if not req.repeat:
                self._finish_datagram_read(req, size, out, view is None, address, truncated)
                continue
            self.results.append(new_datagram_result(_OP_READ, req.owner, req.ctx, out, size,
                                                    None, True, address, truncated))
            if req.idle is not None:
                req.deadline = _monotonic() + req.idle  # the heap catches up lazily
            taken += 1
            if taken == DATAGRAMS_PER_PASS:
                return

    def _read_meets(self, conn, error):
        """Socket error `error` ends conn's head read (R27): a standing read
        delivers it and stands."""
        req = conn.reads[0]
        if req.repeat:
            self.results.append(new_result(_OP_READ, req.owner, req.ctx, None, 0, error, False))
        else:
            self._fail(req, error)

    def _pump_datagram_writes(self, conn):
        """Send the writes at the head of conn's queue, one datagram each,
        until one must wait."""
        writes = conn.writes
        sock = conn.sock
        unix = sock.family == _AF_UNIX
        while writes:
            req = writes[0]
            items = req.items
            if items is None:
                items = (req.view,)
            elif len(items) > _IOV_MAX:
                items = (b"".join(items),)  # one datagram however many items
            try:
                if req.address is None:
                    size = sock.sendmsg(items, (), _MSG_NOSIGNAL)
                else:
                    size = sock.sendmsg(items, (), _MSG_NOSIGNAL, req.address)
            except BlockingIOError:
                return
            except OSError as exc:
                exc.__traceback__ = None
                if conn.reads and type(exc) is ConnectionRefusedError and not unix:
                    # an earlier datagram's ICMP refusal, which this send met
                    # before the pending read saw it: the read's (R27); a
                    # UDP send never refuses by itself, so this one goes again
                    self._read_meets(conn, exc)
                    continue
                self._fail(req, exc)  # nothing was sent: size 0
                continue
            self._bp_written(req, size)
            req.size = size
            self.bytes_written += size
            self.datagrams_written += 1
            self.datagram_send_calls += 1
            self._finish(req, size, None, req.buffer, False)
