"""The settled 0.2 edge cases (SPEC, "Edge cases, settled (0.2)", R17, R19-R23)
that the per-rule files leave out, each written from the SPEC's words:

- "A failed connect() delivers its result first, then the results of the
  requests queued behind it, in order" — every kind of request queued behind
  it (quiet writes, sendfile, a standing read), each with an error of the
  connect's class (R17); a quiet one's failure is delivered (R22).
- "sendfile() with count=None and nothing left after offset completes at once
  with size == 0 and no error; a count that runs past the end of the file
  sends what there is and completes with EOFError and that size" — at and past
  the end, quiet or not, and "the end of the file as it is when the request is
  made" (R19); bytes_written counts those bytes.
- "A standing request with timeout <= 0 -> ValueError", which leaves nothing
  behind (R1); a deadline already past is no such error (tried once, R7).
- "write_high ... None for no limit": a peer that does not read never stops a
  standing read, whether the unwritten bytes are its own views or plain writes
  on its connection (R21).
- "The result of an ACCEPT, CONNECT or SENDFILE request has buffer=None" —
  on success and on every way of failing; `accepted` is None on every other
  result.
- fileno() "is not readable while there is nothing to do" and is readable when
  a request from another thread is queued (with no I/O ready) or I/O is ready
  for an accept or a connect (R23).
- next_timeout() is "0 once it has passed" — exactly 0, for deadlines long
  past too — "or None when no request has one" (R23).
"""
import socket
import threading
import time

import pytest

import gaio
from conftest import collect, pattern, recv_exactly, wait_readable
from test_r23_fileno import _drain, _readable

# ---------------------------------------------------------------- helpers


def _in_thread(fn, *args, **kwargs):
    t = threading.Thread(target=fn, args=args, kwargs=kwargs)
    t.start()
    t.join(5)
    assert not t.is_alive()


def _refusing_unix(net, tmp_path):
    """An AF_UNIX path bound by a socket that does not listen: ECONNREFUSED."""
    path = str(tmp_path / "refuses")
    s = net.track(socket.socket(socket.AF_UNIX))
    s.bind(path)
    return path


def _refusing_tcp():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()
    return address


SIZE = 100_000


@pytest.fixture
def data_file(tmp_path):
    data = pattern(SIZE, seed=11)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


# ---------------------------------------------------------------- R17: a failed connect


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_failed_connect_comes_first_then_every_kind_queued_behind_it(
        watcher, net, tmp_path, data_file, family):
    f, _ = data_file
    if family == "unix":
        sock, address = net.track(socket.socket(socket.AF_UNIX)), _refusing_unix(net, tmp_path)
    else:
        sock, address = net.track(socket.socket()), _refusing_tcp()
    watcher.connect(sock, address, ctx="connect")
    watcher.write(sock, b"quiet", ctx="quiet", quiet=True)
    watcher.read(sock, repeat=True, ctx="standing")
    watcher.sendfile(sock, f, ctx="sendfile")
    watcher.read(sock, bytearray(3), ctx="read")
    watcher.write(sock, (b"a", b"b"), ctx="vectored")
    watcher.sendfile(sock, f.fileno(), 10, 20, ctx="sendfile-range", quiet=True)
    results = collect(watcher, 7)
    assert watcher.wait_io(0.05) == []
    assert [r.ctx for r in results] == ["connect", "quiet", "standing", "sendfile", "read",
                                        "vectored", "sendfile-range"]
    assert [r.op for r in results] == [gaio.Op.CONNECT, gaio.Op.WRITE, gaio.Op.READ,
                                       gaio.Op.SENDFILE, gaio.Op.READ, gaio.Op.WRITE,
                                       gaio.Op.SENDFILE]
    for res in results:
        assert type(res.error) is ConnectionRefusedError, res
        assert res.size == 0 and res.conn is sock and res.accepted is None
    assert results[0].buffer is None and results[3].buffer is None
    assert results[2].buffer is None and not results[2].is_swap_buffer
    assert results[5].buffer == (b"a", b"b")
    stats = watcher.stats()
    assert stats["pending"] == 0 and stats["quiet_done"] == 0 and stats["completed"] == 7
    assert stats["bytes_written"] == 0
    assert stats["watched"] == 1  # delegated until the caller frees it
    watcher.free(sock)
    assert watcher.stats()["watched"] == 0


