"""R21: back-pressure. A standing read stops taking bytes while the unwritten
bytes it is answerable for exceed write_high, and resumes at write_high // 4.

It is answerable for writes made from its own results' views (wherever they
go: see the proxy in test_v02_servers.py) and for every other write queued on
its own connection. While held it is still pending: free() ends it, and its
idle timeout does not run.
"""
import threading
import time

import gaio
from conftest import collect, pattern, recv_exactly

HIGH = 262144
BUFSIZE = 65536
DATA = pattern(1 << 20, seed=3)


def _unwritten(w):
    stats = w.stats()
    return stats["bytes_read"] - stats["bytes_written"]


class Flood:
    """A client that sends DATA over and over, never reading (non-blocking)."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)
        self.sent = 0

    def push(self):
        try:
            while True:
                off = self.sent % len(DATA)
                self.sent += self.sock.send(DATA[off:off + 65536])
        except BlockingIOError:
            pass


def _echo(w, results):
    for res in results:
        assert res.error is None, res
        w.write(res.conn, res.buffer, quiet=True)


def _flood_for(w, flood, seconds):
    """Feed the echo server for `seconds`: returns the highest unwritten count."""
    top = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        flood.push()
        _echo(w, w.wait_io(0.01))
        top = max(top, _unwritten(w))
    return top


def peer_reads_all_then_two_results(w, client, data):
    """The peer reads every byte of `data` (a write stuck until now) while
    wait_io() runs: the results until two came (the write's, the read's)."""
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("d", recv_exactly(client, len(data), 30)))
    reader.start()
    got = []
    end = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < end:
        got += w.wait_io(0.05)
    reader.join(30)
    assert box.get("d") == data
    return got


def test_echo_against_a_peer_that_stops_reading_is_bounded_then_resumes(make_watcher, pair):
    w = make_watcher(BUFSIZE, write_high=HIGH)
    client, server = pair()
    # the idle limit leaves the reader below time to finish after the last
    # echo, even on a loaded machine or under the sanitizer
    w.read(server, repeat=True, ctx="echo", timeout=0.6)
    flood = Flood(client)
    top = _flood_for(w, flood, 1.0)  # also longer than the idle timeout
    # held: the watcher queues at most write_high plus one batch
    assert top <= HIGH + 4 * BUFSIZE, top
    read_before = w.stats()["bytes_read"]
    assert _flood_for(w, flood, 0.3) <= HIGH + 4 * BUFSIZE
    assert w.stats()["bytes_read"] == read_before  # takes nothing while held
    assert w.stats()["pending"] >= 1  # the standing read is still there
    # the peer reads again: everything comes back, byte-exact
    client.setblocking(True)
    sent = flood.sent
    reader = threading.Thread(target=lambda: box.setdefault("echo", recv_exactly(client, sent, 30)))
    box = {}
    reader.start()
    end = time.monotonic() + 30
    while reader.is_alive() and time.monotonic() < end:
        _echo(w, w.wait_io(0.01))
    reader.join(1)
    expected = (DATA * (sent // len(DATA) + 1))[:sent]
    assert box["echo"] == expected
    assert _unwritten(w) == 0
    # still standing (its idle limit did not run while it was held)
    w.free(server)
    res = collect(w, 1)[0]
    assert res.ctx == "echo" and isinstance(res.error, gaio.ConnClosedError)


def test_free_ends_a_held_standing_read(make_watcher, pair):
    w = make_watcher(BUFSIZE, write_high=HIGH)
    client, server = pair()
    w.read(server, repeat=True, ctx="held")
    flood = Flood(client)
    _flood_for(w, flood, 0.5)
    # held: it takes nothing more, and stays held above write_high // 4. (How
    # far below write_high its writes drain once it is held depends on when
    # the engine sends them: at once, or with the next wait's submissions.)
    read = w.stats()["bytes_read"]
    _flood_for(w, flood, 0.1)
    assert w.stats()["bytes_read"] == read and _unwritten(w) > HIGH // 4
    w.free(server)
    results = collect(w, 1)
    end = time.monotonic() + 5
    while w.stats()["pending"] and time.monotonic() < end:
        # a write in the kernel (io_uring) ends once its cancellation is back
        results += w.wait_io(0.05)
    held = [r for r in results if r.ctx == "held"]
    assert len(held) == 1 and isinstance(held[0].error, gaio.ConnClosedError)
    # the quiet write-backs it was held for fail, and so are delivered
    assert all(isinstance(r.error, gaio.ConnClosedError) for r in results)
    assert w.stats()["pending"] == 0


def test_other_writes_on_its_connection_hold_it(make_watcher, pair):
    w = make_watcher(BUFSIZE, write_high=HIGH)
    client, server = pair()
    w.read(server, repeat=True, ctx="r")
    big = pattern(16 << 20, seed=4)  # more than socket buffers take
    w.write(server, big, ctx="big")
    client.sendall(b"ping")
    assert w.wait_io(0.3) == []  # held: "ping" stays in the kernel
    got = peer_reads_all_then_two_results(w, client, big)
    # released at write_high // 4: "ping" may come before the write's result
    # (a peer that reads slowly, on a loaded machine)
    assert sorted(r.ctx for r in got) == ["big", "r"]
    # the view is gone (a later wait_io): its size says enough
    assert [r.size for r in got if r.ctx == "r"] == [4]


def test_a_standing_read_already_waiting_stops_when_held(make_watcher, pair):
    """The read is in the kernel (io_uring: a multishot receive) before the
    write that holds it: it takes nothing that arrives once it is held."""
    w = make_watcher(BUFSIZE, write_high=HIGH)
    client, server = pair()
    w.read(server, repeat=True, ctx="r")
    assert w.wait_io(0.05) == []
    big = pattern(16 << 20, seed=5)
    w.write(server, big, ctx="big")
    client.sendall(b"ping")
    assert w.wait_io(0.3) == []  # held: "ping" stays in the kernel
    got = peer_reads_all_then_two_results(w, client, big)
    # released at write_high // 4: "ping" may come before the write's result
    assert sorted(r.ctx for r in got) == ["big", "r"]
    assert [r.size for r in got if r.ctx == "r"] == [4]


def test_write_high_none_queues_without_limit(make_watcher, pair):
    w = make_watcher(BUFSIZE, write_high=None)
    client, server = pair()
    w.read(server, repeat=True)
    top = _flood_for(w, Flood(client), 0.5)
    assert top > HIGH + 4 * BUFSIZE
    w.free(server)
    collect(w, 1)
