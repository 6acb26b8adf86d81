"""Smoke test of the pure-Python engine (its author's own, quick checks)."""
import gc
import select
import socket
import time

import pytest

import gaio
from gaio import _python_core, _python_poller
from gaio._python_watcher import PythonWatcher


# Where select.epoll exists the engine uses it directly (_python_poller); the
# selectors path other platforms take is run here too.
_POLLERS = ["selectors"] + (["epoll"] if hasattr(select, "epoll") else [])


@pytest.fixture(params=_POLLERS)
def w(request, monkeypatch):
    poller = (_python_poller._EpollPoller if request.param == "epoll"
              else _python_poller._SelectorsPoller)
    monkeypatch.setattr(_python_core, "Poller", poller)
    watcher = PythonWatcher(16)
    yield watcher
    watcher.close()


def _pair():
    return socket.socketpair()


def _collect(w, n, timeout=3.0):
    out = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        out += w.wait_io(0.2)
    return out


def test_echo_through_internal_buffer(w):
    a, b = _pair()
    try:
        w.read(b, ctx="r")
        a.sendall(b"hello")
        [res] = _collect(w, 1)
        assert res.conn is b and res.is_swap_buffer and bytes(res.buffer) == b"hello"
        w.write(res.conn, res.buffer, ctx="w")
        view = res.buffer
        [wres] = _collect(w, 1)
        assert wres.buffer == b"hello" and type(wres.buffer) is bytes
        with pytest.raises(ValueError):
            bytes(view)
        assert a.recv(10) == b"hello"
    finally:
        a.close()


def test_swap_reads_per_batch_bounded(w):
    pairs = [_pair() for _ in range(20)]
    try:
        for a, b in pairs:
            a.sendall(b"x" * 100)
            w.read(b)
        batches = 0
        got = 0
        while got < 20:
            batch = w.wait_io(1)
            batches += 1
            assert sum(r.size for r in batch) <= 4 * 16
            got += len(batch)
        assert batches > 1
    finally:
        for a, b in pairs:
            a.close()


def test_read_full_and_deadline(w):
    a, b = _pair()
    try:
        buf = bytearray(10)
        w.read_full(b, buf, timeout=0.05)
        a.sendall(b"abc")
        start = time.monotonic()
        [res] = _collect(w, 1)
        assert isinstance(res.error, gaio.DeadlineExceededError)
        assert res.size == 3 and bytes(buf[:3]) == b"abc"
        assert 0.04 < time.monotonic() - start < 0.5
        w.read(b, bytearray(4), timeout=0)
        [res] = _collect(w, 1)
        assert isinstance(res.error, gaio.DeadlineExceededError) and res.size == 0
        assert w.stats()["timeouts"] == 2
    finally:
        a.close()


def test_free_and_garbage(w):
    a, b = _pair()
    w.read(b)
    w.free(b)
    [res] = _collect(w, 1)
    assert isinstance(res.error, gaio.ConnClosedError) and res.buffer is None
    with pytest.raises(ValueError):
        w.read(b)
    c, d = _pair()
    w.write(d, b"x")
    _collect(w, 1)
    assert w.stats()["watched"] == 1
    del d
    gc.collect()
    assert w.stats()["watched"] == 0
    assert c.recv(10) == b"x"
    assert c.recv(10) == b""
    a.close()
    c.close()


def test_eof_and_reset(w):
    a, b = _pair()
    w.read(b)
    a.close()
    [res] = _collect(w, 1)
    assert isinstance(res.error, EOFError) and res.size == 0 and res.buffer is None
    w.write(b, b"x" * 100000)
    [res] = _collect(w, 1)
    assert isinstance(res.error, (BrokenPipeError, ConnectionResetError))


def test_close_wakes_a_blocked_wait_io_and_second_waiter_is_refused():
    import threading
    w = PythonWatcher()
    box = {}

    def wait():
        try:
            box["r"] = w.wait_io(5)
        except BaseException as exc:
            box["e"] = exc

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    with pytest.raises(RuntimeError):
        w.wait_io(0)
    start = time.monotonic()
    w.close()
    t.join(2)
    assert not t.is_alive() and time.monotonic() - start < 1
    assert isinstance(box.get("e"), gaio.WatcherClosedError)
    with pytest.raises(gaio.WatcherClosedError):
        w.read(None)
    w.close()
    assert w.stats()["pending"] == 0


def test_garbage_collected_watcher_closes_its_descriptors():
    a, b = _pair()
    w = PythonWatcher()
    w.read(b)
    del w
    gc.collect()
    assert a.recv(10) == b""
    a.close()


def test_wait_io_timeout_rounds_up_and_validates(w):
    with pytest.raises(ValueError):
        w.wait_io(float("nan"))
    assert w.wait_io(-1) == []
    start = time.monotonic()
    assert w.wait_io(0.0123) == []
    assert time.monotonic() - start >= 0.0123


def test_view_of_the_last_batch_survives_close():
    w = PythonWatcher()
    a, b = _pair()
    w.read(b)
    a.sendall(b"kept")
    [res] = _collect(w, 1)
    w.close()
    assert bytes(res.buffer) == b"kept"
    a.close()
