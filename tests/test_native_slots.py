"""Connection slots are reused with a new generation: a kernel event or a
completion for a freed connection never reaches the slot's next occupant."""
import socket

import pytest

import gaio

pytest.importorskip("gaio._native")


@pytest.fixture(params=["uring", "epoll", "kqueue"])
def native_engine(request):
    reason = gaio.available_engines().get(request.param)
    if reason is not None:
        pytest.skip("engine %r unavailable: %s" % (request.param, reason))
    return request.param


def _collect(w, count, limit=5.0):
    import time
    out = []
    end = time.monotonic() + limit
    while len(out) < count and time.monotonic() < end:
        out.extend(w.wait_io(max(0.0, end - time.monotonic())))
    return out


def test_freed_slots_reused_in_the_same_batch(native_engine):
    w = gaio.Watcher(engine=native_engine)
    old = [socket.socketpair() for _ in range(64)]
    for a, b in old:
        w.read(a, ctx=("old", id(a)))
        b.sendall(b"old-bytes")        # events pending for every old connection
    for a, _ in old:
        w.free(a)                      # slots free before any wait_io
    new = [socket.socketpair() for _ in range(64)]
    for i, (a, b) in enumerate(new):
        w.read(a, ctx=("new", i))      # the same slots, next generation
        b.sendall(b"new-%d" % i)
    results = _collect(w, 128)
    assert len(results) == 128
    for r in results:
        if r.ctx[0] == "old":
            assert isinstance(r.error, gaio.ConnClosedError) and r.size == 0
        else:
            assert r.error is None
            assert bytes(r.buffer) == b"new-%d" % r.ctx[1]
    assert w.stats()["watched"] == 64
    w.close()
    for a, b in old + new:
        b.close()
