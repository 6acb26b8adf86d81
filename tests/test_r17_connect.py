"""R17: connect(sock, address) to a numeric address.

Reads and writes requested before the connect completes start when it
succeeds; when it fails, its own result comes first, then one result per
queued request, in request order, each with an error of the same class. The
socket stays delegated (and unconnected) until the caller frees it.
"""
import socket
import time

import pytest

import gaio
from conftest import collect, recv_exactly


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
