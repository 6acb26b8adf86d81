"""Regressions from gaio's history and the classic traps of CPython's selectors
tests, one test (or a few) per bug. Timeout rounding (wait at least the
timeout) lives in test_r10_wait_io.py; the later-added earlier deadline while
blocked with a timeout in test_r07_deadlines.py."""
import errno
import gc
import os
import resource
import signal
import socket
import time
import weakref

import pytest

import gaio
from conftest import (STUCK, collect, fd_inode, fds_of_inode, open_fds, pattern, recv_exactly,
                      reset, run_in_thread, wait_readable)


# ---------------------------------------------------------------- gaio's history

def test_identity_survives_descriptor_number_reuse(watcher, net):
    """Connections are identified by object, not by descriptor number: numbers
    freed by one connection are reused by the next, for the watcher's
    descriptor and the caller's object alike."""
    seen_numbers = set()
    reused = 0
    for round_ in range(40):
        client, server = net.pair()
        number = server.fileno()
        reused += number in seen_numbers
        seen_numbers.add(number)
        inode = fd_inode(server)
        watcher.read(server, bytearray(16), ctx=round_)
        [dup] = fds_of_inode(inode)
        reused += dup in seen_numbers
        seen_numbers.add(dup)
        client.sendall(b"round %d" % round_)
        res = collect(watcher, 1)[0]
        assert res.conn is server and res.ctx == round_
        assert bytes(res.buffer[:res.size]) == (b"round %d" % round_)[:res.size]
        watcher.free(server)
        client.close()
    assert reused > 0, "descriptor numbers were never reused: the test proved nothing"
    assert watcher.wait_io(0.05) == []


def test_earlier_deadline_wakes_a_wait_without_timeout(watcher, net):
    """gaio: the timer was not reset when an earlier deadline was added."""
    (c1, s1), (c2, s2) = net.pairs(2)
    watcher.read(s1, ctx="far", timeout=30)
    t, box = run_in_thread(watcher.wait_io)  # no timeout: only the new deadline can end it
    time.sleep(0.1)
    added = time.monotonic()
    watcher.read(s2, ctx="near", timeout=0.1)
    t.join(5)
    if t.is_alive():  # unblock it so the test can end cleanly, then fail
        watcher.free(s1)
        t.join(5)
        pytest.fail("an earlier deadline added during wait_io(None) did not fire")
    assert "error" not in box, box
    results = box["result"] or collect(watcher, 1)
    assert results[0].ctx == "near"
    assert isinstance(results[0].error, gaio.DeadlineExceededError)
    assert time.monotonic() - added < 0.1 + 0.3


def test_no_descriptor_leaked_when_registration_fails(watcher, pair):
    """gaio leaked a descriptor when registering a connection failed. Make the
    watcher's dup() fail with EMFILE: the request raises, and the socket, the
    descriptor table and the counters are exactly as before."""
    client, server = pair()
    probe = os.dup(0)
    os.close(probe)  # the lowest free descriptor number
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = open_fds()
    stats = watcher.stats()
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        try:
            watcher.read(server, bytearray(8))
        except OSError as exc:
            error = exc
        else:
            error = None
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if error is None:
        # this engine takes the caller's descriptor over (detach) instead of
        # dup()ing it, so no new descriptor was needed and nothing could fail
        assert server.fileno() == -1 and len(open_fds()) <= len(fds)
        watcher.free(server)
        collect(watcher, 1)
        pytest.skip("engine delegates without a new descriptor: dup() cannot be made to fail")
    assert error.errno in (errno.EMFILE, errno.ENFILE)
    assert open_fds() == fds
    assert watcher.stats() == stats
    assert server.fileno() != -1, "the caller's socket was closed by a failed request"
    # the same socket delegates fine once descriptors are available again
    watcher.read(server, bytearray(8))
    client.sendall(b"after")
    res = collect(watcher, 1)[0]
    assert res.error is None and res.conn is server


