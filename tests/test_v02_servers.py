"""Version 0.2 as a whole: servers and clients on one watcher and one thread.

- an echo server (standing accept, standing reads, a quiet write of each view)
  serving 1,000 clients byte-exact;
- a client pool built on connect();
- a proxy relaying between two connections, held back by a side that does
  not read (R21);
- a watcher driven from an asyncio loop through fileno(), add_reader() and
  next_timeout() (R23).
"""
import asyncio
import contextlib
import socket
import threading
import time

import pytest

import gaio
from conftest import collect, need_fds, pattern, recv_exactly


def _serve_echo(w, lis, started, stop, errors):
    """One thread: the whole server."""
    try:
        try:
            w.accept(lis, repeat=True, ctx="accept")
        finally:
            started.set()
        while not stop.is_set():
            for res in w.wait_io(0.05):
                if res.op == gaio.Op.ACCEPT:
                    if res.error is None:
                        w.read(res.accepted, repeat=True, ctx="conn")
                    else:
                        errors.append(res.error)
                elif res.error is None and res.op == gaio.Op.READ:
                    w.write(res.conn, res.buffer, quiet=True)
                elif isinstance(res.error, EOFError):
                    w.free(res.conn)
                elif res.error is not None:
                    errors.append(res.error)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@contextlib.contextmanager
def echo_server(engine, net):
    w = gaio.Watcher(engine=engine)
    lis = net.track(socket.create_server(("127.0.0.1", 0), backlog=4096))
    address = lis.getsockname()
    started, stop = threading.Event(), threading.Event()
    errors = []
    t = threading.Thread(target=_serve_echo, args=(w, lis, started, stop, errors),
                         daemon=True)
    t.start()
    try:
        started.wait(10)
        if errors:
            raise errors[0]
        yield address, w, errors
    finally:
        stop.set()
        t.join(10)
        w.close()
    assert not errors, errors


def test_one_thread_server_serves_1000_clients_byte_exact(engine, net):
    need_fds(2 * 1000 + 50)
    with echo_server(engine, net) as (address, w, errors):
        clients = []
        for i in range(1000):
            c = net.track(socket.create_connection(address, timeout=10))
            clients.append(c)
        payloads = [pattern(2000 + i % 97, seed=i) for i in range(1000)]
        for c, p in zip(clients, payloads):
            c.sendall(p)
        for c, p in zip(clients, payloads):
            assert recv_exactly(c, len(p)) == p
        for c in clients:
            c.close()
        end = time.monotonic() + 10
        while w.stats()["watched"] > 1 and time.monotonic() < end:
            time.sleep(0.05)
        stats = w.stats()
        assert stats["accepted"] == 1000
        assert stats["watched"] == 1  # the listener; every client freed at EOF
        assert stats["bytes_written"] == sum(len(p) for p in payloads)
        assert stats["quiet_done"] >= 1000 and stats["completed"] >= 2000


def test_one_thread_client_pool_on_connect(engine, net):
    need_fds(2 * 300 + 50)
    with echo_server(engine, net) as (address, _, errors):
        pool = gaio.Watcher(engine=engine)
        try:
            socks = [net.track(socket.socket()) for _ in range(300)]
            payloads = {}
            for i, s in enumerate(socks):
                data = pattern(1000 + i, seed=1000 + i)
                payloads[i] = data
                pool.connect(s, address, ctx=("connect", i), timeout=10)
                pool.write(s, data, ctx=("write", i), quiet=True)
                pool.read_full(s, bytearray(len(data)), ctx=("read", i), timeout=10)
            results = collect(pool, 600, timeout=30)
            kinds = {}
            for res in results:
                assert res.error is None, res
                kind, i = res.ctx
                kinds.setdefault(kind, []).append(i)
                if kind == "read":
                    assert bytes(res.buffer) == payloads[i]
            assert sorted(kinds["connect"]) == sorted(kinds["read"]) == list(range(300))
            assert "write" not in kinds  # quiet
            for s in socks:
                pool.free(s)
        finally:
            pool.close()


