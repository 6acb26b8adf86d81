"""The pure-Python engine's TLS record paths (R28-R30), the twin of
src/native/tls_records.c: the handshake, reads that decrypt into the
caller's or the internal buffer, and writes cut into records of at most
RECORD plaintext bytes. The session's life, its ciphertext and the pump are
_python_tls.py's; `TLSRecords` is a base of its `TLS` mixin.
"""
import os
import ssl

from ._python_accept_connect import _clone_error
from ._result import Op

# The most plaintext one record carries (TLS's limit, RFC 8446 5.1).
RECORD = 16384
_OP_SENDFILE = Op.SENDFILE


class TLSRecords:
    """Mixin of _Core through TLS: expects the core's and TLS's methods."""

    # ------------------------------------------------------------ handshake

    def _tls_handshake(self, conn, session):
        """Advance the handshake: True once it succeeded (result delivered)."""
        obj = session.obj
        req = session.request
        done = False
        try:
            while True:
                if session.sending is not None and not self._tls_flush(conn, session):
                    return False
                if done:
                    self._finish(req, 0, None, None, False)
                    return True
                try:
                    obj.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                if session.outgoing.pending:
                    session.sending = session.outgoing.read()
                    continue
                if not done:
                    self._tls_recv(conn, session)
        except BlockingIOError:
            return False
        except OSError as exc:  # ssl.SSLError and its subclasses, a reset
            exc.__traceback__ = None
            if isinstance(exc, ssl.SSLError):
                self._tls_send_alert(conn, session)
            self._fail(req, exc)
            return False

    # ------------------------------------------------------------ reads

    def _tls_reads(self, conn, session):
        """Perform the reads at the head of conn's queue, in plaintext, until
        one must wait."""
        reads = conn.reads
        obj = session.obj
        while reads:
            req = reads[0]
            if session.read_end is not None:
                end = session.read_end
                self._fail(req, EOFError("end of stream") if end is EOFError
                           else _clone_error(end))
                continue
            if req.held:
                conn.stalled = True
                return
            view = req.view
            if view is None and self.internal.is_full():
                if not conn.deferred:
                    conn.deferred = True
                    self.deferred.append(conn)
                return
            # the read would raise SSLWantReadError (twice a record): ask at once
            if self._tls_nothing_to_read(session):
                if not self._tls_want_ciphertext(conn, session):
                    return
                continue
            try:
                if view is None:
                    size, out = self.internal.fill(obj.read)
                elif req.full and req.size:
                    with view[req.size:] as rest:
                        size = obj.read(rest.nbytes, rest)
                else:
                    size = obj.read(view.nbytes, view)
            except ssl.SSLWantReadError:
                if not self._tls_want_ciphertext(conn, session):
                    return
                continue
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                # the stream ended without close_notify: never a clean end (R30)
                session.read_end = ssl.SSLEOFError(
                    ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
                continue
            except ssl.SSLError as exc:
                exc.__traceback__ = None
                self._tls_broken(conn, session, exc)
                return
            if session.outgoing.pending and not self._tls_answer(conn, session):
                return
            if size == 0:  # the peer's close_notify (SSLObject.read returns 0 only then)
                session.read_end = EOFError
                continue
            self.bytes_read += size
            if view is None:
                if req.repeat:
                    self._deliver_standing(req, size, out)
                else:
                    self._finish(req, size, None, out, True)
                continue
            req.size += size
            if not req.full or req.size == view.nbytes:
                self._finish(req, req.size, None, req.buffer, False)

    def _tls_want_ciphertext(self, conn, session):
        """The session needs ciphertext to decrypt more: the answer a read
        made goes first, then a recv. True to look again, False to stop."""
        if session.outgoing.pending and not self._tls_answer(conn, session):
            return False
        try:
            self._tls_recv(conn, session)
        except BlockingIOError:
            return False
        except OSError as exc:  # a reset ends the reads (R30)
            exc.__traceback__ = None
            session.read_end = exc
        return True

    def _tls_answer(self, conn, session):
        """A read made the session write (a TLS 1.3 key update's answer, an
        alert): send it after what is on its way. A TLS 1.2 client asked to
        renegotiate would answer with a handshake: refused, the connection
        fails (SPEC 0.3). True to go on reading."""
        obj = session.obj
        if not obj.server_side and obj.version() == "TLSv1.2":
            session.outgoing.read()
            self._tls_broken(conn, session, ssl.SSLError(
                "renegotiation refused: the peer asked for a new handshake"))
            return False
        if session.sending is None:
            session.sending = session.outgoing.read()
        try:
            self._tls_flush(conn, session)
        except OSError:
            pass  # the writes meet it
        return True

    # ------------------------------------------------------------ writes

    def _tls_writes(self, conn, session):
        """Encrypt and send the writes at the head of conn's queue, one record
        at a time, until one must wait."""
        writes = conn.writes
        obj = session.obj
        while True:
            try:
                if session.sending is not None and not self._tls_flush(conn, session):
                    return
            except OSError as exc:
                exc.__traceback__ = None
                self._tls_write_failed(conn, session, exc)
                continue
            if not writes:
                return
            req = writes[0]
            chunk = self._tls_take(conn, req)
            if chunk is None:
                continue  # it completed, or met the end of its file
            try:
                obj.write(chunk)
            except ssl.SSLError as exc:
                exc.__traceback__ = None
                self._tls_broken(conn, session, exc)
                return
            finally:
                if isinstance(chunk, memoryview):
                    chunk.release()
            session.sending = session.outgoing.read()
            session.sent = 0

    def _tls_write_failed(self, conn, session, error):
        """The socket refused ciphertext (a reset, a broken pipe): the write
        whose record it was fails, and the ciphertext is dropped (nothing
        can follow it)."""
        req = session.record_req
        session.sending = None
        session.sent = 0
        self._tls_drop(conn)
        if req is None or req.finished:
            req = conn.writes[0] if conn.writes else None
        if req is not None:
            self._fail(req, error)

    def _tls_take(self, conn, req):
        """The next record's plaintext of write `req` (at most RECORD bytes),
        its cursor moved past it and its back-pressure noted as owed until
        sent; None when `req` has none left (it is completed here then)."""
        session = conn.tls
        if not req.special:
            view = req.view
            start = req.size
            size = min(RECORD, view.nbytes - start)
            if size == 0:
                self._finish(req, req.size, None, req.buffer, False)
                return None
            chunk = view[start:start + size]
            standing = conn.standing
            pays = [(standing, size)] if standing is not None else None
            req.size = start + size
        else:
            left = req.total - req.size
            if left == 0:
                self._finish(req, req.size, None, req.buffer, False)
                return None
            size = min(RECORD, left)
            if req.op is _OP_SENDFILE:
                try:
                    chunk = os.pread(req.fd, size, req.offset + req.size)
                except OSError as exc:
                    exc.__traceback__ = None
                    self._fail(req, exc)
                    return None
                if not chunk:
                    self._fail(req, EOFError("end of file after %d bytes" % req.size))
                    return None
                size = len(chunk)
            elif req.items is None:
                chunk = req.view[req.size:req.size + size]
            pays = None
            if self.write_high is not None:
                pays = []
                self._settle(req, conn.standing, size,
                             lambda standing, part: pays.append((standing, part)))
            if req.items is not None:
                chunk = self._tls_gather(req, size)
            req.size += size
        session.record_req = req
        session.record_plain = size
        session.record_pays = pays
        return chunk

    @staticmethod
    def _tls_gather(req, size):
        """The next `size` bytes of vectored write `req`, joined; its item
        cursor moved past them."""
        items = req.items
        index = req.index
        offset = req.offset
        parts = []
        while size:
            item = items[index]
            part = min(size, item.nbytes - offset)
            parts.append(item[offset:offset + part])
            size -= part
            offset += part
            if offset == item.nbytes:
                index += 1
                offset = 0
        req.index = index
        req.offset = offset
        if len(parts) == 1:
            return parts[0]
        joined = b"".join(parts)
        for part in parts:
            part.release()
        return joined
