"""R8: free(conn) closes the descriptor now; pending requests complete with
ConnClosedError; unknown or already freed sockets are ignored."""
import gc
import socket
import threading
import time

import pytest

import gaio
from conftest import (STUCK, collect, fd_inode, fds_of_inode, open_fds, pattern, recv_until_eof,
                      run_in_thread)


def test_free_closes_the_descriptor_now(watcher, pair):
    client, server = pair()
    inode = fd_inode(server)
    watcher.write(server, b"bye")
    collect(watcher, 1)
    assert len(fds_of_inode(inode)) == 1
    watcher.free(server)
    assert fds_of_inode(inode) == []  # before any wait_io
    assert recv_until_eof(client, timeout=2) == b"bye"
    assert watcher.stats()["watched"] == 0


def test_pending_requests_complete_with_conn_closed_error(watcher, pair):
    client, server = pair()
    rbuf = bytearray(8)
    watcher.read(server, rbuf, ctx="r1")
    watcher.read(server, ctx="r2")
    watcher.read_full(server, bytearray(8), ctx="r3")
    watcher.write(server, bytes(STUCK), ctx="w1")  # stuck: the peer does not read
    watcher.write(server, b"never", ctx="w2")
    assert watcher.wait_io(0.1) == []  # let the first write start
    watcher.free(server)
    results = collect(watcher, 5)
    assert len(results) == 5
    by_ctx = {r.ctx: r for r in results}
    for ctx in ("r1", "r2", "r3", "w1", "w2"):
        res = by_ctx[ctx]
        assert isinstance(res.error, gaio.ConnClosedError), res
        assert isinstance(res.error, ConnectionError)
        assert res.conn is server
    assert by_ctx["r1"].size == 0 and by_ctx["r1"].buffer is rbuf
    assert by_ctx["r2"].buffer is None and by_ctx["r2"].is_swap_buffer is False
    assert 0 < by_ctx["w1"].size < STUCK
    assert by_ctx["w2"].size == 0
    # reads in order, writes in order
    reads = [r.ctx for r in results if r.op == gaio.Op.READ]
    writes = [r.ctx for r in results if r.op == gaio.Op.WRITE]
    assert reads == ["r1", "r2", "r3"] and writes == ["w1", "w2"]
    assert watcher.stats()["pending"] == 0
    assert watcher.wait_io(0.1) == []


def test_read_full_freed_midway_reports_bytes_so_far(watcher, pair):
    client, server = pair()
    buf = bytearray(100)
    watcher.read_full(server, buf)
    client.sendall(b"q" * 40)
    assert watcher.wait_io(0.1) == []
    watcher.free(server)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.ConnClosedError)
    assert res.size == 40 and buf[:40] == b"q" * 40


def test_free_of_unknown_socket_does_nothing(watcher, pair):
    client, server = pair()
    fds = open_fds()
    watcher.free(server)
    assert open_fds() == fds
    assert server.fileno() != -1  # not delegated, not closed: still the caller's
    server.sendall(b"mine")
    assert client.recv(4) == b"mine"
    assert watcher.stats()["watched"] == 0


def test_free_twice_and_free_of_a_closed_socket_do_nothing(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(1))
    watcher.free(server)
    watcher.free(server)
    closed = socket.socket()
    closed.close()
    watcher.free(closed)
    results = collect(watcher, 1)
    assert len(results) == 1 and isinstance(results[0].error, gaio.ConnClosedError)
    assert watcher.wait_io(0.05) == []


def test_request_after_free_is_a_value_error(watcher, pair):
    """gaio's TestSocketClose: Free then Read on the same conn."""
    client, server = pair()
    watcher.write(server, b"hello world")
    res = collect(watcher, 1)[0]
    watcher.free(res.conn)
    stats = watcher.stats()
    for call in (lambda: watcher.read(server, bytearray(4)),
                 lambda: watcher.read(server),
                 lambda: watcher.read_full(server, bytearray(4)),
                 lambda: watcher.write(server, b"x")):
        with pytest.raises(ValueError):
            call()
    assert watcher.stats() == stats


def test_free_from_another_watcher_does_nothing(make_watcher, pair):
    a, b = make_watcher(), make_watcher()
    client, server = pair()
    a.read(server, bytearray(4))
    b.free(server)  # unknown to b
    client.sendall(b"abcd")
    res = collect(a, 1)[0]
    assert res.error is None and res.size > 0


def test_free_does_not_touch_other_connections(watcher, net):
    pairs = net.pairs(5)
    for i, (_, server) in enumerate(pairs):
        watcher.read(server, bytearray(4), ctx=i)
    watcher.free(pairs[2][1])
    assert collect(watcher, 1)[0].ctx == 2
    for i, (client, _) in enumerate(pairs):
        if i != 2:
            client.sendall(b"%d" % i)
    results = collect(watcher, 4)
    assert sorted(r.ctx for r in results) == [0, 1, 3, 4]
    assert all(r.error is None for r in results)
    assert watcher.stats()["watched"] == 4


