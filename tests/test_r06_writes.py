"""R6: writes complete when every byte was written, or with error and bytes so
far; data is kept alive; a result's internal view can be written straight back;
a vanished peer gives BrokenPipeError/ConnectionResetError, never SIGPIPE."""
import array
import gc
import mmap
import subprocess
import sys
import textwrap
import time
import weakref

import pytest

import gaio
from conftest import STUCK, collect, pattern, recv_exactly, reset, stuck_pattern


def _drain_while_waiting(w, client, want_results, total, chunk=1 << 18, pause=0.0,
                         timeout=30.0):
    """Read the peer side slowly while collecting results from the watcher."""
    client.setblocking(False)
    received = bytearray()
    results = []
    end = time.monotonic() + timeout
    while (len(results) < want_results or len(received) < total) and time.monotonic() < end:
        results.extend(w.wait_io(0.002))
        try:
            received += client.recv(chunk)
        except BlockingIOError:
            pass
        if pause:
            time.sleep(pause)
    return results, bytes(received)


def test_huge_write_to_a_slow_reader_completes_whole(watcher, pair):
    client, server = pair()
    data = pattern(16 << 20, seed=11)
    watcher.write(server, data, ctx="huge")
    results, received = _drain_while_waiting(watcher, client, 1, len(data), chunk=1 << 18,
                                             pause=0.0005)
    assert len(results) == 1
    res = results[0]
    assert res.error is None and res.size == len(data) and res.buffer is data
    assert res.op == gaio.Op.WRITE and res.ctx == "huge" and res.is_swap_buffer is False
    assert received == data


WRITE_KINDS = {
    "bytes": lambda p: bytes(p),
    "bytearray": lambda p: bytearray(p),
    "memoryview": lambda p: memoryview(bytearray(p)),
    "readonly-view": lambda p: memoryview(bytes(p)),
    "view-slice": lambda p: memoryview(b"##" + p + b"##")[2:-2],
    "array-B": lambda p: array.array("B", p),
    "array-I": lambda p: array.array("I", p),
    "2d-view": lambda p: memoryview(bytes(p)).cast("B", (64, 64)),  # len() is 64
}


@pytest.mark.parametrize("kind", WRITE_KINDS)
def test_any_bytes_like_data(watcher, pair, kind):
    client, server = pair()
    payload = pattern(4096, seed=12)
    data = WRITE_KINDS[kind](payload)
    watcher.write(server, data)
    res = collect(watcher, 1)[0]
    assert res.error is None and res.size == 4096 and res.buffer is data
    assert recv_exactly(client, 4096) == payload


def test_mmap_data(watcher, pair):
    client, server = pair()
    m = mmap.mmap(-1, 8192)
    m.write(pattern(8192, seed=13))
    watcher.write(server, m)
    res = collect(watcher, 1)[0]
    assert res.error is None and res.size == 8192
    assert recv_exactly(client, 8192) == pattern(8192, seed=13)
    del res
    gc.collect()
    m.close()  # BufferError here would mean the watcher still holds an export


def test_data_is_kept_alive_until_completion(watcher, pair):
    class Data(bytearray):  # bytes subclasses cannot be weakly referenced
        pass

    client, server = pair()
    payload = pattern(4 << 20, seed=14)
    data = Data(payload)
    ref = weakref.ref(data)
    watcher.write(server, data)
    del data
    gc.collect()
    assert ref() is not None, "the watcher dropped data it is still writing"
    # make some garbage that would land on freed memory
    junk = [bytes(1 << 16) for _ in range(64)]
    results, received = _drain_while_waiting(watcher, client, 1, len(payload))
    del junk
    assert received == payload
    assert results[0].size == len(payload) and results[0].buffer is ref()
    del results
    gc.collect()
    assert ref() is None, "the watcher kept completed data alive"