# ---------------------------------------------------------------- R19: sendfile at and past the end


@pytest.mark.parametrize("quiet", [False, True], ids=["loud", "quiet"])
def test_sendfile_at_and_past_the_end(watcher, pair, data_file, quiet):
    client, server = pair()
    f, data = data_file
    cases = [  # (offset, count) -> (size, error)
        ((SIZE, None), (0, None)),          # nothing left, count None: no error
        ((SIZE + 7, None), (0, None)),      # past the end, count None: no error
        ((SIZE - 3, None), (3, None)),      # what is left
        ((SIZE - 3, 3), (3, None)),         # exactly what is left
        ((SIZE - 3, 4), (3, EOFError)),     # one past the end: what there is, EOFError
        ((SIZE, 1), (0, EOFError)),         # at the end with a count
        ((SIZE + 7, 5), (0, EOFError)),     # past the end with a count
    ]
    for i, ((offset, count), _) in enumerate(cases):
        watcher.sendfile(server, f, offset, count, ctx=i, quiet=quiet)
    watcher.write(server, b"end", ctx="end")
    results = collect(watcher, 1 + sum(1 for _, (_, e) in cases if e or not quiet))
    assert watcher.wait_io(0.02) == []
    assert results[-1].ctx == "end"
    got = {r.ctx: r for r in results[:-1]}
    for i, (_, (size, error)) in enumerate(cases):
        if quiet and error is None:
            assert i not in got  # a quiet success delivers nothing (R22)
            continue
        res = got.pop(i)
        assert res.op == gaio.Op.SENDFILE and res.buffer is None, res
        assert (res.size, type(res.error) if res.error else None) == (size, error), (i, res)
    assert not got
    assert [r.ctx for r in results[:-1]] == sorted(r.ctx for r in results[:-1])
    sent = 3 + 3 + 3
    assert recv_exactly(client, sent + 3) == data[-3:] * 3 + b"end"
    stats = watcher.stats()
    assert stats["bytes_written"] == sent + 3
    assert stats["quiet_done"] == (4 if quiet else 0)
    assert f.tell() == 0


def test_sendfile_count_none_sends_the_file_as_it_was_at_the_request(watcher, pair, tmp_path):
    """count=None: "up to the end of the file as it is when the request is
    made" — bytes appended while the request waits behind a write are not sent."""
    client, server = pair()
    path = tmp_path / "growing"
    path.write_bytes(b"0123456789")
    big = pattern(8 << 20, seed=12)  # more than the socket takes: the sendfile waits
    with open(path, "rb") as f:
        watcher.write(server, big, ctx="big")
        watcher.sendfile(server, f, ctx="file")
        watcher.write(server, b"!", ctx="tail")
        assert watcher.wait_io(0.05) == []
        with open(path, "ab") as out:
            out.write(b"appended later")
        box = {}
        reader = threading.Thread(
            target=lambda: box.setdefault("data", recv_exactly(client, len(big) + 11, 30)))
        reader.start()
        results = collect(watcher, 3, timeout=30)
        reader.join(30)
    assert [r.ctx for r in results] == ["big", "file", "tail"]
    assert (results[1].size, results[1].error) == (10, None)
    assert box["data"][len(big):] == b"0123456789!"
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(100)


