"""Faults: slow and vanishing peers, descriptor exhaustion, deadline storms,
close() and free() from other threads, garbage, cross-talk and a soak, on
every engine. Each test prints its figures (run with -s to see them).

GAIO_SOAK=1 runs the soak with a million requests (also marked slow);
GAIO_SANITIZED scales the counts down for the AddressSanitizer pass.
"""
import gc
import hashlib
import os
import random
import resource
import socket
import threading
import time

import pytest

import gaio
from conftest import (TEST_ENGINES, available_engines, collect, need_fds, open_fds, pattern,
                      recv_exactly, reset, run_in_thread, stuck_pattern)

SANITIZED = bool(os.environ.get("GAIO_SANITIZED"))
MIB = 1 << 20


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def figure(engine, name, text):
    print("\n[faults] %-6s %-22s %s" % (engine, name, text))


def drive(w, until, timeout, each=None, poll=0.05):
    """wait_io() until `until()` is true; fails after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "drive: condition not met within %.1fs" % timeout
        for res in w.wait_io(poll):
            if each is not None:
                each(res)


# ---------------------------------------------------------------- slow reader

def test_slow_reader_gets_every_byte_in_order_without_busy_waiting(watcher, pair, engine):
    """64 MiB queued in 1 MiB writes to a peer that pauses 1 s, then reads:
    the bytes arrive whole and in order, the watcher idles while the peer
    pauses (< 30 % of a core) and memory grows by no more than what was queued."""
    total_mib = 16 if SANITIZED else 64
    client, server = pair()
    gc.collect()
    rss0 = rss_bytes()
    chunks = [pattern(MIB, seed=i) for i in range(total_mib)]
    expected = hashlib.sha256()
    for c in chunks:
        expected.update(c)
    for i, c in enumerate(chunks):
        watcher.write(server, c, ctx=i)
    pause = 1.0
    read_go = threading.Event()

    def peer():
        read_go.wait(10)
        got = hashlib.sha256()
        n = 0
        client.settimeout(20)
        while n < total_mib * MIB:
            data = client.recv(MIB)
            if not data:
                break
            got.update(data)
            n += len(data)
        return n, got.hexdigest()

    thread, box = run_in_thread(peer)
    done = []
    # the peer pauses: the watcher has writes pending it cannot make progress on
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - wall0 < pause:
        done.extend(watcher.wait_io(0.05))
    cpu_share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    rss_peak = rss_bytes()
    read_go.set()
    drive(watcher, lambda: len(done) == total_mib, 20, done.append)
    rss_peak = max(rss_peak, rss_bytes())
    thread.join(20)
    assert not thread.is_alive()
    assert "error" not in box, box.get("error")
    n, digest = box["result"]
    assert [r.ctx for r in done] == list(range(total_mib)), "writes completed out of order"
    assert all(r.error is None and r.size == MIB for r in done)
    assert n == total_mib * MIB and digest == expected.hexdigest(), "bytes lost or reordered"
    growth = rss_peak - rss0
    figure(engine, "slow reader", "%d MiB in %d writes; CPU while paused %.1f%% of a core; "
           "RSS growth %.1f MiB (queued %d MiB)" % (total_mib, total_mib, 100 * cpu_share,
                                                     growth / MIB, total_mib))
    assert cpu_share < 0.30, "the watcher spins while the peer pauses: %.0f%%" % (100 * cpu_share)
    if not SANITIZED:  # ASan's quarantine keeps freed memory resident: RSS says nothing there
        assert growth < total_mib * MIB + 32 * MIB, "RSS grew %.1f MiB for %d MiB queued" % (
            growth / MIB, total_mib)


# ---------------------------------------------------------------- vanishing peers

def test_peer_reset_mid_write(watcher, net, engine):
    """A peer that resets while a write is under way: the write ends with a
    ConnectionResetError/BrokenPipeError and the bytes moved so far; another
    connection's traffic is untouched and byte-exact."""
    (ca, sa), (cb, sb) = net.pair(), net.pair()
    big = stuck_pattern(seed=3)
    watcher.write(sa, big, ctx="a")
    other = pattern(3 * MIB, seed=4)
    watcher.write(sb, other, ctx="b")
    thread, box = run_in_thread(recv_exactly, cb, len(other))
    got = []
    drive(watcher, lambda: any(r.ctx == "b" for r in got), 10, got.append)
    time.sleep(0.1)         # let the stuck write fill the socket buffers
    watcher.wait_io(0)
    reset(ca)
    drive(watcher, lambda: any(r.ctx == "a" for r in got), 10, got.append)
    thread.join(10)
    assert box.get("result") == other, "the other connection's bytes differ"
    [ra] = [r for r in got if r.ctx == "a"]
    assert isinstance(ra.error, (ConnectionResetError, BrokenPipeError)), ra.error
    assert 0 < ra.size < len(big), ra.size
    [rb] = [r for r in got if r.ctx == "b"]
    assert rb.error is None and rb.size == len(other)
    # the reset connection's later requests fail; the other goes on
    watcher.write(sa, b"after", ctx="a2")
    watcher.write(sb, b"after", ctx="b2")
    later = {r.ctx: r for r in collect(watcher, 2)}
    assert isinstance(later["a2"].error, (ConnectionResetError, BrokenPipeError))
    assert later["b2"].error is None and recv_exactly(cb, 5) == b"after"
    figure(engine, "reset mid-write", "moved %d of %d bytes before the reset" % (
        ra.size, len(big)))


