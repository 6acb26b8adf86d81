"""R16/R20: accept(listener) and the standing accept (repeat=True).

Each accept completes with op ACCEPT, conn the listener object, size 0,
buffer None and `accepted` a new socket.socket that belongs to the caller
(not delegated). A standing accept survives descriptor exhaustion: it reports
EMFILE (at most once per 10 ms, accepted None), never spins, and accepts
again once a descriptor is free.
"""
import errno
import os
import resource
import socket
import time

import gaio
from conftest import collect, open_fds, recv_exactly


_ADDRESSES = {}  # id(listener) -> its address (a delegated listener reads as closed)


def _listener(net):
    lis = net.track(socket.create_server(("127.0.0.1", 0), backlog=128))
    _ADDRESSES[id(lis)] = lis.getsockname()
    return lis


def _connect(net, lis):
    return net.track(socket.create_connection(_ADDRESSES[id(lis)]))


def test_accepts_complete_in_request_order_with_a_socket_of_the_caller(watcher, net):
    lis = _listener(net)
    for i in range(3):
        watcher.accept(lis, ctx=i)
    clients = []
    for _ in range(3):
        clients.append(_connect(net, lis))
        time.sleep(0.01)  # one after the other: the kernel's queue is FIFO
    results = collect(watcher, 3)
    assert [r.ctx for r in results] == [0, 1, 2]
    for res, client in zip(results, clients):
        net.track(res.accepted)
        assert res.op == gaio.Op.ACCEPT and res.conn is lis
        assert res.size == 0 and res.error is None and res.buffer is None
        assert not res.is_swap_buffer
        assert type(res.accepted) is socket.socket
        assert res.accepted.fileno() != -1  # the caller's, not delegated
        assert res.accepted.getpeername() == client.getsockname()
    stats = watcher.stats()
    assert stats["accepted"] == 3 and stats["watched"] == 1 and stats["pending"] == 0
    # the caller's socket: plain blocking I/O works, and its first request
    # delegates it like any other
    results[0].accepted.sendall(b"hi")
    assert clients[0].recv(2) == b"hi"
    watcher.write(results[1].accepted, b"yo")
    assert collect(watcher, 1)[0].error is None
    assert clients[1].recv(2) == b"yo"


def test_an_accepted_socket_can_go_to_another_watcher(watcher, make_watcher, net):
    other = make_watcher()
    lis = _listener(net)
    watcher.accept(lis)
    client = _connect(net, lis)
    conn = net.track(collect(watcher, 1)[0].accepted)
    other.read(conn, bytearray(8))
    client.sendall(b"other")
    res = collect(other, 1)[0]
    assert res.conn is conn and bytes(res.buffer[:res.size]) == b"other"


def test_free_of_the_listener_ends_pending_accepts(watcher, net):
    lis = _listener(net)
    watcher.accept(lis, ctx="a")
    watcher.accept(lis, ctx="b", repeat=True)
    assert watcher.wait_io(0.02) == []
    watcher.free(lis)
    results = collect(watcher, 2)
    assert [r.ctx for r in results] == ["a", "b"]
    assert all(isinstance(r.error, gaio.ConnClosedError) and r.accepted is None
               for r in results)
    assert watcher.stats()["pending"] == 0


def test_standing_accept_gives_one_result_per_connection(watcher, net):
    lis = _listener(net)
    watcher.accept(lis, ctx="L", repeat=True)
    clients = [_connect(net, lis) for _ in range(20)]
    results = collect(watcher, 20)
    assert all(r.ctx == "L" and r.error is None and r.op == gaio.Op.ACCEPT for r in results)
    peers = {net.track(r.accepted).getpeername() for r in results}
    assert peers == {c.getsockname() for c in clients}
    stats = watcher.stats()
    assert stats["submitted"] == 1 and stats["completed"] == 20 and stats["accepted"] == 20
    assert stats["pending"] == 1  # still standing
    assert watcher.wait_io(0.02) == []


