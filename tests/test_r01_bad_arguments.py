"""R1: bad arguments, as one table: every public method x every bad value ->
the exception type and its message, the same on every engine (the python
engine is the oracle, but here the table is: an engine that disagrees is
wrong). The table is the one place the tests write the messages (the 0.2
rows are in test_v02_bad_arguments.py); the code writes them once per
language, src/gaio/_python_args.py and src/native/args.c (docs/DESIGN.md).

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
  even one whose fileno() is a stream socket -> TypeError. Since 0.3 read
  and write also take datagram sockets (R24, tests/test_r24_datagrams.py);
  read_full (and accept and sendfile) on one -> TypeError (DATAGRAM_CONNS).
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


SOCKET = "conn must be a socket.socket, not %s"
BAD_CONNS = [  # (id, builder(net), exception, message)
    ("None", lambda net: None, TypeError, SOCKET % "NoneType"),
    ("object", lambda net: object(), TypeError, SOCKET % "object"),
    ("int-fd", lambda net: 0, TypeError, SOCKET % "int"),
    ("str", lambda net: "127.0.0.1:80", TypeError, SOCKET % "str"),
    ("bool", lambda net: True, TypeError, SOCKET % "bool"),
    ("file", _file, TypeError, SOCKET % "BufferedReader"),
    ("pipe", _pipe, TypeError, SOCKET % "BufferedReader"),
    ("fileno-object", _fileno_object, TypeError, SOCKET % "HasFileno"),
    ("closed-socket", _closed_socket, ValueError,
     "conn is closed (or delegated to another watcher)"),
]

# for the requests that take stream sockets only: read_full here, accept and
# sendfile in test_v02_bad_arguments.py (R24)
NOT_STREAM = "conn must be a stream socket (SOCK_STREAM), not SOCK_DGRAM"
DATAGRAM_CONNS = [
    ("udp", _udp, TypeError, NOT_STREAM),
    ("unix-dgram", _unix_dgram, TypeError, NOT_STREAM),
]

NOT_SECONDS = "{name} must be a number of seconds, not %s"
BAD_SECONDS = [  # (id, value, exception, message) for timeout=, deadline= and
    # wait_io(timeout); {name} is the argument's name
    ("nan", math.nan, ValueError, "{name} must not be NaN"),
    ("decimal-nan", Decimal("NaN"), ValueError, "{name} must not be NaN"),
    # float()'s own errors, raised as float() raises them
    ("decimal-snan", Decimal("sNaN"), ValueError, "cannot convert signaling NaN to float"),
    ("bool", True, TypeError, NOT_SECONDS % "bool"),
    ("str", "1", TypeError, NOT_SECONDS % "str"),
    ("bytes", b"1", TypeError, NOT_SECONDS % "bytes"),
    ("bytearray", bytearray(b"1"), TypeError, NOT_SECONDS % "bytearray"),
    ("list", [1], TypeError, NOT_SECONDS % "list"),
    ("complex", 1j, TypeError, NOT_SECONDS % "complex"),
    ("object", object(), TypeError, NOT_SECONDS % "object"),
    ("huge-int", 10 ** 400, OverflowError, "int too large to convert to float"),
]


def _ro_view():
    return memoryview(bytearray(8)).toreadonly()


def _non_contiguous():
    return memoryview(bytearray(16))[::2]


NOT_WRITABLE = "buf must be writable, not a read-only %s"
NOT_READ_BUFFER = "buf must be a writable bytes-like object, not %s"
NOT_CONTIGUOUS = "%s must be a contiguous buffer, not a non-contiguous memoryview"
BAD_READ_BUFFERS = [  # for read(conn, buf) and read_full(conn, buf)
    ("bytes", b"abcd", TypeError, NOT_WRITABLE % "bytes"),
    ("empty-bytes", b"", TypeError, NOT_WRITABLE % "bytes"),
    ("readonly-view", _ro_view(), TypeError, NOT_WRITABLE % "memoryview"),
    ("empty-readonly-view", memoryview(b""), TypeError, NOT_WRITABLE % "memoryview"),
    ("empty-bytearray", bytearray(), ValueError, "buf is empty"),
    ("empty-view", memoryview(bytearray(4))[2:2], ValueError, "buf is empty"),
    ("bool", True, TypeError, NOT_READ_BUFFER % "bool"),
    ("int", 1234, TypeError, NOT_READ_BUFFER % "int"),
    ("str", "text", TypeError, NOT_READ_BUFFER % "str"),
    ("list", [0] * 8, TypeError, NOT_READ_BUFFER % "list"),
    ("non-contiguous", _non_contiguous(), TypeError, NOT_CONTIGUOUS % "buf"),
]

NOT_DATA = "data must be a bytes-like object, not %s"
NOT_ITEM = "data items must be bytes-like objects, not %s"
BAD_WRITE_DATA = [
    ("None", None, ValueError, "data is required"),
    ("empty-bytes", b"", ValueError, "data is empty"),
    ("empty-bytearray", bytearray(), ValueError, "data is empty"),
    ("empty-view", memoryview(b""), ValueError, "data is empty"),
    ("bool", False, TypeError, NOT_DATA % "bool"),
    ("int", 1234, TypeError, NOT_DATA % "int"),
    ("str", "text", TypeError, NOT_DATA % "str"),
    ("object", object(), TypeError, NOT_DATA % "object"),
    ("dict", {1: 2}, TypeError, NOT_DATA % "dict"),
    # a list/tuple is a vectored write (0.2): its items must be bytes-like
    # (more rows in test_v02_bad_arguments.py)
    ("list-of-int", [1, 2], TypeError, NOT_ITEM % "int"),
    ("tuple-of-str", ("ab",), TypeError, NOT_ITEM % "str"),
    ("non-contiguous", _non_contiguous(), TypeError, NOT_CONTIGUOUS % "data"),
]

NOT_BUFSIZE = "bufsize must be an int, not %s"
BUFSIZE_RANGE = "bufsize must be from 1 to 2**30, got %d"
BAD_BUFSIZES = [
    ("bool", True, TypeError, NOT_BUFSIZE % "bool"),
    ("false", False, TypeError, NOT_BUFSIZE % "bool"),
    ("float", 1.0, TypeError, NOT_BUFSIZE % "float"),
    ("str", "65536", TypeError, NOT_BUFSIZE % "str"),
    ("None", None, TypeError, NOT_BUFSIZE % "NoneType"),
    ("bytes", b"1", TypeError, NOT_BUFSIZE % "bytes"),
    ("decimal", Decimal(4096), TypeError, NOT_BUFSIZE % "Decimal"),
    ("index-only", Index(4096), TypeError, NOT_BUFSIZE % "Index"),
    ("zero", 0, ValueError, BUFSIZE_RANGE % 0),
    ("negative", -1, ValueError, BUFSIZE_RANGE % -1),
    ("2**30+1", 2 ** 30 + 1, ValueError, BUFSIZE_RANGE % (2 ** 30 + 1)),
    ("2**64", 2 ** 64, ValueError, BUFSIZE_RANGE % 2 ** 64),
]

REQUESTS = {  # name -> (method, call(w, conn, **kwargs) with a good buffer)
    "read": ("read", lambda w, c, **kw: w.read(c, **kw)),
    "read-buf": ("read", lambda w, c, **kw: w.read(c, bytearray(8), **kw)),
    "read_full": ("read_full", lambda w, c, **kw: w.read_full(c, bytearray(8), **kw)),
    "write": ("write", lambda w, c, **kw: w.write(c, b"data", **kw)),
}

# What a call that does not fit a method's signature raises: gaio's own
# words on every engine (not CPython's, which count self and change between
# versions; _python_args.signature_error, args.c's gaio__parse_args).
UNEXPECTED = "Watcher.%s() got an unexpected keyword argument '%s'"
MISSING = "Watcher.%s() missing required argument '%s'"
TOO_MANY = "Watcher.%s() takes at most %s (%d given)"
BOTH_TIMES = "give timeout or deadline, not both"


def _rows():
    """(id, call(w, server, net), exception, message): the whole table."""
    rows = []
    for req, (method, call) in REQUESTS.items():
        for cid, build, exc, msg in BAD_CONNS + (DATAGRAM_CONNS if req == "read_full" else []):
            rows.append(("%s/conn=%s" % (req, cid),
                         lambda w, s, net, call=call, build=build: call(w, build(net)),
                         exc, msg))
        for sid, value, exc, msg in BAD_SECONDS:
            for kw in ("timeout", "deadline"):
                rows.append(("%s/%s=%s" % (req, kw, sid),
                             lambda w, s, net, call=call, kw=kw, value=value:
                             call(w, s, **{kw: value}), exc, msg.format(name=kw)))
        rows.append(("%s/timeout+deadline" % req,
                     lambda w, s, net, call=call:
                     call(w, s, timeout=1.0, deadline=time.monotonic() + 1.0),
                     ValueError, BOTH_TIMES))
        rows.append(("%s/unknown-keyword" % req,
                     lambda w, s, net, call=call: call(w, s, bogus=1),
                     TypeError, UNEXPECTED % (method, "bogus")))
    for bid, value, exc, msg in BAD_READ_BUFFERS:
        rows.append(("read/buf=%s" % bid, lambda w, s, net, v=value: w.read(s, v), exc, msg))
        rows.append(("read_full/buf=%s" % bid, lambda w, s, net, v=value: w.read_full(s, v),
                     exc, msg))
    rows.append(("read_full/buf=None", lambda w, s, net: w.read_full(s, None), ValueError,
                 "buf is required"))
    for did, value, exc, msg in BAD_WRITE_DATA:
        rows.append(("write/data=%s" % did, lambda w, s, net, v=value: w.write(s, v), exc, msg))
    rows += [
        ("read/no-args", lambda w, s, net: w.read(), TypeError, MISSING % ("read", "conn")),
        ("read/ctx-positional", lambda w, s, net: w.read(s, bytearray(4), None), TypeError,
         TOO_MANY % ("read", "2 positional arguments", 3)),
        ("read/two-conns", lambda w, s, net: w.read(s, conn=s), TypeError,
         "Watcher.read() got multiple values for argument 'conn'"),
        ("read_full/no-buf", lambda w, s, net: w.read_full(s), TypeError,
         MISSING % ("read_full", "buf")),
        ("read_full/ctx-positional",
         lambda w, s, net: w.read_full(s, bytearray(4), None), TypeError,
         TOO_MANY % ("read_full", "2 positional arguments", 3)),
        ("write/no-data", lambda w, s, net: w.write(s), TypeError, MISSING % ("write", "data")),
        ("write/ctx-positional", lambda w, s, net: w.write(s, b"x", None), TypeError,
         TOO_MANY % ("write", "2 positional arguments", 3)),
        # free, close, stats (and fileno, next_timeout): as CPython words a
        # C method of one positional-only argument, or of none
        ("free/no-args", lambda w, s, net: w.free(), TypeError,
         "Watcher.free() takes exactly one argument (0 given)"),
        ("free/two-args", lambda w, s, net: w.free(s, s), TypeError,
         "Watcher.free() takes exactly one argument (2 given)"),
        ("free/keyword", lambda w, s, net: w.free(conn=s), TypeError,  # positional-only
         "Watcher.free() takes no keyword arguments"),
        ("wait_io/two-args", lambda w, s, net: w.wait_io(1, 2), TypeError,
         TOO_MANY % ("wait_io", "1 positional argument", 2)),
        ("wait_io/unknown-keyword", lambda w, s, net: w.wait_io(bogus=1), TypeError,
         UNEXPECTED % ("wait_io", "bogus")),
        ("close/arg", lambda w, s, net: w.close(1), TypeError,
         "Watcher.close() takes no arguments (1 given)"),
        ("stats/arg", lambda w, s, net: w.stats(1), TypeError,
         "Watcher.stats() takes no arguments (1 given)"),
        ("stats/keyword", lambda w, s, net: w.stats(x=1), TypeError,
         "Watcher.stats() takes no keyword arguments"),
    ]
    for cid, build, exc, msg in BAD_CONNS:
        if cid == "closed-socket":
            continue  # socket objects: free() never raises for those (see GOOD below)
        rows.append(("free/conn=%s" % cid, lambda w, s, net, build=build: w.free(build(net)),
                     TypeError, msg))
    for sid, value, exc, msg in BAD_SECONDS:
        msg = msg.format(name="timeout")
        rows.append(("wait_io/timeout=%s" % sid, lambda w, s, net, v=value: w.wait_io(v),
                     exc, msg))
        rows.append(("wait_io/timeout=%s/keyword" % sid,
                     lambda w, s, net, v=value: w.wait_io(timeout=v), exc, msg))
    for bid, value, exc, msg in BAD_BUFSIZES:
        rows.append(("Watcher/bufsize=%s" % bid,
                     lambda w, s, net, v=value: gaio.Watcher(v, engine=w.engine), exc, msg))
    rows += [
        ("Watcher/engine=None", lambda w, s, net: gaio.Watcher(engine=None), TypeError,
         "engine must be a str, not NoneType"),
        ("Watcher/engine=1", lambda w, s, net: gaio.Watcher(engine=1), TypeError,
         "engine must be a str, not int"),
        ("Watcher/engine=unknown", lambda w, s, net: gaio.Watcher(engine="nope"), ValueError,
         "unknown engine 'nope': choose one of 'uring', 'epoll', 'kqueue', 'python' or 'auto'"),
        ("Watcher/engine-positional",
         lambda w, s, net: gaio.Watcher(65536, w.engine), TypeError,
         "Watcher() takes at most 1 positional argument (2 given)"),
        ("Watcher/unknown-keyword",
         lambda w, s, net: gaio.Watcher(engine=w.engine, bogus=1), TypeError,
         "Watcher() got an unexpected keyword argument 'bogus'"),
    ]
    return rows


TABLE = _rows()


def _state(w):
    return open_fds(), w.stats()


def check_bad_call(watcher, net, call, exc, message):
    """The call raises `exc` with `message` on this engine, and leaves nothing."""
    client, server = net.pair()
    net.listener()  # made now, not inside the call
    before = _state(watcher)
    with pytest.raises(Exception) as info:
        call(watcher, server, net)
    assert (type(info.value), str(info.value)) == (exc, message), watcher.engine
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


@pytest.mark.parametrize("call,exc,message",
                         [pytest.param(c, e, m, id=i) for i, c, e, m in TABLE])
def test_bad_argument_raises_the_same_on_every_engine_and_leaves_nothing(watcher, net, call,
                                                                         exc, message):
    check_bad_call(watcher, net, call, exc, message)


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
