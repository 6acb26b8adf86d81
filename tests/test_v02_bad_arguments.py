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
- sendfile: count 0 or negative, offset negative, a closed file or a
  descriptor that is not open -> ValueError; a non-regular file (device,
  pipe, socket, directory, an object without a descriptor) or a non-int
  offset/count -> TypeError.
- Watcher(write_high=): a positive int or None; bool/float/str -> TypeError,
  0 or negative -> ValueError.
"""
import io
import math
import os
import socket
import tempfile
import time

import pytest

import gaio
from conftest import collect, open_fds
from test_r01_bad_arguments import BAD_CONNS, BAD_SECONDS, _non_contiguous


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


NEW_REQUESTS = {  # name -> call(w, conn, net, **kwargs) with good other arguments
    "accept": lambda w, c, net, **kw: w.accept(c, **kw),
    "connect": lambda w, c, net, **kw: w.connect(c, ("127.0.0.1", 9), **kw),
    "sendfile": lambda w, c, net, **kw: w.sendfile(c, _regular(net), **kw),
}

# the socket each new request takes when the row is not about the socket
GOOD_TARGET = {
    "accept": lambda net, s: net.listener(),
    "connect": lambda net, s: _tcp_unconnected(net),
    "sendfile": lambda net, s: s,
}


def _rows():
    """(id, call(w, server, net), exception)."""
    rows = []
    for name, call in NEW_REQUESTS.items():
        target = GOOD_TARGET[name]
        for cid, build, exc in BAD_CONNS:
            rows.append(("%s/conn=%s" % (name, cid),
                         lambda w, s, net, call=call, build=build: call(w, build(net), net),
                         exc))
        for sid, value, exc in BAD_SECONDS:
            for kw in ("timeout", "deadline"):
                rows.append(("%s/%s=%s" % (name, kw, sid),
                             lambda w, s, net, call=call, target=target, kw=kw, value=value:
                             call(w, target(net, s), net, **{kw: value}), exc))
        rows.append(("%s/timeout+deadline" % name,
                     lambda w, s, net, call=call, target=target:
                     call(w, target(net, s), net, timeout=1, deadline=time.monotonic() + 1),
                     ValueError))
        rows.append(("%s/unknown-keyword" % name,
                     lambda w, s, net, call=call, target=target:
                     call(w, target(net, s), net, bogus=1), TypeError))
    rows += [
        # accept
        ("accept/not-listening", lambda w, s, net: w.accept(s), ValueError),
        ("accept/unconnected", lambda w, s, net: w.accept(_tcp_unconnected(net)), ValueError),
        ("accept/quiet", lambda w, s, net: w.accept(net.listener(), quiet=True), TypeError),
        ("accept/repeat-timeout-0",
         lambda w, s, net: w.accept(net.listener(), repeat=True, timeout=0), ValueError),
        ("accept/repeat-timeout-negative",
         lambda w, s, net: w.accept(net.listener(), repeat=True, timeout=-1), ValueError),
        ("accept/ctx-positional", lambda w, s, net: w.accept(net.listener(), None), TypeError),
        # connect
        ("connect/connected", lambda w, s, net: w.connect(s, ("127.0.0.1", 9)), ValueError),
        ("connect/listening",
         lambda w, s, net: w.connect(net.listener(), ("127.0.0.1", 9)), ValueError),
        ("connect/host-name",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("localhost", 80)), ValueError),
        ("connect/host-name-invalid",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("gaio.invalid", 80)),
         ValueError),
        ("connect/empty-host",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("", 80)), ValueError),
        ("connect/port-str",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", "80")), TypeError),
        ("connect/port-bool",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", True)), TypeError),
        ("connect/port-out-of-range",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 70000)),
         ValueError),
        ("connect/host-int",
         lambda w, s, net: w.connect(_tcp_unconnected(net), (2130706433, 80)), TypeError),
        ("connect/address-str",
         lambda w, s, net: w.connect(_tcp_unconnected(net), "127.0.0.1:80"), TypeError),
        ("connect/address-None",
         lambda w, s, net: w.connect(_tcp_unconnected(net), None), TypeError),
        ("connect/address-short",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1",)), TypeError),
        ("connect/address-long",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 80, 0, 0)),
         TypeError),
        ("connect/no-address", lambda w, s, net: w.connect(_tcp_unconnected(net)), TypeError),
        ("connect/repeat",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 9), repeat=True),
         TypeError),
        ("connect/quiet",
         lambda w, s, net: w.connect(_tcp_unconnected(net), ("127.0.0.1", 9), quiet=True),
         TypeError),
        # sendfile
        ("sendfile/file=None", lambda w, s, net: w.sendfile(s, None), TypeError),
        ("sendfile/file=path", lambda w, s, net: w.sendfile(s, os.devnull), TypeError),
        ("sendfile/file=bool", lambda w, s, net: w.sendfile(s, True), TypeError),
        ("sendfile/file=float", lambda w, s, net: w.sendfile(s, 3.0), TypeError),
        ("sendfile/file=devnull", lambda w, s, net: w.sendfile(s, _devnull(net)), TypeError),
        ("sendfile/file=pipe", lambda w, s, net: w.sendfile(s, _pipe_file(net)), TypeError),
        ("sendfile/file=socket", lambda w, s, net: w.sendfile(s, _tcp_unconnected(net)),
         TypeError),
        ("sendfile/file=directory", lambda w, s, net: w.sendfile(s, _directory_fd(net)),
         TypeError),
        ("sendfile/file=BytesIO", lambda w, s, net: w.sendfile(s, io.BytesIO(b"x")), TypeError),
        ("sendfile/file=closed", lambda w, s, net: w.sendfile(s, _closed_file(net)), ValueError),
        ("sendfile/file=-1", lambda w, s, net: w.sendfile(s, -1), ValueError),
        ("sendfile/offset=-1", lambda w, s, net: w.sendfile(s, _regular(net), -1), ValueError),
        ("sendfile/offset=float", lambda w, s, net: w.sendfile(s, _regular(net), 1.0), TypeError),
        ("sendfile/offset=str", lambda w, s, net: w.sendfile(s, _regular(net), "0"), TypeError),
        ("sendfile/offset=bool", lambda w, s, net: w.sendfile(s, _regular(net), False), TypeError),
        ("sendfile/count=0", lambda w, s, net: w.sendfile(s, _regular(net), 0, 0), ValueError),
        ("sendfile/count=-5", lambda w, s, net: w.sendfile(s, _regular(net), 0, -5), ValueError),
        ("sendfile/count=float", lambda w, s, net: w.sendfile(s, _regular(net), 0, 1.0),
         TypeError),
        ("sendfile/count=bool", lambda w, s, net: w.sendfile(s, _regular(net), 0, True),
         TypeError),
        ("sendfile/repeat", lambda w, s, net: w.sendfile(s, _regular(net), repeat=True),
         TypeError),
        ("sendfile/no-file", lambda w, s, net: w.sendfile(s), TypeError),
        # read / read_full / write: repeat and quiet
        ("read/repeat+buf", lambda w, s, net: w.read(s, bytearray(4), repeat=True), ValueError),
        ("read/repeat-timeout-0", lambda w, s, net: w.read(s, repeat=True, timeout=0), ValueError),
        ("read/repeat-timeout-negative", lambda w, s, net: w.read(s, repeat=True, timeout=-0.5),
         ValueError),
        ("read/repeat-timeout-nan", lambda w, s, net: w.read(s, repeat=True, timeout=math.nan),
         ValueError),
        ("read/quiet", lambda w, s, net: w.read(s, quiet=True), TypeError),
        ("read_full/repeat", lambda w, s, net: w.read_full(s, bytearray(4), repeat=True),
         TypeError),
        ("read_full/quiet", lambda w, s, net: w.read_full(s, bytearray(4), quiet=True), TypeError),
        ("write/repeat", lambda w, s, net: w.write(s, b"x", repeat=True), TypeError),
        # vectored writes
        ("write/vector=[]", lambda w, s, net: w.write(s, []), ValueError),
        ("write/vector=()", lambda w, s, net: w.write(s, ()), ValueError),
        ("write/vector=[b'']", lambda w, s, net: w.write(s, [b""]), ValueError),
        ("write/vector=all-empty",
         lambda w, s, net: w.write(s, [b"", bytearray(), memoryview(b"")]), ValueError),
        ("write/vector=quiet-empty", lambda w, s, net: w.write(s, [], quiet=True), ValueError),
        ("write/vector-item=None", lambda w, s, net: w.write(s, [b"a", None]), TypeError),
        ("write/vector-item=str", lambda w, s, net: w.write(s, [b"a", "b"]), TypeError),
        ("write/vector-item=int", lambda w, s, net: w.write(s, (b"a", 1)), TypeError),
        ("write/vector-item=list", lambda w, s, net: w.write(s, [[b"a"]]), TypeError),
        ("write/vector-item=non-contiguous",
         lambda w, s, net: w.write(s, [b"a", _non_contiguous()]), TypeError),
        # fileno / next_timeout
        ("fileno/arg", lambda w, s, net: w.fileno(1), TypeError),
        ("next_timeout/arg", lambda w, s, net: w.next_timeout(1), TypeError),
        ("next_timeout/keyword", lambda w, s, net: w.next_timeout(x=1), TypeError),
    ]
    for wid, value, exc in [("bool", True, TypeError), ("float", 65536.0, TypeError),
                            ("str", "65536", TypeError), ("zero", 0, ValueError),
                            ("negative", -1, ValueError), ("list", [1], TypeError)]:
        rows.append(("Watcher/write_high=%s" % wid,
                     lambda w, s, net, v=wid, value=value:
                     gaio.Watcher(engine=w.engine, write_high=value), exc))
    return rows


TABLE = _rows()


def _state(w):
    return open_fds(), w.stats()


@pytest.mark.parametrize("call,exc", [pytest.param(c, e, id=i) for i, c, e in TABLE])
def test_bad_argument_raises_and_leaves_nothing(watcher, net, call, exc):
    client, server = net.pair()
    net.listener()  # made now, not inside the call
    before = _state(watcher)
    with pytest.raises(Exception) as info:
        call(watcher, server, net)
    assert type(info.value) is exc, "%s: %r, expected %s" % (
        watcher.engine, info.value, exc.__name__)
    fds, stats = before
    after_fds, after_stats = _state(watcher)
    assert {fd: t for fd, t in fds.items() if after_fds.get(fd) != t} == {}
    assert after_stats == stats and stats["pending"] == 0 and stats["watched"] == 0
    assert server.fileno() != -1  # not delegated
    server.sendall(b"mine")
    client.settimeout(5)
    assert client.recv(4) == b"mine"
    assert watcher.wait_io(0) == []


def test_connect_and_accept_on_delegated_sockets(watcher, net):
    client, server = net.pair()
    watcher.read(server, bytearray(1))
    with pytest.raises(ValueError):
        watcher.connect(server, ("127.0.0.1", 9))  # delegated
    with pytest.raises(ValueError):
        watcher.accept(server)  # delegated, not listening
    lis = net.track(socket.create_server(("127.0.0.1", 0)))
    watcher.accept(lis, timeout=0)
    assert isinstance(collect(watcher, 1)[0].error, gaio.DeadlineExceededError)
    with pytest.raises(ValueError):
        watcher.connect(lis, ("127.0.0.1", 9))  # delegated (and listening)
    watcher.accept(lis, timeout=0)  # a delegated listener is fine
    collect(watcher, 1)
    assert watcher.stats()["pending"] == 1


CLOSED_CALLS = [  # (name, call(w)): arguments that are all wrong
    ("accept", lambda w: w.accept(None, repeat=True, timeout=-1)),
    ("connect", lambda w: w.connect(None, "not an address")),
    ("sendfile", lambda w: w.sendfile(None, None, -1, 0)),
    ("fileno", lambda w: w.fileno()),
    ("next_timeout", lambda w: w.next_timeout()),
    # the closed watcher is checked before the keywords too, on every engine
    ("read-repeat", lambda w: w.read(None, bytearray(1), repeat=True)),
    ("write-vector", lambda w: w.write(None, [])),
    ("write-quiet", lambda w: w.write(None, b"", quiet=True)),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=i) for i, c in CLOSED_CALLS])
def test_closed_watcher_raises_before_checking_arguments(engine, call):
    w = gaio.Watcher(engine=engine)
    w.close()
    with pytest.raises(gaio.WatcherClosedError):
        call(w)
