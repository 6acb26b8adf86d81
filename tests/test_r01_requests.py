"""R1: requests return at once, from any thread; bad arguments raise at once and
leave nothing behind (no descriptor, no counter, no delegation)."""
import array
import math
import socket
import threading
import time

import pytest

import gaio
from conftest import STUCK, collect, open_fds, recv_exactly, run_in_thread, wait_readable

NAN = math.nan


def returns_within(seconds, fn, *args, **kwargs):
    """Run fn in a thread; fail if it has not returned within `seconds`."""
    t, box = run_in_thread(lambda: fn(*args, **kwargs))
    t.join(seconds)
    assert not t.is_alive(), "%s blocked for more than %.1fs" % (fn.__name__, seconds)
    if "error" in box:
        raise box["error"]
    return box.get("result")


def test_read_with_no_data_returns_at_once(watcher, pair):
    client, server = pair()
    returns_within(2.0, watcher.read, server)
    returns_within(2.0, watcher.read, server, bytearray(10))
    returns_within(2.0, watcher.read_full, server, bytearray(10))
    assert watcher.wait_io(0.05) == []


def test_huge_write_to_a_peer_that_does_not_read_returns_at_once(watcher, pair):
    client, server = pair()
    data = bytes(STUCK)
    start = time.monotonic()
    returns_within(5.0, watcher.write, server, data)
    assert time.monotonic() - start < 1.0
    assert watcher.wait_io(0.05) == []
    watcher.free(server)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.ConnClosedError)


def test_request_from_another_thread_wakes_a_blocked_wait_io(watcher, pair):
    client, server = pair()
    client.sendall(b"ping")
    wait_readable(server)
    t, box = run_in_thread(watcher.wait_io, 5.0)
    time.sleep(0.1)  # let the thread block in wait_io
    start = time.monotonic()
    watcher.read(server, bytearray(16), ctx="from main")
    t.join(3.0)
    assert not t.is_alive()
    elapsed = time.monotonic() - start
    assert "error" not in box, box
    results = box["result"]
    if not results:  # the wake may come as an empty batch; the result must follow
        results = collect(watcher, 1, timeout=2.0)
    assert [r.ctx for r in results] == ["from main"]
    assert bytes(results[0].buffer[:results[0].size]) == b"ping"
    assert elapsed < 1.0


def test_requests_from_many_threads_at_once(watcher, net):
    pairs = net.pairs(8)
    per_thread = 50
    errors = []

    def submit(index):
        _, server = pairs[index]
        try:
            for k in range(per_thread):
                watcher.write(server, b"%d:%03d;" % (index, k), ctx=(index, k))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    results = collect(watcher, per_thread * len(pairs), timeout=20.0)
    for t in threads:
        t.join(5.0)
    assert not errors
    assert all(r.error is None for r in results)
    for index, (client, _) in enumerate(pairs):
        expected = b"".join(b"%d:%03d;" % (index, k) for k in range(per_thread))
        assert recv_exactly(client, len(expected)) == expected


# ---------------------------------------------------------------- bad arguments

def _unconnected_udp():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


class NoFileno:
    pass


NON_SOCKETS = [
    pytest.param(lambda net: None, id="None"),
    pytest.param(lambda net: NoFileno(), id="object"),
    pytest.param(lambda net: 0, id="int-fd"),
    pytest.param(lambda net: "127.0.0.1:80", id="str"),
    pytest.param(lambda net: net.track(open("/dev/null", "rb")), id="file"),
]
# read and write take datagram sockets since 0.3 (R24); read_full does not
DATAGRAMS = [
    pytest.param(lambda net: net.track(_unconnected_udp()), id="udp"),
    pytest.param(lambda net: net.track(socket.socketpair(type=socket.SOCK_DGRAM)[0]),
                 id="unix-dgram"),
]


def _snapshot(w):
    return open_fds(), w.stats()


@pytest.mark.parametrize("make_conn,call",
                         [pytest.param(p.values[0], call, id="%s-%s" % (p.id, call))
                          for p in NON_SOCKETS
                          for call in ("read", "read_buf", "read_full", "write")]
                         + [pytest.param(p.values[0], "read_full", id="%s-read_full" % p.id)
                            for p in DATAGRAMS])
def test_conn_that_is_not_a_stream_socket_is_a_type_error(watcher, net, make_conn, call):
    conn = make_conn(net)
    before = _snapshot(watcher)
    with pytest.raises(TypeError):
        if call == "read":
            watcher.read(conn)
        elif call == "read_buf":
            watcher.read(conn, bytearray(8))
        elif call == "read_full":
            watcher.read_full(conn, bytearray(8))
        else:
            watcher.write(conn, b"data")
    assert _snapshot(watcher) == before
    assert watcher.wait_io(0) == []


