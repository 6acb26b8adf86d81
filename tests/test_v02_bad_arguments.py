"""0.2 bad arguments, as one table (the style of test_r01_bad_arguments.py):
every new method and keyword x every bad value -> the exception type.

Every row raises before anything changes: no descriptor opened or closed,
counters unchanged, nothing pending, and the socket the call was given is
not delegated. Decisions (docs/SPEC.md, "Edge cases, settled (0.2)"):

- accept(): a stream socket that is not listening -> ValueError; datagram or
  non-socket -> TypeError. connect(): connected, listening or delegated ->
  ValueError; an address that is not numeric (a host name) -> ValueError; an
  address of the wrong shape or types -> TypeError; a port out of range ->
  ValueError.
- repeat=True only on read (no buffer: else ValueError) and accept; quiet=True
  only on write and sendfile; elsewhere an unknown keyword -> TypeError. A
  standing request's timeout <= 0 -> ValueError.
- vectored write: empty sequence or all items empty -> ValueError; an item
  that is not bytes-like -> TypeError.
- write(address=) (0.3) on a stream socket -> ValueError, checked after the
  times and before the data. (Datagram sockets: tests/test_r25_addresses.py.)
- sendfile: count 0 or negative, offset negative, a closed file or a
  descriptor that is not open -> ValueError; a non-regular file (device,
  pipe, socket, directory, an object without a descriptor) or a non-int
  offset/count -> TypeError.
- Watcher(write_high=): a positive int or None; bool/float/str -> TypeError,
  0 or negative -> ValueError.
- Watcher(batch_wait=): None or seconds from 0 to 1; bool/str -> TypeError,
  negative, over 1, inf or NaN -> ValueError.
- start_tls() (0.3, R28): a context that is not an ssl.SSLContext, a
  server_side that is not a bool, a server_hostname that is not a str ->
  TypeError; server_side missing -> TypeError; server_side=True with a
  server_hostname, or a client without server_hostname whose context checks
  host names -> ValueError. Checked in this order: the socket, these, the
  times. (Listeners, unconnected sockets, a second start_tls:
  tests/test_r28_start_tls.py.)
"""
import io
import math
import os
import re
import socket
import ssl
import tempfile
import time

import pytest

import gaio
from conftest import collect
from test_r01_bad_arguments import (
    BAD_CONNS,
    DATAGRAM_CONNS,
    BAD_SECONDS,
    BOTH_TIMES,
    MISSING,
    NOT_ITEM,
    TOO_MANY,
    UNEXPECTED,
    _non_contiguous,
    check_bad_call,
)


def _regular(net):
    f = tempfile.TemporaryFile()
    f.write(b"0123456789")
    f.flush()
    return net.track(f)


def _closed_file(net):
    f = tempfile.TemporaryFile()
    f.close()
    return f


class _Fd:
    """A raw descriptor for Net.track (closed at teardown)."""

    def __init__(self, fd):
        self.fd = fd

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _directory_fd(net):
    return net.track(_Fd(os.open(tempfile.gettempdir(), os.O_RDONLY))).fd


def _devnull(net):
    return net.track(open(os.devnull, "rb"))


def _pipe_file(net):
    r, w = os.pipe()
    net.track(os.fdopen(w, "wb"))
    return net.track(os.fdopen(r, "rb"))


def _tcp_unconnected(net):
    return net.track(socket.socket())


LISTEN_ADDRESS = None  # filled per test by the fixture below


def _tls_client():
    # a client context that checks host names, without the system's CA store
    # (create_default_context() loads it: tens of ms, in hundreds of rows)
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _tls_unchecked():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    return ctx


NEW_REQUESTS = {  # name -> call(w, conn, net, **kwargs) with good other arguments
    "accept": lambda w, c, net, **kw: w.accept(c, **kw),
    "connect": lambda w, c, net, **kw: w.connect(c, ("127.0.0.1", 9), **kw),
    "sendfile": lambda w, c, net, **kw: w.sendfile(c, _regular(net), **kw),
    "start_tls": lambda w, c, net, **kw: w.start_tls(c, _tls_client(), server_side=False,
                                                     server_hostname="localhost", **kw),
}

