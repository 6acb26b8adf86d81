"""R21, word by word: which bytes a standing read is answerable for.

"A standing read is answerable for the bytes of every write made from one of
its own results' views, whichever connection that write goes to, and for the
unwritten bytes of every other write (plain data, copies, sendfile) queued on
its own connection." So:
- writes queued *before* the standing read hold it too;
- a view written to another connection counts for the view's read only, never
  for the destination's read: a proxy that writes each side's views to the
  other side never deadlocks, and is held back by the slow side only;
- a vectored write counts each view item for that view's own read.
"""
import socket
import threading
import time

import pytest

import gaio
from conftest import collect, pattern
from test_r21_backpressure import peer_reads_all_then_two_results

SMALL_BUFFERS = 32768


def _small_buffers(*socks):
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFERS)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFERS)


def _queue_big_write(w, conn, kind, size, tmp_path):
    """A write of `size` bytes to a peer that does not read: plain, vectored or sendfile."""
    data = pattern(size, seed=21)
    if kind == "plain":
        w.write(conn, data, ctx="big")
    elif kind == "vectored":
        half = size // 2
        w.write(conn, [data[:half], data[half:]], ctx="big")
    else:
        path = tmp_path / "big"
        path.write_bytes(data)
        with open(path, "rb") as f:
            w.sendfile(conn, f, ctx="big")
    return data


@pytest.mark.parametrize("kind", ["plain", "vectored", "sendfile"])
def test_a_write_queued_before_the_standing_read_holds_it(make_watcher, pair, kind, tmp_path):
    high = 65536
    w = make_watcher(16384, write_high=high)
    client, server = pair()
    _small_buffers(client, server)
    _queue_big_write(w, server, kind, 2 << 20, tmp_path)
    assert w.wait_io(0.05) == []  # the write is stuck: the peer does not read
    w.read(server, repeat=True, ctx="r")
    client.sendall(b"ping")
    # answerable for the 2 MiB queued earlier: it takes nothing
    assert [r.ctx for r in w.wait_io(0.3)] == []
    assert w.stats()["bytes_read"] == 0
    w.free(server)
    results = collect(w, 2)
    end = time.monotonic() + 5
    while w.stats()["pending"] and time.monotonic() < end:
        results += w.wait_io(0.05)  # a write in the kernel (io_uring) ends after its cancel
    by_ctx = {r.ctx: r for r in results}
    assert set(by_ctx) == {"r", "big"}
    assert isinstance(by_ctx["r"].error, gaio.ConnClosedError)
    assert by_ctx["r"].size == 0  # the ping was never delivered
    assert isinstance(by_ctx["big"].error, gaio.ConnClosedError)


@pytest.mark.parametrize("kind", ["plain", "vectored", "sendfile"])
def test_a_read_held_by_an_earlier_write_resumes_when_it_drains(make_watcher, pair, kind,
                                                                 tmp_path):
    high = 65536
    w = make_watcher(16384, write_high=high)
    client, server = pair()
    _small_buffers(client, server)
    data = _queue_big_write(w, server, kind, 2 << 20, tmp_path)
    w.read(server, repeat=True, ctx="r")
    client.sendall(b"ping")
    assert w.wait_io(0.2) == []
    got = peer_reads_all_then_two_results(w, client, data)
    assert sorted(r.ctx for r in got) == ["big", "r"]
    assert [r.size for r in got if r.ctx == "r"] == [4]
    w.free(server)
    collect(w, 1)


# ---------------------------------------------------------------- a proxy