def test_error_event_completes_both_pending_read_and_write(watcher, pair):
    """Error/hang-up events must complete every pending request on the
    connection, reads and writes alike, not leave one hanging."""
    client, server = pair()
    watcher.read(server, bytearray(8), ctx="r")
    watcher.write(server, bytes(STUCK), ctx="w")  # fills the socket, stays pending
    assert watcher.wait_io(0.1) == []
    reset(client)
    by_ctx = {r.ctx: r for r in collect(watcher, 2, timeout=5)}
    assert isinstance(by_ctx["r"].error, (ConnectionResetError, EOFError, BrokenPipeError))
    assert isinstance(by_ctx["w"].error, (ConnectionResetError, BrokenPipeError))


def test_hang_up_completes_a_pending_read_with_eof(watcher, pair):
    client, server = pair()
    watcher.read(server, ctx="r")
    client.shutdown(socket.SHUT_RDWR)
    client.close()
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, EOFError) and res.size == 0


def test_ctx_is_kept_while_pending_and_released_after_completion(watcher, pair):
    class Ctx:
        pass

    client, server = pair()
    ctx = Ctx()
    ref = weakref.ref(ctx)
    watcher.read(server, bytearray(4), ctx=ctx)
    del ctx
    gc.collect()
    assert ref() is not None, "ctx of a pending request was dropped"
    client.sendall(b"ctx!")
    res = collect(watcher, 1)[0]
    assert res.ctx is ref()
    del res
    gc.collect()
    assert ref() is None, "ctx kept alive after its result was dropped"


def test_ctx_released_after_deadline_and_free(watcher, pair):
    class Ctx:
        pass

    client, server = pair()
    a, b = Ctx(), Ctx()
    ra, rb = weakref.ref(a), weakref.ref(b)
    watcher.read(server, bytearray(4), ctx=a, timeout=0.01)
    watcher.read(server, bytearray(4), ctx=b)
    del a, b
    collect(watcher, 1)
    watcher.free(server)
    collect(watcher, 1)
    gc.collect()
    assert ra() is None and rb() is None


def test_view_kept_across_waits_is_released_and_the_next_one_is_fresh(watcher, pair):
    client, server = pair()
    views = []
    for i in range(5):
        client.sendall(b"message %d" % i)
        watcher.read(server)
        res = collect(watcher, 1)[0]
        assert bytes(res.buffer) == b"message %d" % i
        views.append(res.buffer)
        for old in views[:-1]:
            with pytest.raises(ValueError):
                old.tobytes()


# ---------------------------------------------------------------- selectors' traps

def test_descriptor_closed_and_reused_between_requests(watcher, net):
    """A freed connection's descriptor number comes back for the next socket
    while stale state for it may linger in the engine: no stale result, no
    lost one."""
    for i in range(30):
        client, server = net.pair()
        watcher.read(server, bytearray(8), ctx=("old", i))
        watcher.write(server, bytes(1 << 20), ctx=("oldw", i))
        watcher.free(server)
        ended = collect(watcher, 2)
        assert {r.ctx for r in ended} == {("old", i), ("oldw", i)}
        c2, s2 = net.pair()  # gets the numbers just freed
        watcher.read(s2, bytearray(8), ctx=("new", i))
        client.close()
        c2.sendall(b"new %d" % i)
        res = collect(watcher, 1)[0]
        assert res.ctx == ("new", i) and res.error is None and res.conn is s2
        watcher.free(s2)
        c2.close()
    assert watcher.wait_io(0.05) == []


def test_free_racing_with_readiness_completes_exactly_once(watcher, net):
    for i in range(100):
        client, server = net.pair()
        watcher.read(server, bytearray(8), ctx=i)
        client.sendall(b"race")
        if i % 2:  # half the time the bytes are surely there before free()
            wait_readable(server) if server.fileno() != -1 else time.sleep(0.001)
        watcher.free(server)
        results = collect(watcher, 1)
        assert [r.ctx for r in results] == [i]
        assert results[0].error is None or isinstance(results[0].error, gaio.ConnClosedError)
        client.close()
    assert watcher.wait_io(0.05) == []


def test_empty_wait(watcher, pair):
    assert watcher.wait_io(0) == []
    assert watcher.wait_io(0.01) == []
    client, server = pair()
    watcher.write(server, b"x")
    collect(watcher, 1)
    watcher.free(server)
    assert watcher.wait_io(0.01) == []  # registered once, now empty again


