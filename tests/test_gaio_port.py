"""gaio's own test suite (aio_test.go), ported.

As in Go, an echo server runs on its own watcher in its own thread; the test
hands it accepted sockets from the main thread while it is blocked in wait_io()
(R1), and stops it with close() from the main thread (R10). Content is checked
byte for byte, per connection, where gaio only counted bytes.

Go test                       here
TestEchoTiny                  test_echo_tiny
TestEchoHuge                  test_echo_huge (16 MiB, not 100 MiB)
TestBidirectionWatcher        test_bidirection_watcher
TestReadFull                  test_read_full_through_echo
TestSocketClose               test_socket_close
TestWriteOnClosedConn         test_write_on_closed_conn
TestDeadline                  test_single_deadline
TestEmptyBuffer               test_empty_buffer
TestUnsupportedConn           test_unsupported_conn
Test1k..Test8k                test_parallel_echo[1024..8192]
Test10k{Random,Complete}Swap  test_parallel_swap_buffer[random|all] (1k connections)
TestDeadline1k                test_deadline_1k
"""
import random
import threading
import time

import pytest

import gaio
from conftest import collect, need_fds, pattern, recv_exactly


class EchoServer:
    """gaio's ping-pong echo server: read, write back what was read, read again."""

    def __init__(self, engine, bufsize, internal=False):
        self.w = gaio.Watcher(bufsize, engine=engine)
        self.bufsize = bufsize
        self.internal = internal
        self.error = None
        self.thread = threading.Thread(target=self._loop, name="echo-server")
        self.thread.start()

    def add(self, sock):
        if self.internal:
            self.w.read(sock)
        else:
            self.w.read(sock, bytearray(self.bufsize), ctx="buf")

    def _loop(self):
        w = self.w
        try:
            while True:
                for res in w.wait_io(1.0):
                    if res.error is not None:
                        w.free(res.conn)
                    elif res.op == gaio.Op.READ:
                        if self.internal:
                            w.write(res.conn, res.buffer)  # the view, straight back
                        else:
                            w.write(res.conn, memoryview(res.buffer)[:res.size], ctx=res.buffer)
                    elif self.internal:
                        w.read(res.conn)
                    else:
                        w.read(res.conn, res.ctx, ctx="buf")
        except gaio.WatcherClosedError:
            pass
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self):
        self.w.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "close() did not wake the echo server"
        if self.error is not None:
            raise self.error


@pytest.fixture
def echo(engine):
    servers = []

    def start(bufsize=1024, internal=False):
        s = EchoServer(engine, bufsize, internal)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def test_echo_tiny(echo, pair):
    server = echo(bufsize=1, internal=True)
    client, accepted = pair()
    server.add(accepted)
    client.sendall(b"hello world")
    assert recv_exactly(client, 11, timeout=10) == b"hello world"


@pytest.mark.parametrize("internal", [False, True])
def test_echo_huge(echo, pair, internal):
    server = echo(bufsize=65536, internal=internal)
    client, accepted = pair()
    server.add(accepted)
    tx = pattern(16 << 20, seed=21)
    sender = threading.Thread(target=client.sendall, args=(tx,))
    sender.start()
    rx = recv_exactly(client, len(tx), timeout=60)
    sender.join(10)
    assert rx == tx


def test_bidirection_watcher(echo, watcher, pair):
    server = echo(bufsize=65536)
    client, accepted = pair()
    server.add(accepted)
    tx = b"hello world"
    watcher.write(client, tx)
    watcher.read(client)  # into the internal buffer
    got = bytearray()

    def keep(res):
        assert res.error is None
        if res.op == gaio.Op.READ:
            got.extend(res.buffer)

    collect(watcher, 2, each=keep)
    while len(got) < len(tx):
        watcher.read(client)
        collect(watcher, 1, each=keep)
    assert got == tx


def test_read_full_through_echo(echo, watcher, pair):
    server = echo(bufsize=65536)
    client, accepted = pair()
    server.add(accepted)
    tx = pattern(16 << 20, seed=22)
    rx = bytearray(len(tx))
    watcher.write(client, tx, ctx="w")
    watcher.read_full(client, rx, ctx="r")
    results = {r.ctx: r for r in collect(watcher, 2, timeout=60)}
    assert results["w"].error is None and results["w"].size == len(tx)
    assert results["r"].error is None and results["r"].size == len(rx)
    assert rx == tx


