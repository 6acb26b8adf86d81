"""R10: wait_io(timeout) blocks without the GIL until results are ready, returns
every result ready, [] at the timeout; negative polls; NaN is a ValueError; one
waiter at a time; close() from another thread wakes it with WatcherClosedError."""
import math
import threading
import time

import pytest

import gaio
from conftest import collect, run_in_thread, wait_readable


@pytest.mark.parametrize("timeout", [0.0001, 0.0015, 0.0105, 0.05])
def test_timeout_returns_empty_after_at_least_the_timeout(watcher, timeout):
    start = time.monotonic()
    assert watcher.wait_io(timeout) == []
    elapsed = time.monotonic() - start
    assert elapsed >= timeout, "waited %.6fs for %.6fs: timeouts must round up" % (
        elapsed, timeout)
    assert elapsed < timeout + 0.2


def test_timeout_with_requests_pending(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(4))
    start = time.monotonic()
    assert watcher.wait_io(0.1) == []
    assert 0.1 <= time.monotonic() - start < 0.3


@pytest.mark.parametrize("timeout", [0, -1, -0.5, -1e18, -math.inf])
def test_zero_or_negative_timeout_polls(watcher, pair, timeout):
    start = time.monotonic()
    assert watcher.wait_io(timeout) == []
    assert time.monotonic() - start < 0.1
    client, server = pair()
    client.sendall(b"p")
    wait_readable(server)
    watcher.read(server, bytearray(1))
    results = []
    end = time.monotonic() + 2
    while not results and time.monotonic() < end:
        results = watcher.wait_io(timeout)
    assert len(results) == 1 and results[0].size == 1


def test_nan_timeout_is_a_value_error(watcher):
    with pytest.raises(ValueError):
        watcher.wait_io(math.nan)
    with pytest.raises(TypeError):
        watcher.wait_io("1")
    assert watcher.wait_io(0) == []


def test_integer_and_keyword_timeout(watcher):
    assert watcher.wait_io(0) == []
    assert watcher.wait_io(timeout=0.01) == []


def test_none_blocks_until_a_result(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(8), ctx="r")
    timer = threading.Timer(0.2, client.sendall, args=(b"wake",))
    timer.start()
    start = time.monotonic()
    t, box = run_in_thread(watcher.wait_io)
    t.join(5)
    timer.join(1)
    assert not t.is_alive(), "wait_io(None) did not return after a result"
    assert "error" not in box, box
    if not box["result"]:
        pytest.fail("wait_io(None) returned an empty list")
    assert box["result"][0].ctx == "r"
    assert time.monotonic() - start >= 0.19


def test_returns_every_result_ready_in_one_batch(watcher, net):
    pairs = net.pairs(10)
    for i, (client, server) in enumerate(pairs):
        client.sendall(b"%d" % i)
    for i, (_, server) in enumerate(pairs):
        wait_readable(server)
    for i, (_, server) in enumerate(pairs):
        watcher.read(server, bytearray(4), ctx=i)
    time.sleep(0.05)
    batch = watcher.wait_io(1.0)
    assert sorted(r.ctx for r in batch) == list(range(10))
    assert isinstance(batch, list)


def test_results_come_in_completion_order(watcher, net):
    pairs = net.pairs(4)
    for i, (_, server) in enumerate(pairs):
        watcher.read(server, bytearray(4), ctx=i)
    order = [2, 0, 3, 1]
    seen = []
    for i in order:
        pairs[i][0].sendall(b"x")
        seen.extend(r.ctx for r in collect(watcher, 1))
    assert seen == order


def test_wait_io_does_not_hold_the_gil(watcher):
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        before = counter[0]
        watcher.wait_io(0.3)
        during = counter[0] - before
    finally:
        stop.set()
        t.join(5)
    assert during > 1000, "another thread ran only %d steps during wait_io" % during


def test_second_concurrent_waiter_is_a_runtime_error(watcher, pair):
    client, server = pair()
    t, box = run_in_thread(watcher.wait_io, 5.0)
    time.sleep(0.1)
    assert t.is_alive()
    for timeout in (0, 0.1, None):
        with pytest.raises(RuntimeError) as info:
            watcher.wait_io(timeout)
        assert not isinstance(info.value, gaio.WatcherClosedError)
    watcher.write(server, b"release")
    t.join(5)
    assert not t.is_alive()
    results = box.get("result") or collect(watcher, 1)
    assert results[0].size == 7
    # the first waiter is gone: waiting is allowed again
    assert watcher.wait_io(0) == []


def test_close_from_another_thread_wakes_a_blocked_wait_io(watcher):
    t, box = run_in_thread(watcher.wait_io, 10.0)
    time.sleep(0.1)
    assert t.is_alive()
    start = time.monotonic()
    watcher.close()
    t.join(5)
    assert not t.is_alive(), "close() did not wake wait_io"
    assert time.monotonic() - start < 1.0
    assert isinstance(box.get("error"), gaio.WatcherClosedError), box


def test_close_wakes_a_wait_io_without_timeout(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(4))
    t, box = run_in_thread(watcher.wait_io)
    time.sleep(0.1)
    watcher.close()
    t.join(5)
    assert not t.is_alive(), "close() did not wake wait_io(None)"
    assert isinstance(box.get("error"), gaio.WatcherClosedError), box


def test_wait_io_after_close(watcher):
    watcher.close()
    with pytest.raises(gaio.WatcherClosedError):
        watcher.wait_io(0)
    with pytest.raises(gaio.WatcherClosedError):
        watcher.wait_io()


def test_results_are_op_results(watcher, pair):
    client, server = pair()
    watcher.write(server, b"r")
    res = collect(watcher, 1)[0]
    assert isinstance(res, gaio.OpResult)
    assert res.op == gaio.Op.WRITE and isinstance(res.op, gaio.Op)
    for name in ("op", "conn", "ctx", "buffer", "size", "error", "is_swap_buffer"):
        with pytest.raises(AttributeError):
            setattr(res, name, None)
    assert "WRITE" in repr(res)