# ---------------------------------------------------------------- R20: the idle limit must be positive


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, -1e-9, -1, -float("inf")])
@pytest.mark.parametrize("kind", ["read", "accept"])
def test_standing_timeout_not_positive_is_value_error_and_leaves_nothing(
        watcher, net, pair, kind, timeout):
    client, server = pair()
    target = net.listener() if kind == "accept" else server
    before = watcher.stats()
    with pytest.raises(ValueError):
        if kind == "accept":
            watcher.accept(target, repeat=True, timeout=timeout)
        else:
            watcher.read(target, repeat=True, timeout=timeout)
    assert watcher.stats() == before
    assert target.fileno() != -1  # not delegated (R1: nothing left behind)
    # the same request with a positive idle limit is fine
    if kind == "accept":
        watcher.accept(target, repeat=True, timeout=0.05, ctx="ok")
    else:
        watcher.read(target, repeat=True, timeout=0.05, ctx="ok")
    [res] = collect(watcher, 1)
    assert res.ctx == "ok" and isinstance(res.error, gaio.DeadlineExceededError)


@pytest.mark.parametrize("kind", ["read", "accept"])
def test_standing_request_with_a_deadline_already_past_is_tried_once(watcher, net, pair, kind):
    """Only the idle limit must be positive: a past deadline ends the standing
    request once tried (R7), it is no ValueError."""
    client, server = pair()
    target = net.listener() if kind == "accept" else server
    if kind == "accept":
        watcher.accept(target, repeat=True, deadline=time.monotonic() - 1, ctx="past")
    else:
        watcher.read(target, repeat=True, deadline=time.monotonic() - 1, ctx="past")
    [res] = collect(watcher, 1)
    assert res.ctx == "past" and isinstance(res.error, gaio.DeadlineExceededError)
    assert res.size == 0 and res.buffer is None and res.accepted is None
    assert watcher.stats()["timeouts"] == 1


# ---------------------------------------------------------------- R21: write_high=None


def test_write_high_none_a_plain_write_on_its_connection_never_holds_it(make_watcher, pair):
    w = make_watcher(4096, write_high=None)
    client, server = pair()
    w.read(server, repeat=True, ctx="standing")
    big = pattern(16 << 20, seed=13)  # more than socket buffers take: stays pending
    w.write(server, big, ctx="big")
    client.sendall(b"ping")
    got = b""
    end = time.monotonic() + 5
    while got != b"ping" and time.monotonic() < end:
        for res in w.wait_io(0.05):
            assert res.ctx == "standing" and res.error is None, res
            got += bytes(res.buffer)
    assert got == b"ping"  # read while 16 MiB wait unwritten
    assert w.stats()["pending"] == 2
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("d", recv_exactly(client, len(big), 30)))
    reader.start()
    results = collect(w, 1, timeout=30)
    reader.join(30)
    assert [r.ctx for r in results] == ["big"] and box["d"] == big


def test_write_high_none_a_proxy_to_a_peer_that_does_not_read_keeps_reading(make_watcher, net):
    """Views of a standing read written to another connection whose peer
    never reads: with no limit the standing read never stops."""
    w = make_watcher(4096, write_high=None)
    src_client, src = net.pair(unix=True)
    dst_client, dst = net.pair(unix=True)  # dst_client never reads
    w.read(src, repeat=True, ctx="src")
    chunk = pattern(65536, seed=14)
    src_client.setblocking(False)
    sent = 0
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        try:
            sent += src_client.send(chunk)
        except BlockingIOError:
            pass
        for res in w.wait_io(0.005):
            assert res.error is None, res
            if res.ctx == "src":
                w.write(dst, res.buffer, quiet=True)
    stats = w.stats()
    # far more than the default limit and any socket buffers hold
    assert stats["bytes_read"] > 4 * 262144 + 2 * (1 << 20), stats
    assert stats["bytes_read"] - stats["bytes_written"] > 2 * 262144, stats
    w.free(src)
    w.free(dst)
    results = collect(w, 1)
    end = time.monotonic() + 5
    while w.stats()["pending"] and time.monotonic() < end:
        results += w.wait_io(0.05)
    assert all(isinstance(r.error, gaio.ConnClosedError) for r in results)
    assert [r.ctx for r in results if r.ctx == "src"] == ["src"]


# ---------------------------------------------------------------- buffer None on ACCEPT, CONNECT, SENDFILE


