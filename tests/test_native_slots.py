"""Connection slots are reused with a new generation: a kernel event or a
completion for a freed connection never reaches the slot's next occupant."""
import socket

import pytest

import gaio
from conftest import collect

pytest.importorskip("gaio._native")


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
    results = collect(w, 128)
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
