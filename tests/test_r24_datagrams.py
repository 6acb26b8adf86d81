"""R24 and R26: datagram sockets (SOCK_DGRAM of AF_INET, AF_INET6, AF_UNIX).

A read completes with exactly one datagram - never two merged, never one
split: what does not fit is cut off and the result says `truncated`. A write
sends exactly one datagram, or fails whole. A standing read delivers one
result per datagram, in arrival order, within the batch bound of R4.
Written from the SPEC's words (docs/SPEC.md, "Rules - datagrams").
"""
import errno
import socket
import time

import pytest

import gaio
from conftest import collect

FAMILIES = ["udp4", "udp6", "unix"]


def _has_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def dgram_pair(net, kind):
    """(ours, peer): two datagram sockets connected to each other."""
    if kind == "unix":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return net.track(a), net.track(b)
    if kind == "udp6" and not _has_ipv6():
        pytest.skip("no IPv6 loopback here")
    family, host = (socket.AF_INET, "127.0.0.1") if kind == "udp4" else (socket.AF_INET6, "::1")
    a = net.track(socket.socket(family, socket.SOCK_DGRAM))
    b = net.track(socket.socket(family, socket.SOCK_DGRAM))
    a.bind((host, 0))
    b.bind((host, 0))
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    return a, b


def recv_datagrams(sock, n, size=65536, timeout=5.0):
    sock.settimeout(timeout)
    return [sock.recv(size) for _ in range(n)]


def drain_while_waiting(watcher, peer, n, ctx, timeout=10.0):
    """The `n` datagrams `peer` receives while the watcher runs until the
    result of `ctx` (a success) came."""
    got, done = [], []
    peer.setblocking(False)
    end = time.monotonic() + timeout
    while not done or len(got) < n:
        assert time.monotonic() < end, "%d of %d datagrams, done: %r" % (len(got), n, done)
        done += [r for r in watcher.wait_io(timeout=0.01) if r.ctx == ctx]
        try:
            while True:
                got.append(peer.recv(65536))
        except BlockingIOError:
            pass
    assert done[0].error is None
    return got


@pytest.fixture(params=FAMILIES)
def pair(request, net):
    return dgram_pair(net, request.param)


# ---------------------------------------------------------------- R24: accepted, delegated

def test_datagram_socket_is_delegated_like_any_connection(watcher, pair):
    ours, peer = pair
    watcher.read(ours, bytearray(16), ctx="r")
    assert ours.fileno() == -1  # R2: the caller's object is closed when the request returns
    assert watcher.stats()["watched"] == 1
    peer.send(b"hello")
    (res,) = collect(watcher, 1)
    assert res.op == gaio.Op.READ and res.conn is ours and res.ctx == "r"
    assert res.error is None and res.size == 5 and bytes(res.buffer[:5]) == b"hello"
    assert res.truncated is False and res.address is None  # connected: no address
    watcher.free(ours)
    assert watcher.stats()["watched"] == 0


def test_read_completes_with_exactly_one_datagram(watcher, pair):
    ours, peer = pair
    for payload in (b"a" * 10, b"b" * 20, b"c" * 30):
        peer.send(payload)
    bufs = [bytearray(100) for _ in range(3)]
    for i, buf in enumerate(bufs):
        watcher.read(ours, buf, ctx=i)
    results = collect(watcher, 3)
    assert [r.ctx for r in results] == [0, 1, 2]
    assert [r.size for r in results] == [10, 20, 30]
    assert [bytes(b[:r.size]) for b, r in zip(bufs, results)] == [b"a" * 10, b"b" * 20, b"c" * 30]
    assert not any(r.truncated for r in results)
    assert watcher.stats()["bytes_read"] == 60


def test_datagram_longer_than_the_buffer_is_cut_and_says_truncated(watcher, pair):
    ours, peer = pair
    peer.send(b"0123456789")
    peer.send(b"next")
    small, other = bytearray(4), bytearray(16)
    watcher.read(ours, small, ctx="small")
    watcher.read(ours, other, ctx="other")
    first, second = collect(watcher, 2)
    assert first.size == 4 and bytes(small) == b"0123" and first.truncated is True
    assert first.error is None
    # the rest of the long datagram is gone: the next read is the next datagram
    assert second.size == 4 and bytes(other[:4]) == b"next" and second.truncated is False


