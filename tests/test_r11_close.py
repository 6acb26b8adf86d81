"""R11: close() is idempotent, closes every delegated descriptor before it
returns, drops pending requests, and makes every later call (but close and
stats) raise WatcherClosedError before any argument is checked. A watcher that
is garbage collected is closed."""
import gc
import math
import os
import signal
import socket
import threading
import time
import weakref

import pytest

import gaio
from conftest import (STUCK, collect, fd_inode, fds_of_inode, open_fds, recv_until_eof,
                      run_in_thread, still_open)


def test_close_is_idempotent(watcher):
    watcher.close()
    watcher.close()
    watcher.close()


def test_context_manager_closes(engine, pair):
    client, server = pair()
    inode = fd_inode(server)
    with gaio.Watcher(engine=engine) as w:
        assert w.engine == engine
        w.read(server, bytearray(4))
    assert fds_of_inode(inode) == []
    with pytest.raises(gaio.WatcherClosedError):
        w.wait_io(0)


def test_close_closes_every_delegated_descriptor_on_return(watcher, net):
    pairs = net.pairs(12)
    inodes = [fd_inode(s) for _, s in pairs]
    for i, (client, server) in enumerate(pairs):
        if i % 3 == 0:
            watcher.read(server, bytearray(4))          # pending read
        elif i % 3 == 1:
            watcher.write(server, bytes(STUCK))         # pending write
        else:
            watcher.write(server, b"done")               # idle after completion
    gc.disable()  # close() itself must close them, not a later collection
    try:
        watcher.wait_io(0.05)
        watcher.close()
        left = still_open(inodes)
    finally:
        gc.enable()
    assert left == []
    for client, _ in pairs:
        client.settimeout(5)
        recv_until_eof(client, timeout=5)  # the peer sees the connection end


def test_pending_requests_are_dropped_not_delivered(watcher, pair):
    client, server = pair()

    class Ctx:
        pass

    ctx = Ctx()
    ref = weakref.ref(ctx)
    watcher.read(server, bytearray(4), ctx=ctx)
    watcher.write(server, bytes(STUCK), ctx=ctx)
    del ctx
    watcher.close()
    with pytest.raises(gaio.WatcherClosedError):
        watcher.wait_io(0)
    gc.collect()
    assert ref() is None, "close() kept a dropped request's ctx alive"


@pytest.mark.parametrize("call", [
    pytest.param(lambda w, s: w.read(s), id="read"),
    pytest.param(lambda w, s: w.read(s, bytearray(4)), id="read-buf"),
    pytest.param(lambda w, s: w.read_full(s, bytearray(4)), id="read_full"),
    pytest.param(lambda w, s: w.write(s, b"x"), id="write"),
    pytest.param(lambda w, s: w.free(s), id="free"),
    pytest.param(lambda w, s: w.wait_io(0), id="wait_io"),
    pytest.param(lambda w, s: w.wait_io(), id="wait_io-none"),
    # bad arguments: the closed watcher is reported first
    pytest.param(lambda w, s: w.read(None), id="read-None"),
    pytest.param(lambda w, s: w.read(s, b""), id="read-empty"),
    pytest.param(lambda w, s: w.read(s, b"ro"), id="read-readonly"),
    pytest.param(lambda w, s: w.read_full(s, None), id="read_full-None"),
    pytest.param(lambda w, s: w.write(object(), "text"), id="write-junk"),
    pytest.param(lambda w, s: w.write(s, b""), id="write-empty"),
    pytest.param(lambda w, s: w.read(s, timeout=math.nan), id="read-nan"),
    pytest.param(lambda w, s: w.read(s, timeout=1, deadline=1), id="read-both"),
    pytest.param(lambda w, s: w.free(42), id="free-int"),
    pytest.param(lambda w, s: w.wait_io(math.nan), id="wait_io-nan"),
    pytest.param(lambda w, s: w.wait_io("x"), id="wait_io-str"),
])
def test_every_call_after_close_raises_watcher_closed_error_first(watcher, pair, call):
    client, server = pair()
    watcher.close()
    fds = open_fds()
    with pytest.raises(gaio.WatcherClosedError):
        call(watcher, server)
    assert open_fds() == fds
    assert server.fileno() != -1  # not delegated to a closed watcher


def test_closed_socket_after_close_is_still_watcher_closed_error(watcher, pair):
    client, server = pair()
    watcher.write(server, b"x")
    watcher.close()
    with pytest.raises(gaio.WatcherClosedError):
        watcher.write(server, b"y")


def test_stats_after_close_returns_the_final_counters(watcher, pair):
    client, server = pair()
    watcher.write(server, b"abc")
    collect(watcher, 1)
    watcher.read(server, bytearray(4))
    before = watcher.stats()
    watcher.close()
    after = watcher.stats()
    assert after["submitted"] == before["submitted"] == 2
    assert after["completed"] == before["completed"] == 1
    assert after["bytes_written"] == 3
    watcher.close()
    assert watcher.stats()["submitted"] == 2


def test_attributes_after_close(watcher, engine):
    watcher.close()
    assert watcher.engine == engine
    assert watcher.bufsize == 65536


class _Sock(socket.socket):
    """A socket object that can carry attributes (a connection holding its watcher)."""


class _Buf(bytearray):
    pass