def test_accept_connect_sendfile_results_have_no_buffer(watcher, net, pair, data_file, tmp_path):
    f, _ = data_file
    lis = net.track(socket.create_server(("127.0.0.1", 0), backlog=16))
    lis_address = lis.getsockname()
    results = []
    # ACCEPT: one-shot, standing, a deadline, ended by free()
    watcher.accept(lis, ctx="accept-deadline", timeout=0.01)
    results += collect(watcher, 1)
    watcher.accept(lis, ctx="accept")
    watcher.accept(lis, ctx="accept-standing", repeat=True)
    for _ in range(2):
        net.track(socket.create_connection(lis_address))
    results += collect(watcher, 2)
    watcher.free(lis)
    results += collect(watcher, 1)
    for res in results[2:]:
        if res.accepted is not None:
            net.track(res.accepted)
    # CONNECT: success, refused, a missing path
    target = net.track(socket.create_server(("127.0.0.1", 0)))  # not net.listener(): pair() accepts there
    good = net.track(socket.socket())
    watcher.connect(good, target.getsockname(), ctx="connect")
    refused = net.track(socket.socket())
    watcher.connect(refused, _refusing_tcp(), ctx="connect-refused")
    missing = net.track(socket.socket(socket.AF_UNIX))
    watcher.connect(missing, str(tmp_path / "missing"), ctx="connect-missing")
    results += collect(watcher, 3)
    # SENDFILE: success, nothing left, EOFError, a peer gone, ended by free()
    client, server = pair()
    watcher.sendfile(server, f, ctx="sendfile")
    watcher.sendfile(server, f, SIZE, ctx="sendfile-nothing")
    watcher.sendfile(server, f, SIZE - 1, 2, ctx="sendfile-eof")
    results += collect(watcher, 3)
    recv_exactly(client, SIZE + 1)
    client2, server2 = pair()
    client2.close()
    watcher.sendfile(server2, f, ctx="sendfile-peer-gone")
    results += collect(watcher, 1)
    client3, server3 = pair(unix=True)
    watcher.write(server3, pattern(8 << 20), ctx="stuck")
    watcher.sendfile(server3, f, ctx="sendfile-freed")
    watcher.free(server3)
    results += collect(watcher, 2)
    by_ctx = {}
    for res in results:
        by_ctx.setdefault(res.ctx, []).append(res)
    assert set(by_ctx) == {
        "accept-deadline", "accept", "accept-standing", "connect", "connect-refused",
        "connect-missing", "sendfile", "sendfile-nothing", "sendfile-eof",
        "sendfile-peer-gone", "sendfile-freed", "stuck"}
    errors = {ctx: [type(r.error).__name__ if r.error else None for r in rs]
              for ctx, rs in by_ctx.items()}
    assert errors["accept-deadline"] == ["DeadlineExceededError"]
    assert errors["accept"] == [None]
    assert errors["accept-standing"] == [None, "ConnClosedError"]
    assert errors["connect"] == [None]
    assert errors["connect-refused"] == ["ConnectionRefusedError"]
    assert errors["connect-missing"] == ["FileNotFoundError"]
    assert errors["sendfile"] == [None] and errors["sendfile-nothing"] == [None]
    assert errors["sendfile-eof"] == ["EOFError"]
    assert errors["sendfile-peer-gone"][0] in ("BrokenPipeError", "ConnectionResetError")
    assert errors["sendfile-freed"] == ["ConnClosedError"]
    for res in results:
        if res.op in (gaio.Op.ACCEPT, gaio.Op.CONNECT, gaio.Op.SENDFILE):
            assert res.buffer is None, res
            assert res.is_swap_buffer is False, res
        if res.op != gaio.Op.ACCEPT or res.error is not None:
            assert res.accepted is None, res


# ---------------------------------------------------------------- R23: fileno()


