"""R9: a delegated socket with no pending request holds no strong reference in
the watcher; when the caller drops it, the descriptor is released within one
second or by the next wait_io(), whichever is later."""
import gc
import socket
import threading
import time
import weakref

import pytest

from conftest import collect, fd_inode, fds_of_inode, still_open


def _released_within(w, inodes, seconds=1.5):
    """Poll with wait_io until no descriptor refers to any of `inodes`."""
    end = time.monotonic() + seconds
    while True:
        gc.collect()
        w.wait_io(0.05)
        left = still_open(inodes)
        if not left or time.monotonic() > end:
            return left


@pytest.mark.parametrize("last", ["write", "read", "deadline"])
def test_dropped_socket_releases_its_descriptor(watcher, net, last):
    client, server = net.pair()
    net.forget()
    net.track(client)
    inode = fd_inode(server)
    if last == "write":
        watcher.write(server, b"x")
    elif last == "read":
        client.sendall(b"y")
        watcher.read(server, bytearray(1))
    else:
        watcher.read(server, timeout=0.01)
    ref = weakref.ref(server)
    del server
    collect(watcher, 1)  # the result is dropped at once
    gc.collect()
    assert ref() is None, "the watcher holds a strong reference to an idle socket"
    assert _released_within(watcher, [inode]) == [], "descriptor not released"
    client.settimeout(2)
    rest = client.recv(10)
    assert rest in (b"", b"x")
    if rest:
        assert client.recv(10) == b""
    assert watcher.stats()["watched"] == 0


def test_many_dropped_sockets_release_every_descriptor(watcher, net):
    pairs = net.pairs(300, unix=True)
    net.forget()
    clients = [net.track(c) for c, _ in pairs]
    inodes = [fd_inode(s) for _, s in pairs]
    for _, server in pairs:
        watcher.write(server, b"z")
    del pairs, server
    collect(watcher, 300)
    assert _released_within(watcher, inodes) == []
    for c in clients:
        c.settimeout(2)
        assert c.recv(1) == b"z" and c.recv(1) == b""


def test_pending_request_keeps_the_socket_alive(watcher, net):
    client, server = net.pair()
    net.forget()
    net.track(client)
    inode = fd_inode(server)
    ref = weakref.ref(server)
    watcher.read(server, bytearray(8), ctx="pending")
    del server
    gc.collect()
    assert ref() is not None
    assert watcher.wait_io(0.3) == []
    assert len(fds_of_inode(inode)) == 1
    client.sendall(b"late")
    res = collect(watcher, 1)[0]
    assert res.conn is ref() and res.ctx == "pending"
    assert bytes(res.buffer[:res.size]) == b"late"[:res.size]
    del res
    assert _released_within(watcher, [inode]) == []


def test_a_kept_socket_is_not_released(watcher, pair):
    client, server = pair()
    inode = fd_inode(server)
    watcher.write(server, b"k")
    collect(watcher, 1)
    gc.collect()
    watcher.wait_io(0.2)
    assert len(fds_of_inode(inode)) == 1
    watcher.write(server, b"again")
    assert collect(watcher, 1)[0].error is None


def test_socket_in_a_reference_cycle_is_released(watcher, net):
    client, server = net.pair()
    net.forget()
    net.track(client)
    inode = fd_inode(server)

    class Holder:
        pass

    h = Holder()
    h.sock = server
    h.me = h
    watcher.write(server, b"c", ctx=h)
    del server, h
    collect(watcher, 1)
    assert _released_within(watcher, [inode]) == []


def test_sockets_dropped_while_another_thread_waits(watcher, net):
    pairs = net.pairs(100, unix=True)
    net.forget()
    clients = [net.track(c) for c, _ in pairs]
    inodes = [fd_inode(s) for _, s in pairs]
    for _, server in pairs:
        watcher.write(server, b"w")
    collect(watcher, 100)
    stop = threading.Event()
    errors = []

    def waiter():
        try:
            while not stop.is_set():
                watcher.wait_io(0.05)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    try:
        del pairs, server
        gc.collect()
        end = time.monotonic() + 1.5
        while still_open(inodes) and time.monotonic() < end:
            time.sleep(0.05)
        left = still_open(inodes)
    finally:
        stop.set()
        t.join(5)
    assert not errors, errors
    assert left == [], "%d descriptors not released" % len(left)
    for c in clients:
        c.settimeout(2)
        assert c.recv(2) == b"w" and c.recv(1) == b""


@pytest.mark.parametrize("end", ["idle", "deadline", "eof"])
def test_socket_dropped_after_its_standing_read_ended_is_released(watcher, net, end):
    # the native engines keep no weak reference while a standing read holds
    # the socket: when it ends, the socket must be weakly held again
    client, server = net.pair()
    net.forget()
    net.track(client)
    inode = fd_inode(server)
    if end == "idle":
        watcher.read(server, repeat=True, timeout=0.05)
    elif end == "deadline":
        watcher.read(server, repeat=True, deadline=time.monotonic() + 0.05)
    else:
        watcher.read(server, repeat=True)
    ref = weakref.ref(server)
    del server
    gc.collect()
    assert ref() is not None, "a standing read holds its socket"
    if end == "eof":
        client.shutdown(socket.SHUT_WR)
    res = collect(watcher, 1)[0]
    assert res.error is not None and res.conn is ref()
    del res
    assert _released_within(watcher, [inode]) == [], "descriptor not released"


def test_second_standing_read_keeps_the_socket_until_it_ends(watcher, net):
    client, server = net.pair()
    net.forget()
    net.track(client)
    inode = fd_inode(server)
    watcher.read(server, repeat=True, timeout=0.05)
    watcher.read(server, repeat=True, ctx="second")
    ref = weakref.ref(server)
    del server
    first = collect(watcher, 1)[0]
    assert first.error is not None and first.ctx is None
    del first
    gc.collect()
    assert ref() is not None, "the second standing read holds its socket"
    assert len(fds_of_inode(inode)) == 1
    client.sendall(b"s")
    client.shutdown(socket.SHUT_WR)
    results = collect(watcher, 2)
    assert [r.ctx for r in results] == ["second", "second"]
    assert results[-1].error is not None
    del results
    assert _released_within(watcher, [inode]) == []


def test_two_standing_reads_without_limits_hold_the_socket_until_both_end(watcher, net):
    """R20: a later standing read queues behind the first (R3); R9: the socket
    is released only once neither stands."""
    client, server = net.pair()
    net.forget()
    net.track(client)
    inode = fd_inode(server)
    watcher.read(server, repeat=True, ctx="first")
    watcher.read(server, repeat=True, ctx="second")
    ref = weakref.ref(server)
    del server
    gc.collect()
    assert ref() is not None, "the standing reads hold their socket"
    client.sendall(b"s")
    first = collect(watcher, 1)[0]
    assert (first.ctx, bytes(first.buffer)) == ("first", b"s")
    del first
    client.shutdown(socket.SHUT_WR)
    results = collect(watcher, 2)
    assert [(r.ctx, type(r.error)) for r in results] == [("first", EOFError), ("second", EOFError)]
    del results
    assert _released_within(watcher, [inode]) == []


def test_standing_read_on_a_freed_and_dropped_socket(watcher, net):
    client, server = net.pair()
    net.forget()
    net.track(client)
    watcher.read(server, repeat=True)
    watcher.free(server)
    res = collect(watcher, 1)[0]
    assert res.conn is server and res.error is not None
    del res, server
    gc.collect()
    assert watcher.stats()["watched"] == 0