def test_datagram_longer_than_bufsize_is_cut_in_the_internal_buffer(make_watcher, net):
    w = make_watcher(bufsize=1024)
    ours, peer = dgram_pair(net, "udp4")
    peer.send(b"x" * 3000)
    w.read(ours)
    (res,) = collect(w, 1)
    assert res.error is None and res.is_swap_buffer
    assert res.size == 1024 and len(res.buffer) == 1024 and res.truncated is True


def test_zero_length_datagram_is_a_successful_empty_result(watcher, pair):
    ours, peer = pair
    peer.send(b"")
    peer.send(b"")
    buf = bytearray(8)
    watcher.read(ours, buf, ctx="buf")
    watcher.read(ours, ctx="internal")
    first, second = collect(watcher, 2)
    assert first.error is None and first.size == 0 and first.truncated is False
    # no end of stream on a datagram socket: an empty view, not EOFError
    assert second.error is None and second.size == 0 and second.is_swap_buffer
    assert isinstance(second.buffer, memoryview) and len(second.buffer) == 0
    assert second.buffer.readonly


def test_write_sends_exactly_one_datagram_each(watcher, pair):
    ours, peer = pair
    payloads = [b"one", b"", b"three" * 100, b"4"]
    for i, p in enumerate(payloads):
        watcher.write(ours, p, ctx=i)
    results = collect(watcher, len(payloads))
    assert [r.ctx for r in results] == [0, 1, 2, 3]
    assert all(r.error is None and r.op == gaio.Op.WRITE for r in results)
    assert [r.size for r in results] == [len(p) for p in payloads]
    assert recv_datagrams(peer, len(payloads)) == payloads
    assert watcher.stats()["bytes_written"] == sum(map(len, payloads))


def test_vectored_write_gathers_its_items_into_one_datagram(watcher, pair):
    ours, peer = pair
    watcher.write(ours, [b"ab", b"", memoryview(b"cd"), bytearray(b"ef")], ctx="v")
    watcher.write(ours, [b"", b""], ctx="empty")
    first, second = collect(watcher, 2)
    assert first.error is None and first.size == 6
    assert second.error is None and second.size == 0
    assert recv_datagrams(peer, 2) == [b"abcdef", b""]


def test_vectored_write_past_iov_max_is_still_one_datagram(watcher, pair):
    ours, peer = pair
    items = [bytes([65 + i % 26]) for i in range(3000)]  # past any IOV_MAX (1024 on Linux)
    watcher.write(ours, items, ctx="many")
    (res,) = collect(watcher, 1)
    assert res.error is None and res.size == 3000
    assert recv_datagrams(peer, 1) == [b"".join(items)]


def test_too_long_datagram_fails_whole_with_emsgsize(watcher, net):
    ours, peer = dgram_pair(net, "udp4")
    watcher.write(ours, b"z" * 70000, ctx="big")  # over UDP's 65,507-byte payload
    watcher.write(ours, b"after", ctx="after")
    big, after = collect(watcher, 2)
    assert isinstance(big.error, OSError) and big.error.errno == errno.EMSGSIZE
    assert big.size == 0
    assert after.error is None and after.size == 5
    assert recv_datagrams(peer, 1) == [b"after"]  # nothing of the long one was sent


@pytest.mark.parametrize("call", ["read_full", "accept", "sendfile"])
def test_stream_only_requests_on_a_datagram_socket_are_type_errors(watcher, pair, call, tmp_path):
    ours, _ = pair
    f = tmp_path / "f"
    f.write_bytes(b"data")
    # a new socket (the argument tables check its message on every engine),
    # then the same socket delegated by a read
    for delegated in (False, True):
        if delegated:
            watcher.read(ours, bytearray(4), timeout=0)
            collect(watcher, 1)
        with open(f, "rb") as file:
            with pytest.raises(TypeError, match=r"^conn must be a stream socket \(SOCK_STREAM\), "
                                                r"not SOCK_DGRAM$"):
                if call == "read_full":
                    watcher.read_full(ours, bytearray(4))
                elif call == "accept":
                    watcher.accept(ours)
                else:
                    watcher.sendfile(ours, file)
        assert watcher.stats()["pending"] == 0


