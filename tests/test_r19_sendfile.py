"""R19: sendfile(conn, file, offset=0, count=None).

It queues with the connection's writes, completes with op SENDFILE and the
bytes sent, counts in bytes_written, never closes the file and never moves
its position. count None sends to the end of the file as it is at the
request (nothing left: size 0, no error); a count past the end sends what
there is and completes with EOFError.
"""
import os
import threading

import pytest

import gaio
from conftest import collect, pattern, recv_exactly

SIZE = 3 << 20


@pytest.fixture
def data_file(tmp_path):
    data = pattern(SIZE, seed=7)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


def _drain(client, n):
    """Read n bytes on a thread (the watcher's loop runs on ours)."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("data", recv_exactly(client, n, 20)))
    t.start()
    return t, box


def test_sendfile_is_ordered_with_writes_and_leaves_the_file_alone(watcher, pair, data_file):
    client, server = pair()
    f, data = data_file
    f.seek(123)
    watcher.write(server, b"head", ctx="head")
    watcher.sendfile(server, f, ctx="file")
    watcher.write(server, [b"ta", b"il"], ctx="tail")
    t, box = _drain(client, 4 + SIZE + 4)
    results = collect(watcher, 3, timeout=20)
    t.join(20)
    assert [r.ctx for r in results] == ["head", "file", "tail"]
    res = results[1]
    assert res.op == gaio.Op.SENDFILE and res.error is None
    assert res.size == SIZE and res.buffer is None and res.conn is server
    assert box["data"] == b"head" + data + b"tail"
    assert f.tell() == 123 and not f.closed
    assert watcher.stats()["bytes_written"] == SIZE + 8


def test_sendfile_offset_count_and_a_descriptor(watcher, pair, data_file):
    client, server = pair()
    f, data = data_file
    watcher.sendfile(server, f.fileno(), 1000, 5000, ctx="range")
    res = collect(watcher, 1)[0]
    assert res.error is None and res.size == 5000
    assert recv_exactly(client, 5000) == data[1000:6000]
    assert f.tell() == 0


def test_sendfile_survives_the_caller_closing_the_file(watcher, pair, tmp_path):
    client, server = pair()
    path = tmp_path / "f"
    path.write_bytes(b"kept open by the watcher")
    with open(path, "rb") as f:
        watcher.sendfile(server, f)
    res = collect(watcher, 1)[0]
    assert res.error is None and res.size == 24
    assert recv_exactly(client, 24) == b"kept open by the watcher"


def test_count_past_the_end_is_eof_with_what_was_sent(watcher, pair, data_file):
    client, server = pair()
    f, data = data_file
    watcher.sendfile(server, f, SIZE - 10, 100)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, EOFError) and res.size == 10
    assert recv_exactly(client, 10) == data[-10:]


def test_nothing_left_with_count_none_is_size_zero(watcher, pair, data_file):
    client, server = pair()
    f, _ = data_file
    watcher.write(server, b"a", ctx=1)
    watcher.sendfile(server, f, SIZE, ctx=2)
    watcher.sendfile(server, f, SIZE + 50, ctx=3)
    watcher.write(server, b"b", ctx=4)
    results = collect(watcher, 4)
    assert [r.ctx for r in results] == [1, 2, 3, 4]
    assert [(r.size, r.error) for r in results[1:3]] == [(0, None), (0, None)]
    assert recv_exactly(client, 2) == b"ab"


def test_sendfile_to_a_peer_that_left_and_free_mid_way(watcher, pair, net, data_file):
    client, server = pair()
    f, _ = data_file
    client.close()
    watcher.sendfile(server, f)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, (BrokenPipeError, ConnectionResetError))
    client2, server2 = pair()
    watcher.sendfile(server2, f, ctx="stuck")  # 3 MiB, nobody reads: may stay pending
    results = watcher.wait_io(0.05)
    watcher.free(server2)
    results += collect(watcher, 1) if not results else []
    assert results[0].ctx == "stuck"
    assert results[0].error is None or isinstance(results[0].error, gaio.ConnClosedError)
    assert os.fstat(f.fileno())  # still open
