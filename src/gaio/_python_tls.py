"""TLS sessions in the pure-Python engine (R28-R31): start_tls(), then
plaintext in and plaintext out. The native engines' twin is
src/native/tls_session.c (the record layer) with core_tls.c (the core's side).

The session is Python's ssl.SSLObject over two ssl.MemoryBIOs (R31): the
engine moves ciphertext between the socket and the BIOs, the SSLObject turns
it into plaintext and back. A connection is a TLS one from start_tls() on
(`conn.tls`, and `conn.routed`: the stream loops hand it here, one test per
pass), in four states:

- WAITING: the writes requested before start_tls() go out, in plaintext; no
  read takes bytes from the socket.
- HANDSHAKING: start_tls() is the head of the writes; do_handshake() runs
  until it is done and its last flight was handed to the kernel (then the
  result, R28).
- OPEN: reads decrypt, writes encrypt. A write is cut into records of at most
  RECORD plaintext bytes; a record is encrypted only when the previous one
  went out whole, and once encrypted it must go (its sequence number is
  spent), so a write that ends early (deadline, free()) counts it in `size`
  and it is sent before any later request's bytes (R29). Back-pressure (R21)
  is paid for a record when the kernel took all of it.
- FAILED: the handshake failed, or a record did not decrypt (R30): every
  request on the connection completes with the error's class.

Receiving takes ciphertext from the socket one record at a time (its 5-byte
header, then its body), only while a read (or the handshake) needs it: an
idle connection holds at most the unread rest of one record, in the
SSLObject (R29). Reads end with EOFError on the peer's close_notify, with
ssl.SSLEOFError when the stream ends without it (R30).

`TLS` is a mixin of the engine's `_Core`, under the core's lock.
"""
import socket
import ssl

from . import _python_args as args
from ._python_accept_connect import _clone_error
from ._python_requests import _MSG_NOSIGNAL
from ._python_results import new_result
from ._python_tls_records import TLSRecords
from ._result import Op, TLSResult

_HEADER = 5
_OP_TLS = Op.TLS
_AF_UNIX = getattr(socket, "AF_UNIX", None)
WAITING, HANDSHAKING, OPEN, FAILED = range(4)


def _tls_result_builder():
    """new_result's twin for a handshake that succeeded (R28)."""
    new = object.__new__
    setters = [getattr(TLSResult, name).__set__ for name in (
        "op", "conn", "ctx", "buffer", "size", "error", "is_swap_buffer", "tls")]

    def build(conn, ctx, tls):
        res = new(TLSResult)
        for setter, value in zip(setters, (_OP_TLS, conn, ctx, None, 0, None, False, tls)):
            setter(res, value)
        return res

    return build


new_tls_result = _tls_result_builder()


class Session:
    """A connection's TLS session: the SSLObject, its BIOs, and what the
    engine keeps between passes."""
    __slots__ = ("obj", "incoming", "outgoing", "state", "request", "error", "read_end",
                 "header", "want", "length", "eof_fed", "drained", "sending", "sent", "record_req",
                 "record_plain", "record_pays")

    def __init__(self, context, server_side, server_hostname):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=server_hostname)
        self.state = WAITING
        self.request = None  # the start_tls request
        self.error = None  # FAILED: what every request completes with (its class)
        self.read_end = None  # reads end: EOFError, ssl.SSLEOFError, a reset
        # the record being received: its header so far (None: in its body)
        # and the bytes left to the end of the header or body
        self.header = bytearray()
        self.want = _HEADER
        self.length = 0  # the body's length, once its header came
        self.eof_fed = False  # the incoming BIO was told the stream ended
        # a recv of this pump found the socket emptied: no other in this pump
        self.drained = False
        # ciphertext handed to the kernel in part: a record and what follows it
        self.sending = None
        self.sent = 0
        # the write whose record that is, its plaintext bytes, and the
        # back-pressure owed for them [(standing read, bytes)], paid once sent
        self.record_req = None
        self.record_plain = 0
        self.record_pays = None