def test_deadline_and_free_end_datagram_reads(watcher, pair):
    ours, _ = pair
    watcher.read(ours, bytearray(8), ctx="late", timeout=0.05)
    (res,) = collect(watcher, 1)
    assert isinstance(res.error, gaio.DeadlineExceededError)
    watcher.read(ours, ctx="freed")
    watcher.free(ours)
    (res,) = collect(watcher, 1)
    assert isinstance(res.error, gaio.ConnClosedError)


def test_quiet_datagram_writes_deliver_nothing_on_success(watcher, pair):
    ours, peer = pair
    for i in range(5):
        watcher.write(ours, b"q%d" % i, quiet=True)
    watcher.write(ours, b"loud", ctx="loud")
    (res,) = collect(watcher, 1)
    assert res.ctx == "loud"
    assert recv_datagrams(peer, 6) == [b"q0", b"q1", b"q2", b"q3", b"q4", b"loud"]
    assert watcher.stats()["quiet_done"] == 5


# ---------------------------------------------------------------- R26: batches

def test_standing_read_delivers_one_result_per_datagram_in_order(watcher, pair):
    ours, peer = pair
    watcher.read(ours, repeat=True, ctx="standing")
    sent = [b"%04d" % i * (1 + i % 7) for i in range(200)]
    got = []

    def take(res):
        assert res.error is None and res.ctx == "standing" and not res.truncated
        got.append(bytes(res.buffer))

    for payload in sent[:100]:
        peer.send(payload)
    collect(watcher, 100, each=take)
    for payload in sent[100:]:
        peer.send(payload)
    collect(watcher, 100, each=take)
    assert got == sent
    stats = watcher.stats()
    assert stats["datagrams_read"] == 200 and stats["bytes_read"] == sum(map(len, sent))
    assert stats["pending"] == 1  # it stands


def test_datagram_up_to_bufsize_is_whole_and_batches_keep_the_bound(make_watcher, net):
    bufsize = 1000
    w = make_watcher(bufsize=bufsize)
    ours, peer = dgram_pair(net, "unix")  # AF_UNIX: none is dropped
    w.read(ours, repeat=True)
    for i in range(40):
        peer.send(bytes([i]) * 900)
    got = []
    while len(got) < 40:
        batch = w.wait_io(timeout=2)
        assert batch, "datagrams stopped arriving"
        assert sum(r.size for r in batch) <= 4 * bufsize  # R4's bound, per batch
        for res in batch:
            assert res.size == 900 and not res.truncated
            got.append(bytes(res.buffer))
    assert got == [bytes([i]) * 900 for i in range(40)]


@pytest.mark.parametrize("sizes", ["600", "mixed"])
def test_datagrams_up_to_bufsize_arrive_whole_and_intact(make_watcher, net, sizes):
    # sizes that leave less than bufsize in what a batch has left, so that a
    # datagram does not fit where the last one ended (an engine may move it
    # elsewhere or to the next batch, never cut or change it)
    bufsize = 1000
    w = make_watcher(bufsize=bufsize)
    ours, peer = dgram_pair(net, "unix")  # AF_UNIX: none is dropped
    w.read(ours, repeat=True)
    if sizes == "600":
        lengths = [600] * 30
    else:
        lengths = [(i * 337) % (bufsize + 1) for i in range(60)]  # 0 to bufsize
    sent = [bytes((i + j) % 251 for j in range(n)) for i, n in enumerate(lengths)]
    got = []
    for payload in sent:
        peer.send(payload)
    while len(got) < len(sent):
        batch = w.wait_io(timeout=2)
        assert batch, "datagrams stopped arriving"
        assert sum(r.size for r in batch) <= 4 * bufsize  # R4's bound, per batch
        for res in batch:
            assert res.error is None and not res.truncated
            got.append(bytes(res.buffer))
    assert got == sent


