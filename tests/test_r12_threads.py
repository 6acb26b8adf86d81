"""R12: a watcher starts at most one thread, the same for 1 or 5,000
connections. Counted both as Python sees them and as the kernel does
(/proc/self/task), which also catches native threads."""
import threading

import gaio
from conftest import collect, need_fds, os_thread_count


def _counts():
    return threading.active_count(), os_thread_count()


def test_a_watcher_starts_at_most_one_thread(engine):
    py0, os0 = _counts()
    watchers = [gaio.Watcher(engine=engine) for _ in range(3)]
    try:
        py1, os1 = _counts()
        assert py1 - py0 <= 3 and os1 - os0 <= 3
    finally:
        for w in watchers:
            w.close()


def test_thread_count_is_the_same_for_1_and_5000_connections(watcher, net):
    n = 5000
    need_fds(2 * n + 100)
    base = _counts()
    (c0, s0) = net.pair(unix=True)
    watcher.read(s0, bytearray(1))
    c0.sendall(b"1")
    collect(watcher, 1)
    watcher.read(s0, bytearray(1))
    one = _counts()
    pairs = net.pairs(n - 1, unix=True)
    for i, (_, server) in enumerate(pairs):
        if i % 2:
            watcher.read(server)
        else:
            watcher.read(server, bytearray(4), timeout=60)
    watcher.wait_io(0.05)
    many = _counts()
    for client, _ in pairs[:1000]:
        client.sendall(b"x")
    collect(watcher, 1000, timeout=20)
    busy = _counts()
    assert watcher.stats()["watched"] == n
    assert one[0] - base[0] <= 1 and one[1] - base[1] <= 1
    assert many == one, "threads with 1 connection %r, with %d: %r" % (one, n, many)
    assert busy == one