@pytest.mark.parametrize("make_conn", NON_SOCKETS)
def test_free_of_a_non_socket_is_a_type_error(watcher, net, make_conn):
    conn = make_conn(net)
    before = _snapshot(watcher)
    with pytest.raises(TypeError):
        watcher.free(conn)
    assert _snapshot(watcher) == before


def test_free_of_a_udp_socket_does_not_raise(watcher, net):
    udp = net.track(_unconnected_udp())
    watcher.free(udp)  # a socket object: free never raises
    assert watcher.stats()["watched"] == 0


def _ro_view():
    return memoryview(bytearray(8)).toreadonly()


def _non_contiguous():
    return memoryview(bytearray(16))[::2]


# (method, args builder, exception): args builder gets the open server socket.
BAD_ARGS = [
    ("read", lambda s: (s, b""), TypeError, "read-empty-bytes"),  # read-only first
    ("read", lambda s: (s, bytearray()), ValueError, "read-empty-bytearray"),
    ("read", lambda s: (s, memoryview(bytearray(4))[2:2]), ValueError, "read-empty-view"),
    ("read", lambda s: (s, b"abcd"), TypeError, "read-bytes-readonly"),
    ("read", lambda s: (s, _ro_view()), TypeError, "read-readonly-view"),
    ("read", lambda s: (s, "text"), TypeError, "read-str"),
    ("read", lambda s: (s, 1234), TypeError, "read-int"),
    ("read", lambda s: (s, [0] * 8), TypeError, "read-list"),
    ("read", lambda s: (s, _non_contiguous()), (TypeError, ValueError), "read-non-contiguous"),
    ("read_full", lambda s: (s, None), ValueError, "read_full-None"),
    ("read_full", lambda s: (s, bytearray()), ValueError, "read_full-empty"),
    ("read_full", lambda s: (s, b"abcd"), TypeError, "read_full-readonly"),
    ("read_full", lambda s: (s, "text"), TypeError, "read_full-str"),
    ("write", lambda s: (s, b""), ValueError, "write-empty-bytes"),
    ("write", lambda s: (s, bytearray()), ValueError, "write-empty-bytearray"),
    ("write", lambda s: (s, memoryview(b"")), ValueError, "write-empty-view"),
    ("write", lambda s: (s, None), ValueError, "write-None"),
    ("write", lambda s: (s, "text"), TypeError, "write-str"),
    ("write", lambda s: (s, 1234), TypeError, "write-int"),
    ("write", lambda s: (s, object()), TypeError, "write-object"),
    ("write", lambda s: (s, {1: 2}), TypeError, "write-dict"),
]


@pytest.mark.parametrize("method,build,exc", [pytest.param(*b[:3], id=b[3]) for b in BAD_ARGS])
def test_bad_buffer_raises_and_leaves_nothing_behind(watcher, pair, method, build, exc):
    client, server = pair()
    before = _snapshot(watcher)
    with pytest.raises(exc):
        getattr(watcher, method)(*build(server))
    assert _snapshot(watcher) == before
    # the socket was not delegated: it is open and still the caller's own
    assert server.fileno() != -1
    server.sendall(b"still mine")
    assert recv_exactly(client, 10) == b"still mine"
    assert watcher.wait_io(0) == []


TIMING_ARGS = [
    (dict(timeout=1.0, deadline=time.monotonic() + 1.0), ValueError, "both"),
    (dict(timeout=NAN), ValueError, "timeout-nan"),
    (dict(deadline=NAN), ValueError, "deadline-nan"),
    (dict(timeout="1"), TypeError, "timeout-str"),
    (dict(deadline="1"), TypeError, "deadline-str"),
    (dict(timeout=[1]), TypeError, "timeout-list"),
]


@pytest.mark.parametrize("method", ["read", "read_full", "write"])
@pytest.mark.parametrize("kwargs,exc", [pytest.param(*a[:2], id=a[2]) for a in TIMING_ARGS])
def test_bad_timing_raises_and_leaves_nothing_behind(watcher, pair, method, kwargs, exc):
    client, server = pair()
    arg = b"data" if method == "write" else bytearray(4)
    before = _snapshot(watcher)
    with pytest.raises(exc):
        getattr(watcher, method)(server, arg, **kwargs)
    assert _snapshot(watcher) == before
    assert server.fileno() != -1


def test_closed_never_delegated_socket_is_a_value_error(watcher, pair):
    client, server = pair()
    server.close()
    before = _snapshot(watcher)
    for call in (lambda: watcher.read(server),
                 lambda: watcher.read(server, bytearray(4)),
                 lambda: watcher.read_full(server, bytearray(4)),
                 lambda: watcher.write(server, b"x")):
        with pytest.raises(ValueError):
            call()
    assert _snapshot(watcher) == before
    watcher.free(server)  # never raises for a socket object
    assert _snapshot(watcher) == before