class TLS(TLSRecords):
    """Mixin of _Core: see the module docstring. Expects the core's fields.
    The record paths (handshake, reads, writes) are TLSRecords'."""

    # ------------------------------------------------------------ begin, end

    def _tls_begin(self, conn, req):
        """start_tls request `req` is queued on conn: reads wait from now on."""
        if conn.tls is not None:
            raise ValueError("start_tls() on a connection already in TLS")
        session = req.session
        session.request = req
        conn.tls = session
        conn.routed = True
        if isinstance(conn.peer, BaseException):
            # its connect() failed already: the handshake completes with its class
            session.state = FAILED
            session.error = conn.peer

    def _tls_finished(self, req, error):
        """The start_tls request ends (from _finish): its result, then the
        session's fate."""
        session = req.session
        conn = req.conn
        req.session = session.request = None  # no cycle left behind
        if error is None:
            session.state = OPEN
            self.tls_handshakes += 1
            self.results.append(new_tls_result(req.owner, req.ctx, session.obj))
            return
        self.results.append(new_result(_OP_TLS, req.owner, req.ctx, None, 0, error, False))
        if session.state != FAILED:
            session.state = FAILED
            session.error = error
        if conn.sock is not None:
            self._tls_fail_all(conn, session)

    def _tls_fail_all(self, conn, session):
        """Every request on conn completes with the class of the session's
        error (after a failed handshake, a record that did not decrypt)."""
        for req in [*conn.writes, *conn.reads]:
            if not req.finished:
                self._fail(req, _clone_error(session.error))

    def _tls_broken(self, conn, session, error):
        """A record that failed to decrypt, a protocol violation (R30)."""
        session.state = FAILED
        session.error = error
        self._tls_fail_all(conn, session)

    def _tls_goodbye(self, conn):
        """free(conn): close_notify if no record is half sent and the socket
        takes it at once; never waits (R30)."""
        session = conn.tls
        self._tls_drop(conn)
        if session.state != OPEN or session.sent:
            return
        try:
            session.obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # SSLWantReadError: the peer's close_notify is not awaited
        data = session.outgoing.read()
        if session.sending is not None:  # a record not begun goes first
            data = bytes(session.sending) + data
        try:
            if conn.sock.family != _AF_UNIX:
                # Nagle would hold this small segment while an earlier one
                # is unacknowledged, and the close() that follows purges
                # what is held when it resets the connection (it does when
                # bytes arrived unread, e.g. TLS 1.3 session tickets):
                # the close_notify would never leave
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sock.send(data, _MSG_NOSIGNAL)
        except OSError:
            pass

    def _tls_drop(self, conn):
        """conn goes (free(), or dropped): a record in flight will never be
        sent, the back-pressure owed for it is paid now."""
        session = conn.tls
        pays = session.record_pays
        session.record_pays = None
        session.record_req = None
        if pays:
            for standing, size in pays:
                self._pay(standing, size)

    # ------------------------------------------------------------ the pump

    # True while a pump runs (under the lock): Python code the session runs
    # (an SNI or msg callback) may not close() or free() (_tls_refuse_close)
    tls_pumping = False

    def _tls_refuse_close(self):
        """close() and free() under the lock: refused from inside the pump,
        which would go on with a connection closed under it."""
        if self.tls_pumping:
            raise RuntimeError(args.TLS_CALLBACK_CLOSE)

    def _tls_pump(self, conn):
        """Do what conn's session can do now: the writes ahead of start_tls,
        the handshake, reads, writes, the failure's results."""
        was = self.tls_pumping
        self.tls_pumping = True
        conn.tls.drained = False  # a pump may always look once (_tls_recv)
        try:
            self._tls_pump_once(conn)
        finally:
            self.tls_pumping = was

    def _tls_pump_once(self, conn):
        session = conn.tls
        if session.state == WAITING:
            if not self._tls_plain_writes(conn, session):
                return
            session.state = HANDSHAKING
        if session.state == HANDSHAKING:
            if not self._tls_handshake(conn, session):
                return
        if session.state == OPEN:
            self._tls_reads(conn, session)
        if session.state == OPEN:
            self._tls_writes(conn, session)
        if session.state == FAILED and conn.sock is not None:
            self._tls_fail_all(conn, session)

    def _tls_interest(self, conn):
        """What the selector watches for a TLS connection (_sync_interest)."""
        session = conn.tls
        state = session.state
        if state == OPEN:
            want = 0
            if conn.reads and not (conn.stalled or conn.deferred):
                want = 1  # selectors.EVENT_READ
            if session.sending is not None or conn.writes:
                want |= 2  # selectors.EVENT_WRITE
            return want
        if state == HANDSHAKING:
            return 2 if session.sending is not None else 1
        if state == WAITING and conn.writes:
            return 2
        return 0

    def _tls_plain_writes(self, conn, session):
        """The writes requested before start_tls() go out in plaintext (R28):
        True once start_tls() is the head of conn's writes."""
        writes = conn.writes
        sock = conn.sock
        while writes and writes[0] is not session.request:
            req = writes[0]
            try:
                if req.special:
                    self._pump_special_write(conn, req)
                    continue
                while True:
                    with req.view[req.size:] as rest:
                        size = sock.send(rest, _MSG_NOSIGNAL)
                    req.size += size
                    self.bytes_written += size
                    if conn.standing is not None:
                        self._pay(conn.standing, size)
                    if req.size == req.view.nbytes:
                        self._finish(req, req.size, None, req.buffer, False)
                        break
            except BlockingIOError:
                return False
            except OSError as exc:
                exc.__traceback__ = None
                self._fail(req, exc)
        return bool(writes)

    # ------------------------------------------------------------ ciphertext

    def _tls_recv(self, conn, session):
        """Take the next piece of the record being received from the socket
        into the session: the rest of its header, or the rest of its body
        and the next record's header if it is there (never more). A recv
        that brings less than it asked for has emptied the socket: no other
        is made in this pump (session.drained), instead of one that finds
        nothing after each record; the next pump (readiness, a request)
        looks again. Raises what recv raises (BlockingIOError: nothing
        there)."""
        if session.drained:
            raise BlockingIOError
        want = session.want
        if session.header is None:
            want += _HEADER
        try:
            data = conn.sock.recv(want)
        except BlockingIOError:
            session.drained = True
            raise
        if not data:
            session.incoming.write_eof()  # the SSLObject tells close_notify from truncation
            session.eof_fed = True
            return
        got = len(data)
        if got < want:
            session.drained = True
        session.incoming.write(data)
        header = session.header
        if header is None:  # in a body, perhaps the next header after it
            left = session.want
            if got <= left:
                session.want = left - got
                if not session.want:
                    session.header = bytearray()
                    session.want = _HEADER
                return
            header = session.header = bytearray(data[left:])  # at most _HEADER bytes
        else:
            header += data
        if len(header) < _HEADER:
            session.want = _HEADER - len(header)
            return
        session.want = session.length = int.from_bytes(header[3:5], "big")
        session.header = None
        if session.want == 0:
            session.header = bytearray()
            session.want = _HEADER

    @staticmethod
    def _tls_nothing_to_read(session):
        """True when SSLObject.read could only raise SSLWantReadError: no
        plaintext is buffered, the stream did not end, and what the incoming
        BIO still holds is the beginning of the record being received,
        nothing of a record before it (without read_ahead, which Python
        never sets, OpenSSL takes a record from the BIO only as it processes
        it). Raising that exception costs about ten times this look."""
        if session.eof_fed:
            return False
        header = session.header
        if header is not None:
            partial = len(header)
        else:
            partial = _HEADER + session.length - session.want
        return session.incoming.pending <= partial and not session.obj.pending()

    def _tls_flush(self, conn, session):
        """Send the ciphertext waiting to go: True when all of it went.
        Raises what send raises but BlockingIOError."""
        sock = conn.sock
        while True:
            data = session.sending
            sent = session.sent
            with memoryview(data) as whole:
                while sent < len(data):
                    try:
                        with whole[sent:] as rest:
                            sent += sock.send(rest, _MSG_NOSIGNAL)
                    except BlockingIOError:
                        session.sent = sent
                        return False
            session.sending = None
            session.sent = 0
            if session.record_req is not None:
                self._tls_record_sent(session)
            if not session.outgoing.pending:
                return True
            session.sending = session.outgoing.read()  # a post-handshake message

    def _tls_record_sent(self, session):
        """The kernel took the whole record of a write: count it, pay
        back-pressure for it, and complete the write if it was its last."""
        req = session.record_req
        pays = session.record_pays
        session.record_req = None
        session.record_pays = None
        self.bytes_written += session.record_plain
        if pays:
            for standing, size in pays:
                self._pay(standing, size)
        if not req.finished:
            total = req.total if req.special else req.view.nbytes
            if req.size == total:
                self._finish(req, req.size, None, req.buffer, False)

    def _tls_send_alert(self, conn, session):
        """The alert a failed handshake left in the session, if the socket
        takes it at once: the peer learns why."""
        data = session.outgoing.read()
        if data and not session.sent:
            try:
                conn.sock.send(data, _MSG_NOSIGNAL)
            except OSError:
                pass
