"""R22: quiet writes, write(..., quiet=True) and sendfile(..., quiet=True).

A quiet request that succeeds delivers nothing (stats: quiet_done, not
completed); one that fails (socket error, deadline, free) delivers its result
with its ctx. Order with other writes is as usual.
"""
import threading
import time

import gaio
from conftest import STUCK, collect, pattern, recv_exactly, reset, stuck_pattern


def test_quiet_writes_succeed_silently_in_order(watcher, pair):
    client, server = pair()
    watcher.write(server, b"one ", quiet=True)
    watcher.write(server, [b"two", b" "], quiet=True)
    watcher.write(server, b"three", ctx="loud")
    results = collect(watcher, 1)
    assert [r.ctx for r in results] == ["loud"]
    assert recv_exactly(client, 13) == b"one two three"
    assert watcher.wait_io(0.02) == []
    stats = watcher.stats()
    assert stats["quiet_done"] == 2 and stats["completed"] == 1
    assert stats["submitted"] == 3 and stats["pending"] == 0
    assert stats["bytes_written"] == 13


def test_quiet_write_failures_are_delivered(watcher, pair):
    client, server = pair()
    reset(client)
    watcher.write(server, b"x" * 100000, ctx="gone", quiet=True)
    res = collect(watcher, 1)[0]
    assert res.ctx == "gone" and isinstance(res.error, (BrokenPipeError, ConnectionResetError))
    client2, server2 = pair()
    watcher.write(server2, stuck_pattern(), ctx="late", quiet=True, timeout=0.1)
    res = collect(watcher, 1)[0]
    assert res.ctx == "late" and isinstance(res.error, gaio.DeadlineExceededError)
    assert 0 < res.size < STUCK
    client3, server3 = pair()
    watcher.write(server3, stuck_pattern(), ctx="freed", quiet=True)
    assert watcher.wait_io(0.02) == []
    watcher.free(server3)
    res = collect(watcher, 1)[0]
    assert res.ctx == "freed" and isinstance(res.error, gaio.ConnClosedError)
    stats = watcher.stats()
    assert stats["quiet_done"] == 0 and stats["completed"] == 3


def test_quiet_sendfile(watcher, pair, tmp_path):
    client, server = pair()
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as f:
        watcher.sendfile(server, f, quiet=True)
        watcher.sendfile(server, f, 5, 100, quiet=True, ctx="short")
        res = collect(watcher, 1)[0]
    assert res.ctx == "short" and isinstance(res.error, EOFError) and res.size == 5
    assert recv_exactly(client, 15) == b"012345678956789"
    assert watcher.stats()["quiet_done"] == 1


def test_quiet_echo_of_internal_buffer_views(watcher, pair):
    client, server = pair()
    watcher.read(server, repeat=True, ctx="r")
    sent = b""
    for i in range(20):
        msg = b"message %d;" % i
        client.sendall(msg)
        sent += msg
        for res in collect(watcher, 1):
            assert res.ctx == "r" and res.error is None
            watcher.write(server, res.buffer, quiet=True)
    assert watcher.wait_io(0.02) == []  # performs the last write: nothing to deliver
    assert recv_exactly(client, len(sent)) == sent
    watcher.free(server)
    assert isinstance(collect(watcher, 1)[0].error, gaio.ConnClosedError)
    stats = watcher.stats()
    assert stats["quiet_done"] >= 1 and stats["pending"] == 0


def test_quiet_write_behind_a_waiting_write_keeps_its_place(watcher, pair):
    # a quiet write may be sent at once only when nothing of the connection's
    # writes waits: here a large write is stuck on a peer that does not read
    client, server = pair()
    big = pattern(4 << 20, seed=22)
    watcher.write(server, big, ctx="big")
    assert watcher.wait_io(0.05) == []
    watcher.write(server, b"tail", quiet=True)
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("d", recv_exactly(client, len(big) + 4, 30)))
    reader.start()
    results = []
    end = time.monotonic() + 30
    while reader.is_alive() and time.monotonic() < end:
        results += watcher.wait_io(0.05)  # io_uring sends "tail" in the wait after "big"
    reader.join(1)
    assert [r.ctx for r in results] == ["big"]
    assert box["d"] == big + b"tail"
    stats = watcher.stats()
    assert stats["quiet_done"] == 1 and stats["pending"] == 0


def test_quiet_write_larger_than_the_socket_takes_goes_whole_and_first(watcher, pair):
    # the socket takes part of it at once (when nothing waits, a quiet write
    # is tried in the call): the rest follows before the next write, R3
    client, server = pair()
    watcher.write(server, b"head", ctx="head")  # delegated, nothing queued after it
    assert [r.ctx for r in collect(watcher, 1)] == ["head"]
    big = pattern(4 << 20, seed=23)
    watcher.write(server, big, quiet=True)
    watcher.write(server, b"tail", ctx="tail")
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("d", recv_exactly(client, len(big) + 8, 30)))
    reader.start()
    results = []
    end = time.monotonic() + 30
    while (reader.is_alive() or not results) and time.monotonic() < end:
        results += watcher.wait_io(0.05)
    reader.join(1)
    assert [r.ctx for r in results] == ["tail"]
    assert box["d"] == b"head" + big + b"tail"
    stats = watcher.stats()
    assert stats["quiet_done"] == 1 and stats["completed"] == 2 and stats["pending"] == 0
    assert stats["bytes_written"] == len(big) + 8