def test_socket_close(echo, watcher, pair):
    server = echo()
    client, accepted = pair()
    server.add(accepted)
    watcher.write(client, b"hello world")
    res = collect(watcher, 1)[0]
    assert res.error is None
    watcher.free(client)
    with pytest.raises(ValueError):
        watcher.read(client, bytearray(11))


def test_write_on_closed_conn(echo, watcher, pair):
    server = echo()
    client, accepted = pair()
    server.add(accepted)
    client.close()
    with pytest.raises(ValueError):
        watcher.write(client, b"hello world")


def test_single_deadline(echo, watcher, net):
    server = echo()
    client, accepted = net.pair()
    server.add(accepted)
    watcher.read(client, timeout=0.2)
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.DeadlineExceededError)
    # a "hangup server": accepts, never reads; writes must reach their deadline
    hang_client, hang_accepted = net.pair()
    buf = bytes(1 << 20)
    for _ in range(64):
        watcher.write(hang_client, buf, timeout=0.2)
        res = collect(watcher, 1, timeout=5)[0]
        if res.error is not None:
            break
    assert isinstance(res.error, gaio.DeadlineExceededError)


def test_empty_buffer(watcher, pair):
    client, server = pair()
    with pytest.raises(ValueError):
        watcher.write(server, b"")
    with pytest.raises((TypeError, ValueError)):
        watcher.write(server, None, timeout=1)


def test_unsupported_conn(watcher):
    with pytest.raises(TypeError):
        watcher.read(None)
    with pytest.raises(TypeError):
        watcher.write(object(), b"x")


def _parallel(watcher, net, server, n, msgsize, read_mode, timeout):
    need_fds(2 * n + 64)
    pairs = net.pairs(n)
    for _, accepted in pairs:
        server.add(accepted)
    for i, (client, _) in enumerate(pairs):
        watcher.write(client, pattern(msgsize, seed=i), ctx=i)
    rng = random.Random(n)
    got = [bytearray() for _ in range(n)]
    done = 0
    end = time.monotonic() + timeout

    def read_more(conn, i):
        internal = read_mode == "all" or (read_mode == "random" and rng.random() < 1 / 13)
        if internal:
            watcher.read(conn, ctx=i)
        elif read_mode == "full":
            watcher.read_full(conn, bytearray(msgsize), ctx=i)
        else:
            watcher.read(conn, bytearray(1024), ctx=i)

    while done < n:
        assert time.monotonic() < end, "%d of %d connections echoed in %.0fs" % (done, n, timeout)
        for res in watcher.wait_io(0.5):
            assert res.error is None, res
            i = res.ctx
            if res.op == gaio.Op.WRITE:
                read_more(res.conn, i)
                continue
            got[i] += memoryview(res.buffer).cast("B")[:res.size]
            if len(got[i]) < msgsize:
                read_more(res.conn, i)
            else:
                assert got[i] == pattern(msgsize, seed=i), "connection %d got wrong bytes" % i
                done += 1
    assert watcher.stats()["pending"] == 0


@pytest.mark.parametrize("n", [
    1024, 2048,
    pytest.param(4096, marks=pytest.mark.slow),
    pytest.param(8192, marks=pytest.mark.slow),
])
def test_parallel_echo(echo, watcher, net, n):
    server = echo(bufsize=1024)
    _parallel(watcher, net, server, n, 1024, "full", timeout=60)


@pytest.mark.parametrize("mode", ["random", "all"])
def test_parallel_swap_buffer(echo, engine, make_watcher, net, mode):
    n, msgsize = 1024, 1024
    server = echo(bufsize=msgsize)
    w = make_watcher(bufsize=n * msgsize)  # as gaio: NewWatcherSize(par * msgsize)
    _parallel(w, net, server, n, msgsize, mode, timeout=60)


def test_parallel_tiny_messages(echo, watcher, net):
    server = echo(bufsize=16, internal=True)
    _parallel(watcher, net, server, 1024, 16, "all", timeout=60)


def test_deadline_1k(echo, watcher, net):
    n = 1024
    need_fds(2 * n + 64)
    server = echo(bufsize=128)
    pairs = net.pairs(n)
    for _, accepted in pairs:
        server.add(accepted)
    for client, _ in pairs:
        watcher.read(client, timeout=0.5)
    results = collect(watcher, n, timeout=30)
    assert len(results) == n
    assert all(isinstance(r.error, gaio.DeadlineExceededError) for r in results)
