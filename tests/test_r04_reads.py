"""R4: reads into caller buffers of any writable contiguous kind, and reads into
the watcher's internal buffer: read-only views of exactly `size` bytes, released
at the next wait_io(), never showing another connection's bytes, bounded by
4 x bufsize per batch."""
import array
import ctypes
import gc
import mmap
import socket
import time
import weakref

import pytest

import gaio
from conftest import collect, pattern, reset, wait_readable


try:  # imported at collection: numpy's BLAS threads must predate the thread accounting
    import numpy
except ImportError:
    numpy = None


def _numpy_array():
    if numpy is None:
        pytest.skip("numpy is not installed")
    return numpy.zeros(32, dtype=numpy.uint8)


BUFFERS = {
    "bytearray": lambda: bytearray(32),
    "memoryview": lambda: memoryview(bytearray(32)),
    "array-B": lambda: array.array("B", bytes(32)),
    "array-i": lambda: array.array("i", [0] * 8),  # 32 bytes, itemsize 4
    "array-d": lambda: array.array("d", [0.0] * 4),  # 32 bytes, itemsize 8
    "2d-view": lambda: memoryview(bytearray(32)).cast("B", (4, 8)),  # len() is 4
    "mmap": lambda: mmap.mmap(-1, 32),
    "ctypes": lambda: ctypes.create_string_buffer(32),
    "numpy": _numpy_array,
}


@pytest.mark.parametrize("kind", BUFFERS)
@pytest.mark.parametrize("method", ["read", "read_full"])
def test_caller_buffer_kinds(watcher, pair, kind, method):
    client, server = pair()
    buf = BUFFERS[kind]()
    payload = pattern(32, seed=7)
    getattr(watcher, method)(server, buf, ctx=kind)
    client.sendall(payload)
    got = bytearray()
    end = time.monotonic() + 5
    while len(got) < 32 and time.monotonic() < end:
        res = collect(watcher, 1)[0]
        assert res.error is None and res.buffer is buf and res.ctx == kind
        assert res.op == gaio.Op.READ and res.is_swap_buffer is False
        got += memoryview(buf).cast("B")[:res.size]
        if len(got) < 32:
            assert method == "read"
            watcher.read(server, buf)
    assert bytes(got) == payload
    if kind == "mmap":
        buf.close()


def test_slice_of_a_bytearray_is_filled_in_place(watcher, pair):
    client, server = pair()
    backing = bytearray(b"." * 20)
    view = memoryview(backing)[5:15]
    watcher.read_full(server, view)
    client.sendall(b"0123456789")
    res = collect(watcher, 1)[0]
    assert res.size == 10 and res.buffer is view
    assert backing == b".....0123456789....."


def test_read_completes_with_what_arrived_and_leaves_the_rest_untouched(watcher, pair):
    client, server = pair()
    buf = bytearray(b"\xee" * 100)
    watcher.read(server, buf)
    client.sendall(b"abc")
    res = collect(watcher, 1)[0]
    assert res.error is None and 1 <= res.size <= 3
    assert buf[:res.size] == b"abc"[:res.size]
    assert buf[res.size:] == b"\xee" * (100 - res.size)


@pytest.mark.parametrize("how", ["close", "shutdown"])
@pytest.mark.parametrize("internal", [False, True])
def test_end_of_stream(watcher, pair, how, internal):
    client, server = pair()
    if internal:
        watcher.read(server)
    else:
        watcher.read(server, bytearray(8))
    if how == "close":
        client.close()
    else:
        client.shutdown(2)
    res = collect(watcher, 1)[0]
    assert res.size == 0 and isinstance(res.error, EOFError)
    if internal:
        assert res.buffer is None and res.is_swap_buffer is False


def test_reset_by_peer_is_a_connection_reset_error(watcher, pair):
    client, server = pair()
    watcher.read(server, bytearray(8))
    watcher.read(server)
    reset(client)
    results = collect(watcher, 2)
    assert isinstance(results[0].error, ConnectionResetError)
    assert results[0].size == 0
    # after the reset is reported, the stream is at its end
    assert isinstance(results[1].error, (ConnectionResetError, EOFError))
    assert results[1].buffer is None and results[1].is_swap_buffer is False


def test_internal_buffer_read_is_a_readonly_view_of_exactly_size_bytes(watcher, pair):
    client, server = pair()
    client.sendall(b"hello internal buffer")
    wait_readable(server)
    watcher.read(server, ctx="i")
    res = collect(watcher, 1)[0]
    assert res.error is None and res.is_swap_buffer is True and res.ctx == "i"
    assert isinstance(res.buffer, memoryview)
    assert res.buffer.readonly
    assert len(res.buffer) == res.size == res.buffer.nbytes
    assert bytes(res.buffer) == b"hello internal buffer"
    with pytest.raises(TypeError):
        res.buffer[0] = 0


