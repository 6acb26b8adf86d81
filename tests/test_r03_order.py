"""R3: per connection, reads complete in request order, and so do writes;
reads and writes are independent queues."""
import time

from conftest import STUCK, collect, pattern, recv_exactly, stuck_pattern


def test_reads_complete_in_request_order(watcher, pair):
    client, server = pair()
    n = 40
    bufs = [bytearray(1 + i % 7) for i in range(n)]
    for i, buf in enumerate(bufs):
        watcher.read(server, buf, ctx=i)
    stream = pattern(sum(len(b) for b in bufs), seed=3)
    for start in range(0, len(stream), 5):  # dribble it in
        client.sendall(stream[start:start + 5])
    # each read takes at most len(buf) bytes, so every read gets at least one
    results = collect(watcher, n)
    assert [r.ctx for r in results] == list(range(n))
    got = bytearray()
    for r in results:
        assert r.error is None and r.buffer is bufs[r.ctx]
        got += r.buffer[:r.size]
    assert bytes(got) == stream


def test_mixed_internal_and_caller_buffer_reads_keep_order(watcher, pair):
    client, server = pair()
    n = 30
    for i in range(n):
        if i % 3:
            watcher.read(server, ctx=i)
        else:
            watcher.read(server, bytearray(4), ctx=i)
    stream = pattern(3 * 4 * n, seed=4)
    got = bytearray()
    order = []

    def keep(res):
        order.append(res.ctx)
        if res.size:
            got.extend(res.buffer[:res.size])

    sent = 0
    end = time.monotonic() + 10
    while len(order) < n and time.monotonic() < end:
        if sent < len(stream):
            client.sendall(stream[sent:sent + 3])
            sent += 3
        for res in watcher.wait_io(0.02):
            keep(res)
    assert order == list(range(n))
    assert bytes(got) == stream[:len(got)]


def test_writes_complete_in_request_order_and_bytes_arrive_in_order(watcher, pair):
    client, server = pair()
    chunks = [pattern(1 + (i * 7919) % 70000, seed=i) for i in range(60)]
    for i, chunk in enumerate(chunks):
        watcher.write(server, chunk, ctx=i)
    total = sum(map(len, chunks))
    received = bytearray()
    results = []
    client.setblocking(False)
    end = time.monotonic() + 20
    while (len(results) < len(chunks) or len(received) < total) and time.monotonic() < end:
        results.extend(watcher.wait_io(0.005))
        try:
            received += client.recv(1 << 16)
        except BlockingIOError:
            pass
    assert [r.ctx for r in results] == list(range(len(chunks)))
    assert all(r.error is None and r.size == len(chunks[r.ctx]) for r in results)
    assert bytes(received) == b"".join(chunks)


def test_big_write_first_small_write_never_completes_before_it(watcher, pair):
    client, server = pair()
    big = stuck_pattern(seed=1)
    watcher.write(server, big, ctx="big")
    watcher.write(server, b"small", ctx="small")
    # the peer does not read yet: neither may complete, the small one least of all
    early = watcher.wait_io(0.2)
    assert [r.ctx for r in early] == []
    data = bytearray()
    client.setblocking(False)
    results = []
    end = time.monotonic() + 20
    while len(results) < 2 and time.monotonic() < end:
        results.extend(watcher.wait_io(0.002))
        try:
            data += client.recv(1 << 20)
        except BlockingIOError:
            pass
    assert [r.ctx for r in results] == ["big", "small"]
    data += recv_exactly(client, len(big) + 5 - len(data))
    assert bytes(data) == big + b"small"


def test_read_and_write_queues_are_independent(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(10), ctx="read")  # no data: stays pending
    watcher.write(server, b"w1", ctx="w1")
    watcher.write(server, b"w2", ctx="w2")
    results = collect(watcher, 2)
    assert [r.ctx for r in results] == ["w1", "w2"]
    assert recv_exactly(client, 4) == b"w1w2"
    # and a write stuck on a full socket does not hold back reads
    watcher.write(server, bytes(STUCK), ctx="stuck")
    client.sendall(b"now")
    res = collect(watcher, 1)[0]
    assert res.ctx == "read" and bytes(res.buffer[:res.size]) == b"now"
    watcher.free(server)
    assert [r.ctx for r in collect(watcher, 1)] == ["stuck"]


def test_connections_do_not_order_each_other(watcher, net):
    (ca, sa), (cb, sb) = net.pairs(2)
    watcher.read(sa, bytearray(4), ctx="a")
    watcher.read(sb, bytearray(4), ctx="b")
    cb.sendall(b"bbbb")
    res = collect(watcher, 1)[0]
    assert res.ctx == "b"  # a's pending read does not hold b back
    ca.sendall(b"aaaa")
    assert collect(watcher, 1)[0].ctx == "a"


def test_thousands_of_small_writes_queued_on_one_connection(watcher, pair):
    client, server = pair()
    n = 5000
    for i in range(n):
        watcher.write(server, b"%05d" % i, ctx=i)
    expected = b"".join(b"%05d" % i for i in range(n))
    results = collect(watcher, n, timeout=30)
    assert [r.ctx for r in results] == list(range(n))
    assert recv_exactly(client, len(expected)) == expected
