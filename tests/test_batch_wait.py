"""Watcher(batch_wait=): a wait_io() that had to sleep for its first result
gathers what else arrives within batch_wait of the start of that sleep into
the same batch (docs/SPEC.md, "Choices": batch_wait). It never waits past its
own timeout, adds nothing when results are ready at once, and is off by
default.
"""
import threading
import time

import pytest

import gaio
from conftest import collect


def _send_later(sock, data, delay):
    timer = threading.Timer(delay, sock.sendall, args=(data,))
    timer.start()
    return timer


@pytest.fixture
def gathering(engine):
    w = gaio.Watcher(engine=engine, batch_wait=0.5)
    yield w
    w.close()


def test_arrivals_within_the_window_share_one_batch(gathering, net):
    (a_client, a), (b_client, b) = net.pairs(2)
    gathering.read(a, repeat=True, ctx="a")
    gathering.read(b, repeat=True, ctx="b")
    assert gathering.wait_io(timeout=0.05) == []
    timers = [_send_later(a_client, b"first", 0.05), _send_later(b_client, b"second", 0.15)]
    try:
        started = time.monotonic()
        batch = gathering.wait_io(timeout=5)
        took = time.monotonic() - started
    finally:
        for t in timers:
            t.join()
    assert sorted((r.ctx, bytes(r.buffer)) for r in batch) == [("a", b"first"), ("b", b"second")]
    assert 0.14 < took < 2.0  # the window (0.5 s from the start of the sleep) held it


def test_without_batch_wait_the_first_arrival_ends_the_wait(watcher, net):
    (a_client, a), (b_client, b) = net.pairs(2)
    watcher.read(a, repeat=True, ctx="a")
    watcher.read(b, repeat=True, ctx="b")
    assert watcher.wait_io(timeout=0.05) == []
    timers = [_send_later(a_client, b"first", 0.05), _send_later(b_client, b"second", 0.6)]
    try:
        first = watcher.wait_io(timeout=5)
        assert [r.ctx for r in first] == ["a"]
        rest = collect(watcher, 1)
        assert [r.ctx for r in rest] == ["b"]
    finally:
        for t in timers:
            t.join()


def test_the_window_counts_from_the_start_of_the_sleep(gathering, net):
    """A first result that comes after the window has passed ends the wait at
    once: sparse traffic pays no latency for batch_wait."""
    client, server = net.pair()
    gathering.read(server, repeat=True)
    started = time.monotonic()
    timer = _send_later(client, b"late", 0.7)  # past batch_wait = 0.5
    try:
        batch = gathering.wait_io(timeout=5)
        took = time.monotonic() - started
    finally:
        timer.join()
    assert [bytes(r.buffer) for r in batch] == [b"late"]
    assert 0.65 < took < 0.7 + 0.35  # not 0.7 + 0.5


def test_results_ready_at_once_are_not_held(gathering, net):
    client, server = net.pair()
    gathering.read(server, repeat=True)
    client.sendall(b"already here")
    time.sleep(0.05)
    started = time.monotonic()
    batch = collect(gathering, 1)
    assert time.monotonic() - started < 0.4
    assert bytes(batch[0].buffer) == b"already here"


def test_never_past_the_callers_timeout(engine, net):
    w = gaio.Watcher(engine=engine, batch_wait=1.0)
    try:
        client, server = net.pair()
        w.read(server, repeat=True)
        timer = _send_later(client, b"x", 0.05)
        started = time.monotonic()
        batch = w.wait_io(timeout=0.2)
        took = time.monotonic() - started
        timer.join()
        assert [bytes(r.buffer) for r in batch] == [b"x"]
        assert took < 0.6
    finally:
        w.close()


def test_close_from_another_thread_during_the_window(engine, net):
    w = gaio.Watcher(engine=engine, batch_wait=0.3)
    client, server = net.pair()
    w.read(server, repeat=True)
    timer = _send_later(client, b"x", 0.05)
    closer = threading.Timer(0.15, w.close)
    closer.start()
    try:
        try:
            w.wait_io(timeout=5)
        except gaio.WatcherClosedError:
            pass
        # a loaded machine may run the closer only after the window ended and
        # the wait returned its result: what must hold is that close() ends
        # the watcher whenever it lands
        closer.join()
        with pytest.raises(gaio.WatcherClosedError):
            w.wait_io(timeout=0)
    finally:
        timer.join()
        closer.join()
        w.close()


@pytest.mark.parametrize("value", [None, 0, 0.0, 1, 0.0001])
def test_accepted_values(engine, value):
    gaio.Watcher(engine=engine, batch_wait=value).close()