def test_half_close(watcher, pair):
    """The peer shuts down its sending side: reads get the data, then EOFError
    with size 0 (again for every later read); writes to it still work."""
    client, server = pair()
    client.sendall(b"last words")
    client.shutdown(socket.SHUT_WR)
    buf = bytearray(100)
    watcher.read(server, buf, ctx=1)
    watcher.read(server, ctx=2)
    watcher.read_full(server, bytearray(5), ctx=3)
    res = {r.ctx: r for r in collect(watcher, 3)}
    assert res[1].error is None and bytes(buf[:res[1].size]) == b"last words"
    for ctx in (2, 3):
        assert isinstance(res[ctx].error, EOFError) and res[ctx].size == 0, res[ctx]
    data = pattern(2 * MIB, seed=5)
    watcher.write(server, data, ctx="w")
    thread, box = run_in_thread(recv_exactly, client, len(data))
    [w] = collect(watcher, 1, timeout=10)
    thread.join(10)
    assert w.error is None and w.size == len(data)
    assert box.get("result") == data


# ---------------------------------------------------------------- descriptors

class FilenoOnly:
    """A socket-like object: what the native engines delegate by dup()."""

    def __init__(self, sock):
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()


def test_descriptor_exhaustion_while_delegating(watcher, net, engine):
    """With no descriptor left: new sockets and new watchers cannot be made
    (OSError, or EngineUnavailableError for a named engine), delegating an
    object that needs a dup() fails with OSError (raised, or as the request's
    result) and leaves no state; a socket.socket still delegates (detach()
    takes its descriptor, no new one is needed); the watcher goes on serving
    the connections it has, and nothing leaks."""
    working = net.pairs(3, unix=True)
    for i, (client, server) in enumerate(working):
        watcher.write(server, b"warm", ctx=("warm", i))
    collect(watcher, 3)
    for client, _ in working:
        assert recv_exactly(client, 4) == b"warm"
    new_client, new_server = net.pair(unix=True)
    dup_client, dup_server = net.pair(unix=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = []
    seen = {}
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(open_fds()) + 1, hard))
        while True:     # fill the holes below the limit
            try:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                break
        with pytest.raises(OSError):
            socket.socketpair()
        try:
            gaio.Watcher(engine=engine).close()
            seen["Watcher()"] = "made"
        except (OSError, gaio.EngineUnavailableError) as exc:
            seen["Watcher()"] = repr(exc)
        submitted = watcher.stats()["submitted"]
        try:
            watcher.read(FilenoOnly(dup_server), bytearray(10), ctx="dup")
        except TypeError as exc:        # this engine takes socket.socket only
            seen["dup"] = repr(exc)
        except OSError as exc:
            seen["dup"] = repr(exc)
            assert watcher.stats()["submitted"] == submitted, "a refused request left state"
            assert dup_server.fileno() != -1, "a refused request closed the caller's socket"
        else:
            [res] = collect(watcher, 1)
            assert isinstance(res.error, OSError), res
            seen["dup"] = repr(res.error)
        watcher.read(new_server, bytearray(10), ctx="new")
        new_client.sendall(b"hello")
        [res] = collect(watcher, 1)
        assert res.ctx == "new" and res.error is None and bytes(res.buffer[:res.size]) == b"hello"
        # the others keep working while the table is full
        for i, (client, server) in enumerate(working):
            client.sendall(b"ping%d" % i)
            watcher.read(server, bytearray(10), ctx=("ping", i))
            watcher.write(server, b"pong%d" % i, ctx=("pong", i))
        res = collect(watcher, 6)
        assert all(r.error is None for r in res), res
        for i, (client, server) in enumerate(working):
            assert recv_exactly(client, 5) == b"pong%d" % i
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    figure(engine, "fd exhaustion", "; ".join("%s: %s" % kv for kv in seen.items()))
    for _, server in working + [(new_client, new_server)]:
        watcher.free(server)
    collect(watcher, 0)
    assert watcher.stats()["pending"] == 0 and watcher.stats()["watched"] == 0