@pytest.mark.usefixtures("needs_fileno")
@pytest.mark.parametrize("kind", ["read", "read_full", "standing", "write", "accept", "free"])
def test_fileno_readable_for_a_request_from_another_thread_with_no_io_ready(
        watcher, net, pair, kind):
    """Nothing to read, nothing to accept: only the queued request makes work."""
    client, server = pair()
    lis = net.listener()
    fd = watcher.fileno()
    if kind == "free":
        watcher.read(server, bytearray(1), ctx="pending")
        _drain(watcher)
    assert not _readable(fd)
    calls = {
        "read": lambda: watcher.read(server, bytearray(1), ctx=kind),
        "read_full": lambda: watcher.read_full(server, bytearray(4), ctx=kind),
        "standing": lambda: watcher.read(server, repeat=True, ctx=kind),
        "write": lambda: watcher.write(server, b"out", ctx=kind),
        "accept": lambda: watcher.accept(lis, ctx=kind),
        "free": lambda: watcher.free(server),
    }
    _in_thread(calls[kind])
    assert _readable(fd, 2.0), "a request queued from another thread left fileno() quiet"
    results = watcher.wait_io(0) + _drain(watcher)
    assert not _readable(fd, 0.05)
    if kind == "write":
        assert [r.ctx for r in results] == ["write"] and results[0].error is None
        assert recv_exactly(client, 3) == b"out"
    elif kind == "free":
        assert [r.ctx for r in results] == ["pending"]
    else:
        assert results == []  # waiting for I/O: nothing to do now


@pytest.mark.usefixtures("needs_fileno")
def test_fileno_readable_when_a_connection_arrives_and_a_connect_completes(watcher, net):
    fd = watcher.fileno()
    lis = net.track(socket.create_server(("127.0.0.1", 0)))
    address = lis.getsockname()
    watcher.accept(lis, repeat=True, ctx="accept")
    assert _drain(watcher) == []
    assert not _readable(fd, 0.05)
    client = net.track(socket.create_connection(address))
    assert _readable(fd, 2.0)
    results = watcher.wait_io(0) + _drain(watcher)
    assert [r.ctx for r in results] == ["accept"]
    net.track(results[0].accepted)
    assert client.fileno() != -1
    assert not _readable(fd, 0.05)
    sock = net.track(socket.socket())
    watcher.connect(sock, address, ctx="connect")
    results = []
    end = time.monotonic() + 2
    while len(results) < 2 and time.monotonic() < end:
        if _readable(fd, 0.1):
            results += watcher.wait_io(0)
    assert sorted(r.ctx for r in results) == ["accept", "connect"]
    for res in results:
        if res.accepted is not None:
            net.track(res.accepted)
    results += _drain(watcher)
    assert not _readable(fd, 0.05)
    watcher.free(lis)
    collect(watcher, 1)


@pytest.mark.usefixtures("needs_fileno")
def test_fileno_quiet_while_requests_wait_and_after_a_batch(watcher, pair):
    """Pending requests that wait for I/O, and a delivered batch, leave
    nothing to do: an idle watcher does not wake its loop."""
    client, server = pair()
    other_client, other = pair()
    fd = watcher.fileno()
    watcher.read(server, repeat=True, ctx="standing")
    # the peer does not read (on another connection: on the standing read's
    # own, back-pressure would hold it, R21)
    watcher.write(other, pattern(8 << 20), ctx="stuck")
    _drain(watcher)
    assert not _readable(fd, 0.1)
    client.sendall(b"x")
    wait_readable(fd)
    results = watcher.wait_io(0) + _drain(watcher)
    assert [r.ctx for r in results] == ["standing"]
    assert not _readable(fd, 0.1)
    watcher.free(server)
    watcher.free(other)
    collect(watcher, 2)


# ---------------------------------------------------------------- R23: next_timeout()