def test_writing_a_result_view_back_copies_it(watcher, net):
    """The echo idiom: w.write(res.conn, res.buffer). The write is held behind a
    large pending write while other connections' reads reuse the internal buffer."""
    (ca, sa), (cb, sb) = net.pairs(2)
    backlog = stuck_pattern(seed=15)
    watcher.write(sa, backlog, ctx="backlog")
    ca.sendall(b"echo me, exactly")
    watcher.read(sa, ctx="a")
    res = collect(watcher, 1)[0]
    assert res.ctx == "a" and res.is_swap_buffer and bytes(res.buffer) == b"echo me, exactly"
    watcher.write(res.conn, res.buffer, ctx="echo")
    del res
    # churn the internal buffer with another connection's bytes
    for i in range(20):
        cb.sendall(bytes([i]) * 1000)
        watcher.read(sb, ctx="b")
        r = collect(watcher, 1)[0]
        assert r.ctx == "b"
    results, received = _drain_while_waiting(watcher, ca, 2, len(backlog) + 16)
    assert [r.ctx for r in results] == ["backlog", "echo"]
    echo = results[1]
    assert echo.error is None and echo.size == 16
    assert isinstance(echo.buffer, bytes) and echo.buffer == b"echo me, exactly"
    assert received == backlog + b"echo me, exactly"


def test_echo_through_the_internal_buffer(watcher, pair):
    client, server = pair()
    for i in range(50):
        msg = pattern(1 + i * 37, seed=i)
        client.sendall(msg)
        got = bytearray()
        while len(got) < len(msg):
            watcher.read(server)
            res = collect(watcher, 1)[0]
            assert res.error is None
            got += res.buffer
            watcher.write(res.conn, res.buffer)
            wres = collect(watcher, 1)[0]
            assert wres.error is None and wres.size == res.size
        assert recv_exactly(client, len(msg)) == msg


@pytest.mark.parametrize("vanish", ["reset", "close"])
def test_write_to_a_vanished_peer_is_broken_pipe_or_reset(watcher, pair, vanish):
    client, server = pair()
    if vanish == "reset":
        reset(client)
    else:
        client.close()
    time.sleep(0.05)
    errors = []
    for _ in range(8):  # the first write after a FIN may still succeed
        watcher.write(server, bytes(1 << 20))
        res = collect(watcher, 1)[0]
        if res.error is not None:
            errors.append(res.error)
            break
        assert res.size == 1 << 20
    assert errors, "no error writing to a vanished peer"
    assert isinstance(errors[0], (BrokenPipeError, ConnectionResetError))


def test_write_error_reports_bytes_written_so_far(watcher, pair):
    client, server = pair()
    data = bytes(STUCK)
    watcher.write(server, data)
    client.setblocking(False)
    taken = 0
    end = time.monotonic() + 5
    while taken < (1 << 20) and time.monotonic() < end:
        assert watcher.wait_io(0.002) == []
        try:
            taken += len(client.recv(1 << 16))
        except BlockingIOError:
            pass
    reset(client)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, (BrokenPipeError, ConnectionResetError))
    assert taken <= res.size < len(data)


SIGPIPE_CHILD = textwrap.dedent("""
    import signal, socket, sys, time
    import gaio
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # what a C host or daemon may have
    lis = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lis.getsockname())
    server, _ = lis.accept()
    w = gaio.Watcher(engine=sys.argv[1])
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, bytes([1, 0, 0, 0, 0, 0, 0, 0]))
    client.close()
    time.sleep(0.05)
    kinds = set()
    for _ in range(8):
        w.write(server, bytes(1 << 20))
        res = []
        end = time.monotonic() + 5
        while not res and time.monotonic() < end:
            res = w.wait_io(0.5)
        if res[0].error is not None:
            kinds.add(type(res[0].error).__name__)
            break
    w.close()
    print("survived", sorted(kinds))
""")


def test_no_sigpipe_even_when_sigpipe_is_not_ignored(engine):
    proc = subprocess.run([sys.executable, "-c", SIGPIPE_CHILD, engine],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "child died (signal %d?): %s" % (-proc.returncode, proc.stderr)
    assert proc.stdout.startswith("survived")
    assert "BrokenPipeError" in proc.stdout or "ConnectionResetError" in proc.stdout


def test_write_after_half_close_by_peer_still_works(watcher, pair):
    client, server = pair()
    client.shutdown(1)  # peer stops sending, still reads
    watcher.read(server)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, EOFError)
    watcher.write(server, b"still talking")
    res = collect(watcher, 1)[0]
    assert res.error is None and res.size == 13
    assert recv_exactly(client, 13) == b"still talking"
