"""Op and OpResult: what wait_io() hands back.

The native core has its own OpResult type with the same fields; both are
instances of gaio.OpResult (the native one is registered as a virtual subclass).
"""
import abc
import enum


class Op(enum.IntEnum):
    READ = 0
    WRITE = 1
    ACCEPT = 2
    CONNECT = 3
    SENDFILE = 4
    TLS = 5


class OpResult(metaclass=abc.ABCMeta):
    """The completion of one request. Immutable.

    op              Op.READ, Op.WRITE, Op.ACCEPT, Op.CONNECT, Op.SENDFILE or Op.TLS
    conn            the socket object the request was made with
    ctx             the request's ctx, passed through unchanged
    buffer          the caller's buffer object; for a read without a buffer,
                    a read-only memoryview of exactly `size` bytes over the
                    watcher's internal buffer, released at the next wait_io()
    size            bytes transferred (also when error is set)
    error           None, EOFError, DeadlineExceededError, ConnClosedError or
                    the OSError subclass matching errno
    is_swap_buffer  True when buffer views the internal buffer
    accepted        the new connection (a socket.socket that belongs to the
                    caller, not delegated) of an ACCEPT result; None otherwise
    address         a datagram's sender, as socket.recvfrom gives it, on a read
                    of an unconnected datagram socket; None otherwise (R25)
    truncated       True when a datagram was longer than the buffer it landed
                    in (the rest is lost); False otherwise (R24)
    tls             the session's ssl.SSLObject on the successful result of
                    start_tls() (for inspection only); None otherwise (R28)

    The buffer of an ACCEPT, CONNECT, SENDFILE or TLS result is None; that of a
    vectored write is the list or tuple given.
    """

    __slots__ = ("op", "conn", "ctx", "buffer", "size", "error", "is_swap_buffer",
                 "accepted")

    def __init__(self, op, conn, ctx, buffer, size, error, is_swap_buffer, accepted=None):
        setattr_ = object.__setattr__
        setattr_(self, "op", op)
        setattr_(self, "conn", conn)
        setattr_(self, "ctx", ctx)
        setattr_(self, "buffer", buffer)
        setattr_(self, "size", size)
        setattr_(self, "error", error)
        setattr_(self, "is_swap_buffer", is_swap_buffer)
        setattr_(self, "accepted", accepted)

    # Neutral values of DatagramResult's fields: a stream's result pays
    # nothing for them (the pattern of _python_requests._Request).
    address = None
    truncated = False
    tls = None

    def __setattr__(self, name, value):
        raise AttributeError("OpResult is immutable")

    def __delattr__(self, name):
        raise AttributeError("OpResult is immutable")

    def __repr__(self):
        return "OpResult(op=%s, conn=%r, size=%d, error=%r, is_swap_buffer=%s)" % (
            self.op.name, self.conn, self.size, self.error, self.is_swap_buffer)


class DatagramResult(OpResult):
    """The result of a read on a datagram socket: an OpResult with its own
    `address` and `truncated` (R24, R25)."""

    __slots__ = ("address", "truncated")

    def __init__(self, op, conn, ctx, buffer, size, error, is_swap_buffer, address=None,
                 truncated=False):
        OpResult.__init__(self, op, conn, ctx, buffer, size, error, is_swap_buffer)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "truncated", truncated)


class TLSResult(OpResult):
    """The result of a handshake that succeeded: an OpResult with its own
    `tls` (R28)."""

    __slots__ = ("tls",)

    def __init__(self, op, conn, ctx, buffer, size, error, is_swap_buffer, tls=None):
        OpResult.__init__(self, op, conn, ctx, buffer, size, error, is_swap_buffer)
        object.__setattr__(self, "tls", tls)
