"""R29: after the handshake, read, read_full, standing reads, write (vectored,
quiet) and sendfile carry plaintext, with R3-R8 and R18-R22 unchanged: sizes
count plaintext bytes, reads without a buffer land in the internal buffer
(R4's bound, views and their lifetime), back-pressure counts plaintext.
Written from the SPEC's words (docs/SPEC.md, "Rules - TLS").
"""
import tempfile
import time

import pytest

import gaio
from conftest import collect, pattern
from tls_support import gaio_pair, handshake_with_peer, recv_all

# the native engines' cases are strict expected failures (conftest.py)
pytestmark = pytest.mark.usefixtures("tls_engine")


def _views(w, n, timeout=10.0):
    """(results, their bytes) of the next n results, read while valid."""
    seen = []
    got = collect(w, n, timeout, each=lambda r: seen.append(
        bytes(r.buffer) if r.is_swap_buffer else None))
    return got, seen


# ---------------------------------------------------------------- reads

def test_reads_carry_plaintext(watcher, net):
    def peer(tls):
        tls.sendall(b"abc")
        time.sleep(0.05)
        tls.sendall(b"defghijkl")
        tls.sendall(b"mnop")
        assert recv_all(tls, 1) == b"!"

    ours, p, res = handshake_with_peer(watcher, net, peer)
    assert res.error is None
    before = watcher.stats()["bytes_read"]
    buf = bytearray(10)
    watcher.read(ours, buf, ctx="buf")
    got = collect(watcher, 1)[0]
    assert got.buffer is buf and got.size == 3 and buf[:3] == b"abc"
    full = bytearray(9)
    watcher.read_full(ours, full, ctx="full")
    got = collect(watcher, 1)[0]
    assert got.error is None and got.size == 9 and full == b"defghijkl"
    watcher.read(ours, ctx="internal")
    (got,), (seen,) = _views(watcher, 1)
    assert got.is_swap_buffer and got.buffer.readonly and got.size == len(seen) == 4
    assert seen == b"mnop"
    assert watcher.stats()["bytes_read"] - before == 16  # plaintext bytes
    watcher.wait_io(0)
    with pytest.raises(ValueError):
        bytes(got.buffer)  # released at the next wait_io() (R4)
    watcher.write(ours, b"!")
    collect(watcher, 1)
    p.finish()


def test_standing_read_and_small_bufsize(make_watcher, net):
    w = make_watcher(1000)  # records of up to 16 KiB arrive in views of at most bufsize
    data = pattern(100_000, seed=5)

    def peer(tls):
        tls.sendall(data)
        assert recv_all(tls, 1) == b"!"

    ours, p, res = handshake_with_peer(w, net, peer)
    w.read(ours, repeat=True, ctx="standing")
    got = bytearray()
    end = time.monotonic() + 10
    while len(got) < len(data) and time.monotonic() < end:
        batch = w.wait_io(0.1)
        assert sum(r.size for r in batch) <= 4 * 1000  # R4's bound per batch
        for r in batch:
            assert r.error is None and r.is_swap_buffer and 0 < r.size <= 1000
            got += r.buffer
    assert bytes(got) == data
    w.write(ours, b"!")
    collect(w, 1)
    p.finish()


def test_read_deadline_and_the_connection_goes_on(watcher, net):
    def peer(tls):
        assert recv_all(tls, 2) == b"go"
        tls.sendall(b"late")
        assert recv_all(tls, 1) == b"!"

    ours, p, res = handshake_with_peer(watcher, net, peer)
    watcher.read(ours, timeout=0.05, ctx="early")
    got = collect(watcher, 1)[0]
    assert isinstance(got.error, gaio.DeadlineExceededError) and got.size == 0
    watcher.write(ours, b"go")
    watcher.read(ours, bytearray(10), ctx="late")
    got = [r for r in collect(watcher, 2) if r.ctx == "late"][0]
    assert got.error is None and bytes(got.buffer[:got.size]) == b"late"
    watcher.write(ours, b"!")
    collect(watcher, 1)
    p.finish()


def test_free_during_a_tls_read(watcher, net):
    ours, p, res = handshake_with_peer(watcher, net, lambda tls: tls.recv(1))
    watcher.read(ours, ctx="a")
    watcher.read(ours, bytearray(5), ctx="b")
    assert watcher.wait_io(0.05) == []
    watcher.free(ours)
    got = collect(watcher, 2)
    assert all(isinstance(r.error, gaio.ConnClosedError) for r in got)
    p.finish()


# ---------------------------------------------------------------- writes

def test_writes_carry_plaintext(watcher, net):
    def peer(tls):
        return recv_all(tls, 3 + 6 + 4 + 5)

    ours, p, res = handshake_with_peer(watcher, net, peer)
    before = watcher.stats()
    watcher.write(ours, b"one", ctx="plain")
    watcher.write(ours, [b"tw", bytearray(b"o-"), memoryview(b"xx")], ctx="vector")
    watcher.write(ours, b"quie", quiet=True, ctx="quiet")
    watcher.write(ours, (b"", b"t-end"), ctx="tuple")
    got = collect(watcher, 3)
    assert [(r.ctx, r.size, r.error) for r in got] == [
        ("plain", 3, None), ("vector", 6, None), ("tuple", 5, None)]
    assert watcher.wait_io(0.05) == []  # the quiet write delivers nothing (R22)
    after = watcher.stats()
    assert after["quiet_done"] - before["quiet_done"] == 1
    assert after["bytes_written"] - before["bytes_written"] == 18  # plaintext bytes
    assert p.finish() == b"onetwo-xxquiet-end"


