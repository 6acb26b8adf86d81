"""The native core holds nothing per request once it completed.

A million requests through one watcher: resident memory and the number of
Python objects stay flat after warm-up. Also the internal buffer's promise:
memory a caller still exports is never reused for another connection's bytes.
"""
import gc
import socket

import pytest

import gaio

pytest.importorskip("gaio._native")


def _rss_kib():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource
    return pages * resource.getpagesize() // 1024


def _rounds(w, a, b, rounds, per_round=200):
    """Each round: per_round writes a->b and reads of b until all bytes came back."""
    payload = b"y" * 32
    buf = bytearray(4096)
    requests = 0
    for i in range(rounds):
        for _ in range(per_round):
            w.write(a, payload, ctx=i)
        requests += per_round
        want = per_round * len(payload)
        got = 0
        w.read(b, buf if i % 2 else None, timeout=5)
        requests += 1
        while got < want:
            for res in w.wait_io(5):
                assert res.error is None, res
                if res.op == gaio.Op.READ:
                    got += res.size
                    if got < want:
                        w.read(b, buf if i % 2 else None, timeout=5)
                        requests += 1
    return requests


@pytest.mark.slow
def test_a_million_requests_keep_memory_flat(native_engine):
    w = gaio.Watcher(engine=native_engine)
    a, b = socket.socketpair()
    _rounds(w, a, b, 500)                     # warm-up: freelists, arena, map
    gc.collect()
    rss0, objs0 = _rss_kib(), len(gc.get_objects())
    total = 0
    while total < 1_000_000:
        total += _rounds(w, a, b, 500)
    gc.collect()
    rss1, objs1 = _rss_kib(), len(gc.get_objects())
    stats = w.stats()
    w.close()
    assert stats["pending"] == 0 and stats["completed"] == stats["submitted"]
    assert objs1 - objs0 < 100, (objs0, objs1)
    assert rss1 - rss0 < 2048, (rss0, rss1)   # KiB


def test_exported_view_keeps_its_bytes_across_batches(native_engine):
    w = gaio.Watcher(4096, engine=native_engine)
    pairs = [socket.socketpair() for _ in range(3)]
    a0, b0 = pairs[0]
    w.read(a0)
    b0.sendall(b"first-batch-bytes")
    res = []
    while not res:
        res = w.wait_io(2)
    view = res[0].buffer
    kept = view[6:]                      # shares the watcher's memory
    assert bytes(kept) == b"batch-bytes"
    # later batches fill the internal buffer with other connections' bytes
    for n in range(20):
        a, b = pairs[1 + n % 2]
        w.read(a)
        b.sendall(bytes([65 + n]) * 4000)
        got = []
        while not got:
            got = w.wait_io(2)
    assert bytes(kept) == b"batch-bytes"
    with pytest.raises(ValueError):
        bytes(view)                      # released at the next wait_io
    w.close()
    for a, b in pairs:
        a.close()
        b.close()


def test_internal_buffer_bytes_per_batch_are_bounded(native_engine):
    bufsize = 1024
    w = gaio.Watcher(bufsize, engine=native_engine)
    pairs = [socket.socketpair() for _ in range(40)]
    for a, b in pairs:
        b.sendall(b"z" * 900)
    for a, b in pairs:
        w.read(a)
    seen = 0
    while seen < len(pairs):
        batch = w.wait_io(2)
        assert batch, "stalled with %d of %d reads done" % (seen, len(pairs))
        assert sum(r.size for r in batch if r.is_swap_buffer) <= 4 * bufsize
        seen += len(batch)
    w.close()
    for a, b in pairs:
        a.close()
        b.close()


def test_dropped_socket_is_released_without_wait_io(native_engine):
    import os
    w = gaio.Watcher(engine=native_engine)
    a, b = socket.socketpair()
    w.write(a, b"x")
    assert w.wait_io(2)
    before = len(os.listdir("/proc/self/fd"))
    assert w.stats()["watched"] == 1
    del a
    gc.collect()
    assert w.stats()["watched"] == 0
    assert len(os.listdir("/proc/self/fd")) == before - 1
    w.close()
    b.close()