# the socket each new request takes when the row is not about the socket
GOOD_TARGET = {
    "accept": lambda net, s: net.listener(),
    "connect": lambda net, s: _tcp_unconnected(net),
    "sendfile": lambda net, s: s,
    "start_tls": lambda net, s: s,
}


NOT_NUMERIC = ("connect() takes a numeric address, not %s "
               "(resolve names before, e.g. with getaddrinfo)")
IDLE_LIMIT = "a standing request's timeout (an idle limit) must be > 0"
NO_BYTES = "vectored write of no bytes (empty sequence or all items empty)"
NOT_REGULAR = "sendfile() sends a regular file"
NOT_LISTENING = "accept() needs a listening socket (call listen() first)"
ADDRESS_ON_STREAM = "address= is for datagram sockets (a stream socket writes to its peer)"
NOT_WRITE_HIGH = "write_high must be an int, not %s"
WRITE_HIGH_RANGE = "write_high must be > 0 (or None for no limit)"
NOT_BATCH_WAIT = "batch_wait must be a number of seconds, not %s"
BATCH_WAIT_RANGE = "batch_wait must be from 0 to 1 second (or None for off)"


def _unix_unconnected(net):
    return net.track(socket.socket(socket.AF_UNIX))


def _rows():
    """(id, call(w, server, net), exception, message)."""
    rows = []
    for name, call in NEW_REQUESTS.items():
        target = GOOD_TARGET[name]
        # connect() takes datagram sockets too (R25)
        for cid, build, exc, msg in BAD_CONNS + (DATAGRAM_CONNS if name != "connect" else []):
            rows.append(("%s/conn=%s" % (name, cid),
                         lambda w, s, net, call=call, build=build: call(w, build(net), net),
                         exc, msg))
        for sid, value, exc, msg in BAD_SECONDS:
            for kw in ("timeout", "deadline"):
                rows.append(("%s/%s=%s" % (name, kw, sid),
                             lambda w, s, net, call=call, target=target, kw=kw, value=value:
                             call(w, target(net, s), net, **{kw: value}),
                             exc, msg.format(name=kw)))
        rows.append(("%s/timeout+deadline" % name,
                     lambda w, s, net, call=call, target=target:
                     call(w, target(net, s), net, timeout=1, deadline=time.monotonic() + 1),
                     ValueError, BOTH_TIMES))
        rows.append(("%s/unknown-keyword" % name,
                     lambda w, s, net, call=call, target=target:
                     call(w, target(net, s), net, bogus=1), TypeError,
                     UNEXPECTED % (name, "bogus")))
    rows += [
        # accept
        ("accept/not-listening", lambda w, s, net: w.accept(s), ValueError,
         NOT_LISTENING),
        ("accept/unconnected", lambda w, s, net: w.accept(_tcp_unconnected(net)), ValueError,
         NOT_LISTENING),
        ("accept/quiet", lambda w, s, net: w.accept(net.listener(), quiet=True), TypeError,
         UNEXPECTED % ("accept", "quiet")),
        ("accept/repeat-timeout-0",
         lambda w, s, net: w.accept(net.listener(), repeat=True, timeout=0), ValueError,
         IDLE_LIMIT),
        ("accept/repeat-timeout-negative",
         lambda w, s, net: w.accept(net.listener(), repeat=True, timeout=-1), ValueError,
         IDLE_LIMIT),
        ("accept/ctx-positional", lambda w, s, net: w.accept(net.listener(), None), TypeError,
         TOO_MANY % ("accept", "1 positional argument", 2)),
        # connect
        ("connect/connected", lambda w, s, net: w.connect(s, ("127.0.0.1", 9)), ValueError,
         'connect() on a socket that is connected already'),
        ("connect/listening",
         lambda w, s, net: w.connect(net.listener(), ("127.0.0.1", 9)), ValueError,
         'connect() on a listening socket'),
        ("connect/host-name",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("localhost", 80)), ValueError,
         NOT_NUMERIC % "'localhost'"),
        ("connect/host-name-invalid",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("gaio.invalid", 80)),
         ValueError,
         NOT_NUMERIC % "'gaio.invalid'"),
        ("connect/empty-host",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("", 80)), ValueError,
         NOT_NUMERIC % "''"),
        ("connect/port-str",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", "80")), TypeError,
         'port must be an int, not str'),
        ("connect/port-bool",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", True)), TypeError,
         'port must be an int, not bool'),
        ("connect/port-out-of-range",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 70000)),
         ValueError,
         'port must be 0-65535'),
        ("connect/host-int",
         lambda w, s, net: w.connect(_tcp_unconnected(net), (2130706433, 80)), TypeError,
         'host must be a str, not int'),
        ("connect/address-str",
         lambda w, s, net: w.connect(_tcp_unconnected(net), "127.0.0.1:80"), TypeError,
         'address must be a tuple (host, port), not str'),
        ("connect/address-None",
         lambda w, s, net: w.connect(_tcp_unconnected(net), None), TypeError,
         'address must be a tuple (host, port), not NoneType'),
        ("connect/address-short",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1",)), TypeError,
         'address must be a tuple of 2 items'),
        ("connect/address-long",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 80, 0, 0)),
         TypeError,
         'address must be a tuple of 2 items'),
        ("connect/no-address", lambda w, s, net: w.connect(_tcp_unconnected(net)), TypeError,
         MISSING % ("connect", "address")),
        ("connect/repeat",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 9), repeat=True),
         TypeError,
         UNEXPECTED % ("connect", "repeat")),
        ("connect/quiet",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 9), quiet=True),
         TypeError,
         UNEXPECTED % ("connect", "quiet")),
        ("connect/unix-address-tuple",
         lambda w, s, net: w.connect(_unix_unconnected(net), ("127.0.0.1", 9)), TypeError,
         "an AF_UNIX address is a path, not tuple"),
        ("connect/unix-address-None",
         lambda w, s, net: w.connect(_unix_unconnected(net), None), TypeError,
         "an AF_UNIX address is a path, not NoneType"),
        # sendfile
        ("sendfile/file=None", lambda w, s, net: w.sendfile(s, None), TypeError,
         'file must be a file object or a descriptor, not NoneType'),
        ("sendfile/file=path", lambda w, s, net: w.sendfile(s, os.devnull), TypeError,
         'file must be a file object or a descriptor, not str'),
        ("sendfile/file=bool", lambda w, s, net: w.sendfile(s, True), TypeError,
         'file must be a file object or a descriptor, not bool'),
        ("sendfile/file=float", lambda w, s, net: w.sendfile(s, 3.0), TypeError,
         'file must be a file object or a descriptor, not float'),
        ("sendfile/file=devnull", lambda w, s, net: w.sendfile(s, _devnull(net)), TypeError,
         NOT_REGULAR),
        ("sendfile/file=pipe", lambda w, s, net: w.sendfile(s, _pipe_file(net)), TypeError,
         NOT_REGULAR),
        ("sendfile/file=socket", lambda w, s, net: w.sendfile(s, _tcp_unconnected(net)),
         TypeError,
         NOT_REGULAR),
        ("sendfile/file=directory", lambda w, s, net: w.sendfile(s, _directory_fd(net)),
         TypeError,
         NOT_REGULAR),
        ("sendfile/file=BytesIO", lambda w, s, net: w.sendfile(s, io.BytesIO(b"x")), TypeError,
         'file has no descriptor: BytesIO.fileno() raised UnsupportedOperation'),
        ("sendfile/file=closed", lambda w, s, net: w.sendfile(s, _closed_file(net)), ValueError,
         'file is closed'),
        ("sendfile/file=-1", lambda w, s, net: w.sendfile(s, -1), ValueError,
         'file descriptor -1 is not open'),
        ("sendfile/offset=-1", lambda w, s, net: w.sendfile(s, _regular(net), -1), ValueError,
         'offset must be >= 0'),
        ("sendfile/offset=float", lambda w, s, net: w.sendfile(s, _regular(net), 1.0), TypeError,
         'offset must be an int, not float'),
        ("sendfile/offset=str", lambda w, s, net: w.sendfile(s, _regular(net), "0"), TypeError,
         'offset must be an int, not str'),
        ("sendfile/offset=bool", lambda w, s, net: w.sendfile(s, _regular(net), False), TypeError,
         'offset must be an int, not bool'),
        ("sendfile/count=0", lambda w, s, net: w.sendfile(s, _regular(net), 0, 0), ValueError,
         'count must be > 0 (or None for the rest of the file)'),
        ("sendfile/count=-5", lambda w, s, net: w.sendfile(s, _regular(net), 0, -5), ValueError,
         'count must be > 0 (or None for the rest of the file)'),
        ("sendfile/count=float", lambda w, s, net: w.sendfile(s, _regular(net), 0, 1.0),
         TypeError,
         'count must be an int, not float'),
        ("sendfile/count=bool", lambda w, s, net: w.sendfile(s, _regular(net), 0, True),
         TypeError,
         'count must be an int, not bool'),
        ("sendfile/repeat", lambda w, s, net: w.sendfile(s, _regular(net), repeat=True),
         TypeError,
         UNEXPECTED % ("sendfile", "repeat")),
        ("sendfile/no-file", lambda w, s, net: w.sendfile(s), TypeError,
         MISSING % ("sendfile", "file")),
        # start_tls (0.3, R28)
        ("start_tls/context=None",
         lambda w, s, net: w.start_tls(s, None, server_side=True), TypeError,
         "context must be an ssl.SSLContext, not NoneType"),
        ("start_tls/context=str",
         lambda w, s, net: w.start_tls(s, "TLS", server_side=True), TypeError,
         "context must be an ssl.SSLContext, not str"),
        ("start_tls/context=module",
         lambda w, s, net: w.start_tls(s, ssl, server_side=True), TypeError,
         "context must be an ssl.SSLContext, not module"),
        ("start_tls/no-server_side",
         lambda w, s, net: w.start_tls(s, _tls_client()), TypeError,
         MISSING % ("start_tls", "server_side")),
        ("start_tls/no-context", lambda w, s, net: w.start_tls(s, server_side=True), TypeError,
         MISSING % ("start_tls", "context")),
        ("start_tls/server_side-positional",
         lambda w, s, net: w.start_tls(s, _tls_client(), True), TypeError,
         TOO_MANY % ("start_tls", "2 positional arguments", 3)),
        ("start_tls/server_side=1",
         lambda w, s, net: w.start_tls(s, _tls_unchecked(), server_side=1), TypeError,
         "server_side must be a bool, not int"),
        ("start_tls/server_side=None",
         lambda w, s, net: w.start_tls(s, _tls_unchecked(), server_side=None), TypeError,
         "server_side must be a bool, not NoneType"),
        ("start_tls/server_hostname=bytes",
         lambda w, s, net: w.start_tls(s, _tls_client(), server_side=False,
                                       server_hostname=b"localhost"), TypeError,
         "server_hostname must be a str or None, not bytes"),
        ("start_tls/server-with-hostname",
         lambda w, s, net: w.start_tls(s, _tls_unchecked(), server_side=True,
                                       server_hostname="localhost"), ValueError,
         "server_hostname is for the client side (server_side=False)"),
        ("start_tls/check_hostname-without-hostname",
         lambda w, s, net: w.start_tls(s, _tls_client(), server_side=False), ValueError,
         "check_hostname requires server_hostname"),
        ("start_tls/repeat",
         lambda w, s, net: w.start_tls(s, _tls_client(), server_side=False,
                                       server_hostname="localhost", repeat=True), TypeError,
         UNEXPECTED % ("start_tls", "repeat")),
        ("start_tls/quiet",
         lambda w, s, net: w.start_tls(s, _tls_client(), server_side=False,
                                       server_hostname="localhost", quiet=True), TypeError,
         UNEXPECTED % ("start_tls", "quiet")),
        ("start_tls/context-before-times",
         lambda w, s, net: w.start_tls(s, None, server_side=True, timeout=math.nan), TypeError,
         "context must be an ssl.SSLContext, not NoneType"),
        # read / read_full / write: repeat and quiet
        ("read/repeat+buf", lambda w, s, net: w.read(s, bytearray(4), repeat=True), ValueError,
         'a standing read (repeat=True) takes no buffer'),
        ("read/repeat-timeout-0", lambda w, s, net: w.read(s, repeat=True, timeout=0), ValueError,
         IDLE_LIMIT),
        ("read/repeat-timeout-negative", lambda w, s, net: w.read(s, repeat=True, timeout=-0.5),
         ValueError,
         IDLE_LIMIT),
        ("read/repeat-timeout-nan", lambda w, s, net: w.read(s, repeat=True, timeout=math.nan),
         ValueError,
         'timeout must not be NaN'),
        ("read/quiet", lambda w, s, net: w.read(s, quiet=True), TypeError,
         UNEXPECTED % ("read", "quiet")),
        ("read_full/repeat", lambda w, s, net: w.read_full(s, bytearray(4), repeat=True),
         TypeError,
         UNEXPECTED % ("read_full", "repeat")),
        ("read_full/quiet", lambda w, s, net: w.read_full(s, bytearray(4), quiet=True), TypeError,
         UNEXPECTED % ("read_full", "quiet")),
        ("write/repeat", lambda w, s, net: w.write(s, b"x", repeat=True), TypeError,
         UNEXPECTED % ("write", "repeat")),
        ("write/quiet-empty", lambda w, s, net: w.write(s, b"", quiet=True), ValueError,
         "data is empty"),
        ("write/quiet-str", lambda w, s, net: w.write(s, "x", quiet=True), TypeError,
         "data must be a bytes-like object, not str"),
        ("write/quiet-None", lambda w, s, net: w.write(s, None, quiet=True), ValueError,
         "data is required"),
        # address= (0.3, R25): datagram sockets only
        ("write/address-on-stream", lambda w, s, net: w.write(s, b"x", address=("127.0.0.1", 9)),
         ValueError, ADDRESS_ON_STREAM),
        ("write/address-on-stream-vector",
         lambda w, s, net: w.write(s, [b"x", b"y"], address=("127.0.0.1", 9)),
         ValueError, ADDRESS_ON_STREAM),
        ("write/address-on-stream-quiet",
         lambda w, s, net: w.write(s, b"x", quiet=True, address="/tmp/x"),
         ValueError, ADDRESS_ON_STREAM),
        ("write/address-on-stream-before-data",
         lambda w, s, net: w.write(s, b"", address=("127.0.0.1", 9)),
         ValueError, ADDRESS_ON_STREAM),
        ("read/address", lambda w, s, net: w.read(s, address=("127.0.0.1", 9)), TypeError,
         UNEXPECTED % ("read", "address")),
        ("read_full/address",
         lambda w, s, net: w.read_full(s, bytearray(4), address=("127.0.0.1", 9)), TypeError,
         UNEXPECTED % ("read_full", "address")),
        ("write/address-positional", lambda w, s, net: w.write(s, b"x", None, None), TypeError,
         TOO_MANY % ("write", "2 positional arguments", 4)),
        # vectored writes
        ("write/vector=[]", lambda w, s, net: w.write(s, []), ValueError,
         NO_BYTES),
        ("write/vector=()", lambda w, s, net: w.write(s, ()), ValueError,
         NO_BYTES),
        ("write/vector=[b'']", lambda w, s, net: w.write(s, [b""]), ValueError,
         NO_BYTES),
        ("write/vector=all-empty",
         lambda w, s, net: w.write(s, [b"", bytearray(), memoryview(b"")]), ValueError,
         NO_BYTES),
        ("write/vector=quiet-empty", lambda w, s, net: w.write(s, [], quiet=True), ValueError,
         NO_BYTES),
        ("write/vector-item=None", lambda w, s, net: w.write(s, [b"a", None]), TypeError,
         NOT_ITEM % "NoneType"),
        ("write/vector-item=str", lambda w, s, net: w.write(s, [b"a", "b"]), TypeError,
         NOT_ITEM % "str"),
        ("write/vector-item=int", lambda w, s, net: w.write(s, (b"a", 1)), TypeError,
         NOT_ITEM % "int"),
        ("write/vector-item=list", lambda w, s, net: w.write(s, [[b"a"]]), TypeError,
         NOT_ITEM % "list"),
        ("write/vector-item=non-contiguous",
         lambda w, s, net: w.write(s, [b"a", _non_contiguous()]), TypeError,
         'data items must be contiguous buffers, not a non-contiguous memoryview'),
        # fileno / next_timeout
        ("fileno/arg", lambda w, s, net: w.fileno(1), TypeError,
         'Watcher.fileno() takes no arguments (1 given)'),
        ("next_timeout/arg", lambda w, s, net: w.next_timeout(1), TypeError,
         'Watcher.next_timeout() takes no arguments (1 given)'),
        ("next_timeout/keyword", lambda w, s, net: w.next_timeout(x=1), TypeError,
         'Watcher.next_timeout() takes no keyword arguments'),
    ]
    for wid, value, exc, msg in [("bool", True, TypeError, NOT_WRITE_HIGH % "bool"),
                                 ("float", 65536.0, TypeError, NOT_WRITE_HIGH % "float"),
                                 ("str", "65536", TypeError, NOT_WRITE_HIGH % "str"),
                                 ("zero", 0, ValueError, WRITE_HIGH_RANGE),
                                 ("negative", -1, ValueError, WRITE_HIGH_RANGE),
                                 ("list", [1], TypeError, NOT_WRITE_HIGH % "list")]:
        rows.append(("Watcher/write_high=%s" % wid,
                     lambda w, s, net, value=value:
                     gaio.Watcher(engine=w.engine, write_high=value), exc, msg))
    for wid, value, exc, msg in [("bool", True, TypeError, NOT_BATCH_WAIT % "bool"),
                                 ("str", "0.1", TypeError, NOT_BATCH_WAIT % "str"),
                                 ("list", [0.1], TypeError, NOT_BATCH_WAIT % "list"),
                                 ("negative", -0.001, ValueError, BATCH_WAIT_RANGE),
                                 ("too-long", 1.5, ValueError, BATCH_WAIT_RANGE),
                                 ("inf", float("inf"), ValueError, BATCH_WAIT_RANGE),
                                 ("nan", float("nan"), ValueError,
                                  "batch_wait must not be NaN")]:
        rows.append(("Watcher/batch_wait=%s" % wid,
                     lambda w, s, net, value=value:
                     gaio.Watcher(engine=w.engine, batch_wait=value), exc, msg))
    return rows