def test_free_from_another_thread_wakes_a_blocked_wait_io(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(8), ctx="pending")
    t, box = run_in_thread(watcher.wait_io, 5.0)
    time.sleep(0.1)
    start = time.monotonic()
    watcher.free(server)
    t.join(5)
    assert not t.is_alive()
    results = box.get("result") or collect(watcher, 1)
    assert [r.ctx for r in results] == ["pending"]
    assert isinstance(results[0].error, gaio.ConnClosedError)
    assert time.monotonic() - start < 1.0, "free() did not wake the waiter"


@pytest.mark.parametrize("internal", [False, True])
def test_free_with_a_pending_read_really_closes_the_socket(watcher, pair, internal):
    """An in-flight kernel read (io_uring holds a file reference) must not keep
    the socket open after free(): the peer sees the end of the stream."""
    client, server = pair()
    if internal:
        watcher.read(server)
    else:
        watcher.read(server, bytearray(64))
    watcher.wait_io(0.05)  # let the engine start the read
    watcher.free(server)
    client.settimeout(2)
    assert client.recv(10) == b"", "peer did not see the connection end"
    assert isinstance(collect(watcher, 1)[0].error, gaio.ConnClosedError)


def test_buffer_of_a_freed_read_is_never_written_afterwards(watcher, net):
    pairs = net.pairs(20)
    bufs = [bytearray(b"\x00" * 4096) for _ in pairs]
    for (_, server), buf in zip(pairs, bufs):
        watcher.read(server, buf)
    watcher.wait_io(0.05)
    for _, server in pairs:
        watcher.free(server)
    collect(watcher, len(pairs))
    for client, _ in pairs:
        try:
            client.send(b"\xff" * 4096)  # too late: must land nowhere
        except OSError:
            pass
    time.sleep(0.1)
    gc.collect()
    assert all(buf == bytes(4096) for buf in bufs), "a freed read wrote into its buffer"


def test_free_from_many_threads_at_once_ends_each_request_once(watcher, net):
    pairs = net.pairs(10)
    for i, (_, server) in enumerate(pairs):
        for k in range(3):
            watcher.read(server, bytearray(4), ctx=(i, k))
    barrier = threading.Barrier(6)
    errors = []

    def freer():
        try:
            barrier.wait(5)
            for _, server in pairs:
                watcher.free(server)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=freer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    results = collect(watcher, 30)
    assert sorted(r.ctx for r in results) == [(i, k) for i in range(10) for k in range(3)]
    assert all(isinstance(r.error, gaio.ConnClosedError) for r in results)
    assert watcher.wait_io(0.05) == []


@pytest.mark.parametrize("how", ["free", "close"])
def test_bytes_taken_but_not_yet_read_go_with_free_and_close(engine, net, monkeypatch, how):
    """Streams larger than what a batch may hand out (4 x bufsize): the
    watcher may hold bytes no read took yet (io_uring parks them when its
    multishot RECVs read out of provided buffers: GAIO_URING_AVOID; other
    engines leave them in the socket). What the reads got is each stream's
    prefix, and free() or close() ends them with the bytes still held
    (.ci/sanitize checks that their memory goes too)."""
    monkeypatch.setenv("GAIO_URING_AVOID", "poll-streams,multishot-poll")
    pairs = net.pairs(12, unix=True)
    sent = [pattern(20000 + i, seed=i) for i in range(len(pairs))]
    got = [bytearray() for _ in pairs]
    w = gaio.Watcher(4096, engine=engine)
    try:
        for i, (_, server) in enumerate(pairs):
            w.read(server, repeat=True, ctx=i)
        assert w.wait_io(0.02) == []
        for i, (client, _) in enumerate(pairs):
            client.sendall(sent[i])
        time.sleep(0.05)
        for _ in range(3):  # a few batches: the rest stays with the watcher or in the socket
            for res in w.wait_io(0.05):
                assert res.error is None, res
                got[res.ctx] += res.buffer
        assert all(sent[i].startswith(got[i]) for i in range(len(pairs)))
        assert any(len(g) < len(s) for g, s in zip(got, sent))
        if how == "free":
            for _, server in pairs:
                w.free(server)
            ended = set()
            end = time.monotonic() + 5
            while len(ended) < len(pairs):
                assert time.monotonic() < end, sorted(ended)
                for res in w.wait_io(0.05):
                    assert res.ctx not in ended, res
                    if res.error is None:
                        got[res.ctx] += res.buffer
                        assert sent[res.ctx].startswith(got[res.ctx])
                    else:
                        assert isinstance(res.error, gaio.ConnClosedError), res
                        ended.add(res.ctx)
    finally:
        w.close()