class BlockingEcho:
    """The upstream: a plain blocking echo (reads 16 KiB, sendall()s it back),
    which starts echoing only once `go` is set."""

    def __init__(self, net, go):
        self.listener = net.track(socket.create_server(("127.0.0.1", 0)))
        self.go = go
        self.threads = []
        self.stop = False
        self.socks = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    @property
    def address(self):
        return self.listener.getsockname()

    def serve(self, sock):
        """Echo on an already connected socket, in a thread of its own."""
        t = threading.Thread(target=self._echo, args=(sock,), daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        self.listener.settimeout(0.1)
        while not self.stop:
            try:
                sock, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            _small_buffers(sock)
            self.socks.append(sock)
            self.serve(sock)

    def _echo(self, sock):
        sock.settimeout(0.1)
        while not self.stop and not self.go.is_set():
            time.sleep(0.01)
        while not self.stop:
            try:
                data = sock.recv(16384)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            view = memoryview(data)
            while view and not self.stop:
                try:
                    view = view[sock.send(view):]
                except socket.timeout:  # a peer that does not read: wait on
                    continue
                except OSError:
                    return

    def close(self):
        self.stop = True
        self.go.set()
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            s.close()


class Client:
    """Sends `data` (in a thread) and reads its echo (in another, started by
    read_all()); counts what went out."""

    def __init__(self, sock, data):
        self.sock = sock
        self.data = data
        self.sent = 0
        self.echo = bytearray()
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.sender.start()

    def _send(self):
        view = memoryview(self.data)
        try:
            while self.sent < len(view):
                self.sent += self.sock.send(view[self.sent:self.sent + 16384])
        except OSError:
            pass

    def read_all(self):
        self.reader.start()

    def _read(self):
        self.sock.settimeout(15)
        try:
            while len(self.echo) < len(self.data):
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                self.echo += chunk
        except OSError:
            pass


class Proxy:
    """One watcher, one thread: each side's views written to the other side."""

    def __init__(self, w, net, quiet=True):
        self.w = w
        self.net = net
        self.quiet = quiet
        self.top = 0  # most bytes read and not yet written

    def join(self, down, up):
        self.w.read(down, repeat=True, ctx=up)
        self.w.read(up, repeat=True, ctx=down)

    def step(self, timeout=0.01):
        w = self.w
        for res in w.wait_io(timeout):
            if res.op == gaio.Op.ACCEPT:
                down = self.net.track(res.accepted)
                up = self.net.track(socket.socket())
                _small_buffers(down, up)
                w.connect(up, self.upstream, ctx="connect")
                self.join(down, up)
            elif res.op == gaio.Op.READ and res.error is None:
                try:
                    w.write(res.ctx, res.buffer, ctx="relay", quiet=self.quiet)
                except ValueError:  # the other side was freed in this batch
                    pass
            elif res.op == gaio.Op.CONNECT or (res.op == gaio.Op.WRITE and res.error is None):
                assert res.error is None, res
            else:
                raise AssertionError(res)
        stats = w.stats()
        self.top = max(self.top, stats["bytes_read"] - stats["bytes_written"])

    def run_until(self, done, seconds):
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            self.step()
        return done()


HIGH, BUFSIZE, TOTAL = 65536, 16384, 4 << 20
BOUND = 2 * (HIGH + 8 * BUFSIZE)  # the SPEC-derived ceiling on what the proxy holds


def _relays_everything(proxy, client, data):
    """The client gets its exact bytes back within 10 s, and the proxy never
    held more than the SPEC-derived bound meanwhile."""
    assert proxy.run_until(lambda: len(client.echo) >= len(data), 10), (client.sent,
                                                                       len(client.echo))
    assert bytes(client.echo) == data
    assert proxy.top <= BOUND, proxy.top


def _accepting_proxy(make_watcher, net, upstream):
    w = make_watcher(BUFSIZE, write_high=HIGH)
    front = net.track(socket.create_server(("127.0.0.1", 0)))
    proxy = Proxy(w, net)
    proxy.upstream = upstream.address
    front_address = front.getsockname()
    w.accept(front, repeat=True, ctx="accept")
    client_sock = net.track(socket.socket())
    _small_buffers(client_sock)
    client_sock.connect(front_address)
    return proxy, client_sock


def test_proxy_held_back_by_a_stalled_upstream_then_relays_everything(make_watcher, net):
    go = threading.Event()
    upstream = BlockingEcho(net, go)
    try:
        proxy, client_sock = _accepting_proxy(make_watcher, net, upstream)
        data = pattern(TOTAL, seed=31)
        client = Client(client_sock, data)
        client.read_all()
        proxy.run_until(lambda: False, 1.0)  # the upstream reads nothing yet
        assert client.sent < TOTAL // 2, client.sent  # the client is slowed
        assert proxy.top <= BOUND, proxy.top
        go.set()
        _relays_everything(proxy, client, data)
    finally:
        upstream.close()


def test_proxy_held_back_by_a_client_that_stops_reading(make_watcher, net):
    go = threading.Event()
    go.set()
    upstream = BlockingEcho(net, go)
    try:
        proxy, client_sock = _accepting_proxy(make_watcher, net, upstream)
        data = pattern(TOTAL, seed=32)
        client = Client(client_sock, data)
        proxy.run_until(lambda: False, 1.0)  # the client reads nothing yet
        assert client.sent < TOTAL // 2, client.sent
        assert proxy.top <= BOUND, proxy.top
        client.read_all()
        _relays_everything(proxy, client, data)
    finally:
        upstream.close()


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "plain"])
def test_preconnected_relay_never_stalls(make_watcher, net, quiet):
    """Two connected pairs relayed both ways, the client reading all along."""
    go = threading.Event()
    go.set()
    upstream = BlockingEcho(net, go)
    try:
        w = make_watcher(BUFSIZE, write_high=HIGH)
        client_sock, down = net.pair()
        up, far = net.pair()
        _small_buffers(client_sock, down, up, far)
        upstream.serve(far)
        proxy = Proxy(w, net, quiet=quiet)
        proxy.join(down, up)
        data = pattern(TOTAL, seed=33)
        client = Client(client_sock, data)
        client.read_all()
        _relays_everything(proxy, client, data)
    finally:
        upstream.close()


# ---------------------------------------------------------------- vectored writes