def test_queued_datagram_writes_keep_request_order(watcher, pair):
    ours, peer = pair
    # UDP drops what the peer's receive buffer (about 200 KiB by default,
    # some 1 KiB per small datagram) cannot take: fewer for UDP than for
    # AF_UNIX, which never drops
    n = 300 if ours.family == socket.AF_UNIX else 100
    for i in range(n):
        watcher.write(ours, b"%05d" % i, quiet=True)
    watcher.write(ours, b"end", ctx="end")
    # read as they come: AF_UNIX charges unread datagrams to the sender's
    # buffer, which does not hold 300 of them
    assert drain_while_waiting(watcher, peer, n + 1, "end") == (
        [b"%05d" % i for i in range(n)] + [b"end"])
    assert watcher.stats()["datagrams_written"] == n + 1


def test_stats_count_datagrams_and_stream_results_say_no_address(watcher, net):
    ours, peer = dgram_pair(net, "udp4")
    watcher.write(ours, b"out")
    peer.send(b"in!")
    watcher.read(ours)
    collect(watcher, 2)
    stats = watcher.stats()
    assert stats["datagrams_written"] == 1 and stats["datagrams_read"] == 1
    client, server = net.pair()
    watcher.write(client, b"x")
    watcher.read(server)
    for res in collect(watcher, 2):
        assert res.address is None and res.truncated is False
    assert watcher.stats()["datagrams_read"] == 1  # streams do not count



def test_stats_count_the_system_calls_that_carried_datagrams(watcher, net):
    ours, peer = dgram_pair(net, "unix")  # AF_UNIX: none is dropped
    stats = watcher.stats()
    assert stats["datagram_recv_calls"] == 0 and stats["datagram_send_calls"] == 0
    watcher.read(ours, repeat=True)
    for i in range(50):
        peer.send(b"%03d" % i)
    got = collect(watcher, 50)
    assert [bytes(r.buffer) for r in got] == [b"%03d" % i for i in range(50)]
    for i in range(30):
        watcher.write(ours, b"w%02d" % i, quiet=True)
    watcher.write(ours, b"end", ctx="end")
    assert drain_while_waiting(watcher, peer, 31, "end")[-1] == b"end"
    stats = watcher.stats()
    # each call carried at least one datagram, and a batching engine may
    # carry many with one (R26): never more calls than datagrams
    assert 1 <= stats["datagram_recv_calls"] <= stats["datagrams_read"] == 50
    assert 1 <= stats["datagram_send_calls"] <= stats["datagrams_written"] == 31
    calls = stats["datagram_recv_calls"]
    watcher.wait_io(timeout=0.05)  # nothing waiting: a call that finds nothing counts not
    assert watcher.stats()["datagram_recv_calls"] == calls


# ---------------------------------------------------------------- R27: errors do not end it

def _dead_udp_address():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()
    return address


def _connected_to_a_dead_port(net):
    """(ours, its own address, the dead peer address): ours is connected to a
    loopback UDP port nobody listens on (its address is read before the
    watcher takes the descriptor over)."""
    dead = _dead_udp_address()
    ours = net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    ours.bind(("127.0.0.1", 0))
    ours.connect(dead)
    return ours, ours.getsockname(), dead


def _revive(net, dead, ours_address):
    """A socket on the dead port, connected back: it can answer now."""
    revived = net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    revived.bind(dead)
    revived.connect(ours_address)
    return revived


def test_port_unreachable_fails_one_read_and_the_standing_read_goes_on(watcher, net):
    ours, ours_address, dead = _connected_to_a_dead_port(net)
    watcher.read(ours, repeat=True, ctx="standing")
    watcher.write(ours, b"anyone?", ctx="w")
    results = []
    while not any(r.ctx == "standing" for r in results):
        results += collect(watcher, 1)
    (err,) = [r for r in results if r.ctx == "standing"]
    assert type(err.error) is ConnectionRefusedError and err.size == 0
    assert [r.error for r in results if r.ctx == "w"] == [None]
    # still standing: a datagram from the peer's address arrives as usual
    _revive(net, dead, ours_address).send(b"back")
    got = []
    while not got:
        batch = watcher.wait_io(timeout=2)
        assert batch, "the standing read ended with the error"
        got += [bytes(r.buffer) for r in batch if r.ctx == "standing" and r.error is None]
    assert got == [b"back"]
    assert watcher.stats()["pending"] == 1


