"""R23: fileno() and next_timeout(), to drive a watcher from another loop.

fileno() is readable whenever wait_io(0) has work to do (I/O that became
possible, requests queued from other threads, ended requests) and not while
there is nothing to do. next_timeout() gives the seconds until the earliest
deadline (0 once passed) or None. The asyncio driver is in
test_v02_servers.py.
"""
import io
import select
import socket
import threading
import time

import pytest

import gaio
from conftest import collect


def _readable(fd, timeout=0.0):
    r, _, _ = select.select([fd], [], [], timeout)
    return bool(r)


def _drain(w):
    """wait_io(0) until the descriptor says there is nothing to do."""
    out = []
    for _ in range(50):
        if not _readable(w.fileno()):
            return out
        out += w.wait_io(0)
    pytest.fail("fileno() stays readable: %r" % (out,))


@pytest.mark.usefixtures("needs_fileno")
def test_idle_watcher_is_not_readable(watcher, pair):
    fd = watcher.fileno()
    assert isinstance(fd, int) and fd >= 0
    assert not _readable(fd)
    client, server = pair()
    watcher.read(server, bytearray(4))  # a request made on this very thread
    assert _readable(fd, 1.0)  # work to do: start it
    assert _drain(watcher) == []
    assert not _readable(fd, 0.05)  # waiting for bytes: nothing to do


@pytest.mark.usefixtures("needs_fileno")
def test_readable_when_bytes_arrive_and_results_are_ready(watcher, pair):
    client, server = pair()
    fd = watcher.fileno()
    watcher.read(server, bytearray(4), ctx="r")
    _drain(watcher)
    client.sendall(b"data")
    assert _readable(fd, 2.0)
    results = watcher.wait_io(0)
    results += _drain(watcher)
    assert [r.ctx for r in results] == ["r"] and bytes(results[0].buffer) == b"data"
    assert not _readable(fd, 0.05)


@pytest.mark.usefixtures("needs_fileno")
def test_readable_for_requests_and_free_from_other_threads(watcher, pair):
    client, server = pair()
    fd = watcher.fileno()
    client.sendall(b"x")
    t = threading.Thread(target=watcher.read, args=(server,), kwargs={"ctx": "t"})
    t.start()
    t.join()
    assert _readable(fd, 2.0)
    results = []
    end = time.monotonic() + 2
    while not results and time.monotonic() < end:
        if _readable(fd, 0.1):
            results += watcher.wait_io(0)
    assert [r.ctx for r in results] == ["t"]
    _drain(watcher)
    watcher.read(server, ctx="pending")
    _drain(watcher)
    t = threading.Thread(target=watcher.free, args=(server,))
    t.start()
    t.join()
    assert _readable(fd, 2.0)
    results = watcher.wait_io(0) + _drain(watcher)
    assert [r.ctx for r in results] == ["pending"]
    assert isinstance(results[0].error, gaio.ConnClosedError)


def test_next_timeout(watcher, pair):
    assert watcher.next_timeout() is None
    client, server = pair()
    watcher.read(server, bytearray(1), timeout=5.0, ctx="late")
    watcher.read(client, bytearray(1), timeout=0.1, ctx="soon")
    left = watcher.next_timeout()
    assert 0 < left <= 0.1
    time.sleep(0.12)
    assert watcher.next_timeout() == 0
    results = watcher.wait_io(0)
    assert [r.ctx for r in results] == ["soon"]
    assert 4 < watcher.next_timeout() <= 5.0
    watcher.free(server)
    collect(watcher, 1)
    assert watcher.next_timeout() is None


def test_closed_watcher_raises(engine):
    w = gaio.Watcher(engine=engine)
    try:
        w.fileno()
    except io.UnsupportedOperation:
        pass  # libkqueue (see conftest's needs_fileno): closed is checked first all the same
    finally:
        w.close()
    for call in (w.fileno, w.next_timeout):
        with pytest.raises(gaio.WatcherClosedError):
            call()


# three rounds in the README's command, six in the slow pass
@pytest.mark.usefixtures("needs_fileno")
@pytest.mark.parametrize("rounds", [3, pytest.param(6, marks=pytest.mark.slow)])
def test_a_loop_driven_only_by_fileno_never_misses_work(watcher, net, rounds):
    """An echo of 16 MiB, several times, with wait_io(0) called only when
    fileno() is readable (no deadline is pending, so next_timeout() is None):
    whenever the descriptor stays quiet, wait_io(0) has nothing to hand out.
    Reads put off because a batch's internal buffer was spent (4 x bufsize)
    are work for the next wait: the descriptor must say so."""
    data = bytes(range(256)) * (1 << 16)
    listener = net.listener()
    address = listener.getsockname()
    fd = watcher.fileno()
    watcher.accept(listener, repeat=True)
    for _ in range(rounds):
        client = net.track(socket.create_connection(address))
        got = bytearray()
        sender = threading.Thread(target=client.sendall, args=(data,), daemon=True)
        sender.start()

        # The reader says when it is done, so the loop need not sit out a
        # quiet second after the last echo.
        done, done_signal = net.pair(unix=True)

        def read_all(client=client, got=got, done_signal=done_signal):
            client.settimeout(10)
            try:
                while len(got) < len(data):
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        return
                    got.extend(chunk)
            finally:
                done_signal.send(b"x")

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        end = time.monotonic() + 20
        while reader.is_alive() and time.monotonic() < end:
            assert watcher.next_timeout() is None
            ready, _, _ = select.select([fd, done], [], [], 1.0)
            if done in ready:
                break
            if not ready:  # quiet for a long while: nothing owed
                quiet = watcher.wait_io(0)
                assert quiet == [], "fileno() was not readable, yet wait_io(0) had work"
                continue
            for res in watcher.wait_io(0):
                if res.op == gaio.Op.ACCEPT:
                    watcher.read(net.track(res.accepted), repeat=True)
                elif res.error is None:
                    watcher.write(res.conn, res.buffer, quiet=True)
                else:
                    watcher.free(res.conn)
        reader.join(1)
        sender.join(1)
        assert bytes(got) == data
        client.close()
