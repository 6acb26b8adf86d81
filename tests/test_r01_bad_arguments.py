"""R1: bad arguments, as one table: every public method x every bad value ->
the exception type, the same on every engine (the python engine is the
oracle, but here the table is: an engine that disagrees is wrong).

Every row raises before anything changes: no descriptor opened or closed,
counters unchanged, nothing pending, and the socket the call was given is
not delegated (still open, still the caller's). The decisions behind the
rows are in docs/SPEC.md, "Edge cases, settled":

- seconds (timeout, deadline, wait_io's timeout): any real number, i.e. what
  float() takes through __float__ or __index__ (int, float, Decimal,
  Fraction, numpy scalars); bool, str, bytes and other objects -> TypeError;
  NaN -> ValueError; an int too big for a float -> OverflowError, as float()
  raises it.
- conn: a socket.socket (or subclass) of a stream socket; any other object,
  even one whose fileno() is a stream socket -> TypeError.
- buffers: a read-only buffer for a read -> TypeError even when it is empty
  (the type is wrong before the size is); an empty one -> ValueError; a
  missing one (None) -> ValueError; bool and other non-buffers -> TypeError.
"""
import math
import os
import socket
import time
from decimal import Decimal
from fractions import Fraction

import pytest

import gaio
from conftest import collect, open_fds


class HasFileno:
    """Not a socket.socket, but fileno() is a connected stream socket."""

    def __init__(self, sock):
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()


class Index:
    """A number that only has __index__ (as float() accepts since 3.8)."""

    def __init__(self, n):
        self.n = n

    def __index__(self):
        return self.n


class SubSocket(socket.socket):
    pass


def _udp(net):
    return net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))


def _unix_dgram(net):
    return net.track(socket.socketpair(type=socket.SOCK_DGRAM)[0])


def _file(net):
    return net.track(open(os.devnull, "rb"))


def _pipe(net):
    r, w = os.pipe()
    net.track(os.fdopen(w, "wb"))
    return net.track(os.fdopen(r, "rb"))


def _closed_socket(net):
    a, b = net.pair()
    b.close()
    return b


def _fileno_object(net):
    return HasFileno(net.pair()[1])


BAD_CONNS = [  # (id, builder(net), exception)
    ("None", lambda net: None, TypeError),
    ("object", lambda net: object(), TypeError),
    ("int-fd", lambda net: 0, TypeError),
    ("str", lambda net: "127.0.0.1:80", TypeError),
    ("bool", lambda net: True, TypeError),
    ("udp", _udp, TypeError),
    ("unix-dgram", _unix_dgram, TypeError),
    ("file", _file, TypeError),
    ("pipe", _pipe, TypeError),
    ("fileno-object", _fileno_object, TypeError),
    ("closed-socket", _closed_socket, ValueError),
]

BAD_SECONDS = [  # (id, value, exception) for timeout=, deadline= and wait_io(timeout)
    ("nan", math.nan, ValueError),
    ("decimal-nan", Decimal("NaN"), ValueError),
    ("decimal-snan", Decimal("sNaN"), ValueError),
    ("bool", True, TypeError),
    ("str", "1", TypeError),
    ("bytes", b"1", TypeError),
    ("bytearray", bytearray(b"1"), TypeError),
    ("list", [1], TypeError),
    ("complex", 1j, TypeError),
    ("object", object(), TypeError),
    ("huge-int", 10 ** 400, OverflowError),
]


def _ro_view():
    return memoryview(bytearray(8)).toreadonly()


def _non_contiguous():
    return memoryview(bytearray(16))[::2]


BAD_READ_BUFFERS = [  # for read(conn, buf) and read_full(conn, buf)
    ("bytes", b"abcd", TypeError),
    ("empty-bytes", b"", TypeError),
    ("readonly-view", _ro_view(), TypeError),
    ("empty-readonly-view", memoryview(b""), TypeError),
    ("empty-bytearray", bytearray(), ValueError),
    ("empty-view", memoryview(bytearray(4))[2:2], ValueError),
    ("bool", True, TypeError),
    ("int", 1234, TypeError),
    ("str", "text", TypeError),
    ("list", [0] * 8, TypeError),
    ("non-contiguous", _non_contiguous(), TypeError),
]

BAD_WRITE_DATA = [
    ("None", None, ValueError),
    ("empty-bytes", b"", ValueError),
    ("empty-bytearray", bytearray(), ValueError),
    ("empty-view", memoryview(b""), ValueError),
    ("bool", False, TypeError),
    ("int", 1234, TypeError),
    ("str", "text", TypeError),
    ("object", object(), TypeError),
    ("dict", {1: 2}, TypeError),
    # a list/tuple is a vectored write (0.2): its items must be bytes-like
    # (more rows in test_v02_bad_arguments.py)
    ("list-of-int", [1, 2], TypeError),
    ("tuple-of-str", ("ab",), TypeError),
    ("non-contiguous", _non_contiguous(), TypeError),
]

