"""Argument checks of the pure-Python engine's requests.

They run in the requesting thread before any state changes, so a request that
raises leaves nothing behind. A memoryview taken of a caller's buffer exports
it (a bytearray can then not be resized), so every error path releases the
view it took.
"""
import math
import socket
import time


def check_conn(conn):
    """TypeError unless `conn` is a socket object of a stream socket."""
    if not isinstance(conn, socket.socket):
        raise TypeError("conn must be a stream socket.socket, not %s" % type(conn).__name__)
    if conn.type != socket.SOCK_STREAM:
        raise TypeError("conn must be a stream socket, not %r" % conn.type)


def check_free_target(conn):
    if not isinstance(conn, socket.socket):
        raise TypeError("conn must be a socket.socket, not %s" % type(conn).__name__)


def _bytes_view(obj, what, writable=False):
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError("%s must be a bytes-like object, not %s"
                        % (what, type(obj).__name__)) from None
    if not view.c_contiguous:
        view.release()
        raise TypeError("%s must be a contiguous buffer" % what)
    if writable and view.readonly:
        # before the size: a read-only buffer is the wrong kind, even empty
        view.release()
        raise TypeError("%s must be writable, not a read-only %s" % (what, type(obj).__name__))
    if view.nbytes == 0:
        view.release()
        raise ValueError("%s is empty" % what)
    if view.ndim != 1 or view.format != "B":
        flat = view.cast("B")
        view.release()
        view = flat
    return view


def writable_view(buf):
    """A flat writable memoryview of `buf` (a read's buffer)."""
    if buf is None:
        raise ValueError("buf is required")
    return _bytes_view(buf, "buf", writable=True)


def data_view(data):
    """A flat memoryview of `data` (a write's bytes)."""
    if data is None:
        raise ValueError("data is required")
    return _bytes_view(data, "data")


def _seconds(value, name):
    """Any real number (what float() takes through __float__ or __index__:
    int, float, Decimal, Fraction, ...) but a bool; NaN is a ValueError."""
    kind = type(value)
    if kind is bool or not (hasattr(kind, "__float__") or hasattr(kind, "__index__")):
        raise TypeError("%s must be a number of seconds, not %s" % (name, kind.__name__))
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError("%s must not be NaN" % name)
    return seconds


def deadline_of(timeout, deadline):
    """The absolute time.monotonic() deadline asked for, or None for none."""
    if timeout is not None:
        if deadline is not None:
            raise ValueError("give timeout or deadline, not both")
        when = time.monotonic() + _seconds(timeout, "timeout")
    elif deadline is not None:
        when = _seconds(deadline, "deadline")
    else:
        return None
    return None if when == math.inf else when


def wait_seconds(timeout):
    """wait_io's timeout: None (forever) or seconds >= 0."""
    if timeout is None:
        return None
    seconds = _seconds(timeout, "timeout")
    if seconds == math.inf:
        return None
    return max(seconds, 0.0)