TABLE = _rows()


@pytest.mark.parametrize("call,exc,message",
                         [pytest.param(c, e, m, id=i) for i, c, e, m in TABLE])
def test_bad_argument_raises_and_leaves_nothing(watcher, net, call, exc, message):
    check_bad_call(watcher, net, call, exc, message)


def test_connect_and_accept_on_delegated_sockets(watcher, net):
    client, server = net.pair()
    watcher.read(server, bytearray(1))
    with pytest.raises(ValueError, match=r"^connect\(\) on a delegated socket$"):
        watcher.connect(server, ("127.0.0.1", 9))  # delegated
    with pytest.raises(ValueError, match="^%s$" % re.escape(NOT_LISTENING)):
        watcher.accept(server)  # delegated, not listening
    lis = net.track(socket.create_server(("127.0.0.1", 0)))
    watcher.accept(lis, timeout=0)
    assert isinstance(collect(watcher, 1)[0].error, gaio.DeadlineExceededError)
    with pytest.raises(ValueError, match=r"^connect\(\) on a delegated socket$"):
        watcher.connect(lis, ("127.0.0.1", 9))  # delegated (and listening)
    watcher.accept(lis, timeout=0)  # a delegated listener is fine
    collect(watcher, 1)
    assert watcher.stats()["pending"] == 1