def test_socket_delegated_to_another_watcher_is_a_value_error(make_watcher, pair):
    first, second = make_watcher(), make_watcher()
    client, server = pair()
    first.read(server, bytearray(4))
    before = _snapshot(second)
    with pytest.raises(ValueError):
        second.read(server, bytearray(4))
    assert _snapshot(second) == before
    client.sendall(b"abcd")
    res = collect(first, 1)[0]
    assert res.conn is server and res.size > 0


@pytest.mark.parametrize("call", [
    pytest.param(lambda w, s: w.read(), id="read-no-args"),
    pytest.param(lambda w, s: w.read(s, bytearray(4), None), id="read-ctx-positional"),
    pytest.param(lambda w, s: w.write(s), id="write-no-data"),
    pytest.param(lambda w, s: w.write(s, b"x", None), id="write-ctx-positional"),
    pytest.param(lambda w, s: w.read_full(s), id="read_full-no-buf"),
    pytest.param(lambda w, s: w.read(s, bytearray(4), bogus=1), id="read-unknown-kw"),
    pytest.param(lambda w, s: w.free(), id="free-no-args"),
    pytest.param(lambda w, s: w.wait_io(1, 2), id="wait_io-two-args"),
])
def test_wrong_call_shape_is_a_type_error(watcher, pair, call):
    client, server = pair()
    before = _snapshot(watcher)
    with pytest.raises(TypeError):
        call(watcher, server)
    assert _snapshot(watcher) == before
    assert server.fileno() != -1


def test_unix_stream_socket_is_accepted(watcher, pair):
    a, b = pair(unix=True)
    watcher.write(b, b"over unix")
    watcher.read(b, bytearray(8))
    a.sendall(b"reply")
    results = collect(watcher, 2)
    assert {r.op for r in results} == {gaio.Op.READ, gaio.Op.WRITE}
    assert all(r.error is None for r in results)
    assert recv_exactly(a, 9) == b"over unix"


def test_any_ctx_and_buffer_kind_is_accepted(watcher, pair):
    client, server = pair()
    for ctx in (None, 0, "s", object(), [1], {"k": 1}, server):
        watcher.write(server, array.array("B", b"ab"), ctx=ctx)
    results = collect(watcher, 7)
    assert all(r.error is None and r.size == 2 for r in results)
    assert recv_exactly(client, 14) == b"ab" * 7


def test_nothing_left_behind_then_a_good_request_works(watcher, pair):
    client, server = pair()
    for bad in (b"", "x", None):
        with pytest.raises((TypeError, ValueError)):
            watcher.write(server, bad)
    with pytest.raises(ValueError):
        watcher.read(server, bytearray(4), timeout=1, deadline=time.monotonic() + 1)
    assert watcher.stats()["submitted"] == 0
    watcher.write(server, b"ok")
    res = collect(watcher, 1)[0]
    assert res.error is None and res.size == 2
    assert recv_exactly(client, 2) == b"ok"
    assert watcher.stats()["submitted"] == 1


def test_ctx_is_never_hashed_or_compared(watcher, pair):
    class Touchy:
        def __hash__(self):
            raise AssertionError("ctx hashed")

        def __eq__(self, other):
            raise AssertionError("ctx compared")

        def __bool__(self):
            raise AssertionError("ctx truth-tested")

    client, server = pair()
    ctx = Touchy()
    watcher.write(server, b"t", ctx=ctx)
    watcher.read(server, bytearray(1), ctx=ctx, timeout=0)
    results = collect(watcher, 2)
    assert all(r.ctx is ctx for r in results)


@pytest.mark.parametrize("behaviour", ["raises", "negative", "huge", "not-int"])
def test_socket_subclass_with_a_lying_fileno(watcher, net, behaviour):
    class Liar(socket.socket):
        def fileno(self):
            if behaviour == "raises":
                raise RuntimeError("no fileno for you")
            if behaviour == "negative":
                return -7
            if behaviour == "huge":
                return 2 ** 40
            return "3"

    lis = net.listener()
    client = net.track(socket.create_connection(lis.getsockname()))
    fd, _ = lis._accept()
    liar = net.track(Liar(fileno=fd))
    # The watcher takes the socket's own descriptor (socket.socket.fileno and
    # detach), whatever a subclass's fileno() says: the request works.
    watcher.read(liar, bytearray(4))
    client.sendall(b"real")
    res = collect(watcher, 1)[0]
    assert res.conn is liar and res.error is None