def test_error_with_nothing_pending_is_dropped(watcher, net):
    ours, ours_address, dead = _connected_to_a_dead_port(net)
    watcher.write(ours, b"anyone?", ctx="w")
    (w,) = collect(watcher, 1)
    assert w.error is None  # the datagram left; the refusal comes later, to nobody
    assert watcher.wait_io(timeout=0.2) == []
    watcher.read(ours, bytearray(16), ctx="r")
    _revive(net, dead, ours_address).send(b"fine")
    (res,) = collect(watcher, 1)
    assert res.error is None and res.size == 4


def test_refusal_goes_to_the_first_write_when_no_read_is_pending(watcher, net):
    # The refusal of "1" must meet "2" pending: both are queued before the
    # watcher sends either. On loopback the ICMP comes back within the send
    # of "1", so "2" fails with it (its datagram not sent); should the kernel
    # ever be slower, "2" goes out and its refusal comes to nobody: try again.
    # Between tries nothing is pending, so a late refusal is dropped (R27)
    # and every "1" succeeds.
    ours, _, _ = _connected_to_a_dead_port(net)
    for attempt in range(20):
        watcher.write(ours, b"1", ctx="first")
        watcher.write(ours, b"2", ctx="second")
        first, second = collect(watcher, 2)
        assert (first.ctx, first.error, second.ctx) == ("first", None, "second")
        if second.error is not None:
            assert type(second.error) is ConnectionRefusedError and second.size == 0
            break
        time.sleep(0.01)
    else:
        pytest.fail("no write met the refusal in 20 tries")
    watcher.write(ours, b"3", ctx="third")  # the socket goes on (R27)
    (third,) = collect(watcher, 1)
    assert third.error is None and third.size == 1


def test_refusal_goes_to_the_pending_read_not_to_a_later_write(watcher, net):
    # "2" is sent right after "1", whose refusal is on the socket by then (on
    # loopback) or comes later: either way a read is pending, so it is the
    # read's, and both datagrams go out
    ours, _, _ = _connected_to_a_dead_port(net)
    watcher.read(ours, bytearray(8), ctx="r")
    watcher.write(ours, b"1", ctx="first")
    watcher.write(ours, b"2", ctx="second")
    results = {r.ctx: r for r in collect(watcher, 3)}
    assert type(results["r"].error) is ConnectionRefusedError and results["r"].size == 0
    assert [(results[c].error, results[c].size) for c in ("first", "second")] == [(None, 1)] * 2


def test_write_high_never_holds_a_datagram_standing_read(make_watcher, net):
    w = make_watcher(write_high=4096)
    ours, peer = dgram_pair(net, "unix")
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    w.read(ours, repeat=True, ctx="standing")
    # the peer reads nothing: AF_UNIX datagrams are never dropped, so these wait queued
    for i in range(2000):
        w.write(ours, b"w" * 512, quiet=True)
    w.wait_io(timeout=0.1)
    assert w.stats()["pending"] > 1, "the writes should be waiting for the peer"
    peer.send(b"still read")
    got = []
    while not got:
        batch = w.wait_io(timeout=2)
        assert batch, "the standing read was held"
        got += [bytes(r.buffer) for r in batch if r.ctx == "standing" and r.error is None]
    assert got == [b"still read"]


def test_unix_datagrams_wait_for_a_slow_reader_and_none_is_lost(watcher, net):
    ours, peer = dgram_pair(net, "unix")
    n = 3000
    for i in range(n):
        watcher.write(ours, b"%06d" % i, quiet=True)
    watcher.write(ours, b"last", ctx="last")
    got = drain_while_waiting(watcher, peer, n + 1, "last")
    assert got == [b"%06d" % i for i in range(n)] + [b"last"]


def test_zero_byte_write_is_a_datagram_but_an_empty_vector_is_not(watcher, pair):
    ours, peer = pair
    with pytest.raises(ValueError):
        watcher.write(ours, [])
    watcher.write(ours, b"", ctx="empty")
    (res,) = collect(watcher, 1)
    assert res.error is None and res.size == 0
    assert recv_datagrams(peer, 1) == [b""]

