"""io_uring's SINGLE_ISSUER + DEFER_TASKRUN ring ("defer-taskrun", Linux 6.1):
only the thread that first waits may enter the ring, and only it runs the
completions. wait_io() from another thread, fileno(), and close() from
another thread must still work: the engine then leaves that ring for one any
thread may enter, and what was in flight on the old ring is submitted again,
with no byte lost, doubled or reordered and no buffer touched after it was
given back (the kernel's writes are invisible to ASan: checked here).
GAIO_URING_AVOID=defer-taskrun forces the fallback from the start.
"send-at-once" (a quiet write's send() from the requesting thread) needs
that ring: without DEFER_TASKRUN a send() runs the ring's task work; so does
"send-large-at-once" (the same, for quiet writes of 4 KiB or more), and
"min-wait" (batch_wait as the kernel's min-wait, which falls back to the
first completion only on that ring), and "send-when-quiet" (a small quiet
write's send() after a wait that brought at most 2 completions). test_batch_wait.py checks its timing.
"""
import threading
import time

import pytest

import gaio
from conftest import collect, pattern, recv_exactly

TECH = "defer-taskrun"


@pytest.fixture
def single_issuer(monkeypatch):
    reason = gaio.available_engines()["uring"]
    if reason is not None:
        pytest.skip("io_uring unavailable here: %s" % reason)
    monkeypatch.setenv("GAIO_URING_AVOID", "")  # everything on, send-at-once too
    with gaio.Watcher(engine="uring") as w:
        why = w._techniques()[TECH]
    if why is not None:
        pytest.skip("this kernel has no %s: %s" % (TECH, why))