def test_accept_deadline_and_standing_idle_timeout(watcher, net):
    lis = _listener(net)
    start = time.monotonic()
    watcher.accept(lis, ctx="once", timeout=0.05)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.DeadlineExceededError) and res.accepted is None
    # a standing accept's timeout is an idle limit, counted from each result
    lis2 = _listener(net)
    watcher.accept(lis2, ctx="standing", timeout=0.3, repeat=True)
    start = time.monotonic()
    for _ in range(3):
        time.sleep(0.15)
        _connect(net, lis2)
        res = collect(watcher, 1)[0]
        net.track(res.accepted)
        assert res.error is None
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert time.monotonic() - start >= 0.45 + 0.3
    assert watcher.stats()["pending"] == 0


def _fill_descriptor_table(headroom=4):
    """Lower RLIMIT_NOFILE to `headroom` above what is open and take every
    free number below it: the next new descriptor gets EMFILE. Returns the
    old limits and the fillers (for _restore)."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max(open_fds()) + headroom
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, old[1]))
    fillers = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    return old, fillers


def _restore(old, fillers):
    for fd in fillers:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


def _until_accepted(watcher, net, timeout=2.0):
    """Results until one accepts a connection (EMFILE reports may come first)."""
    got = []
    end = time.monotonic() + timeout
    while not any(r.accepted for r in got) and time.monotonic() < end:
        got += watcher.wait_io(0.05)
    accepted = [net.track(r.accepted) for r in got if r.accepted is not None]
    assert all(r.error is None or r.error.errno == errno.EMFILE
               for r in got if r.ctx == "L")
    return accepted


def test_standing_accept_survives_descriptor_exhaustion(watcher, net):
    lis = _listener(net)
    spare_a, spare_b = net.pair()  # a delegated connection the watcher will free
    watcher.read(spare_b, bytearray(1), ctx="spare")
    assert watcher.wait_io(0.01) == []
    clients = [_connect(net, lis) for _ in range(3)]  # waiting in the backlog
    old, fillers = _fill_descriptor_table()
    try:
        # Asked once the table is full: an accept in a completion engine's
        # kernel (io_uring) takes a connection as soon as it arrives, and
        # IORING_OP_ACCEPT keeps the RLIMIT_NOFILE of its submission.
        watcher.accept(lis, ctx="L", repeat=True)
        cpu = time.process_time()
        start = time.monotonic()
        errors = []
        while time.monotonic() - start < 0.3:
            for res in watcher.wait_io(0.05):
                assert res.accepted is None and res.ctx == "L"
                errors.append((time.monotonic(), res.error))
        spent = time.process_time() - cpu
        assert errors, "the standing accept did not report EMFILE"
        assert all(isinstance(e, OSError) and e.errno == errno.EMFILE for _, e in errors)
        # at most one report per 10 ms, and no spinning
        assert len(errors) <= 0.3 / 0.010 + 2
        assert spent < 0.2, "%.3fs of CPU in 0.3s: the watcher spins on EMFILE" % spent
        assert watcher.stats()["pending"] == 2  # still standing
        # the watcher closes a descriptor: the standing accept tries at once
        watcher.free(spare_b)
        assert len(_until_accepted(watcher, net)) == 1
        # a descriptor freed behind the watcher's back: tried again 10 ms later
        os.close(fillers.pop())
        assert len(_until_accepted(watcher, net)) == 1
    finally:
        _restore(old, fillers)
    # everything free again: the last connection comes in
    assert len(_until_accepted(watcher, net)) == 1
    assert watcher.stats()["accepted"] == len(clients)


def test_accept_armed_before_the_limit_was_lowered_reports_emfile(watcher, net):
    """R16 whatever the engine does ahead of wait_io(): a standing accept
    requested (and waited on) while descriptors were plenty, then the limit
    lowered to what is open plus 24 and the table filled; three clients come.
    Each accept attempt now meets EMFILE: reported (accepted None, at most one
    per 10 ms), never a descriptor at or past the limit, no spinning; the
    clients come in once room is made, and none is lost."""
    lis = _listener(net)
    spare_a, spare_b = net.pair()  # a delegated connection the watcher will free
    watcher.read(spare_b, bytearray(1), ctx="spare")
    watcher.accept(lis, ctx="L", repeat=True)
    assert watcher.wait_io(0.05) == []  # armed: an io_uring accept is in the kernel now
    clients = [net.track(socket.socket()) for _ in range(3)]  # their descriptors first
    old, fillers = _fill_descriptor_table(headroom=24)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    accepted = []
    try:
        for client in clients:
            client.connect(_ADDRESSES[id(lis)])  # complete in the backlog, no accept needed
        cpu = time.process_time()
        start = time.monotonic()
        errors = []
        while time.monotonic() - start < 0.3:
            for res in watcher.wait_io(0.05):
                if res.accepted is not None:
                    accepted.append(net.track(res.accepted))
                assert res.ctx == "L" and res.accepted is None, (
                    "accepted fd %d with RLIMIT_NOFILE %d and no descriptor free"
                    % (res.accepted.fileno(), limit))
                errors.append(res.error)
        spent = time.process_time() - cpu
        assert errors, "the standing accept did not report EMFILE"
        assert all(isinstance(e, OSError) and e.errno == errno.EMFILE for e in errors)
        assert len(errors) <= 0.3 / 0.010 + 2
        assert spent < 0.2, "%.3fs of CPU in 0.3s: the watcher spins on EMFILE" % spent
        assert watcher.stats()["pending"] == 2  # still standing
        # the watcher closes a descriptor: one client comes in, below the limit
        watcher.free(spare_b)
        accepted += _until_accepted(watcher, net)
        assert len(accepted) == 1 and accepted[0].fileno() < limit
        # room made behind the watcher's back: the other two, 10 ms later at most
        for fd in fillers:
            os.close(fd)
        fillers = []
        end = time.monotonic() + 2
        while len(accepted) < 3 and time.monotonic() < end:
            accepted += _until_accepted(watcher, net, timeout=0.5)
        assert all(s.fileno() < limit for s in accepted)
    finally:
        _restore(old, fillers)
    assert len(accepted) == 3
    assert watcher.stats()["accepted"] == 3
    # every client is served: echo over the accepted sockets, on the watcher
    by_peer = {s.getpeername(): s for s in accepted}
    for i, client in enumerate(clients):
        server = by_peer[client.getsockname()]
        watcher.read(server, bytearray(6), ctx=("r", i))
        client.sendall(b"echo %d" % i)
    for res in collect(watcher, 3):
        watcher.write(res.conn, bytes(res.buffer[:res.size]), ctx=("w", res.ctx[1]))
    assert all(r.error is None for r in collect(watcher, 3))
    for i, client in enumerate(clients):
        assert recv_exactly(client, 6) == b"echo %d" % i
    assert watcher.wait_io(0.02) == []


def test_one_shot_accept_armed_before_the_limit_was_lowered(watcher, net):
    """A one-shot accept requested while descriptors were plenty meets a full
    table when its client comes: EMFILE, accepted None. The client is not
    lost: the next accept, once there is room, gets it."""
    lis = _listener(net)
    watcher.accept(lis, ctx="first")
    assert watcher.wait_io(0.05) == []
    client = net.track(socket.socket())
    old, fillers = _fill_descriptor_table(headroom=24)
    try:
        client.connect(_ADDRESSES[id(lis)])
        res = collect(watcher, 1)[0]
        if res.accepted is not None:
            net.track(res.accepted)
        assert res.ctx == "first" and res.accepted is None
        assert isinstance(res.error, OSError) and res.error.errno == errno.EMFILE
    finally:
        _restore(old, fillers)
    watcher.accept(lis, ctx="second")
    res = collect(watcher, 1)[0]
    server = net.track(res.accepted)
    assert res.ctx == "second" and res.error is None
    assert server.getpeername() == client.getsockname()
    server.sendall(b"late")
    assert recv_exactly(client, 4) == b"late"
