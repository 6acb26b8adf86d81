"""Argument checks written in Python: the pure-Python engine's requests, and
the Watcher() arguments every engine shares (checked by the front).

They run in the requesting thread before any state changes, so a request that
raises leaves nothing behind. A memoryview taken of a caller's buffer exports
it (a bytearray can then not be resized), so every error path releases the
view it took.

The messages are the native engines' too, word for word (tests/test_r01_bad_arguments.py
and test_v02_bad_arguments.py hold them): src/native/args.c words the same
checks, and signature_checked() below words a call that does not fit a
method's signature as args.c's gaio__parse_args() does.
"""
import functools
import inspect
import math
import os
import socket
import ssl
import stat
import time


# ---------------------------------------------------------------- signatures

def signature_checked(name):
    """Decorate a method so that a call that does not fit its signature raises
    the TypeError the native engines raise, not CPython's own (whose wording
    changes between versions and counts self): gaio__parse_args()'s words, and
    for a method without arguments or with one positional-only argument the
    words CPython gives a METH_NOARGS or METH_O method. `name` is the
    method's name in the messages ("Watcher.read")."""
    def decorate(method):
        params = list(inspect.signature(method).parameters.values())[1:]  # not self/cls

        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except TypeError as exc:
                # the call did not bind, or the method raised: only the first is ours
                problem = signature_error(name, params, args, kwargs)
                if problem is None:
                    raise
                raise TypeError(problem) from exc
        return call
    return decorate


def signature_error(name, params, args, kwargs):
    """What is wrong with calling `name` (parameters `params`) with `args`
    and `kwargs`, worded as src/native/args.c words it, or None."""
    if all(p.kind is p.POSITIONAL_ONLY for p in params) and len(params) <= 1:
        if kwargs:
            return "%s() takes no keyword arguments" % name
        if params and len(args) != 1:
            return "%s() takes exactly one argument (%d given)" % (name, len(args))
        if not params and args:
            return "%s() takes no arguments (%d given)" % (name, len(args))
        return None
    positional = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
    if len(args) > len(positional):
        return "%s() takes at most %d positional argument%s (%d given)" % (
            name, len(positional), "" if len(positional) == 1 else "s", len(args))
    names = [p.name for p in params]
    for key in kwargs:
        if key not in names:
            return "%s() got an unexpected keyword argument '%s'" % (name, key)
        if key in positional[:len(args)]:
            return "%s() got multiple values for argument '%s'" % (name, key)
    given = set(positional[:len(args)]) | set(kwargs)
    for p in params:
        if p.default is p.empty and p.name not in given:
            return "%s() missing required argument '%s'" % (name, p.name)
    return None


# ---------------------------------------------------------------- connections

def check_conn(conn):
    """TypeError unless `conn` is a socket object of a stream socket."""
    check_free_target(conn)
    if conn.type != socket.SOCK_STREAM:
        # the kind's name (SOCK_DGRAM), or its number when socket has no name for it
        raise TypeError("conn must be a stream socket (SOCK_STREAM), not %s"
                        % getattr(conn.type, "name", conn.type))


# R24: the datagram sockets a watcher takes (read, write, free, connect)
DATAGRAM_FAMILIES = tuple(getattr(socket, name) for name in ("AF_INET", "AF_INET6", "AF_UNIX")
                          if hasattr(socket, name))


def check_io_conn(conn):
    """read()'s, write()'s and connect()'s conn: a stream socket, or a
    datagram socket of AF_INET, AF_INET6 or AF_UNIX (R24). True for a
    datagram socket."""
    check_free_target(conn)
    kind = conn.type
    if kind == socket.SOCK_STREAM:
        return False
    if kind == socket.SOCK_DGRAM:
        if conn.family in DATAGRAM_FAMILIES:
            return True
        raise TypeError("datagram sockets of AF_INET, AF_INET6 and AF_UNIX only, not %s"
                        % getattr(conn.family, "name", conn.family))
    check_conn(conn)  # words the refusal of any other kind
    return False


def check_free_target(conn):
    if not isinstance(conn, socket.socket):
        raise TypeError("conn must be a socket.socket, not %s" % type(conn).__name__)


CLOSED_CONN = "conn is closed (or delegated to another watcher)"


def _bytes_view(obj, what, writable=False, empty_ok=False):
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError("%s must be a %sbytes-like object, not %s"
                        % (what, "writable " if writable else "", type(obj).__name__)) from None
    if not view.c_contiguous:
        view.release()
        raise TypeError("%s must be a contiguous buffer, not a non-contiguous %s"
                        % (what, type(obj).__name__))
    if writable and view.readonly:
        # before the size: a read-only buffer is the wrong kind, even empty
        view.release()
        raise TypeError("%s must be writable, not a read-only %s" % (what, type(obj).__name__))
    if view.nbytes == 0 and not empty_ok:
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


def datagram_view(data):
    """A flat memoryview of `data`, a datagram: empty is a datagram too (R24)."""
    if data is None:
        raise ValueError("data is required")
    return _bytes_view(data, "data", empty_ok=True)


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


