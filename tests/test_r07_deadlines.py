"""R7: timeout (seconds from now) and deadline (absolute time.monotonic()).
A request not finished by then completes with DeadlineExceededError and the
bytes it moved; later requests go on. The SPEC asks for expiry within 10 ms on
an idle machine; this box is shared, so the tests allow LATE seconds and print
what they measured."""
import math
import random
import threading
import time

import pytest

import gaio
from conftest import (STUCK, collect, need_fds, recv_exactly, recv_until_eof, run_in_thread,
                      stuck_pattern, wait_readable)

LATE = 0.15    # tolerated lateness on a noisy shared machine
EARLY = 0.002  # clock granularity: never more than this before the deadline


def _expire(w, timeout_kind, seconds, sock, method="read"):
    start = time.monotonic()
    kwargs = ({"timeout": seconds} if timeout_kind == "timeout"
              else {"deadline": start + seconds})
    if method == "read":
        w.read(sock, **kwargs)
    elif method == "read_buf":
        w.read(sock, bytearray(8), **kwargs)
    else:
        w.read_full(sock, bytearray(8), **kwargs)
    res = collect(w, 1, timeout=seconds + 5)[0]
    return res, time.monotonic() - start


@pytest.mark.parametrize("kind", ["timeout", "deadline"])
@pytest.mark.parametrize("method", ["read", "read_buf", "read_full"])
def test_read_expires_on_time(watcher, pair, kind, method):
    client, server = pair()
    res, elapsed = _expire(watcher, kind, 0.1, server, method)
    print("expiry after %.1f ms (asked 100 ms)" % (elapsed * 1e3))
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert isinstance(res.error, TimeoutError)
    assert res.size == 0 and res.conn is server
    if method == "read":
        assert res.buffer is None and res.is_swap_buffer is False
    assert 0.1 - EARLY <= elapsed < 0.1 + LATE


@pytest.mark.parametrize("kind", ["timeout", "deadline"])
def test_write_expires_with_bytes_written_so_far(watcher, pair, kind):
    client, server = pair()
    data = bytes(STUCK)
    start = time.monotonic()
    if kind == "timeout":
        watcher.write(server, data, timeout=0.2)
    else:
        watcher.write(server, data, deadline=start + 0.2)
    res = collect(watcher, 1)[0]
    elapsed = time.monotonic() - start
    print("write expiry after %.1f ms (asked 200 ms)" % (elapsed * 1e3))
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert 0 < res.size < len(data)
    assert 0.2 - EARLY <= elapsed < 0.2 + LATE
    # exactly res.size bytes reached the socket: drain and count them
    watcher.free(server)
    collect(watcher, 0)
    client.settimeout(5)
    total = 0
    while True:
        chunk = client.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    assert total == res.size


def test_expired_request_leaves_its_queue_and_later_ones_go_on(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(8), ctx="first", timeout=0.05)
    watcher.read(server, bytearray(8), ctx="second")
    res = collect(watcher, 1)[0]
    assert res.ctx == "first" and isinstance(res.error, gaio.DeadlineExceededError)
    client.sendall(b"for two")
    res = collect(watcher, 1)[0]
    assert res.ctx == "second" and res.error is None
    assert bytes(res.buffer[:res.size]) == b"for two"[:res.size]


def test_deadline_may_end_a_request_queued_behind_one_without(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(8), ctx="patient")
    watcher.read(server, bytearray(8), ctx="hasty", timeout=0.05)
    res = collect(watcher, 1)[0]
    assert res.ctx == "hasty" and isinstance(res.error, gaio.DeadlineExceededError)
    client.sendall(b"patience")
    res = collect(watcher, 1)[0]
    assert res.ctx == "patient" and res.error is None


def test_write_queue_goes_on_after_a_write_expires(watcher, pair):
    client, server = pair()
    watcher.write(server, bytes(STUCK), ctx="too big", timeout=0.1)
    res = collect(watcher, 1)[0]
    assert res.ctx == "too big" and isinstance(res.error, gaio.DeadlineExceededError)
    watcher.write(server, b"tail", ctx="tail")
    client.settimeout(10)
    drained = 0
    while drained < res.size:
        drained += len(client.recv(min(1 << 20, res.size - drained)))
    assert collect(watcher, 1)[0].ctx == "tail"
    assert recv_exactly(client, 4) == b"tail"