@pytest.mark.parametrize("past", [0.0, 1e-6, 10.0, "zero", "negative"])
def test_overdue_next_timeout_is_exactly_zero(watcher, pair, past):
    client, server = pair()
    if past == "zero":
        watcher.read(server, bytearray(1), deadline=0.0, ctx="r")
    elif past == "negative":
        watcher.read(server, bytearray(1), deadline=-5.0, ctx="r")
    else:
        watcher.read(server, bytearray(1), deadline=time.monotonic() - past, ctx="r")
    t = watcher.next_timeout()
    assert t == 0 and not t < 0, t
    assert isinstance(t, (int, float))
    [res] = collect(watcher, 1)
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert watcher.next_timeout() is None


def test_next_timeout_becomes_exactly_zero(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(1), timeout=0.02, ctx="r")
    t = watcher.next_timeout()
    assert 0 < t <= 0.02
    time.sleep(0.05)
    assert watcher.next_timeout() == 0
    assert watcher.next_timeout() == 0  # asking does not complete it
    [res] = watcher.wait_io(0)
    assert res.ctx == "r" and isinstance(res.error, gaio.DeadlineExceededError)


def test_next_timeout_none_with_no_deadline_pending(watcher, net, pair, data_file, tmp_path):
    """Requests of every kind pending without a deadline: None."""
    f, _ = data_file
    assert watcher.next_timeout() is None
    client, server = pair(unix=True)
    watcher.read(server, bytearray(1))
    watcher.read(server, repeat=True)
    watcher.write(server, pattern(8 << 20))
    watcher.sendfile(server, f)
    watcher.accept(net.listener(), repeat=True)
    watcher.accept(net.listener())
    assert watcher.wait_io(0.02) == []
    assert watcher.next_timeout() is None
    # one request with a deadline, then none again once it is done
    quiet_client, quiet_server = pair(unix=True)
    watcher.read(quiet_server, bytearray(1), timeout=0.01, ctx="timed")
    assert watcher.next_timeout() is not None
    [res] = collect(watcher, 1)
    assert res.ctx == "timed"
    assert watcher.next_timeout() is None
    watcher.free(server)
    watcher.free(net.listener())
    collect(watcher, 6)
    assert watcher.next_timeout() is None


@pytest.mark.parametrize("kind", ["accept", "sendfile", "write", "standing-deadline",
                                  "standing-idle"])
def test_next_timeout_counts_every_kind_of_request(watcher, net, pair, data_file, kind):
    f, _ = data_file
    client, server = pair(unix=True)
    if kind == "accept":
        watcher.accept(net.listener(), timeout=0.3, ctx=kind)
    elif kind in ("sendfile", "write"):
        watcher.write(server, pattern(8 << 20), ctx="stuck")
        if kind == "write":
            watcher.write(server, b"x", timeout=0.3, ctx=kind)
        else:
            watcher.sendfile(server, f, timeout=0.3, ctx=kind)
    elif kind == "standing-deadline":
        watcher.read(server, repeat=True, deadline=time.monotonic() + 0.3, ctx=kind)
    else:
        watcher.read(server, repeat=True, timeout=0.3, ctx=kind)
    t = watcher.next_timeout()
    assert t is not None and 0.2 < t <= 0.3, t
    res = [r for r in collect(watcher, 1) if r.ctx == kind]
    assert isinstance(res[0].error, gaio.DeadlineExceededError)
    if kind in ("sendfile", "write"):
        watcher.free(server)
        collect(watcher, 1)
    assert watcher.next_timeout() is None


def test_next_timeout_follows_a_restarted_idle_limit(watcher, pair):
    """R20: the idle limit is "counted again from each result"; next_timeout()
    gives the seconds until that restarted limit, never 0 while it is ahead."""
    client, server = pair()
    watcher.read(server, repeat=True, timeout=0.4, ctx="idle")
    time.sleep(0.25)
    client.sendall(b"x")
    [res] = collect(watcher, 1)
    assert res.error is None
    t = watcher.next_timeout()
    assert t is not None and 0.3 < t <= 0.4, t
    time.sleep(0.2)
    assert watcher.next_timeout() > 0.1  # the first limit (0.4 after the request) is past
    [res] = collect(watcher, 1)
    assert isinstance(res.error, gaio.DeadlineExceededError)