@pytest.mark.parametrize("name", TEST_ENGINES)
def test_object_with_only_a_fileno_is_a_type_error(name, pair):
    """Not a stream socket.socket and nothing to close it by: TypeError, no state."""
    reason = available_engines().get(name)
    if reason is not None:
        pytest.skip("engine %r unavailable: %s" % (name, reason))

    class Bare:
        def __init__(self, sock):
            self.sock = sock

        def fileno(self):
            return self.sock.fileno()

    client, server = pair(unix=True)
    w = gaio.Watcher(engine=name)
    try:
        with pytest.raises(TypeError):
            w.read(Bare(server), bytearray(4))
        assert w.stats()["submitted"] == 0 and w.stats()["watched"] == 0
        assert server.fileno() != -1
    finally:
        w.close()


# ---------------------------------------------------------------- deadlines

def test_ten_thousand_deadlines_in_one_millisecond(watcher, net, engine):
    """10,000 reads over 500 socketpairs (20 each) share one absolute
    deadline: each completes exactly once, with DeadlineExceededError, none
    before the deadline."""
    npairs, per = (100, 20) if SANITIZED else (500, 20)
    need_fds(npairs * 3 + 50)
    pairs = net.pairs(npairs, unix=True)
    deadline = time.monotonic() + 0.5
    for i, (_, server) in enumerate(pairs):
        for j in range(per):
            watcher.read(server, bytearray(4), ctx=(i, j), deadline=deadline)
    submit_end = time.monotonic()
    assert submit_end < deadline, "submitting took longer than the deadline allows"
    seen = {}
    first = last = None
    end = time.monotonic() + 10
    while len(seen) < npairs * per and time.monotonic() < end:
        batch = watcher.wait_io(0.1)
        now = time.monotonic()
        for r in batch:
            assert r.ctx not in seen, "completed twice: %r" % (r.ctx,)
            seen[r.ctx] = r
            assert isinstance(r.error, gaio.DeadlineExceededError), r
            assert r.size == 0
        if batch:
            assert now >= deadline, "%d results %.1f ms before the deadline" % (
                len(batch), 1000 * (deadline - now))
            first = first or now
            last = now
    assert len(seen) == npairs * per, "%d of %d completed" % (len(seen), npairs * per)
    assert watcher.wait_io(0.05) == []
    figure(engine, "10k deadlines", "%d expiries delivered %.1f ms to %.1f ms after the deadline"
           % (len(seen), 1000 * (first - deadline), 1000 * (last - deadline)))
    for _, server in pairs:
        watcher.free(server)


# ---------------------------------------------------------------- threads

