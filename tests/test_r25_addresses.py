"""R25: addresses on datagram sockets.

On an unconnected datagram socket a read's result carries the sender in
`address` (the shape socket.recvfrom gives), and a write needs `address=`: a
numeric address, as for connect(); a missing one or a host name is a
ValueError, raised without blocking. On a connected datagram socket results
say `address is None`, and `address=` is a ValueError there and on streams.
connect() on a datagram socket sets its peer and completes at the next
wait_io(); the socket counts as connected from the moment it is requested.
"""
import socket
import time

import pytest

import gaio
from conftest import collect
from test_r24_datagrams import _has_ipv6, dgram_pair, recv_datagrams


def bound(net, family=socket.AF_INET, host="127.0.0.1"):
    s = net.track(socket.socket(family, socket.SOCK_DGRAM))
    s.bind((host, 0))
    return s


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"),
                                          (socket.AF_INET6, "::1")])
def test_unconnected_read_says_who_sent_each_datagram(watcher, net, family, host):
    if family == socket.AF_INET6 and not _has_ipv6():
        pytest.skip("no IPv6 loopback here")
    server = bound(net, family, host)
    address = server.getsockname()
    a, b = bound(net, family, host), bound(net, family, host)
    watcher.read(server, repeat=True, ctx="s")
    a.sendto(b"from a", address)
    b.sendto(b"from b", address)
    got = []
    collect(watcher, 2, each=lambda r: got.append((bytes(r.buffer), r.address)))
    assert got == [(b"from a", a.getsockname()), (b"from b", b.getsockname())]


def test_unconnected_write_goes_to_its_address(watcher, net):
    server = bound(net)
    a, b = bound(net), bound(net)
    watcher.write(server, b"to a", address=a.getsockname(), ctx="a")
    watcher.write(server, [b"to ", b"b"], address=b.getsockname(), ctx="b")
    results = collect(watcher, 2)
    assert [(r.ctx, r.error, r.size) for r in results] == [("a", None, 4), ("b", None, 4)]
    assert recv_datagrams(a, 1) == [b"to a"] and recv_datagrams(b, 1) == [b"to b"]


def test_an_echo_answers_each_sender_through_the_result_address(watcher, net):
    server = bound(net)
    address = server.getsockname()  # before the watcher takes the socket (R2)
    clients = [bound(net) for _ in range(5)]
    watcher.read(server, repeat=True)
    for i, c in enumerate(clients):
        c.sendto(b"ping %d" % i, address)

    def echo(res):
        watcher.write(server, res.buffer, address=res.address, quiet=True)

    collect(watcher, 5, each=echo)
    end = time.monotonic() + 5
    while watcher.stats()["quiet_done"] < 5:  # the echoes go out in a later wait_io()
        assert time.monotonic() < end, watcher.stats()
        assert watcher.wait_io(timeout=0.05) == []
    for i, c in enumerate(clients):
        assert recv_datagrams(c, 1) == [b"ping %d" % i]


def test_unconnected_write_without_address_is_a_value_error(watcher, net):
    server = bound(net)
    with pytest.raises(ValueError):
        watcher.write(server, b"where to?")
    assert watcher.stats()["pending"] == 0


@pytest.mark.parametrize("address", [("localhost", 9), ("example.invalid", 53)])
def test_host_name_address_is_refused_without_blocking(watcher, net, address):
    server = bound(net)
    started = time.monotonic()
    with pytest.raises(ValueError):
        watcher.write(server, b"x", address=address)
    assert time.monotonic() - started < 0.5  # no resolver was asked
    assert watcher.stats()["pending"] == 0


def test_address_on_a_connected_datagram_socket_is_a_value_error(watcher, net):
    ours, peer = dgram_pair(net, "udp4")
    with pytest.raises(ValueError):
        watcher.write(ours, b"x", address=("127.0.0.1", 9))
    peer.send(b"hi")
    watcher.read(ours, ctx="r")
    (res,) = collect(watcher, 1)
    assert res.address is None and bytes(res.buffer) == b"hi"


# address= on a stream socket's write -> ValueError: rows "write/address-on-stream*"
# of tests/test_v02_bad_arguments.py, with the message, on every engine.


def test_connect_sets_the_peer_and_counts_at_once(watcher, net):
    peer = bound(net)
    ours = net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    watcher.connect(ours, peer.getsockname(), ctx="c")
    # connected from the moment it is requested: no address= needed, nor allowed
    watcher.write(ours, b"hello", ctx="w")
    with pytest.raises(ValueError):
        watcher.write(ours, b"x", address=peer.getsockname())
    results = collect(watcher, 2)
    assert [r.ctx for r in results] == ["c", "w"]
    assert results[0].op == gaio.Op.CONNECT and results[0].error is None
    assert results[0].size == 0 and results[0].buffer is None
    peer.settimeout(5)
    data, sender = peer.recvfrom(64)
    assert data == b"hello"
    peer.sendto(b"back", sender)
    watcher.read(ours, ctx="r")
    (res,) = collect(watcher, 1)
    assert bytes(res.buffer) == b"back" and res.address is None


def test_connect_to_a_host_name_is_refused_without_blocking(watcher, net):
    ours = net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with pytest.raises(ValueError):
        watcher.connect(ours, ("localhost", 53))


def test_unix_datagram_senders_bound_unbound_and_abstract(watcher, net, tmp_path):
    path = str(tmp_path / "server")
    server = net.track(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    server.bind(path)
    named = net.track(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    named.bind(str(tmp_path / "named"))
    unbound = net.track(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    abstract = net.track(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    abstract.bind(b"\0gaio-test-%d" % id(abstract))
    watcher.read(server, repeat=True)
    named.sendto(b"n", path)
    unbound.sendto(b"u", path)
    abstract.sendto(b"a", path)
    got = []
    collect(watcher, 3, each=lambda r: got.append((bytes(r.buffer), r.address)))
    assert got == [(b"n", str(tmp_path / "named")), (b"u", None),
                   (b"a", b"\0gaio-test-%d" % id(abstract))]
    # the named sender can be answered through its address
    watcher.write(server, b"reply", address=got[0][1], ctx="reply")
    (res,) = collect(watcher, 1)
    assert res.error is None
    assert recv_datagrams(named, 1) == [b"reply"]