def test_internal_view_is_released_at_the_next_wait_io(watcher, pair):
    client, server = pair()
    client.sendall(b"short-lived")
    watcher.read(server)
    res = collect(watcher, 1)[0]
    view = res.buffer
    assert bytes(view) == b"short-lived"
    watcher.wait_io(0)  # even an empty wait releases the previous batch's views
    for touch in (lambda: bytes(view), lambda: view[0], lambda: view.tobytes(),
                  lambda: len(view), lambda: memoryview(view)):
        with pytest.raises(ValueError):
            touch()
    with pytest.raises(ValueError):
        bytes(res.buffer)


def test_internal_view_never_shows_another_connections_bytes(make_watcher, net):
    w = make_watcher(bufsize=64)
    pairs = net.pairs(6)
    fill = [bytes([65 + i]) * 4096 for i in range(len(pairs))]
    stale = []
    seen = [0] * len(pairs)
    for i, (client, server) in enumerate(pairs):
        client.sendall(fill[i])
        w.read(server, ctx=i)
    end = time.monotonic() + 20
    while sum(seen) < 4096 * len(pairs) and time.monotonic() < end:
        batch = w.wait_io(0.5)
        for view in stale:
            with pytest.raises(ValueError):
                bytes(view)
        stale = []
        for res in batch:
            assert res.error is None and res.is_swap_buffer
            data = bytes(res.buffer)
            assert data == fill[res.ctx][:res.size], "bytes from another connection"
            seen[res.ctx] += res.size
            stale.append(res.buffer)
            if seen[res.ctx] < 4096:
                w.read(res.conn, ctx=res.ctx)
    assert seen == [4096] * len(pairs)


@pytest.mark.parametrize("bufsize,conns", [(1, 16), (100, 16), (1024, 16), (256, 300),
                                           (65536, 64)])
def test_internal_bytes_per_batch_never_exceed_four_bufsize(make_watcher, net, bufsize, conns):
    w = make_watcher(bufsize=bufsize)
    pairs = net.pairs(conns, unix=conns > 100)
    per_conn = min(8 * bufsize, 1 << 16) if bufsize > 1 else 64  # fits socket buffers
    for i, (client, server) in enumerate(pairs):
        client.sendall(pattern(per_conn, seed=i))
    time.sleep(0.05)
    for i, (_, server) in enumerate(pairs):
        w.read(server, ctx=i)
    got = [bytearray() for _ in pairs]
    end = time.monotonic() + 30
    while any(len(g) < per_conn for g in got) and time.monotonic() < end:
        batch = w.wait_io(0.5)
        handed_out = 0
        for res in batch:
            assert res.error is None
            handed_out += res.size
            got[res.ctx] += res.buffer
            if len(got[res.ctx]) < per_conn:
                w.read(res.conn, ctx=res.ctx)
        assert handed_out <= 4 * bufsize, "batch handed out %d bytes, bufsize %d" % (
            handed_out, bufsize)
    for i, g in enumerate(got):
        assert bytes(g) == pattern(per_conn, seed=i)


def test_a_result_view_can_be_copied_and_the_copy_outlives_it(watcher, pair):
    client, server = pair()
    client.sendall(b"keep me")
    watcher.read(server)
    res = collect(watcher, 1)[0]
    copy = bytes(res.buffer)
    client.sendall(b"overwrite")
    watcher.read(server)
    collect(watcher, 1)
    assert copy == b"keep me"


def test_caller_buffer_is_kept_alive_by_a_pending_read(watcher, pair):

    class Buf(bytearray):
        pass

    client, server = pair()
    buf = Buf(16)
    ref = weakref.ref(buf)
    watcher.read(server, buf)
    del buf
    gc.collect()
    assert ref() is not None, "the watcher dropped a buffer it is reading into"
    client.sendall(b"into a kept buffer")
    res = collect(watcher, 1)[0]
    assert res.buffer is ref()
    assert res.buffer[:res.size] == b"into a kept buffer"[:res.size]
    del res
    gc.collect()
    assert ref() is None, "the watcher kept a completed read's buffer alive"


def test_writing_a_released_view_is_a_value_error(watcher, pair):
    client, server = pair()
    client.sendall(b"gone soon")
    watcher.read(server)
    res = collect(watcher, 1)[0]
    view = res.buffer
    watcher.wait_io(0)
    stats = watcher.stats()
    with pytest.raises(ValueError):
        watcher.write(server, view)
    assert watcher.stats() == stats


def test_view_stays_valid_after_free_until_the_next_wait_io(watcher, pair):
    client, server = pair()
    client.sendall(b"outlives free")
    watcher.read(server)
    res = collect(watcher, 1)[0]
    watcher.free(server)
    assert bytes(res.buffer) == b"outlives free"[:res.size]
    watcher.wait_io(0)
    with pytest.raises(ValueError):
        bytes(res.buffer)