BAD_BUFSIZES = [
    ("bool", True, TypeError), ("false", False, TypeError), ("float", 1.0, TypeError),
    ("str", "65536", TypeError), ("None", None, TypeError), ("bytes", b"1", TypeError),
    ("decimal", Decimal(4096), TypeError), ("index-only", Index(4096), TypeError),
    ("zero", 0, ValueError), ("negative", -1, ValueError), ("2**30+1", 2 ** 30 + 1, ValueError),
    ("2**64", 2 ** 64, ValueError),
]

REQUESTS = {  # name -> call(w, conn, **kwargs) with a good buffer
    "read": lambda w, c, **kw: w.read(c, **kw),
    "read-buf": lambda w, c, **kw: w.read(c, bytearray(8), **kw),
    "read_full": lambda w, c, **kw: w.read_full(c, bytearray(8), **kw),
    "write": lambda w, c, **kw: w.write(c, b"data", **kw),
}


def _rows():
    """(id, call(w, server, net), exception): the whole table."""
    rows = []
    for req, call in REQUESTS.items():
        for cid, build, exc in BAD_CONNS:
            rows.append(("%s/conn=%s" % (req, cid),
                         lambda w, s, net, call=call, build=build: call(w, build(net)), exc))
        for sid, value, exc in BAD_SECONDS:
            for kw in ("timeout", "deadline"):
                rows.append(("%s/%s=%s" % (req, kw, sid),
                             lambda w, s, net, call=call, kw=kw, value=value:
                             call(w, s, **{kw: value}), exc))
        rows.append(("%s/timeout+deadline" % req,
                     lambda w, s, net, call=call:
                     call(w, s, timeout=1.0, deadline=time.monotonic() + 1.0), ValueError))
        rows.append(("%s/unknown-keyword" % req,
                     lambda w, s, net, call=call: call(w, s, bogus=1), TypeError))
    for bid, value, exc in BAD_READ_BUFFERS:
        rows.append(("read/buf=%s" % bid, lambda w, s, net, v=value: w.read(s, v), exc))
        rows.append(("read_full/buf=%s" % bid, lambda w, s, net, v=value: w.read_full(s, v), exc))
    rows.append(("read_full/buf=None", lambda w, s, net: w.read_full(s, None), ValueError))
    for did, value, exc in BAD_WRITE_DATA:
        rows.append(("write/data=%s" % did, lambda w, s, net, v=value: w.write(s, v), exc))
    rows += [
        ("read/no-args", lambda w, s, net: w.read(), TypeError),
        ("read/ctx-positional", lambda w, s, net: w.read(s, bytearray(4), None), TypeError),
        ("read/two-conns", lambda w, s, net: w.read(s, conn=s), TypeError),
        ("read_full/no-buf", lambda w, s, net: w.read_full(s), TypeError),
        ("read_full/ctx-positional",
         lambda w, s, net: w.read_full(s, bytearray(4), None), TypeError),
        ("write/no-data", lambda w, s, net: w.write(s), TypeError),
        ("write/ctx-positional", lambda w, s, net: w.write(s, b"x", None), TypeError),
        ("free/no-args", lambda w, s, net: w.free(), TypeError),
        ("free/two-args", lambda w, s, net: w.free(s, s), TypeError),
        ("free/keyword", lambda w, s, net: w.free(conn=s), TypeError),  # positional-only
        ("wait_io/two-args", lambda w, s, net: w.wait_io(1, 2), TypeError),
        ("wait_io/unknown-keyword", lambda w, s, net: w.wait_io(bogus=1), TypeError),
        ("close/arg", lambda w, s, net: w.close(1), TypeError),
        ("stats/arg", lambda w, s, net: w.stats(1), TypeError),
        ("stats/keyword", lambda w, s, net: w.stats(x=1), TypeError),
    ]
    for cid, build, exc in BAD_CONNS:
        if cid in ("udp", "unix-dgram", "closed-socket"):
            continue  # socket objects: free() never raises for those (see GOOD below)
        rows.append(("free/conn=%s" % cid, lambda w, s, net, build=build: w.free(build(net)),
                     TypeError))
    for sid, value, exc in BAD_SECONDS:
        rows.append(("wait_io/timeout=%s" % sid, lambda w, s, net, v=value: w.wait_io(v), exc))
        rows.append(("wait_io/timeout=%s/keyword" % sid,
                     lambda w, s, net, v=value: w.wait_io(timeout=v), exc))
    for bid, value, exc in BAD_BUFSIZES:
        rows.append(("Watcher/bufsize=%s" % bid,
                     lambda w, s, net, v=value: gaio.Watcher(v, engine=w.engine), exc))
    rows += [
        ("Watcher/engine=None", lambda w, s, net: gaio.Watcher(engine=None), TypeError),
        ("Watcher/engine=1", lambda w, s, net: gaio.Watcher(engine=1), TypeError),
        ("Watcher/engine=unknown", lambda w, s, net: gaio.Watcher(engine="nope"), ValueError),
        ("Watcher/engine-positional",
         lambda w, s, net: gaio.Watcher(65536, w.engine), TypeError),
        ("Watcher/unknown-keyword",
         lambda w, s, net: gaio.Watcher(engine=w.engine, bogus=1), TypeError),
    ]
    return rows


