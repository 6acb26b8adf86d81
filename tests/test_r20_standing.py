"""R20: standing reads, read(conn, repeat=True).

One internal-buffer result per arrival of bytes, error None, until the
request ends: EOF (EOFError, size 0), an error (the OSError), free()
(ConnClosedError), its deadline or idle timeout (DeadlineExceededError), or
close() (no result). Later reads queue behind it; the 4 x bufsize bound per
batch holds.
"""
import gc
import time

import pytest

import gaio
from conftest import collect, reset


def _exchange(watcher, client, messages, gap=0.0):
    """Send each message and collect its result(s) (bytes may coalesce)."""
    out = []
    for msg in messages:
        client.sendall(msg)
        got = b""
        while len(got) < len(msg):
            for res in collect(watcher, 1):
                assert res.error is None and res.is_swap_buffer and res.op == gaio.Op.READ
                assert res.size == len(res.buffer)
                got += bytes(res.buffer)
                out.append(res)
        assert got == msg
        if gap:
            time.sleep(gap)
    return out


def test_standing_read_ends_at_eof(watcher, pair):
    client, server = pair()
    watcher.read(server, repeat=True, ctx="s")
    _exchange(watcher, client, [b"one", b"two", b"three"])
    client.close()
    res = collect(watcher, 1)[0]
    assert res.ctx == "s" and isinstance(res.error, EOFError)
    assert res.size == 0 and res.buffer is None and not res.is_swap_buffer
    stats = watcher.stats()
    assert stats["submitted"] == 1 and stats["pending"] == 0
    assert stats["completed"] >= 4


def test_standing_read_ends_on_reset(watcher, pair):
    client, server = pair()
    watcher.read(server, repeat=True)
    _exchange(watcher, client, [b"x"])
    reset(client)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, ConnectionResetError)
    assert watcher.stats()["pending"] == 0


def test_standing_read_ends_on_free(watcher, pair):
    client, server = pair()
    watcher.read(server, repeat=True, ctx="f")
    _exchange(watcher, client, [b"abc"])
    watcher.free(server)
    res = collect(watcher, 1)[0]
    assert res.ctx == "f" and isinstance(res.error, gaio.ConnClosedError)
    assert watcher.stats()["pending"] == 0 and watcher.stats()["watched"] == 0


def test_standing_read_ends_at_its_deadline_despite_traffic(watcher, pair):
    client, server = pair()
    start = time.monotonic()
    watcher.read(server, repeat=True, deadline=start + 0.3)
    results = []
    while time.monotonic() - start < 1.0:
        client.sendall(b"tick")
        batch = watcher.wait_io(0.05)
        results += batch
        if any(r.error for r in batch):
            break
    assert isinstance(results[-1].error, gaio.DeadlineExceededError)
    assert all(r.error is None for r in results[:-1]) and len(results) > 2
    assert 0.3 <= time.monotonic() - start < 0.8
    assert watcher.stats()["timeouts"] == 1


def test_standing_read_idle_timeout_counts_from_each_result(watcher, pair):
    client, server = pair()
    start = time.monotonic()
    watcher.read(server, repeat=True, timeout=0.25)
    for msg in [b"a", b"b", b"c", b"d"]:
        time.sleep(0.15)
        before = time.monotonic()
        _exchange(watcher, client, [msg])
    last = before  # the last result came after this
    assert last - start > 0.25  # alive past its first idle limit
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.DeadlineExceededError) and res.size == 0
    assert time.monotonic() - last >= 0.25


def test_close_ends_a_standing_read_without_a_result(engine, pair):
    client, server = pair()
    w = gaio.Watcher(engine=engine)
    try:
        w.read(server, repeat=True)
        _exchange(w, client, [b"q"])
    finally:
        w.close()
    with pytest.raises(gaio.WatcherClosedError):
        w.wait_io(0)
    assert w.stats()["pending"] == 0


def test_later_reads_queue_behind_a_standing_read(watcher, pair):
    client, server = pair()
    watcher.read(server, repeat=True, ctx="standing")
    watcher.read(server, bytearray(8), ctx="after")
    results = _exchange(watcher, client, [b"first", b"second"])
    assert all(r.ctx == "standing" for r in results)
    client.sendall(b"third")
    client.shutdown(1)
    results = []
    data = b""
    end = time.monotonic() + 5
    while not any(r.ctx == "after" for r in results) and time.monotonic() < end:
        batch = watcher.wait_io(0.1)
        data += b"".join(bytes(r.buffer) for r in batch if r.error is None)
        results += batch
    # R3: the standing read takes "third", meets EOF and ends; only then
    # does the queued read run (and meet EOF too)
    assert [r.ctx for r in results][-2:] == ["standing", "after"]
    assert isinstance(results[-2].error, EOFError) and isinstance(results[-1].error, EOFError)
    assert data == b"third"


def test_reads_behind_a_standing_read_end_at_their_deadline(watcher, pair):
    # the deadline walk looks at the requests queued ahead of the one that
    # expires: a standing read without a deadline among them (native: a short
    # request, allocated without its deadline fields) is passed over
    client, server = pair()
    watcher.read(server, repeat=True, ctx="standing")
    deadline = time.monotonic() + 0.05
    watcher.read(server, bytearray(8), ctx="a", deadline=deadline)
    watcher.read(server, bytearray(8), ctx="b", deadline=deadline)
    results = collect(watcher, 2, timeout=5)
    assert [r.ctx for r in results] == ["a", "b"]
    assert all(isinstance(r.error, gaio.DeadlineExceededError) for r in results)
    results = _exchange(watcher, client, [b"still standing"])
    assert all(r.ctx == "standing" for r in results)


def test_batches_hand_out_at_most_four_bufsize(make_watcher, net):
    bufsize = 4096
    w = make_watcher(bufsize)
    pairs = net.pairs(20)
    for i, (client, server) in enumerate(pairs):
        w.read(server, repeat=True, ctx=i)
    for client, _ in pairs:
        client.sendall(b"z" * 16384)
    received = [0] * 20
    end = time.monotonic() + 10
    while sum(received) < 20 * 16384 and time.monotonic() < end:
        batch = w.wait_io(0.2)
        assert sum(r.size for r in batch) <= 4 * bufsize
        for r in batch:
            assert r.error is None
            received[r.ctx] += r.size
    assert received == [16384] * 20


def test_a_standing_read_holds_its_connection(watcher, net):
    client, server = net.pair()
    watcher.read(server, repeat=True, ctx="held")
    net.forget()  # the test keeps no reference to `server`
    del server
    gc.collect()
    assert watcher.stats()["watched"] == 1
    client.sendall(b"still here")
    res = collect(watcher, 1)[0]
    assert bytes(res.buffer) == b"still here"
    client.close()
    assert isinstance(collect(watcher, 1)[0].error, EOFError)
