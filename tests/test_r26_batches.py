"""R26 on unconnected datagram sockets, where an engine may take many datagrams
with one system call (recvmmsg) and send a socket's queued writes with one
(sendmmsg): each datagram is still one result, whole, in arrival order, with
its sender; the batch's bound (R4) holds; a write that fails among others
fails alone, in its place. Every engine passes them: the python engine
(one call per datagram) is the reference."""
import errno
import socket
import time

import pytest

from conftest import collect


def unbound_unix(net, tmp_path, name):
    """An unconnected AF_UNIX datagram socket bound to tmp_path/name."""
    sock = net.track(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    sock.bind(str(tmp_path / name))
    return sock


def udp(net):
    sock = net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind(("127.0.0.1", 0))
    return sock


def numbered(i, size):
    return (b"%05d" % i + bytes((i + j) % 251 for j in range(size)))[:size]


def take_all(w, n, bufsize, timeout=5.0, feed=None):
    """The results of n datagrams, checking R4's bound per batch; feed()
    sends what the receiver takes now (an unconnected AF_UNIX socket queues
    only net.unix.max_dgram_qlen datagrams, 10 by default)."""
    got = []
    end = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < end, "%d of %d datagrams" % (len(got), n)
        if feed is not None:
            feed()
        batch = w.wait_io(timeout=0.05)
        assert sum(r.size for r in batch) <= 4 * bufsize  # R4
        for res in batch:
            assert res.error is None, res
            got.append((bytes(res.buffer), res.address, res.truncated))
    return got


def feeder(peer, to, payloads):
    """feed() for take_all: sends payloads to `to` while the receiver takes them."""
    peer.setblocking(False)
    left = list(payloads)

    def feed():
        while left:
            try:
                peer.sendto(left[0], to)
            except BlockingIOError:
                return
            del left[0]
    return feed


def test_a_burst_arrives_whole_in_order_within_the_bound(make_watcher, net, tmp_path):
    # AF_UNIX never drops: every size from 0 to bufsize, more than one
    # system call could carry, more than a batch may hand out
    bufsize = 1000
    w = make_watcher(bufsize=bufsize)
    ours = unbound_unix(net, tmp_path, "ours")
    peer = unbound_unix(net, tmp_path, "peer")
    w.read(ours, repeat=True)
    sent = [numbered(i, (i * 337) % (bufsize + 1)) for i in range(150)]
    got = take_all(w, len(sent), bufsize, feed=feeder(peer, str(tmp_path / "ours"), sent))
    assert [g[0] for g in got] == sent
    assert {g[1] for g in got} == {str(tmp_path / "peer")}
    assert not any(g[2] for g in got)
    assert w.stats()["datagrams_read"] == 150


def test_longer_than_bufsize_is_cut_among_others(make_watcher, net, tmp_path):
    bufsize = 300
    w = make_watcher(bufsize=bufsize)
    ours = unbound_unix(net, tmp_path, "ours")
    peer = unbound_unix(net, tmp_path, "peer")
    w.read(ours, repeat=True)
    sizes = [10, 300, 301, 5, 2000, 0, 299] * 6
    sent = [numbered(i, n) for i, n in enumerate(sizes)]
    got = take_all(w, len(sent), bufsize, feed=feeder(peer, str(tmp_path / "ours"), sent))
    assert [g[0] for g in got] == [p[:bufsize] for p in sent]
    assert [g[2] for g in got] == [len(p) > bufsize for p in sent]


def test_senders_stay_with_their_datagrams(watcher, net):
    ours = udp(net)
    senders = [udp(net) for _ in range(4)]
    to = ours.getsockname()  # R2: delegated, `ours` is closed
    watcher.read(ours, repeat=True)
    expected = []
    for i in range(40):  # a few hundred bytes in all: UDP drops none on loopback
        s = senders[i % 4]
        s.sendto(b"%d" % i, to)
        expected.append((b"%d" % i, s.getsockname()))
    got = take_all(watcher, 40, 65536)
    assert [(g[0], g[1]) for g in got] == expected


def test_datagrams_a_stopped_read_left_go_to_the_next_reads(make_watcher, net):
    # the standing read ends (its deadline) with datagrams still to come;
    # one-shot reads into small buffers take the rest, in order, cut
    bufsize = 100
    w = make_watcher(bufsize=bufsize)
    ours, peer = udp(net), udp(net)
    to = ours.getsockname()  # R2: delegated, `ours` is closed
    w.read(ours, repeat=True, deadline=time.monotonic() + 0.1, ctx="standing")
    sent = [numbered(i, 100) for i in range(60)]
    for payload in sent:  # 60 small datagrams: loopback UDP drops none
        peer.sendto(payload, to)
    time.sleep(0.2)  # the deadline passes before the first wait: one batch, then its end
    got, ended = [], False
    while not ended:
        for res in w.wait_io(timeout=1):
            if res.error is None:
                got.append(bytes(res.buffer))
            else:
                ended = True
    assert got == sent[:len(got)] and len(got) < len(sent)
    rest = sent[len(got):]
    bufs = [bytearray(40) for _ in rest]
    for i, buf in enumerate(bufs):
        w.read(ours, buf, ctx=i)
    results = sorted(collect(w, len(rest)), key=lambda r: r.ctx)
    assert [(r.size, r.truncated) for r in results] == [(40, True)] * len(rest)
    assert [bytes(b) for b in bufs] == [p[:40] for p in rest]


def test_a_freed_sockets_datagrams_reach_no_other(make_watcher, net, tmp_path):
    bufsize = 100
    w = make_watcher(bufsize=bufsize)
    first = unbound_unix(net, tmp_path, "first")
    peer = unbound_unix(net, tmp_path, "peer")
    w.read(first, repeat=True)
    for i in range(10):  # what an unconnected AF_UNIX socket queues (max_dgram_qlen)
        peer.sendto(numbered(i, 100), str(tmp_path / "first"))
    batch = collect(w, 1)
    assert all(bytes(r.buffer) == numbered(i, 100) for i, r in enumerate(batch))
    w.free(first)
    w.wait_io(timeout=0.05)
    second = unbound_unix(net, tmp_path, "second")
    w.read(second, repeat=True)
    sent = [b"second %d" % i for i in range(50)]
    assert [g[0] for g in take_all(w, 50, bufsize,
                                   feed=feeder(peer, str(tmp_path / "second"), sent))] == sent


def test_a_failing_write_among_queued_ones_fails_alone(watcher, net, tmp_path):
    ours = unbound_unix(net, tmp_path, "ours")
    peer = unbound_unix(net, tmp_path, "peer")
    there, nowhere = str(tmp_path / "peer"), str(tmp_path / "nobody")
    plan = [(b"a", there), (b"b", there), (b"lost", nowhere), (b"c", there),
            (b"x" * (1 << 22), there), (b"d", there)]  # nowhere; too long (EMSGSIZE)
    for i, (data, to) in enumerate(plan):
        watcher.write(ours, data, address=to, ctx=i)
    results = collect(watcher, len(plan))
    assert [r.ctx for r in results] == list(range(len(plan)))  # R3
    errors = [type(r.error) if r.error else None for r in results]
    assert errors[:2] == [None, None] and errors[3] is None and errors[5] is None
    assert issubclass(errors[2], OSError) and issubclass(errors[4], OSError)
    assert results[4].error.errno == errno.EMSGSIZE
    assert results[2].size == 0 and results[4].size == 0 and results[3].size == 1
    peer.settimeout(2)
    assert [peer.recv(100) for _ in range(4)] == [b"a", b"b", b"c", b"d"]


def test_many_queued_writes_to_many_addresses(watcher, net):
    ours = udp(net)
    peers = [udp(net) for _ in range(3)]
    for i in range(90):
        watcher.write(ours, b"%d" % i, address=peers[i % 3].getsockname(), quiet=True)
    watcher.write(ours, b"end", address=peers[0].getsockname(), ctx="end")
    assert collect(watcher, 1)[0].ctx == "end"
    for k, p in enumerate(peers):
        p.settimeout(2)
        want = [b"%d" % i for i in range(k, 90, 3)] + ([b"end"] if k == 0 else [])
        assert [p.recv(100) for _ in want] == want
    stats = watcher.stats()
    assert stats["datagrams_written"] == 91
    assert 1 <= stats["datagram_send_calls"] <= 91


@pytest.mark.parametrize("bufsize", [1, 2048, 1 << 20])
def test_any_bufsize(make_watcher, net, tmp_path, bufsize):
    w = make_watcher(bufsize=bufsize)
    ours = unbound_unix(net, tmp_path, "ours")
    peer = unbound_unix(net, tmp_path, "peer")
    w.read(ours, repeat=True)
    sent = [numbered(i, 1 + i % 7) for i in range(70)]
    got = take_all(w, len(sent), bufsize, feed=feeder(peer, str(tmp_path / "ours"), sent))
    assert [g[0] for g in got] == [p[:bufsize] for p in sent]