@pytest.mark.parametrize("through", ["nothing", "ctx", "buffer", "conn", "data"])
def test_garbage_collected_watcher_is_closed(engine, net, through):
    """A watcher dropped by the caller is collected and closed, even when a
    pending request refers back to it through its ctx, its buffer, its
    connection object or its data: such cycles must not make it immortal."""
    lis = net.listener()
    client = net.track(socket.create_connection(lis.getsockname()))
    fd, _ = lis._accept()
    server = net.track(_Sock(fileno=fd))
    inode = fd_inode(server)
    fds_before = len(open_fds())
    w = gaio.Watcher(engine=engine)
    buf, data = _Buf(4), _Buf(STUCK)
    if through == "buffer":
        buf.watcher = w
    elif through == "conn":
        server.watcher = w
    elif through == "data":
        data.watcher = w
    w.read(server, buf, ctx=w if through == "ctx" else "plain")
    w.write(server, data)
    ref = weakref.ref(w)
    del w, buf, data, server
    net.forget()
    net.track(client)
    gc.collect()
    assert ref() is None, "watcher not collected"
    assert fds_of_inode(inode) == []
    client.settimeout(5)
    try:
        recv_until_eof(client, timeout=5)
    except ConnectionResetError:
        pass
    assert len(open_fds()) == fds_before - 1  # the engine's own descriptors too


def test_close_with_many_connections(watcher, net):
    pairs = net.pairs(500, unix=True)
    inodes = [fd_inode(s) for _, s in pairs]
    for _, server in pairs:
        watcher.read(server, bytearray(1), timeout=30)
    watcher.close()
    assert still_open(inodes) == []


def test_buffers_of_dropped_requests_are_never_written_after_close(watcher, net):
    pairs = net.pairs(20)
    bufs = [bytearray(4096) for _ in pairs]
    for (_, server), buf in zip(pairs, bufs):
        watcher.read(server, buf)
        watcher.read(server)
    watcher.wait_io(0.05)
    watcher.close()
    for client, _ in pairs:
        try:
            client.send(b"\xff" * 4096)
        except OSError:
            pass
    time.sleep(0.1)
    gc.collect()
    assert all(buf == bytes(4096) for buf in bufs), "a dropped read wrote into its buffer"


def test_close_from_many_threads_at_once(watcher, net):
    pairs = net.pairs(20)
    for _, server in pairs:
        watcher.read(server, bytearray(4))
    barrier = threading.Barrier(8)
    errors = []

    def closer():
        try:
            barrier.wait(5)
            watcher.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=closer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    with pytest.raises(gaio.WatcherClosedError):
        watcher.wait_io(0)


def test_ctx_finalizer_calling_the_watcher_during_close(watcher, net):
    """close() drops pending requests, which runs their ctx finalizers inside
    close(); a finalizer that calls the watcher back must neither deadlock nor
    crash: it sees a closed watcher."""
    (c1, s1), (c2, s2) = net.pairs(2)
    log = []

    class Ctx:
        def __del__(self):
            for name, call in (("stats", watcher.stats),
                               ("read", lambda: watcher.read(s2, bytearray(1))),
                               ("free", lambda: watcher.free(s1)),
                               ("wait_io", lambda: watcher.wait_io(0)),
                               ("close", watcher.close)):
                try:
                    call()
                    log.append((name, None))
                except Exception as exc:
                    log.append((name, type(exc)))

    watcher.read(s1, bytearray(4), ctx=Ctx())
    watcher.write(s1, bytes(STUCK), ctx=Ctx())
    t = threading.Thread(target=watcher.close)
    t.start()
    t.join(10)
    assert not t.is_alive(), "close() deadlocked in a ctx finalizer"
    gc.collect()
    assert len(log) == 10
    assert dict(log) == {"stats": None, "read": gaio.WatcherClosedError,
                         "free": gaio.WatcherClosedError, "wait_io": gaio.WatcherClosedError,
                         "close": None}


def _fd_numbers():
    # not open_fds(): its readlink() per descriptor gives a closing waiter time
    # to catch up, and drops the descriptors it closed meanwhile
    return set(os.listdir("/proc/self/fd"))


def test_close_while_another_thread_waits_has_closed_every_descriptor_on_return(engine):
    """close() from another thread while wait_io() blocks: the watcher's own
    descriptors (its selector or ring, its wake-up descriptor) are closed when
    close() returns, not later by the waiter on its way out. Looped: the old
    race lost 5 to 7 times in 10."""
    for attempt in range(20):
        gc.collect()
        before = _fd_numbers()
        w = gaio.Watcher(engine=engine)
        t, box = run_in_thread(w.wait_io)
        time.sleep(0.02)
        w.close()
        left = _fd_numbers() - before  # one listing, taken at once
        t.join(5)
        assert not t.is_alive(), "wait_io() was not woken by close()"
        assert isinstance(box.get("error"), gaio.WatcherClosedError), box
        assert left == set(), "attempt %d: close() returned with %r open" % (attempt, left)


def test_close_from_inside_the_waiting_thread_does_not_block(engine):
    """close() called by the thread blocked in wait_io() itself (here from a
    signal handler; a ctx finalizer is the other way) cannot wait for the waiter
    to leave: it returns, wait_io() raises WatcherClosedError, and by the time
    it has, every descriptor is closed."""
    gc.collect()
    before = _fd_numbers()
    w = gaio.Watcher(engine=engine)
    closed = []

    def handler(*args):
        w.close()
        closed.append(True)

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        start = time.monotonic()
        with pytest.raises(gaio.WatcherClosedError):
            w.wait_io(5.0)
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert closed, "the handler's close() did not return"
    assert elapsed < 1.0
    assert _fd_numbers() - before == set()
    w.close()
