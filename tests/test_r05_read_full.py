"""R5: read_full completes when len(buf) bytes were read, or with error set and
size = bytes read so far."""
import threading
import time

import gaio
from conftest import collect, pattern, reset


def test_read_full_waits_for_every_byte_sent_in_pieces(watcher, pair):
    client, server = pair()
    buf = bytearray(1000)
    watcher.read_full(server, buf, ctx="full")
    payload = pattern(1000, seed=5)
    for start in range(0, 1000, 100):
        client.sendall(payload[start:start + 100])
        early = watcher.wait_io(0.01)
        if start < 900:
            assert early == [], "read_full completed before every byte arrived"
        elif early:
            break
    else:
        early = collect(watcher, 1)
    [res] = early
    assert res.error is None and res.size == 1000 and res.buffer is buf and res.ctx == "full"
    assert bytes(buf) == payload


def test_read_full_of_a_large_buffer(watcher, pair):
    client, server = pair()
    payload = pattern(16 << 20, seed=6)
    buf = bytearray(len(payload))
    watcher.read_full(server, buf)
    sender = threading.Thread(target=client.sendall, args=(payload,))
    sender.start()
    res = collect(watcher, 1, timeout=30)[0]
    sender.join(10)
    assert res.error is None and res.size == len(payload)
    assert buf == payload


def test_read_full_at_end_of_stream_reports_bytes_so_far(watcher, pair):
    client, server = pair()
    buf = bytearray(1000)
    watcher.read_full(server, buf)
    client.sendall(b"x" * 300)
    time.sleep(0.05)
    client.close()
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, EOFError)
    assert res.size == 300
    assert buf[:300] == b"x" * 300 and buf[300:] == bytes(700)


def test_read_full_at_deadline_reports_bytes_so_far(watcher, pair):
    client, server = pair()
    buf = bytearray(1000)
    watcher.read_full(server, buf, timeout=0.3)
    client.sendall(b"y" * 300)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.DeadlineExceededError)
    assert res.size == 300 and buf[:300] == b"y" * 300
    # the rest of the stream is still there for the next request
    buf2 = bytearray(4)
    watcher.read_full(server, buf2)
    client.sendall(b"next")
    res2 = collect(watcher, 1)[0]
    assert res2.error is None and buf2 == b"next"


def test_read_full_on_reset_reports_an_error(watcher, pair):
    client, server = pair()
    buf = bytearray(1000)
    watcher.read_full(server, buf)
    client.sendall(b"z" * 10)
    time.sleep(0.05)
    reset(client)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, (ConnectionResetError, EOFError))
    assert 0 <= res.size <= 10
    assert buf[:res.size] == b"z" * res.size


def test_consecutive_read_fulls_split_the_stream_exactly(watcher, pair):
    client, server = pair()
    sizes = [1, 7, 100, 3, 4096, 65537, 2]
    bufs = [bytearray(n) for n in sizes]
    for i, b in enumerate(bufs):
        watcher.read_full(server, b, ctx=i)
    payload = pattern(sum(sizes), seed=8)
    sender = threading.Thread(target=client.sendall, args=(payload,))
    sender.start()
    results = collect(watcher, len(sizes), timeout=20)
    sender.join(10)
    assert [r.ctx for r in results] == list(range(len(sizes)))
    assert [r.size for r in results] == sizes
    assert b"".join(bufs) == payload