# ---------------------------------------------------------------- 0.2

_ACCEPTCONN = getattr(socket, "SO_ACCEPTCONN", None)


def is_listening(sock):
    """True if `sock` (an open socket object) is a listening socket."""
    if _ACCEPTCONN is None:  # no way to ask: let accept() tell
        return True
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, _ACCEPTCONN))
    except OSError:
        return False


def check_listener(listener):
    """accept()'s listener, not yet delegated: a listening stream socket."""
    check_conn(listener)
    if listener.fileno() == -1:
        raise ValueError(CLOSED_CONN)
    if not is_listening(listener):
        raise ValueError("accept() needs a listening socket (call listen() first)")


def check_connect_socket(sock):
    """connect()'s socket, not delegated: an open, unconnected, non-listening
    stream socket, or an unconnected datagram socket (R25)."""
    check_io_conn(sock)
    if sock.fileno() == -1:
        raise ValueError(CLOSED_CONN)
    if is_listening(sock):
        raise ValueError("connect() on a listening socket")
    try:
        sock.getpeername()
    except OSError:
        return
    raise ValueError("connect() on a socket that is connected already")


def check_address(family, address, call="connect()"):
    """A numeric address for a socket of `family`: nothing needs DNS.
    `call` names the request in the messages."""
    if family == getattr(socket, "AF_UNIX", None):
        if isinstance(address, (str, bytes, bytearray)) or hasattr(address, "__fspath__"):
            return
        raise TypeError("an AF_UNIX address is a path, not %s" % type(address).__name__)
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise TypeError("%s supports AF_INET, AF_INET6 and AF_UNIX sockets" % call)
    if not isinstance(address, tuple):
        raise TypeError("address must be a tuple (host, port), not %s"
                        % type(address).__name__)
    most = 2 if family == socket.AF_INET else 4
    if not 2 <= len(address) <= most:
        raise TypeError("address must be a tuple of 2%s items" % (
            "" if most == 2 else " to 4"))
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise TypeError("host must be a str, not %s" % type(host).__name__)
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError("port must be an int, not %s" % type(port).__name__)
    if not 0 <= port <= 65535:
        raise ValueError("port must be 0-65535")
    try:
        # AI_NUMERICHOST: never a DNS lookup, a name is an error at once
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0,
                           socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        raise ValueError("%s takes a numeric address, not %r "
                         "(resolve names before, e.g. with getaddrinfo)" % (call, host)) from None


# write(address=) (R25); the native engines word ADDRESS_ON_STREAM in args.c
ADDRESS_ON_STREAM = "address= is for datagram sockets (a stream socket writes to its peer)"
ADDRESS_ON_CONNECTED = "address= on a connected datagram socket (it writes to its peer)"
ADDRESS_MISSING = "a write on an unconnected datagram socket needs address="


