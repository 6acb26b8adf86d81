"""R18: vectored writes, write(conn, [b1, b2, ...]).

One request: the items go out in order (sendmsg), `size` counts every byte,
a partial send resumes at the right item and offset, and the result's buffer
is the very list or tuple given.
"""
import array
import socket
import threading
import time

import gaio
from conftest import collect, pattern, recv_exactly, recv_until_eof


def test_vectored_write_sends_items_in_order(watcher, pair):
    client, server = pair()
    items = [b"ab", bytearray(b"cd"), memoryview(b"ef"), b"", array.array("B", b"gh")]
    watcher.write(server, items, ctx="v")
    res = collect(watcher, 1)[0]
    assert res.op == gaio.Op.WRITE and res.error is None and res.ctx == "v"
    assert res.size == 8 and res.buffer is items
    assert recv_exactly(client, 8) == b"abcdefgh"
    assert watcher.stats()["bytes_written"] == 8


def test_vectored_and_plain_writes_keep_their_order(watcher, pair):
    client, server = pair()
    watcher.write(server, b"1")
    watcher.write(server, (b"2", b"3"))
    watcher.write(server, b"4")
    watcher.write(server, [b"5"] * 3)
    results = collect(watcher, 4)
    assert [r.size for r in results] == [1, 2, 1, 3]
    assert isinstance(results[1].buffer, tuple)
    assert recv_exactly(client, 7) == b"1234555"


def test_partial_sends_resume_at_the_right_item_and_offset(watcher, pair):
    client, server = pair()
    # small socket buffers (not tiny: loopback TCP with a receive window below
    # one MSS crawls on window probes) and a slow reader: many partial sends
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sizes = [1 << 20, 3, 700001, 1, 2 << 20, 17]
    items = [pattern(n, seed=i) for i, n in enumerate(sizes)]
    expected = b"".join(items)
    got = bytearray()

    def slow_reader():
        client.settimeout(10)
        while len(got) < len(expected):
            data = client.recv(50000)
            if not data:
                return
            got.extend(data)
            time.sleep(0.001)

    watcher.write(server, items, ctx="big")
    t = threading.Thread(target=slow_reader)
    t.start()
    try:
        res = collect(watcher, 1, timeout=30)[0]
    finally:
        t.join(30)
    assert res.error is None and res.size == len(expected)
    assert bytes(got) == expected


def test_many_small_items_past_iov_max(watcher, pair):
    client, server = pair()
    items = [bytes([i % 251]) * (1 + i % 7) for i in range(3000)]
    watcher.write(server, items)
    res = collect(watcher, 1)[0]
    expected = b"".join(items)
    assert res.size == len(expected)
    assert recv_exactly(client, len(expected)) == expected


def test_vectored_write_of_internal_buffer_views_copies_them(watcher, pair):
    client, server = pair()
    watcher.read(server)
    client.sendall(b"view")
    res = collect(watcher, 1)[0]
    watcher.write(server, [b"<", res.buffer, b">"])
    watcher.read(server)  # the next batch reuses the internal buffer
    client.sendall(b"XXXX")
    results = collect(watcher, 2)
    assert recv_exactly(client, 6) == b"<view>"
    assert [r.op for r in results] == [gaio.Op.WRITE, gaio.Op.READ] or \
        [r.op for r in results] == [gaio.Op.READ, gaio.Op.WRITE]


def test_vectored_write_to_a_peer_that_left_fails(watcher, pair):
    client, server = pair()
    client.close()
    watcher.write(server, [b"x" * 65536] * 64)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, (BrokenPipeError, ConnectionResetError))
    assert 0 <= res.size < 64 * 65536


def test_vectored_write_then_free_mid_way(watcher, pair):
    client, server = pair()
    items = [b"y" * (1 << 20)] * 64  # more than socket buffers hold
    watcher.write(server, items, ctx="stuck")
    assert watcher.wait_io(0.05) == []
    watcher.free(server)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.ConnClosedError) and res.buffer is items
    assert 0 < res.size < 64 << 20
    assert len(recv_until_eof(client)) == res.size