def test_more_than_1024_descriptors(watcher, pair):
    """select() cannot watch descriptors >= FD_SETSIZE (1024)."""
    filler = []
    try:
        for _ in range(max(0, 1100 - len(open_fds()))):
            filler.append(os.open("/dev/null", os.O_RDONLY))
        client, server = pair()
        inode = fd_inode(server)
        watcher.read(server, bytearray(16))
        [dup] = fds_of_inode(inode)
        assert dup > 1024
        payload = pattern(100000, seed=31)
        watcher.write(server, payload)
        client.sendall(b"high fd")
        results = collect(watcher, 2)
        reads = [r for r in results if r.op == gaio.Op.READ]
        assert bytes(reads[0].buffer[:reads[0].size]) == b"high fd"[:reads[0].size]
        assert recv_exactly(client, len(payload)) == payload
    finally:
        for fd in filler:
            os.close(fd)


def test_signal_during_wait_io_does_not_end_it_early(watcher):
    """EINTR: a signal whose handler returns must not cut the wait short."""
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        start = time.monotonic()
        assert watcher.wait_io(0.3) == []
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert hits, "no signal arrived: the test proved nothing"
    assert elapsed >= 0.3


def test_signal_handler_exception_interrupts_wait_io(watcher):
    """A handler that raises (Ctrl-C's KeyboardInterrupt) ends a blocked wait_io."""
    class Interrupt(Exception):
        pass

    def handler(*args):
        raise Interrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        start = time.monotonic()
        with pytest.raises(Interrupt):
            watcher.wait_io(5.0)
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert elapsed < 1.0
    # the watcher is still usable, and another wait is allowed
    assert watcher.wait_io(0) == []


def test_closing_the_callers_descriptor_number_under_the_watcher(watcher, pair):
    """The caller's object is closed at delegation; if the caller reuses its old
    descriptor number for something else, the watcher is not affected."""
    client, server = pair()
    old_number = server.fileno()
    watcher.read(server, bytearray(8))
    pipe_r, pipe_w = os.pipe()  # likely lands on old_number
    try:
        client.sendall(b"intact")
        res = collect(watcher, 1)[0]
        assert res.error is None and bytes(res.buffer[:res.size]) == b"intact"[:res.size]
        os.write(pipe_w, b"p")
        assert os.read(pipe_r, 1) == b"p"
        watcher.write(server, b"still fine")
        assert collect(watcher, 1)[0].error is None
        assert recv_exactly(client, 10) == b"still fine"
        if old_number not in (pipe_r, pipe_w):
            pytest.skip("the old descriptor number was not reused here")
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


def test_registration_failure_of_a_descriptor_closed_behind_the_object(watcher, pair):
    """Registration fails when the socket object's descriptor was closed behind
    its back (os.close). The request raises or completes with an error; either
    way nothing is left behind, and the watcher never closes that number
    later, when it may belong to someone else."""
    client, server = pair()
    number = server.fileno()
    os.close(number)
    stats = watcher.stats()
    fds = open_fds()
    try:
        watcher.read(server, bytearray(8), ctx="stale")
    except (OSError, ValueError, TypeError):
        assert watcher.stats() == stats
        accepted = False
    else:
        accepted = True
    reuse_r, reuse_w = os.pipe()  # takes the freed number back, most likely
    try:
        if accepted:
            res = collect(watcher, 1)[0]
            assert res.ctx == "stale" and res.error is not None
        assert {fd: t for fd, t in open_fds().items() if fd not in (reuse_r, reuse_w)} == {
            fd: t for fd, t in fds.items() if fd != number}
        watcher.free(server)
        watcher.close()
        os.write(reuse_w, b"ok")  # still ours: the watcher did not close it
        assert os.read(reuse_r, 2) == b"ok"
        if number not in (reuse_r, reuse_w):
            pytest.skip("the closed descriptor number was not reused here")
    finally:
        os.close(reuse_r)
        os.close(reuse_w)
        try:
            server.detach()  # the object still believes it owns `number`
        except OSError:
            pass