def test_close_and_free_from_other_threads_with_thousands_in_flight(watcher, net, engine):
    """While the main thread waits, one thread frees half the connections
    (their requests end with ConnClosedError) and then another closes the
    watcher (the blocked wait_io raises WatcherClosedError)."""
    npairs, per = (50, 10) if SANITIZED else (300, 10)
    need_fds(npairs * 3 + 50)
    pairs = net.pairs(npairs, unix=True)
    for i, (_, server) in enumerate(pairs):
        for j in range(per):
            if j % 3 == 2:
                watcher.write(server, b"x" * 1000, ctx=(i, j))
            else:
                watcher.read(server, bytearray(64) if j % 2 else None, ctx=(i, j))
    writes = sum(1 for j in range(per) if j % 3 == 2) * npairs
    freed = [server for _, server in pairs[: npairs // 2]]
    results = []
    collect(watcher, writes, each=results.append)   # the writes complete at once

    def freer():
        for s in freed:
            watcher.free(s)

    t_free, box_free = run_in_thread(freer)
    t_free.join(10)
    assert not t_free.is_alive() and "error" not in box_free, box_free
    expect_closed = len(freed) * per - (writes // npairs) * len(freed)
    while sum(1 for r in results if isinstance(r.error, gaio.ConnClosedError)) < expect_closed:
        results.extend(watcher.wait_io(2))
    closed = [r for r in results if isinstance(r.error, gaio.ConnClosedError)]
    assert len(closed) == expect_closed
    assert {r.conn for r in closed} == set(freed)
    in_flight = watcher.stats()["pending"]
    assert in_flight == (npairs - len(freed)) * (per - writes // npairs)

    def closer():
        time.sleep(0.2)
        watcher.close()

    t_close, _ = run_in_thread(closer)
    start = time.monotonic()
    with pytest.raises(gaio.WatcherClosedError):
        while True:
            watcher.wait_io(5)
    woke = time.monotonic() - start
    t_close.join(5)
    assert woke < 2, "close() from another thread took %.2fs to wake wait_io" % woke
    for client, _ in pairs:     # close() closed every descriptor: the peers see EOF
        client.settimeout(5)
        while client.recv(1 << 16):
            pass
    figure(engine, "close/free threads", "%d freed by a thread, %d in flight at close(); "
           "wait_io woke %.0f ms after" % (len(closed), in_flight, 1000 * (woke - 0.2)))


def test_watcher_collected_with_requests_pending(engine, net):
    """A watcher dropped with reads and writes pending is closed by the
    garbage collector: its descriptors are released (the peers see EOF) and
    nothing leaks (the leak accounting fixture checks threads too)."""
    pairs = net.pairs(50, unix=True)
    fds_before = set(open_fds())
    w = gaio.Watcher(engine=engine)
    for i, (_, server) in enumerate(pairs):
        w.read(server, ctx=i)
        w.read(server, bytearray(10), ctx=(i, "buf"), timeout=60)
        w.write(server, b"hello", ctx=(i, "w"))
    collect(w, 50)      # the writes
    w.write(pairs[0][1], stuck_pattern(seed=6), ctx="stuck")
    del w
    gc.collect()
    end = time.monotonic() + 5
    while set(open_fds()) - fds_before and time.monotonic() < end:
        gc.collect()
        time.sleep(0.02)
    assert not set(open_fds()) - fds_before, "descriptors of a collected watcher left open"
    for client, _ in pairs[1:]:
        client.settimeout(5)
        assert recv_exactly(client, 5) == b"hello"
        assert client.recv(10) == b"", "the peer did not see the connection close"


# ---------------------------------------------------------------- isolation

def test_no_result_shows_another_connections_bytes(engine, net, make_watcher):
    """~200 connections send content-tagged bytes (each byte stream carries its
    connection's id) through internal-buffer reads of a small watcher: every
    result holds its own connection's bytes, in order, and nothing else."""
    nconn = 40 if SANITIZED else 200
    per_conn = 128 * 1024
    need_fds(nconn * 3 + 50)
    w = make_watcher(4096)
    pairs = net.pairs(nconn, unix=True)
    streams = []
    for i in range(nconn):
        unit = b"<%05d>" % i
        streams.append((unit * (per_conn // len(unit) + 1))[:per_conn])
    conn_index = {server: i for i, (_, server) in enumerate(pairs)}
    got = [bytearray() for _ in range(nconn)]
    for _, server in pairs:
        w.read(server)
    results = [0]

    def sender():
        rng = random.Random(7)
        offsets = [0] * nconn
        while any(o < per_conn for o in offsets):
            i = rng.randrange(nconn)
            if offsets[i] < per_conn:
                n = rng.choice([1, 7, 100, 1500, 4096, 9000])
                pairs[i][0].sendall(streams[i][offsets[i]:offsets[i] + n])
                offsets[i] += n

    def each(res):
        i = conn_index[res.conn]
        assert res.error is None, res
        data = bytes(res.buffer)
        start = len(got[i])
        assert data == streams[i][start:start + len(data)], (
            "connection %d got bytes that are not its own: %r" % (i, data[:40]))
        got[i] += data
        results[0] += 1
        if len(got[i]) < per_conn:
            w.read(res.conn)

    thread, box = run_in_thread(sender)
    drive(w, lambda: all(len(g) == per_conn for g in got), 60, each, poll=0.02)
    thread.join(10)
    assert "error" not in box, box.get("error")
    figure(engine, "isolation", "%d connections, %d internal-buffer results, %d bytes, "
           "none crossed" % (nconn, results[0], nconn * per_conn))
    for _, server in pairs:
        w.free(server)


# ---------------------------------------------------------------- soak

def soak_requests():
    if os.environ.get("GAIO_SOAK"):
        return 1_000_000
    return 20_000 if SANITIZED else 100_000


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def soak(engine, net, total, time_limit):
    """Echo traffic over 100 connections with random resets, frees and new
    connections: RSS and descriptor counts flat after warm-up."""
    nconn = 100
    need_fds(nconn * 4 + 50)
    rng = random.Random(11)
    w = gaio.Watcher(16384, engine=engine)
    conns = {}   # server -> [client, expected echo bytes, received]
    requests = 0
    resets = 0
    echoed = 0
    lost = []

    def open_conn():
        client, server = socket.socketpair()
        client.setblocking(False)
        conns[server] = [client, bytearray(), bytearray()]
        w.read(server)
        return 1

    def drop(server, how):
        client = conns.pop(server)[0]
        if how == "reset":
            reset(client)
        else:
            client.close()
        w.free(server)

    try:
        for _ in range(nconn):
            requests += open_conn()
        warm = samples = None
        start = time.monotonic()
        while requests < total:
            if time.monotonic() - start > time_limit:
                break
            for server, (client, expect, got) in list(conns.items()):
                if rng.random() < 0.5:
                    msg = b"%d:" % requests + b"z" * rng.randrange(1, 200)
                    try:
                        client.send(msg)
                        expect += msg
                    except BlockingIOError:
                        pass
                try:
                    while True:
                        data = client.recv(65536)
                        if not data:
                            break
                        got += data
                except BlockingIOError:
                    pass
                if got:
                    echoed += len(got)
                    if not expect.startswith(got):
                        lost.append(server)
                    del expect[:len(got)]
                    got.clear()
            for res in w.wait_io(0.001):
                if res.op != gaio.Op.READ or res.conn not in conns:
                    continue
                if res.error is None:
                    # echo: the internal-buffer view itself, or a slice of ours
                    data = res.buffer if res.is_swap_buffer else (
                        memoryview(res.buffer)[:res.size])
                    w.write(res.conn, data, timeout=rng.choice([None, 5.0]))
                    requests += 1
                elif not isinstance(res.error, gaio.DeadlineExceededError):
                    continue
                # the next read: internal buffer, or a buffer of ours, some
                # with deadlines that expire (the deadline heap churns too)
                if rng.random() < 0.6:
                    w.read(res.conn)
                else:
                    w.read(res.conn, bytearray(rng.choice([1, 64, 4096])),
                           timeout=rng.choice([None, 0.001, 0.05]))
                requests += 1
            if rng.random() < 0.05:
                victim = rng.choice(list(conns))
                drop(victim, rng.choice(["reset", "close"]))
                resets += 1
                requests += open_conn()
            if warm is None and requests >= total // 5:
                gc.collect()
                warm = (rss_bytes(), fd_count(), requests)
            if warm is not None and samples is None and requests >= total // 2:
                samples = rss_bytes()
        gc.collect()
        end = (rss_bytes(), fd_count(), requests)
        for server in list(conns):
            drop(server, "close")
        drive(w, lambda: w.stats()["pending"] == 0, 10)
        stats = w.stats()
    finally:
        w.close()
        for server, (client, _, _) in list(conns.items()):
            client.close()
            server.close()
    elapsed = time.monotonic() - start
    assert not lost, "%d connections lost or reordered echo bytes" % len(lost)
    assert stats["submitted"] == stats["completed"]
    assert echoed > requests, "too little traffic came back: %d bytes" % echoed
    return {"requests": requests, "resets": resets, "elapsed": elapsed, "warm": warm,
            "echoed": echoed,
            "end": end, "stats": stats}


def check_soak(engine, out, total):
    rss_w, fds_w, req_w = out["warm"]
    rss_e, fds_e, req_e = out["end"]
    figure(engine, "soak", "%d requests in %.1fs (%d resets/frees, %d bytes echoed, none "
           "lost); after warm-up at %d: RSS %+.2f MiB, descriptors %+d" % (
               out["requests"], out["elapsed"], out["resets"], out["echoed"], req_w,
               (rss_e - rss_w) / MIB, fds_e - fds_w))
    assert fds_e == fds_w, "descriptors grew from %d to %d" % (fds_w, fds_e)
    assert rss_e - rss_w < 4 * MIB + (out["requests"] - req_w) // 100, (
        "RSS grew %.2f MiB over %d requests" % ((rss_e - rss_w) / MIB, req_e - req_w))
    assert out["requests"] >= total // 4, "too few requests: %d" % out["requests"]


def test_soak_with_random_resets(engine, net):
    total = 20_000 if SANITIZED else 100_000
    out = soak(engine, net, total, time_limit=30)
    check_soak(engine, out, total)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not os.environ.get("GAIO_SOAK"), reason="a million requests: GAIO_SOAK=1")
def test_soak_a_million_requests(engine, net):
    out = soak(engine, net, 1_000_000, time_limit=900)
    check_soak(engine, out, 1_000_000)
