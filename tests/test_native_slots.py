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


def test_sockets_found_again_after_the_slot_table_grew(native_engine):
    """The binding finds a socket's connection through its slot (the map's
    entry is the slot); the core grows its table of slots as connections
    come (a new array each time it doubles, 1,024 slots first), and every
    socket delegated before and after is still found: read, free, read."""
    w = gaio.Watcher(engine=native_engine)
    pairs = [socket.socketpair() for _ in range(1100)]
    try:
        for i, (a, b) in enumerate(pairs):
            w.read(a, repeat=(i % 2 == 0), ctx=i)  # a standing read holds its socket strongly
            w.read(b, ctx=-1 - i)
        assert w.stats()["watched"] == 2200
        for i, (a, b) in enumerate(pairs):
            w.write(b, b"%d" % i, quiet=True)  # found again: no second delegation
        got = {}
        while len(got) < 1100:
            for r in w.wait_io(1):
                assert r.error is None
                assert r.conn is pairs[r.ctx][0]
                got[r.ctx] = bytes(r.buffer)
        assert got == {i: b"%d" % i for i in range(1100)}
        for a, b in pairs:
            w.free(a)
            w.free(b)
        assert w.stats()["watched"] == 0
    finally:
        w.close()
        for a, b in pairs:
            a.close()
            b.close()