def has_peer(sock):
    """Whether datagram socket `sock` (open, not delegated) is connected."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def datagram_address(family, address, connected):
    """write()'s address= on a datagram socket of `family`: where the
    datagram goes (None: to the peer), after checking it (R25)."""
    if connected:
        if address is not None:
            raise ValueError(ADDRESS_ON_CONNECTED)
        return None
    if address is None:
        raise ValueError(ADDRESS_MISSING)
    check_address(family, address, "write()")
    if hasattr(address, "__fspath__"):
        return os.fspath(address)
    return address


# ---------------------------------------------------------------- 0.3: TLS

TLS_ON_LISTENER = "start_tls() on a listening socket"
TLS_UNCONNECTED = "start_tls() needs a connected socket (or one on which connect() was requested)"
TLS_AGAIN = "start_tls() on a connection already in TLS"
# close() or free() from Python code the TLS record layer runs (an SNI or msg
# callback) while it works inside wait_io(): the connection under it would go
TLS_CALLBACK_CLOSE = ("close() or free() called from a TLS callback (SNI, msg_callback) "
                      "that the watcher's TLS record layer runs: call it after wait_io() returns")
TLS_SERVER_HOSTNAME = "server_hostname is for the client side (server_side=False)"
# CPython's words for the check SSLContext.wrap_socket makes and wrap_bio does not
TLS_NO_HOSTNAME = "check_hostname requires server_hostname"


def check_tls_arguments(conn, context, server_side, server_hostname):
    """start_tls()'s arguments, but for the connection's state (R28); the
    native engines call this too."""
    check_conn(conn)
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("context must be an ssl.SSLContext, not %s" % type(context).__name__)
    if not isinstance(server_side, bool):
        raise TypeError("server_side must be a bool, not %s" % type(server_side).__name__)
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError("server_hostname must be a str or None, not %s"
                        % type(server_hostname).__name__)
    if server_side and server_hostname is not None:
        raise ValueError(TLS_SERVER_HOSTNAME)
    if not server_side and server_hostname is None and context.check_hostname:
        raise ValueError(TLS_NO_HOSTNAME)


def check_tls_socket(sock):
    """start_tls()'s socket when no connect() was requested on it: open,
    connected, not listening."""
    if sock.fileno() == -1:
        raise ValueError(CLOSED_CONN)
    if is_listening(sock):
        raise ValueError(TLS_ON_LISTENER)
    if not has_peer(sock):
        raise ValueError(TLS_UNCONNECTED)


def vector_views(data, empty_ok=False):
    """[(item, flat view)] of a vectored write's non-empty items; with
    `empty_ok` (a datagram's) items that are all empty are one empty
    datagram, and only an empty sequence is refused."""
    pairs = []
    total = 0
    try:
        for item in data:
            if item is None or isinstance(item, (list, tuple)):
                raise TypeError("data items must be bytes-like objects, not %s"
                                % type(item).__name__)
            view = _bytes_view_or_empty(item)
            if view is None:
                continue
            pairs.append((item, view))
            total += view.nbytes
    except BaseException:
        for _, view in pairs:
            view.release()
        raise
    if not total and not (empty_ok and len(data)):
        raise ValueError("vectored write of no bytes (empty sequence or all items empty)")
    return pairs


def _bytes_view_or_empty(obj):
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError("data items must be bytes-like objects, not %s"
                        % type(obj).__name__) from None
    if not view.c_contiguous:
        view.release()
        raise TypeError("data items must be contiguous buffers, not a non-contiguous %s"
                        % type(obj).__name__)
    if view.nbytes == 0:
        view.release()
        return None
    if view.ndim != 1 or view.format != "B":
        flat = view.cast("B")
        view.release()
        view = flat
    return view


def _int_arg(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    return value


def sendfile_source(file, offset, count):
    """(descriptor, bytes to send) of sendfile()'s arguments, after checking
    them; the descriptor is the caller's (not a copy)."""
    if isinstance(file, bool):
        raise TypeError("file must be a file object or a descriptor, not bool")
    if isinstance(file, int):
        fd = file
    else:
        fileno = getattr(file, "fileno", None)
        if fileno is None:
            raise TypeError("file must be a file object or a descriptor, not %s"
                            % type(file).__name__)
        try:
            fd = fileno()
        except (OSError, ValueError) as exc:  # io.UnsupportedOperation, closed file
            if getattr(file, "closed", False):
                raise ValueError("file is closed") from None
            raise TypeError("file has no descriptor: %s.fileno() raised %s"
                            % (type(file).__name__, type(exc).__name__)) from None
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError("file.fileno() must return an int")
    _int_arg(offset, "offset")
    if count is not None:
        _int_arg(count, "count")
    if fd < 0:
        raise ValueError("file descriptor %d is not open" % fd)
    try:
        st = os.fstat(fd)
    except OSError:
        raise ValueError("file descriptor %d is not open" % fd) from None
    if not stat.S_ISREG(st.st_mode):
        raise TypeError("sendfile() sends a regular file")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if count is None:
        count = max(st.st_size - offset, 0)
    elif count <= 0:
        raise ValueError("count must be > 0 (or None for the rest of the file)")
    return fd, count


def idle_limit(timeout):
    """A standing request's idle limit in seconds (None: no limit)."""
    seconds = _seconds(timeout, "timeout")
    if seconds <= 0:
        raise ValueError("a standing request's timeout (an idle limit) must be > 0")
    return None if seconds == math.inf else seconds


# Watcher()'s defaults and bufsize's limit; the C engines' are
# GAIO_DEFAULT_BUFSIZE, GAIO_MAX_BUFSIZE and GAIO_DEFAULT_WRITE_HIGH in
# src/native/binding.h (tests/test_static_checks.py holds them equal).
DEFAULT_BUFSIZE = 65536
MAX_BUFSIZE = 1 << 30
DEFAULT_WRITE_HIGH = 262144
# The longest batch_wait: it adds up to that much to a batch's latency.
MAX_BATCH_WAIT = 1.0


def check_bufsize(bufsize):
    if isinstance(bufsize, bool) or not isinstance(bufsize, int):
        raise TypeError("bufsize must be an int, not %s" % type(bufsize).__name__)
    if not 1 <= bufsize <= MAX_BUFSIZE:
        raise ValueError("bufsize must be from 1 to 2**30, got %d" % bufsize)


def check_batch_wait(batch_wait):
    """Watcher(batch_wait=): seconds a wait_io() that slept gathers results
    for, counted from when it began to sleep; None or 0 is off."""
    if batch_wait is None:
        return 0.0
    seconds = _seconds(batch_wait, "batch_wait")
    if not 0 <= seconds <= MAX_BATCH_WAIT:
        raise ValueError("batch_wait must be from 0 to 1 second (or None for off)")
    return seconds


def check_write_high(write_high):
    if write_high is None:
        return None
    _int_arg(write_high, "write_high")
    if write_high <= 0:
        raise ValueError("write_high must be > 0 (or None for no limit)")
    return write_high