CLOSED_CALLS = [  # (name, call(w)): arguments that are all wrong
    ("accept", lambda w: w.accept(None, repeat=True, timeout=-1)),
    ("connect", lambda w: w.connect(None, "not an address")),
    ("sendfile", lambda w: w.sendfile(None, None, -1, 0)),
    ("start_tls", lambda w: w.start_tls(None, None, server_side=None)),
    ("fileno", lambda w: w.fileno()),
    ("next_timeout", lambda w: w.next_timeout()),
    # the closed watcher is checked before the keywords too, on every engine
    ("read-repeat", lambda w: w.read(None, bytearray(1), repeat=True)),
    ("write-vector", lambda w: w.write(None, [])),
    ("write-quiet", lambda w: w.write(None, b"", quiet=True)),
    ("read", lambda w: w.read(None, b"")),
    ("read_full", lambda w: w.read_full(None, None)),
    ("write", lambda w: w.write(None, None)),
    ("free", lambda w: w.free(None)),
    ("wait_io", lambda w: w.wait_io(math.nan)),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=i) for i, c in CLOSED_CALLS])
def test_closed_watcher_raises_before_checking_arguments(engine, call):
    w = gaio.Watcher(engine=engine)
    w.close()
    with pytest.raises(gaio.WatcherClosedError) as info:
        call(w)
    assert str(info.value) == "watcher is closed"
