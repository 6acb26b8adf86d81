"""R2: the first request delegates a socket: the watcher takes its descriptor
over (detach), makes it non-blocking and leaves the caller's object closed; it stays the
connection's identity. Direct I/O on it fails; socket options persist."""
import fcntl
import os
import socket
import time

import pytest

import gaio
from conftest import collect, fd_inode, fds_of_inode, open_fds, recv_exactly, wait_readable


@pytest.mark.parametrize("first", ["read", "read_buf", "read_full", "write"])
def test_caller_object_is_closed_when_the_first_request_returns(watcher, pair, first):
    client, server = pair()
    inode = fd_inode(server)
    {"read": lambda: watcher.read(server),
     "read_buf": lambda: watcher.read(server, bytearray(4)),
     "read_full": lambda: watcher.read_full(server, bytearray(4)),
     "write": lambda: watcher.write(server, b"abcd")}[first]()
    assert server.fileno() == -1
    assert server._closed
    # exactly one descriptor (the watcher's) still refers to the socket
    assert len(fds_of_inode(inode)) == 1


def test_delegated_descriptor_is_non_blocking(watcher, pair):
    client, server = pair()
    server.setblocking(True)
    inode = fd_inode(server)
    watcher.read(server, bytearray(4))
    [fd] = fds_of_inode(inode)
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK


def test_result_conn_is_the_very_object(watcher, pair):
    client, server = pair()
    watcher.write(server, b"hello")
    watcher.read(server)
    client.sendall(b"0123456789")
    results = collect(watcher, 2)
    watcher.read(server, bytearray(8))
    client.sendall(b"0123456789")
    results += collect(watcher, 1)
    assert all(r.conn is server for r in results)
    assert all(type(r.conn) is socket.socket for r in results)


def test_identity_of_a_socket_subclass_is_kept(watcher, net):
    class Tagged(socket.socket):
        pass

    lis = net.listener()
    net.track(socket.create_connection(lis.getsockname()))
    fd, _ = lis._accept()
    server = net.track(Tagged(fileno=fd))
    server.tag = "mine"
    watcher.write(server, b"x")
    res = collect(watcher, 1)[0]
    assert res.conn is server and res.conn.tag == "mine"


@pytest.mark.parametrize("io", ["send", "recv", "sendall", "recv_into"])
def test_direct_io_on_a_delegated_socket_fails_at_once(watcher, pair, io):
    client, server = pair()
    client.sendall(b"data for the watcher")
    wait_readable(server)
    watcher.read(server, bytearray(64))
    with pytest.raises(OSError):
        {"send": lambda: server.send(b"x"),
         "recv": lambda: server.recv(10),
         "sendall": lambda: server.sendall(b"x"),
         "recv_into": lambda: server.recv_into(bytearray(10))}[io]()
    res = collect(watcher, 1)[0]
    # the watcher, not the caller, got the bytes
    assert bytes(res.buffer[:res.size]) == b"data for the watcher"[:res.size]


def test_second_request_uses_the_same_delegation(watcher, pair):
    client, server = pair()
    inode = fd_inode(server)
    watcher.write(server, b"one")
    watcher.write(server, b"two")
    collect(watcher, 2)
    assert len(fds_of_inode(inode)) == 1
    assert watcher.stats()["watched"] == 1
    assert recv_exactly(client, 6) == b"onetwo"


def test_closing_the_caller_object_again_does_not_disturb_the_watcher(watcher, pair):
    client, server = pair()
    watcher.write(server, b"first")
    server.close()  # already closed by delegation: a no-op
    del server
    # the identity lives on in the result
    res = collect(watcher, 1)[0]
    watcher.write(res.conn, b"second")
    res2 = collect(watcher, 1)[0]
    assert res2.conn is res.conn and res2.error is None
    assert recv_exactly(client, 11) == b"firstsecond"


@pytest.mark.parametrize("level,option,value", [
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.SOL_SOCKET, socket.SO_RCVBUF, 8192),
    (socket.SOL_SOCKET, socket.SO_SNDBUF, 16384),
])
def test_socket_options_set_before_delegation_persist(watcher, pair, level, option, value):
    client, server = pair()
    server.setsockopt(level, option, value)
    expected = server.getsockopt(level, option)  # the kernel may double buffer sizes
    inode = fd_inode(server)
    watcher.read(server, bytearray(4))
    [fd] = fds_of_inode(inode)
    probe = socket.socket(fileno=os.dup(fd))
    try:
        assert probe.getsockopt(level, option) == expected
    finally:
        probe.close()


def test_delegated_socket_blocking_and_timeout_settings_do_not_matter(watcher, pair):
    client, server = pair()
    server.settimeout(0.001)  # a caller timeout must not leak into the watcher's I/O
    watcher.read(server, bytearray(16), timeout=2.0)
    # data arrives after the caller's own socket timeout would have expired
    time.sleep(0.05)
    client.sendall(b"late")
    res = collect(watcher, 1)[0]
    assert res.error is None and bytes(res.buffer[:res.size]) == b"late"


def test_delegation_keeps_the_descriptor_count(watcher, net):
    pairs = net.pairs(20)
    before = len(open_fds())
    for _, server in pairs:
        watcher.read(server, bytearray(1))
    # the descriptor changes hands: none added per socket
    assert len(open_fds()) <= before + 2  # an engine may hold one or two of its own
    assert watcher.stats()["watched"] == 20
    for client, _ in pairs:
        client.sendall(b"x")
    results = collect(watcher, 20)
    assert {r.conn for r in results} == {s for _, s in pairs}
    assert isinstance(results[0], gaio.OpResult)


def test_socket_with_a_makefile_object_is_closed_too(watcher, pair):
    """socket.close() only marks a socket closed while makefile() objects are
    open (it keeps the descriptor for them): delegation must still leave the
    caller's object without a descriptor, so direct I/O fails at once."""
    client, server = pair()
    reader = server.makefile("rb")
    try:
        inode = fd_inode(server)
        watcher.read(server, bytearray(8))
        assert server.fileno() == -1
        with pytest.raises(OSError):
            server.send(b"x")
        assert len(fds_of_inode(inode)) == 1  # only the watcher's
        client.sendall(b"for the watcher")
        res = collect(watcher, 1)[0]
        assert res.error is None and res.conn is server
    finally:
        reader.close()
