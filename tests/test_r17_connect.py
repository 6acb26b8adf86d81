"""R17: connect(sock, address) to a numeric address.

Reads and writes requested before the connect completes start when it
succeeds; when it fails, its own result comes first, then one result per
queued request, in request order, each with an error of the same class. The
socket stays delegated (and unconnected) until the caller frees it.

Every connect ends. Linux answers a non-blocking AF_UNIX connect to a full
backlog with EAGAIN (nothing is in progress, no readiness will come): the
watcher tries again, as a blocking connect would wait, until it connects,
fails otherwise, meets its deadline or is freed.
"""
import socket
import time

import pytest

import gaio
from conftest import collect, need_fds, recv_exactly


def _refused_address():
    """A loopback port nobody listens on."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()
    return address


def test_connect_then_queued_write_and_read_go_on(watcher, net):
    lis = net.listener()
    client = net.track(socket.socket())
    watcher.connect(client, lis.getsockname(), ctx="c")
    watcher.write(client, b"hello", ctx="w")
    watcher.read(client, bytearray(5), ctx="r")
    # the handshake completes in the kernel's accept queue: no accept() needed
    results = collect(watcher, 2)
    lis.settimeout(5)
    server, _ = lis.accept()
    net.track(server)
    assert recv_exactly(server, 5) == b"hello"
    server.sendall(b"world")
    results += collect(watcher, 1)
    assert [r.ctx for r in results] == ["c", "w", "r"]
    res = results[0]
    assert res.op == gaio.Op.CONNECT and res.conn is client
    assert res.error is None and res.size == 0 and res.buffer is None
    assert results[1].size == 5 and results[1].error is None
    assert bytes(results[2].buffer) == b"world"
    assert watcher.stats()["watched"] == 1


def test_failed_connect_fails_what_queued_behind_it_in_order(watcher, net):
    client = net.track(socket.socket())
    watcher.connect(client, _refused_address(), ctx="c")
    watcher.read(client, ctx="r1")
    watcher.write(client, b"x", ctx="w1")
    watcher.read_full(client, bytearray(4), ctx="r2")
    watcher.write(client, [b"a", b"b"], ctx="w2")
    results = collect(watcher, 5)
    assert [r.ctx for r in results] == ["c", "r1", "w1", "r2", "w2"]
    assert results[0].op == gaio.Op.CONNECT
    for res in results:
        assert type(res.error) is ConnectionRefusedError, res
        assert res.size == 0
    assert results[1].buffer is None  # an internal-buffer read with no bytes
    assert results[4].buffer == [b"a", b"b"]
    stats = watcher.stats()
    assert stats["watched"] == 1 and stats["pending"] == 0  # still delegated
    watcher.free(client)
    assert watcher.stats()["watched"] == 0


def test_connect_over_unix_path_and_to_a_missing_path(watcher, net, tmp_path):
    path = str(tmp_path / "s")
    lis = net.track(socket.socket(socket.AF_UNIX))
    lis.bind(path)
    lis.listen()
    good = net.track(socket.socket(socket.AF_UNIX))
    bad = net.track(socket.socket(socket.AF_UNIX))
    watcher.connect(good, path, ctx="good")
    watcher.write(good, b"unix", ctx="w")
    watcher.connect(bad, str(tmp_path / "missing"), ctx="bad")
    watcher.read(bad, bytearray(1), ctx="r")
    results = {r.ctx: r for r in collect(watcher, 4)}
    assert results["good"].error is None and results["w"].size == 4
    assert isinstance(results["bad"].error, FileNotFoundError)
    assert type(results["r"].error) is type(results["bad"].error)
    lis.settimeout(5)
    server, _ = lis.accept()
    net.track(server)
    assert recv_exactly(server, 4) == b"unix"


def test_connect_deadline_fails_the_queue_with_deadline_errors(watcher, net):
    # A listener whose accept queue is full drops further SYNs: a connect to
    # it stays in progress until the kernel gives up (minutes).
    lis = net.track(socket.create_server(("127.0.0.1", 0), backlog=0))
    address = lis.getsockname()
    fillers = []
    for _ in range(8):
        s = net.track(socket.socket())
        s.setblocking(False)
        s.connect_ex(address)
        fillers.append(s)
    time.sleep(0.05)
    client = net.track(socket.socket())
    start = time.monotonic()
    watcher.connect(client, address, ctx="c", timeout=0.2)
    watcher.read(client, bytearray(1), ctx="r")
    results = collect(watcher, 2)
    if results[0].error is None:
        pytest.skip("this kernel completed a connect to a full accept queue")
    assert [r.ctx for r in results] == ["c", "r"]
    assert all(isinstance(r.error, gaio.DeadlineExceededError) for r in results)
    assert time.monotonic() - start >= 0.2
    assert watcher.stats()["timeouts"] >= 1


def test_connect_ipv6_loopback(watcher, net):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        lis = net.track(socket.create_server(("::1", 0), family=socket.AF_INET6))
    except OSError as exc:
        pytest.skip("no IPv6 loopback: %s" % exc)
    client = net.track(socket.socket(socket.AF_INET6))
    watcher.connect(client, lis.getsockname()[:2])
    assert collect(watcher, 1)[0].error is None


def _unix_listener(net, tmp_path, backlog):
    path = str(tmp_path / "full")
    lis = net.track(socket.socket(socket.AF_UNIX))
    lis.bind(path)
    lis.listen(backlog)
    return lis, path


def _message(i):
    return b"client %05d " % i + bytes([i % 251]) * (i % 97)


@pytest.mark.parametrize("count", [50, 300])
def test_unix_connects_to_a_full_backlog_all_go_through(watcher, net, tmp_path, count):
    """Backlog 4, served on the same watcher by a standing accept and an echo
    (standing reads written back); `count` connects at once, each with a write
    and a read_full queued behind it: every client gets its own bytes back."""
    need_fds(2 * count + 64)
    lis, path = _unix_listener(net, tmp_path, backlog=4)
    watcher.accept(lis, ctx="L", repeat=True)
    clients = []
    for i in range(count):
        sock = net.track(socket.socket(socket.AF_UNIX))
        clients.append(sock)
        watcher.connect(sock, path, ctx=("c", i))
        watcher.write(sock, _message(i), ctx=("w", i))
        watcher.read_full(sock, bytearray(len(_message(i))), ctx=("r", i))
    got = {}
    cpu = time.process_time()
    end = time.monotonic() + 30
    while sum(1 for k in got if k[0] == "r") < count:
        assert time.monotonic() < end, "%d of %d clients echoed; results by kind: %r" % (
            sum(1 for k in got if k[0] == "r"), count,
            {kind: sum(1 for k in got if k[0] == kind) for kind in "cwr"})
        for res in watcher.wait_io(0.25):
            if res.ctx == "L":
                assert res.error is None, res
                server = net.track(res.accepted)
                watcher.read(server, ctx="S", repeat=True)
            elif res.ctx == "S":
                assert res.error is None, res
                watcher.write(res.conn, res.buffer, ctx="E", quiet=True)
            elif res.ctx == "E":
                pytest.fail("echo write failed: %r" % res)
            else:
                assert res.ctx not in got
                got[res.ctx] = res
                if res.ctx[0] == "r":
                    i = res.ctx[1]
                    assert res.error is None, res
                    assert bytes(res.buffer) == _message(i)
    for i in range(count):
        assert got[("c", i)].error is None and got[("c", i)].op == gaio.Op.CONNECT
        assert got[("w", i)].error is None and got[("w", i)].size == len(_message(i))
    # retried after a back-off, not in a loop (generous: CI machines are slow)
    assert time.process_time() - cpu < 10
    assert watcher.stats()["accepted"] == count


def _fill_backlog(net, path, backlog):
    """Connect to the listener until its backlog is full (EAGAIN)."""
    for _ in range(backlog + 8):
        sock = net.track(socket.socket(socket.AF_UNIX))
        sock.setblocking(False)
        if sock.connect_ex(path) != 0:
            sock.close()
            return
    pytest.fail("the AF_UNIX backlog never filled up")


def test_unix_connect_to_a_full_backlog_ends_at_its_deadline(watcher, net, tmp_path):
    lis, path = _unix_listener(net, tmp_path, backlog=1)
    _fill_backlog(net, path, 1)
    client = net.track(socket.socket(socket.AF_UNIX))
    cpu = time.process_time()
    start = time.monotonic()
    watcher.connect(client, path, ctx="c", timeout=0.3)
    watcher.write(client, b"x", ctx="w")
    watcher.read(client, bytearray(1), ctx="r")
    watcher.read_full(client, bytearray(2), ctx="rf")
    results = collect(watcher, 4)
    elapsed = time.monotonic() - start
    assert [r.ctx for r in results] == ["c", "w", "r", "rf"]
    assert results[0].op == gaio.Op.CONNECT
    assert all(isinstance(r.error, gaio.DeadlineExceededError) for r in results), results
    assert all(r.size == 0 for r in results)
    assert 0.3 <= elapsed < 0.3 + 0.5
    assert time.process_time() - cpu < 0.15, "the watcher spins on a full backlog"
    stats = watcher.stats()
    assert stats["pending"] == 0 and stats["watched"] == 1  # still delegated
    assert watcher.wait_io(0.05) == []
    watcher.free(client)


def test_unix_connect_to_a_full_backlog_goes_on_when_room_is_made(watcher, net, tmp_path):
    lis, path = _unix_listener(net, tmp_path, backlog=1)
    _fill_backlog(net, path, 1)
    client = net.track(socket.socket(socket.AF_UNIX))
    watcher.connect(client, path, ctx="c")
    watcher.write(client, b"late", ctx="w")
    assert watcher.wait_io(0.1) == []  # no result while the backlog is full
    lis.settimeout(5)
    while True:  # the filler connections leave the backlog
        server, _ = lis.accept()
        net.track(server)
        results = watcher.wait_io(0.05)
        if results:
            break
    results += collect(watcher, 2 - len(results))
    assert [(r.ctx, r.error) for r in results] == [("c", None), ("w", None)]
    lis.settimeout(0.5)
    while True:
        server, _ = lis.accept()
        net.track(server)
        server.settimeout(0.2)
        try:
            if server.recv(4) == b"late":
                break
        except socket.timeout:
            pass


def test_free_ends_a_unix_connect_waiting_for_a_full_backlog(watcher, net, tmp_path):
    lis, path = _unix_listener(net, tmp_path, backlog=1)
    _fill_backlog(net, path, 1)
    client = net.track(socket.socket(socket.AF_UNIX))
    watcher.connect(client, path, ctx="c", timeout=5)
    watcher.read(client, ctx="r")
    watcher.write(client, b"x", ctx="w")
    assert watcher.wait_io(0.05) == []  # retrying
    watcher.free(client)
    results = collect(watcher, 3)
    assert [r.ctx for r in results] == ["c", "r", "w"]
    assert all(isinstance(r.error, gaio.ConnClosedError) for r in results), results
    stats = watcher.stats()
    assert stats["pending"] == 0 and stats["watched"] == 0
    assert watcher.wait_io(0.05) == []


# "timeout <= 0: the request is tried once and, if it cannot finish at once,
# completes with DeadlineExceededError." A loopback TCP connect finishes inside
# connect() itself (the kernel answers the SYN at once), so with timeout=0 it
# is done, not late: every engine reports how it went, and counts no timeout.
def test_loopback_connect_with_timeout_zero_finishes_at_once(watcher, net):
    lis = net.listener()
    client = net.track(socket.socket())
    watcher.connect(client, lis.getsockname(), ctx="c", timeout=0)
    watcher.write(client, b"ok", ctx="w")
    results = collect(watcher, 2)
    assert [(r.ctx, r.error) for r in results] == [("c", None), ("w", None)]
    assert watcher.stats()["timeouts"] == 0
    lis.settimeout(5)
    server, _ = lis.accept()
    net.track(server)
    assert recv_exactly(server, 2) == b"ok"


def test_refused_loopback_connect_with_timeout_zero_says_refused(watcher, net):
    client = net.track(socket.socket())
    watcher.connect(client, _refused_address(), ctx="c", timeout=0)
    (res,) = collect(watcher, 1)
    assert type(res.error) is ConnectionRefusedError
    assert watcher.stats()["timeouts"] == 0
