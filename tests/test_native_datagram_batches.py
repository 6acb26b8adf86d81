"""The native engines batch datagrams (datagram_batch.c): on a socket without
a peer, recvmmsg takes what is waiting and sendmmsg sends the queued writes,
so fewer system calls than datagrams carry them (stats()). What R26 lets an
engine do, not what it asks: the behaviour itself is every engine's
(tests/test_r26_batches.py); this is the C core's technique, where the
platform has the calls (Linux, FreeBSD)."""
import socket
import sys

import pytest

import gaio
from conftest import collect

pytestmark = pytest.mark.skipif(not sys.platform.startswith(("linux", "freebsd")),
                                reason="recvmmsg/sendmmsg: Linux and FreeBSD")


def udp(net):
    sock = net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind(("127.0.0.1", 0))
    return sock


def test_a_burst_takes_fewer_calls_than_datagrams(native_engine, net):
    w = gaio.Watcher(engine=native_engine)
    try:
        ours, peer = udp(net), udp(net)
        to = ours.getsockname()
        w.read(ours, repeat=True)
        for i in range(100):
            peer.sendto(b"%d" % i, to)
        got = []
        while len(got) < 100:
            for res in collect(w, 1):
                got.append(bytes(res.buffer))
                w.write(ours, res.buffer, address=res.address, quiet=True)
        assert got == [b"%d" % i for i in range(100)]
        w.write(ours, b"end", address=peer.getsockname(), ctx="end")
        collect(w, 1)
        peer.settimeout(2)
        assert [peer.recv(64) for _ in range(101)] == got + [b"end"]
        stats = w.stats()
        assert stats["datagram_recv_calls"] * 4 <= stats["datagrams_read"] == 100, stats
        assert stats["datagram_send_calls"] * 4 <= stats["datagrams_written"] == 101, stats
    finally:
        w.close()


def test_a_connected_socket_keeps_one_call_per_datagram(native_engine, net):
    # R27's errors reach a connected socket through sk_err, which batching
    # would move between datagrams (datagram_batch.c)
    w = gaio.Watcher(engine=native_engine)
    try:
        ours, peer = udp(net), udp(net)
        ours.connect(peer.getsockname())
        peer.connect(ours.getsockname())
        w.read(ours, repeat=True)
        for i in range(20):
            peer.send(b"%d" % i)
        assert len(collect(w, 20)) == 20
        stats = w.stats()
        assert stats["datagram_recv_calls"] == stats["datagrams_read"] == 20
    finally:
        w.close()