def test_a_later_added_earlier_deadline_fires_on_time(watcher, net):
    """gaio regression: the timer was not reset for an earlier deadline added
    while the watcher was already waiting."""
    (c1, s1), (c2, s2) = net.pairs(2)
    watcher.read(s1, ctx="late", timeout=10)
    added = {}

    def add_early():
        time.sleep(0.1)  # the main thread is blocked in wait_io by now
        added["at"] = time.monotonic()
        watcher.read(s2, ctx="early", timeout=0.1)

    t = threading.Thread(target=add_early)
    t.start()
    res = None
    end = time.monotonic() + 5
    while res is None and time.monotonic() < end:
        batch = watcher.wait_io(3.0)
        if batch:
            res = batch[0]
    t.join(5)
    assert res is not None and res.ctx == "early"
    lateness = time.monotonic() - added["at"] - 0.1
    print("earlier deadline fired %.1f ms late" % (lateness * 1e3))
    assert lateness < LATE


def test_thousands_of_deadlines_at_once(watcher, net):
    n = 2000
    need_fds(2 * n + 100)
    pairs = net.pairs(n, unix=True)
    rng = random.Random(17)
    due = {}
    start = time.monotonic()
    for i, (_, server) in enumerate(pairs):
        d = start + 0.3 + rng.random() * 0.4
        due[i] = d
        if i % 2:
            watcher.read(server, ctx=i, deadline=d)
        else:
            watcher.read(server, bytearray(4), ctx=i, timeout=d - time.monotonic())
    late = []
    early = []
    done = set()

    def check(res):
        now = time.monotonic()
        assert isinstance(res.error, gaio.DeadlineExceededError), res
        assert res.ctx not in done
        done.add(res.ctx)
        if now < due[res.ctx] - EARLY:
            early.append(res.ctx)
        late.append(now - due[res.ctx])

    collect(watcher, n, timeout=20, each=check)
    late.sort()
    print("lateness ms: median %.1f, p99 %.1f, max %.1f"
          % (late[n // 2] * 1e3, late[n * 99 // 100] * 1e3, late[-1] * 1e3))
    assert not early, "%d requests expired before their deadline" % len(early)
    assert late[n // 2] < LATE
    assert late[-1] < 1.0
    assert watcher.stats()["timeouts"] >= n


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -1e9])
def test_non_positive_timeout_tries_once(watcher, pair, timeout):
    client, server = pair()
    # nothing to read: an immediate DeadlineExceededError
    start = time.monotonic()
    watcher.read(server, bytearray(8), ctx="empty", timeout=timeout)
    res = collect(watcher, 1)[0]
    assert res.ctx == "empty" and isinstance(res.error, gaio.DeadlineExceededError)
    assert time.monotonic() - start < LATE
    # data already there: the single try succeeds
    client.sendall(b"ready")
    time.sleep(0.02)
    watcher.read(server, bytearray(8), ctx="ready", timeout=timeout)
    res = collect(watcher, 1)[0]
    assert res.ctx == "ready" and res.error is None and res.buffer[:res.size] == b"ready"
    # the same through the internal buffer
    client.sendall(b"inner")
    time.sleep(0.02)
    watcher.read(server, ctx="inner", timeout=timeout)
    res = collect(watcher, 1)[0]
    assert res.ctx == "inner" and res.error is None and bytes(res.buffer) == b"inner"
    # a small write to a socket with room: the single try succeeds
    watcher.write(server, b"room", timeout=timeout)
    res = collect(watcher, 1)[0]
    assert res.error is None and res.size == 4


def test_deadline_already_past_tries_once(watcher, pair):
    client, server = pair()
    client.sendall(b"there")
    wait_readable(server)
    watcher.read(server, bytearray(8), ctx="ok", deadline=time.monotonic() - 10)
    watcher.read(server, bytearray(8), ctx="nothing", deadline=time.monotonic() - 10)
    results = collect(watcher, 2)
    by_ctx = {r.ctx: r for r in results}
    assert by_ctx["ok"].error is None and by_ctx["ok"].size == 5
    assert isinstance(by_ctx["nothing"].error, gaio.DeadlineExceededError)


def test_read_full_partial_at_deadline_with_past_deadline(watcher, pair):
    client, server = pair()
    client.sendall(b"abc")
    wait_readable(server)
    buf = bytearray(10)
    watcher.read_full(server, buf, timeout=0)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert res.size == 3 and buf[:3] == b"abc"


@pytest.mark.parametrize("method", ["read", "read_full", "write"])
@pytest.mark.parametrize("key", ["timeout", "deadline"])
def test_nan_is_a_value_error(watcher, pair, method, key):
    client, server = pair()
    arg = b"x" if method == "write" else bytearray(4)
    with pytest.raises(ValueError):
        getattr(watcher, method)(server, arg, **{key: math.nan})
    assert server.fileno() != -1
    assert watcher.stats()["submitted"] == 0


def test_integer_timeout_and_infinite_wait_without_one(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(4), timeout=1, ctx="int")
    watcher.read(server, bytearray(4), ctx="none", timeout=None, deadline=None)
    res = collect(watcher, 1, timeout=5)[0]
    assert res.ctx == "int" and isinstance(res.error, gaio.DeadlineExceededError)
    assert watcher.wait_io(0.2) == []  # no deadline: waits for data
    client.sendall(b"data")
    assert collect(watcher, 1)[0].ctx == "none"


def test_deadline_of_a_completed_request_does_not_fire_later(watcher, pair):
    client, server = pair()
    client.sendall(b"quick")
    watcher.read(server, bytearray(8), timeout=0.1)
    res = collect(watcher, 1)[0]
    assert res.error is None
    assert watcher.wait_io(0.3) == []
    assert watcher.stats()["timeouts"] == 0


@pytest.mark.parametrize("kwargs", [
    {"timeout": 1e300}, {"timeout": math.inf}, {"timeout": 2.0 ** 63},
    {"deadline": 1e300}, {"deadline": math.inf}, {"deadline": 2.0 ** 64},
], ids=lambda k: "%s=%r" % next(iter(k.items())))
def test_huge_timeouts_do_not_wrap_around(watcher, pair, kwargs):
    """A far-away deadline converted to an integer clock must not overflow into
    the past. (Refusing it with ValueError/OverflowError is allowed.)"""
    client, server = pair()
    try:
        watcher.read(server, bytearray(4), **kwargs)
    except (ValueError, OverflowError):
        assert watcher.stats()["submitted"] == 0 and server.fileno() != -1
        return
    assert watcher.wait_io(0.2) == [], "a far-away deadline fired at once"
    client.sendall(b"data")
    res = collect(watcher, 1)[0]
    assert res.error is None


@pytest.mark.parametrize("timeout", [1e300, math.inf, 2.0 ** 63])
def test_huge_wait_io_timeout_blocks(watcher, pair, timeout):
    """Blocks like None, or is refused with ValueError/OverflowError; never
    wraps around into an immediate return."""
    client, server = pair()
    t, box = run_in_thread(watcher.wait_io, timeout)
    time.sleep(0.2)
    alive = t.is_alive()
    watcher.write(server, b"wake")
    t.join(5)
    assert not t.is_alive()
    if isinstance(box.get("error"), (ValueError, OverflowError)):
        # refused at once (allowed): the watcher is unharmed
        assert collect(watcher, 1)[0].size == 4
        return
    assert "error" not in box, box
    assert alive, "wait_io(%r) returned at once: %r" % (timeout, box)
    assert box["result"] and box["result"][0].size == 4


def test_queued_write_expires_without_sending_a_byte(watcher, pair):
    client, server = pair()
    head = stuck_pattern(seed=51)
    watcher.write(server, head, ctx="head")
    watcher.write(server, b"EXPIRED" * 1000, ctx="queued", timeout=0.1)
    res = collect(watcher, 1)[0]
    assert res.ctx == "queued" and isinstance(res.error, gaio.DeadlineExceededError)
    assert res.size == 0
    watcher.write(server, b"tail", ctx="tail")
    client.setblocking(False)
    received = bytearray()
    results = []
    end = time.monotonic() + 20
    while len(results) < 2 and time.monotonic() < end:
        results.extend(watcher.wait_io(0.002))
        try:
            received += client.recv(1 << 20)
        except BlockingIOError:
            pass
    assert [r.ctx for r in results] == ["head", "tail"]
    received += recv_exactly(client, len(head) + 4 - len(received))
    assert bytes(received) == head + b"tail"


def test_progress_does_not_push_a_deadline_back(watcher, pair):
    """A read_full that keeps receiving a trickle still ends at its deadline."""
    client, server = pair()
    buf = bytearray(1000)
    start = time.monotonic()
    watcher.read_full(server, buf, timeout=0.3)
    results = []
    sent = 0
    while not results and time.monotonic() - start < 3:
        client.sendall(b"t")
        sent += 1
        results = watcher.wait_io(0.04)
    elapsed = time.monotonic() - start
    assert results, "read_full never ended"
    res = results[0]
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert 0 < res.size <= sent and buf[:res.size] == b"t" * res.size
    assert elapsed < 0.3 + LATE + 0.05


@pytest.mark.parametrize("how", ["timeout", "deadline"])
def test_write_with_no_time_left_is_tried_once(watcher, pair, how):
    """Tried once: whatever fits in the socket is written and reported."""
    client, server = pair()
    kwargs = {"timeout": 0} if how == "timeout" else {"deadline": time.monotonic() - 1}
    watcher.write(server, bytes(STUCK), **kwargs)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert 0 < res.size < STUCK, "the single try wrote nothing"
    watcher.free(server)
    assert len(recv_until_eof(client)) == res.size