def in_thread(fn):
    """Run fn in a new thread that then exits: its return value or exception."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert not t.is_alive()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_the_technique_is_on_and_can_be_avoided(single_issuer, monkeypatch):
    monkeypatch.delenv("GAIO_URING_AVOID")  # the defaults
    with gaio.Watcher(engine="uring") as w:
        assert w._techniques()[TECH] is None
        assert "off by default" in w._techniques()["send-at-once"]
    monkeypatch.setenv("GAIO_URING_AVOID", "")
    with gaio.Watcher(engine="uring") as w:
        assert w._techniques()["send-at-once"] is None
    monkeypatch.setenv("GAIO_URING_AVOID", TECH)
    with gaio.Watcher(engine="uring") as w:
        assert "GAIO_URING_AVOID" in w._techniques()[TECH]
        assert w._techniques()["send-at-once"] == "needs defer-taskrun"
    monkeypatch.setenv("GAIO_URING_AVOID", "send-at-once")
    with gaio.Watcher(engine="uring") as w:
        assert w._techniques()[TECH] is None
        assert "GAIO_URING_AVOID" in w._techniques()["send-at-once"]


def test_min_wait_needs_the_single_issuer_and_is_off_by_default(single_issuer, monkeypatch):
    with gaio.Watcher(engine="uring") as w:  # the fixture turned everything on
        why = w._techniques()["min-wait"]
    if why is not None:
        assert "6.12" in why
        pytest.skip(why)
    monkeypatch.setenv("GAIO_URING_AVOID", TECH)
    with gaio.Watcher(engine="uring") as w:
        assert w._techniques()["min-wait"] == "needs defer-taskrun"
    monkeypatch.delenv("GAIO_URING_AVOID")
    with gaio.Watcher(engine="uring", batch_wait=0.001) as w:
        assert "off by default" in w._techniques()["min-wait"]


def test_min_wait_gathers_within_the_window_and_never_past_the_timeout(single_issuer, net):
    """test_batch_wait.py's window, with the kernel's min-wait doing it."""
    with gaio.Watcher(engine="uring") as w:
        if w._techniques()["min-wait"] is not None:
            pytest.skip(w._techniques()["min-wait"])
    (a_client, a), (b_client, b) = net.pairs(2)
    with gaio.Watcher(engine="uring", batch_wait=0.5) as w:
        w.read(a, repeat=True, ctx="a")
        w.read(b, repeat=True, ctx="b")
        assert w.wait_io(timeout=0.05) == []
        timers = [threading.Timer(0.05, a_client.sendall, args=(b"first",)),
                  threading.Timer(0.15, b_client.sendall, args=(b"second",))]
        for t in timers:
            t.start()
        started = time.monotonic()
        batch = w.wait_io(timeout=5)
        took = time.monotonic() - started
        for t in timers:
            t.join()
        assert sorted((r.ctx, bytes(r.buffer)) for r in batch) == [("a", b"first"), ("b", b"second")]
        assert 0.14 < took < 2.0
        late = threading.Timer(0.7, a_client.sendall, args=(b"late",))  # past the window
        started = time.monotonic()
        late.start()
        batch = w.wait_io(timeout=5)
        took = time.monotonic() - started
        late.join()
        assert [bytes(r.buffer) for r in batch] == [b"late"]
        assert 0.65 < took < 0.7 + 0.35
        timer = threading.Timer(0.05, a_client.sendall, args=(b"x",))
        started = time.monotonic()
        timer.start()
        batch = w.wait_io(timeout=0.2)  # the caller's timeout bounds the window
        took = time.monotonic() - started
        timer.join()
        assert [bytes(r.buffer) for r in batch] == [b"x"]
        assert took < 0.6


@pytest.mark.parametrize("avoid", ["", "send-large-at-once"])
def test_a_large_quiet_write_goes_out_before_the_next_wait(single_issuer, pair, monkeypatch, avoid):
    if avoid:
        monkeypatch.setenv("GAIO_URING_AVOID", "multishot-recv,send-at-once," + avoid)
    else:
        monkeypatch.delenv("GAIO_URING_AVOID")  # the defaults
    client, server = pair()
    large, small = pattern(8192), b"small"
    with gaio.Watcher(engine="uring") as w:
        assert (w._techniques()["send-large-at-once"] is None) == (not avoid)
        w.read(server, ctx="r", repeat=True)  # as an echo server's connection
        assert w.wait_io(0.01) == []  # this thread is the issuer
        w.write(server, large, quiet=True)
        assert w.stats()["quiet_done"] == (0 if avoid else 1)
        if not avoid:  # sent by the write itself: no wait_io yet
            client.settimeout(5)
            assert recv_exactly(client, len(large)) == large
        w.write(server, small, quiet=True)  # small: a SEND in a wait
        for _ in range(100):  # a write behind another one goes in the wait after its end
            if w.stats()["quiet_done"] == 2:
                break
            assert w.wait_io(0.01) == []
        assert w.stats()["quiet_done"] == 2
        expected = small if not avoid else large + small
        assert recv_exactly(client, len(expected)) == expected


@pytest.mark.parametrize("avoid", ["multishot-recv,send-at-once,min-wait",
                                   "multishot-recv,send-at-once,min-wait,send-when-quiet"])
def test_a_small_quiet_write_goes_out_at_once_after_a_quiet_wait(single_issuer, net, monkeypatch,
                                                                  avoid):
    """send-when-quiet: after a wait that brought at most 2 completions a SEND
    would share its enter with nothing, so the write's own send() goes; after
    a busier wait the SENDs go together in the next one."""
    monkeypatch.setenv("GAIO_URING_AVOID", avoid)
    on = "send-when-quiet" not in avoid
    pairs = net.pairs(4)
    with gaio.Watcher(engine="uring") as w:
        assert (w._techniques()["send-when-quiet"] is None) == on
        for i, (_, server) in enumerate(pairs):
            w.read(server, ctx=i, repeat=True)
        assert w.wait_io(0.01) == []  # this thread is the issuer; nothing came
        client, server = pairs[0]
        w.write(server, b"quiet", quiet=True)
        assert w.stats()["quiet_done"] == (1 if on else 0)
        for client_i, _ in pairs:
            client_i.sendall(b"x")
        time.sleep(0.05)
        assert len(collect(w, 4)) == 4  # the first write's SEND went with it when not at once
        assert w.stats()["quiet_done"] == 1
        w.write(server, b"busy", quiet=True)  # after four completions: a SEND in the next wait
        assert w.stats()["quiet_done"] == 1
        for _ in range(100):
            if w.stats()["quiet_done"] == 2:
                break
            assert w.wait_io(0.01) == []
        client.settimeout(5)
        assert recv_exactly(client, 9) == b"quietbusy"


def test_a_thread_that_waits_after_the_issuer_exited_gets_what_was_in_flight(single_issuer, pair):
    client, server = pair()
    buf = bytearray(16)
    with gaio.Watcher(engine="uring") as w:
        w.read(server, buf, ctx="own buffer")
        w.read(server, ctx="internal", repeat=True)
        # the issuer: submits both reads, then exits with them in flight
        assert in_thread(lambda: w.wait_io(0.02)) == []
        assert w._techniques()[TECH] is None
        client.sendall(b"0123456789abcdef")
        first = collect(w, 1)[0]  # this thread waits: the ring moves
        assert "second thread" in w._techniques()[TECH]
        assert w._techniques()["send-at-once"] == "needs defer-taskrun"
        assert first.ctx == "own buffer" and bytes(buf) == b"0123456789abcdef"
        client.sendall(b"more")
        res = collect(w, 1)[0]
        assert res.ctx == "internal" and bytes(res.buffer) == b"more"


def test_the_issuer_alive_but_busy_elsewhere_loses_nothing(single_issuer, pair):
    client, server = pair()
    with gaio.Watcher(engine="uring") as w:
        go, done = threading.Event(), threading.Event()

        def issuer():
            w.read(server, ctx="r", repeat=True)
            assert w.wait_io(0.02) == []
            go.set()
            done.wait(30)  # alive, not waiting: its task work would never run

        t = threading.Thread(target=issuer)
        t.start()
        try:
            assert go.wait(30)
            got = b""
            for i in range(50):
                client.sendall(b"%04d" % i)
                while len(got) < 4 * (i + 1):
                    for res in collect(w, 1):
                        assert res.error is None
                        got += bytes(res.buffer)
            assert got == b"".join(b"%04d" % i for i in range(50))
        finally:
            done.set()
            t.join()


def test_writes_in_flight_move_without_a_byte_lost_or_doubled(single_issuer, net):
    client, server = net.pair(unix=True)  # small socket buffers: the writes stay in flight
    data = pattern(3 << 20)
    with gaio.Watcher(engine="uring") as w:
        w.write(server, data[: 1 << 20], ctx="a")
        w.write(server, data[1 << 20:], ctx="b")
        assert in_thread(lambda: w.wait_io(0.02)) == []
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(recv_exactly(client, len(data))))
        reader.start()
        results = collect(w, 2, timeout=30)
        reader.join(30)
        assert [r.ctx for r in results] == ["a", "b"] and all(r.error is None for r in results)
        assert bytes(got) == data


def test_a_deadline_cancelled_on_the_old_ring_ends_with_its_deadline(single_issuer, pair):
    client, server = pair()
    buf = bytearray(8)
    with gaio.Watcher(engine="uring") as w:
        w.read(server, buf, ctx="r", timeout=0.1)
        w.read(server, ctx="behind")
        assert in_thread(lambda: w.wait_io(0.01)) == []
        time.sleep(0.15)  # past the deadline: its cancel is asked of the old ring
        res = collect(w, 1)[0]
        assert res.ctx == "r" and isinstance(res.error, gaio.DeadlineExceededError)
        client.sendall(b"later")
        res = collect(w, 1)[0]
        assert res.ctx == "behind" and bytes(res.buffer) == b"later"
        client.sendall(b"too late")
        time.sleep(0.02)
        assert buf == bytearray(8)


def test_standing_accept_and_reads_keep_serving_across_the_move(single_issuer, net):
    listener = net.listener()
    port = listener.getsockname()[1]
    with gaio.Watcher(engine="uring") as w:
        w.accept(listener, repeat=True, ctx="accept")
        assert in_thread(lambda: w.wait_io(0.02)) == []
        import socket
        clients = [net.track(socket.create_connection(("127.0.0.1", port))) for _ in range(5)]
        echoed = 0
        for c in clients:
            c.sendall(b"hello")
        deadline = time.monotonic() + 10
        while echoed < 5 and time.monotonic() < deadline:
            for res in w.wait_io(1):
                if res.ctx == "accept":
                    w.read(res.accepted, repeat=True, ctx="read")
                elif res.error is None:
                    w.write(res.conn, res.buffer, quiet=True)
                    echoed += 1
        assert echoed == 5
        w.wait_io(0.01)  # submits the last echoes
        assert all(recv_exactly(c, 5) == b"hello" for c in clients)


def test_fileno_moves_to_a_ring_any_thread_may_wait_on(single_issuer, pair):
    client, server = pair()
    with gaio.Watcher(engine="uring") as w:
        w.read(server, ctx="r")
        assert w.wait_io(0.01) == []
        w.fileno()
        assert "fileno()" in w._techniques()[TECH]
        client.sendall(b"x")
        assert bytes(collect(w, 1)[0].buffer) == b"x"


def test_close_from_a_thread_that_is_not_the_issuer_lets_every_buffer_go(single_issuer, net):
    pairs = net.pairs(50, unix=True)
    w = gaio.Watcher(engine="uring")
    bufs = []
    for client, server in pairs:
        buf = bytearray(64)
        bufs.append(buf)
        w.read(server, buf)
        w.write(server, b"x" * (1 << 20))
    assert w.wait_io(0.05) == []  # this thread is the issuer
    in_thread(w.close)
    for client, _ in pairs:
        try:
            client.send(b"too late" * 8)
        except OSError:
            pass
    time.sleep(0.05)
    assert all(buf == bytearray(64) for buf in bufs)
    assert w.stats()["watched"] == 0


def test_free_from_another_thread_shows_the_peer_the_end_at_once(single_issuer, pair):
    client, server = pair()
    with gaio.Watcher(engine="uring") as w:
        w.read(server, ctx="r", repeat=True)
        assert w.wait_io(0.01) == []
        in_thread(lambda: w.free(server))
        client.settimeout(5)
        assert client.recv(16) == b""  # the end, not a hang
        res = collect(w, 1)[0]
        assert isinstance(res.error, gaio.ConnClosedError)