def test_each_view_item_of_a_vectored_write_counts_for_its_own_read(make_watcher, net):
    """Views of two standing reads (A's first) go out in one vectored write to
    a peer that does not read: B's bytes hold B, though A's view comes first."""
    high = 65536
    w = make_watcher(16384, write_high=high)
    a_client, a = net.pair()
    b_client, b = net.pair()
    sink_peer, sink = net.pair()
    _small_buffers(sink_peer, sink)
    b_client.setblocking(False)
    w.read(a, repeat=True, ctx="a")
    w.read(b, repeat=True, ctx="b")
    chunk = b"b" * 65536

    def flood_b():
        try:
            while True:
                b_client.send(chunk)
        except BlockingIOError:
            pass

    def round_trip():
        """One round: A sends a byte, B floods; views of one batch go out
        together, A's first (B's views alone are dropped)."""
        a_client.send(b"a")
        flood_b()
        time.sleep(0.002)
        results = w.wait_io(0.02)
        views = {"a": [], "b": []}
        for res in results:
            assert res.error is None, res
            views[res.ctx].append(res.buffer)
        if views["a"] and views["b"]:
            w.write(sink, views["a"] + views["b"], quiet=True)
        return views

    # Until B looks held (ten rounds in a row without a view of B), for at
    # most 2 s; the 0.4 s below tell whether it is.
    end = time.monotonic() + 2.0
    rounds_without_b = 0
    while time.monotonic() < end and rounds_without_b < 10:
        rounds_without_b = 0 if round_trip()["b"] else rounds_without_b + 1
    # B is held now: A still delivers, B delivers nothing
    b_results = a_results = 0
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        views = round_trip()
        b_results += len(views["b"])
        a_results += len(views["a"])
    assert a_results > 0
    assert b_results == 0
    # the sink goes away: its writes fail, B is let go and reads again
    w.free(sink)
    got_b = False
    end = time.monotonic() + 5
    while not got_b and time.monotonic() < end:
        for res in w.wait_io(0.02):
            if res.ctx == "b":
                got_b = True
            elif res.ctx != "a":
                assert isinstance(res.error, gaio.ConnClosedError), res
        try:
            a_client.send(b"a")
        except OSError:
            pass
    assert got_b
    w.free(a)
    w.free(b)
    collect(w, 2)
    while w.stats()["pending"]:
        w.wait_io(0.05)


# ---------------------------------------------------------------- next_timeout

def test_next_timeout_counts_a_standing_idle_limit_from_its_last_result(watcher, pair):
    """R20 + R23: `timeout` is an idle limit counted again from each result;
    next_timeout() says when it runs out."""
    client, server = pair()
    watcher.read(server, repeat=True, timeout=0.3, ctx="r")
    assert watcher.wait_io(0.2) == []
    client.sendall(b"x")
    results = collect(watcher, 1)
    assert results[0].ctx == "r" and results[0].error is None
    left = watcher.next_timeout()
    assert 0.2 < left <= 0.3, left
    watcher.free(server)
    collect(watcher, 1)


def test_freeing_the_destination_lets_the_source_read_again(make_watcher, net):
    """Views of A's standing read written to B, whose peer does not read, hold
    A; free(B) ends those writes (ConnClosedError): they will never be written,
    so A is answerable for nothing any more and reads again."""
    high = 65536
    w = make_watcher(16384, write_high=high)
    a_client, a = net.pair()
    b_peer, b = net.pair()
    _small_buffers(b_peer, b)
    a_client.setblocking(False)
    w.read(a, repeat=True, ctx="a")
    chunk = b"a" * 65536

    def flood():
        try:
            while True:
                a_client.send(chunk)
        except BlockingIOError:
            pass

    read_at = []
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        flood()
        for res in w.wait_io(0.01):
            assert res.error is None, res
            w.write(b, res.buffer, ctx="to-b")  # many writes queue behind the first
        read_at.append(w.stats()["bytes_read"])
    assert read_at[-1] == read_at[len(read_at) // 2]  # held for the second half
    w.free(b)
    ended = 0
    resumed = False
    end = time.monotonic() + 5
    while not resumed and time.monotonic() < end:
        flood()
        for res in w.wait_io(0.02):
            if res.ctx == "to-b":
                if res.error is None:
                    continue  # written before the free
                assert isinstance(res.error, gaio.ConnClosedError), res
                ended += 1
            else:
                assert res.ctx == "a" and res.error is None, res
                resumed = True
    assert ended >= 1 and resumed
    w.free(a)
    end = time.monotonic() + 5
    while w.stats()["pending"] and time.monotonic() < end:
        w.wait_io(0.05)


def test_next_timeout_counts_a_standing_accepts_idle_limit_from_its_last_result(watcher, net):
    listener = net.track(socket.create_server(("127.0.0.1", 0)))
    address = listener.getsockname()
    watcher.accept(listener, repeat=True, timeout=0.3, ctx="acc")
    assert watcher.wait_io(0.2) == []
    client = net.track(socket.create_connection(address))
    results = collect(watcher, 1)
    assert results[0].ctx == "acc" and results[0].error is None
    net.track(results[0].accepted)
    left = watcher.next_timeout()
    assert 0.2 < left <= 0.3, left
    client.close()
    watcher.free(listener)
    collect(watcher, 1)