def test_large_transfers_both_ways_are_byte_exact(watcher, net):
    up = pattern(3 << 20, seed=1)
    down = pattern(5 << 20, seed=2)
    client, server, _ = gaio_pair(watcher, net)
    # each side writes its whole message while reading the other's
    watcher.write(client, up, ctx="up")
    watcher.write(server, [down[:1000], down[1000:]], ctx="down")
    at_server = bytearray(len(up))
    at_client = bytearray(len(down))
    watcher.read_full(server, at_server, ctx="at-server")
    watcher.read_full(client, at_client, ctx="at-client")
    got = {r.ctx: r for r in collect(watcher, 4, timeout=60)}
    assert all(r.error is None for r in got.values()), got
    assert got["up"].size == len(up) and got["down"].size == len(down)
    assert bytes(at_server) == up and bytes(at_client) == down


def test_echo_of_internal_buffer_views(watcher, net):
    data = pattern(1 << 20, seed=3)
    client, server, _ = gaio_pair(watcher, net)
    watcher.read(server, repeat=True, ctx="echo")
    watcher.write(client, data, ctx="send")
    back = bytearray(len(data))
    watcher.read_full(client, back, ctx="back")
    end = time.monotonic() + 30
    done = set()
    while done != {"send", "back"} and time.monotonic() < end:
        for r in watcher.wait_io(0.1):
            if r.ctx == "echo":
                assert r.error is None
                watcher.write(r.conn, r.buffer, quiet=True)  # the view itself (R6)
            else:
                assert r.error is None, r
                done.add(r.ctx)
    assert bytes(back) == data


def test_sendfile_on_tls(watcher, net):
    content = pattern(200_000, seed=4)
    f = tempfile.TemporaryFile()
    try:
        f.write(content)
        f.flush()
        f.seek(123)

        def peer(tls):
            return recv_all(tls, 150_000)

        ours, p, res = handshake_with_peer(watcher, net, peer)
        before = watcher.stats()["bytes_written"]
        watcher.sendfile(ours, f, 1000, 100_000, ctx="part")
        watcher.sendfile(ours, f.fileno(), 150_000, quiet=True, ctx="rest")
        got = collect(watcher, 1)[0]
        assert got.ctx == "part" and got.error is None and got.size == 100_000
        assert got.buffer is None and got.op == gaio.Op.SENDFILE
        assert p.finish() == content[1000:101_000] + content[150_000:]
        assert watcher.wait_io(0.05) == []
        assert watcher.stats()["bytes_written"] - before == 150_000
        assert f.tell() == 123  # never moved (R19)
    finally:
        f.close()


def test_sendfile_past_the_end_of_the_file(watcher, net):
    with tempfile.TemporaryFile() as f:
        f.write(b"0123456789")
        f.flush()
        ours, p, res = handshake_with_peer(watcher, net, lambda tls: recv_all(tls, 5))
        watcher.sendfile(ours, f, 5, 100, ctx="past")
        got = collect(watcher, 1)[0]
        assert isinstance(got.error, EOFError) and got.size == 5
        assert p.finish() == b"56789"


def test_write_deadline_counts_begun_records(watcher, net):
    """A TLS write ended early counts the plaintext of every record begun,
    and a begun record is finished before any later request's bytes."""
    big = pattern(32 << 20, seed=6)
    client, server, _ = gaio_pair(watcher, net)
    watcher.write(client, big, timeout=0.2, ctx="stuck")  # the server reads nothing yet
    got = collect(watcher, 1)[0]
    assert isinstance(got.error, gaio.DeadlineExceededError)
    assert 0 < got.size < len(big)
    watcher.write(client, b"after", ctx="after")
    received = bytearray(got.size + 5)
    watcher.read_full(server, received, ctx="all")
    out = {r.ctx: r for r in collect(watcher, 2, timeout=30)}
    assert out["all"].error is None and out["after"].error is None
    assert bytes(received) == big[:got.size] + b"after"


# ---------------------------------------------------------------- back-pressure

def test_back_pressure_counts_plaintext(make_watcher, net):
    """An echo over TLS to a client that does not read: the standing read is
    held once the plaintext written back and not taken by the kernel exceeds
    write_high (R21)."""
    high = 65536
    w = make_watcher(write_high=high)
    client, server, _ = gaio_pair(w, net)
    w.read(server, repeat=True, ctx="echo")
    chunk = pattern(1 << 20, seed=7)
    sent = 0
    # For 3 s, or until all 64 MiB are asked for and the reads have stood
    # still for 0.5 s (held: without the limit they go on to take it all).
    end = time.monotonic() + 3
    read, still_since = 0, time.monotonic()
    while time.monotonic() < end:
        if w.stats()["bytes_read"] != read:
            read, still_since = w.stats()["bytes_read"], time.monotonic()
        elif sent >= 64 << 20 and time.monotonic() - still_since > 0.5:
            break
        if sent < 64 << 20:
            w.write(client, chunk, quiet=True, ctx="flood")
            sent += len(chunk)
        for r in w.wait_io(0.01):
            if r.ctx == "echo":
                assert r.error is None
                w.write(r.conn, r.buffer, quiet=True)
            else:
                assert r.error is None, r
    stats = w.stats()
    # the socket buffers hold a few MiB, the read takes no more than
    # write_high beyond (without the limit it takes all 64 MiB)
    assert stats["bytes_read"] < 16 << 20, stats
    w.free(client)
    w.free(server)
    collect(w, 1)  # the standing read ends with ConnClosedError, held or not


def test_stats_count_plaintext(watcher, net):
    client, server, _ = gaio_pair(watcher, net)
    before = watcher.stats()
    watcher.write(client, b"x" * 1000)
    watcher.read_full(server, bytearray(1000))
    collect(watcher, 2)
    after = watcher.stats()
    assert after["bytes_written"] - before["bytes_written"] == 1000
    assert after["bytes_read"] - before["bytes_read"] == 1000