TABLE = _rows()


def _state(w):
    return open_fds(), w.stats()


@pytest.mark.parametrize("call,exc", [pytest.param(c, e, id=i) for i, c, e in TABLE])
def test_bad_argument_raises_the_same_on_every_engine_and_leaves_nothing(watcher, net, call,
                                                                         exc):
    client, server = net.pair()
    net.listener()  # made now, not inside the call
    before = _state(watcher)
    with pytest.raises(Exception) as info:
        call(watcher, server, net)
    assert type(info.value) is exc, "%s: %r, expected %s" % (
        watcher.engine, info.value, exc.__name__)
    fds, stats = before
    after_fds, after_stats = _state(watcher)
    # the call may have made its own bad conn (a file, a pipe): only ours count
    assert {fd: t for fd, t in fds.items() if after_fds.get(fd) != t} == {}
    assert after_stats == stats and stats["pending"] == 0 and stats["watched"] == 0
    assert server.fileno() != -1  # not delegated: still open, still the caller's
    server.sendall(b"mine")
    client.settimeout(5)
    assert client.recv(4) == b"mine"
    assert watcher.wait_io(0) == []


# ---------------------------------------------------------------- the other side

GOOD_SECONDS = [  # accepted by timeout= and (added to now) deadline=
    ("int", 1), ("float", 0.5), ("decimal", Decimal("0.5")), ("fraction", Fraction(1, 2)),
    ("index-only", Index(1)), ("negative", -1), ("inf", math.inf), ("-inf", -math.inf),
    ("int-subclass", type("Secs", (int,), {})(1)), ("decimal-inf", Decimal("Infinity")),
]

GOOD_WAITS = [  # accepted by wait_io(), all short
    ("int", 0), ("float", 0.01), ("decimal", Decimal("0.01")), ("fraction", Fraction(1, 100)),
    ("index-only", Index(0)), ("negative", -1), ("-inf", -math.inf),
    ("int-subclass", type("Secs", (int,), {})(0)), ("decimal-negative", Decimal("-1")),
]


def _as_deadline(value):
    now = time.monotonic()
    if isinstance(value, Index):
        return value  # an absolute time long past
    if isinstance(value, Decimal):
        return Decimal(now) + value
    if isinstance(value, Fraction):
        return Fraction(now) + value
    return now + value


@pytest.mark.parametrize("kw", ["timeout", "deadline"])
@pytest.mark.parametrize("value", [pytest.param(v, id=i) for i, v in GOOD_SECONDS])
def test_any_real_number_of_seconds_is_accepted(watcher, pair, kw, value):
    client, server = pair()
    if kw == "deadline":
        value = _as_deadline(value)
    watcher.read(server, bytearray(4), **{kw: value})
    assert watcher.stats()["submitted"] == 1
    client.sendall(b"x")
    end = time.monotonic() + 5
    results = []
    while not results and time.monotonic() < end:
        results = watcher.wait_io(0.1)
    assert len(results) == 1
    assert results[0].error is None or isinstance(results[0].error, gaio.DeadlineExceededError)


@pytest.mark.parametrize("value", [pytest.param(v, id=i) for i, v in GOOD_WAITS])
def test_any_real_number_is_a_wait_io_timeout(watcher, value):
    start = time.monotonic()
    assert watcher.wait_io(value) == []
    assert watcher.wait_io(timeout=value) == []
    assert time.monotonic() - start < 2


def test_socket_subclass_and_free_of_any_socket_object_are_accepted(watcher, net):
    lis = net.listener()
    client = net.track(socket.create_connection(lis.getsockname()))
    fd, _ = lis._accept()
    sub = net.track(SubSocket(fileno=fd))
    watcher.write(sub, b"sub")
    assert collect(watcher, 1)[0].error is None
    client.settimeout(5)
    assert client.recv(3) == b"sub"
    for make in (_udp, _unix_dgram, _closed_socket):
        watcher.free(make(net))  # a socket object: free() never raises
    watcher.free(net.pair()[1])  # never delegated: nothing happens
    assert watcher.stats()["watched"] == 1