def test_proxy_relays_with_back_pressure(make_watcher, net):
    high, bufsize = 262144, 65536
    proxy = make_watcher(bufsize, write_high=high)
    upstream = net.track(socket.create_server(("127.0.0.1", 0)))
    front = net.track(socket.create_server(("127.0.0.1", 0)))
    front_address = front.getsockname()
    proxy.accept(front, repeat=True, ctx="accept")
    client = net.track(socket.create_connection(front_address))
    client.setblocking(False)
    data = pattern(1 << 20, seed=9)
    state = {"sent": 0}

    def push():
        try:
            while True:
                off = state["sent"] % len(data)
                state["sent"] += client.send(data[off:off + 65536])
        except BlockingIOError:
            pass

    def relay(results):
        for res in results:
            if res.op == gaio.Op.ACCEPT:
                down = net.track(res.accepted)
                up = net.track(socket.socket())
                proxy.connect(up, upstream.getsockname(), ctx="connect")
                proxy.read(down, repeat=True, ctx=up)
                proxy.read(up, repeat=True, ctx=down)
            elif res.op == gaio.Op.READ:
                assert res.error is None, res
                proxy.write(res.ctx, res.buffer, quiet=True)  # to the other side
            else:
                assert res.error is None, res

    def unwritten():
        stats = proxy.stats()
        return stats["bytes_read"] - stats["bytes_written"]

    top = 0
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # upstream accepts nothing and reads nothing
        push()
        relay(proxy.wait_io(0.01))
        top = max(top, unwritten())
    assert top <= high + 4 * bufsize, top
    assert state["sent"] > top  # the client did try to send more
    upstream.settimeout(5)
    server, _ = upstream.accept()
    net.track(server)
    sent = state["sent"]
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("d", recv_exactly(server, sent, 30)))
    reader.start()
    end = time.monotonic() + 30
    while reader.is_alive() and time.monotonic() < end:
        relay(proxy.wait_io(0.01))
    reader.join(1)
    assert box["d"] == (data * (sent // len(data) + 1))[:sent]
    # and the other way
    server.sendall(b"reply")
    client.setblocking(True)
    t = threading.Thread(target=lambda: box.setdefault("r", recv_exactly(client, 5)))
    t.start()
    while t.is_alive() and time.monotonic() < end:
        relay(proxy.wait_io(0.01))
    t.join(1)
    assert box["r"] == b"reply"


@pytest.mark.usefixtures("needs_fileno")
def test_watcher_driven_from_asyncio(watcher, net):
    lis = net.track(socket.create_server(("127.0.0.1", 0)))
    address = lis.getsockname()
    ended = []

    async def main():
        loop = asyncio.get_running_loop()
        timer = None

        def handle(res):
            if res.op == gaio.Op.ACCEPT:
                net.track(res.accepted)
                watcher.read(res.accepted, repeat=True, timeout=0.3)
            elif res.error is None:
                watcher.write(res.conn, res.buffer, quiet=True)
            else:
                ended.append(type(res.error))
                watcher.free(res.conn)

        def on_ready():
            nonlocal timer
            for res in watcher.wait_io(0):
                handle(res)
            if timer is not None:
                timer.cancel()
                timer = None
            left = watcher.next_timeout()
            if left is not None:
                timer = loop.call_later(left, on_ready)

        watcher.accept(lis, repeat=True)
        fd = watcher.fileno()
        loop.add_reader(fd, on_ready)
        try:
            async def client(i):
                reader, writer = await asyncio.open_connection(*address)
                try:
                    for n in range(5):
                        msg = b"client %d message %d\n" % (i, n)
                        writer.write(msg)
                        assert await reader.readexactly(len(msg)) == msg
                    # idle: the server's idle timeout ends its read, it frees us
                    assert await asyncio.wait_for(reader.read(), 5) == b""
                finally:
                    writer.close()
                    await writer.wait_closed()

            await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(20))), 20)
        finally:
            loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()

    asyncio.run(main())
    assert ended == [gaio.DeadlineExceededError] * 20