@pytest.mark.parametrize("internal", [False, True])
def test_data_then_end_of_stream(watcher, pair, internal):
    client, server = pair()
    client.sendall(b"last words")
    client.close()
    got = bytearray()
    end = time.monotonic() + 5
    while time.monotonic() < end:
        if internal:
            watcher.read(server)
        else:
            watcher.read(server, bytearray(4))
        res = collect(watcher, 1)[0]
        if res.error is not None:
            break
        got += res.buffer[:res.size]
    assert isinstance(res.error, EOFError) and res.size == 0
    assert got == b"last words"


def test_unconnected_stream_socket_completes_with_an_error(watcher, net):
    sock = net.track(socket.socket())
    try:
        watcher.read(sock, bytearray(4))
    except (OSError, ValueError):
        return  # refused at the request: allowed
    res = collect(watcher, 1, timeout=3)[0]
    assert res.error is not None and res.size == 0


def test_thousands_of_one_byte_reads_queued(watcher, pair):
    client, server = pair()
    n = 2000
    bufs = [bytearray(1) for _ in range(n)]
    for i, b in enumerate(bufs):
        watcher.read(server, b, ctx=i)
    payload = pattern(n, seed=61)
    client.sendall(payload)
    results = collect(watcher, n, timeout=30)
    assert [r.ctx for r in results] == list(range(n))
    assert b"".join(bufs) == payload


@pytest.mark.parametrize("end", ["close", "collect"])
def test_view_outliving_its_watcher_never_shows_freed_memory(engine, pair, end):
    """A view kept past close() (or past the watcher's collection) either still
    shows its bytes or raises ValueError; it never reads freed memory."""
    client, server = pair()
    w = gaio.Watcher(4096, engine=engine)
    client.sendall(b"precious bytes")
    w.read(server)
    res = collect(w, 1)[0]
    view = res.buffer
    del res
    if end == "close":
        w.close()
    else:
        del w
        gc.collect()
    junk = [bytearray(b"\xaa" * 4096) for _ in range(256)]  # reuse freed memory
    try:
        data = bytes(view)
    except ValueError:
        data = None
    del junk
    assert data in (None, b"precious bytes")
    if end == "close":
        with pytest.raises(gaio.WatcherClosedError):
            w.wait_io(0)


def test_unmapping_the_buffer_of_a_pending_read_is_refused_or_harmless(watcher, pair):
    client, server = pair()
    m = mmap.mmap(-1, 4096)
    watcher.read(server, m)
    try:
        m.close()  # the watcher should hold an export: BufferError
        closed = True
    except BufferError:
        closed = False
    client.sendall(b"into the map")
    res = collect(watcher, 1)[0]
    if closed:  # the kernel met unmapped memory: an error, not a crash
        assert res.error is not None or res.size == 0
    else:
        assert res.error is None and m[:res.size] == b"into the map"[:res.size]
        del res
        gc.collect()
        m.close()


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


def test_internal_buffer_memory_does_not_grow_with_connections(make_watcher, net):
    """1000 connections with 48 KiB waiting each, all read into the internal
    buffer: resident memory grows by far less than the 48 MB that pass."""
    w = make_watcher(bufsize=65536)
    per_conn, n = 48 << 10, 1000
    pairs = net.pairs(n, unix=True)
    chunk = pattern(per_conn, seed=71)
    for client, _ in pairs:
        client.sendall(chunk)
    gc.collect()
    base = _rss()
    peak = base
    for i, (_, server) in enumerate(pairs):
        w.read(server, ctx=i)
    got = [0] * n
    end = time.monotonic() + 60
    while sum(got) < per_conn * n and time.monotonic() < end:
        for res in w.wait_io(0.5):
            assert res.error is None
            got[res.ctx] += res.size
            if got[res.ctx] < per_conn:
                w.read(res.conn, ctx=res.ctx)
        peak = max(peak, _rss())
    assert got == [per_conn] * n
    growth = peak - base
    print("resident memory grew by %.1f MiB while 48 MB passed" % (growth / 2 ** 20))
    assert growth < 16 << 20


def test_busy_connections_cannot_starve_a_quiet_one(make_watcher, net):
    """With the internal buffer spent by busy connections every batch, a
    read waiting on a quiet connection still completes within a few batches
    (deferred reads go first in the next batch, in the order deferred)."""
    w = make_watcher(16)  # one batch hands out at most 64 internal-buffer bytes
    busy = [net.pair() for _ in range(8)]
    quiet_client, quiet = net.pair()
    for client, server in busy:
        client.sendall(b"b" * 4000)
        w.read(server, ctx="busy")
    quiet_client.sendall(b"q")
    w.read(quiet, ctx="quiet")
    for _ in range(20):  # 8 busy connections, 4 reads a batch: a few batches
        batch = w.wait_io(1)
        if any(r.ctx == "quiet" for r in batch):
            break
        for r in batch:
            w.read(r.conn, ctx="busy")
    else:
        pytest.fail("the quiet connection's read never completed")

