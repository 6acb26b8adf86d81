"""wait_io() runs its whole batch without the GIL (native engines)."""
import socket
import threading
import time

import pytest

import gaio

pytest.importorskip("gaio._native")


def test_other_threads_run_while_wait_io_blocks(native_engine):
    w = gaio.Watcher(engine=native_engine)
    a, b = socket.socketpair()
    w.read(a)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.02)
        start = counter[0]
        began = time.monotonic()
        assert w.wait_io(0.3) == []
        blocked = time.monotonic() - began
        spun = counter[0] - start
    finally:
        stop.set()
        t.join(5)
        w.close()
        b.close()
    assert blocked >= 0.29
    # with the GIL held the spinner would be frozen for 0.3 s: it runs
    # millions of iterations per second when free
    assert spun > 10000, spun


def test_request_from_another_thread_wakes_the_waiter(native_engine):
    w = gaio.Watcher(engine=native_engine)
    a, b = socket.socketpair()
    b.sendall(b"ping")
    timer = threading.Timer(0.1, lambda: w.read(a, ctx="late"))
    timer.start()
    began = time.monotonic()
    results = []
    while not results and time.monotonic() - began < 5:
        results = w.wait_io(5)
    took = time.monotonic() - began
    data = bytes(results[0].buffer) if results else None
    timer.join()
    w.close()
    b.close()
    assert results and results[0].ctx == "late" and data == b"ping"
    assert took < 2
