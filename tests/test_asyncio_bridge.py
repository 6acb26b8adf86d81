"""gaio.asyncio_bridge: a watcher driven from a running asyncio loop.

Results reach on_result on the loop's thread; other tasks keep running while
the watcher is busy; an idle watcher does not wake the loop; deadlines end on
time; asyncio.run()'s end, close() and a closed watcher detach the bridge and
leave no descriptor behind (the leak accounting of conftest checks that).
examples/asyncio_push.py holds many idle push connections on a watcher while
its status server stays asyncio.
"""
import asyncio
import io
import re
import socket
import threading
import time

import pytest

import gaio
import gaio.asyncio_bridge
from conftest import LIBKQUEUE, need_fds, pattern, recv_exactly
from test_examples import EXAMPLES, TIMEOUT, Example, assert_clean_exit

pytestmark = pytest.mark.timeout(120)


def echo_handler(w, seen=None):
    def on_result(res):
        if seen is not None:
            seen.append(res)
        if res.op == gaio.Op.ACCEPT:
            w.read(res.accepted, repeat=True)
        elif res.error is None and res.op == gaio.Op.READ:
            w.write(res.conn, res.buffer, quiet=True)
        elif res.error is not None:
            w.free(res.conn)
    return on_result


def test_echo_through_the_bridge_with_asyncio_clients(watcher, net):
    lis = net.track(socket.create_server(("127.0.0.1", 0)))
    address = lis.getsockname()

    async def main():
        with gaio.asyncio_bridge.attach(watcher, echo_handler(watcher)) as bridge:
            assert not bridge.closed and bridge.watcher is watcher
            watcher.accept(lis, repeat=True)

            async def client(i):
                reader, writer = await asyncio.open_connection(*address)
                data = pattern(100000, seed=i)
                writer.write(data)
                assert await reader.readexactly(len(data)) == data
                writer.close()
                await writer.wait_closed()

            await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(20))), 20)
        assert bridge.closed

    asyncio.run(main())


def test_other_tasks_keep_running_under_load(watcher, net):
    """A ticker task's lateness stays small while the watcher echoes 64 MiB."""
    lis = net.track(socket.create_server(("127.0.0.1", 0)))
    address = lis.getsockname()
    lateness = []
    data = pattern(1 << 20) * 64

    def blast():
        with socket.create_connection(address) as sock:
            sender = threading.Thread(target=sock.sendall, args=(data,))
            sender.start()
            try:
                assert recv_exactly(sock, len(data), timeout=60) == data
            finally:
                sender.join(60)

    async def main():
        loop = asyncio.get_running_loop()
        with gaio.asyncio_bridge.attach(watcher, echo_handler(watcher)) as bridge:
            watcher.accept(lis, repeat=True)
            load = loop.run_in_executor(None, blast)
            while not load.done():
                before = loop.time()
                await asyncio.sleep(0.005)
                lateness.append(loop.time() - before - 0.005)
            await load
            assert bridge.wakeups > 10

    asyncio.run(main())
    lateness.sort()
    assert len(lateness) > 10
    # The loop got its turn between batches: a batch is bounded (4 x bufsize).
    # Not the maximum: on a loaded machine (CI, pytest-xdist) any one tick may
    # wait for the CPU itself, which says nothing about the watcher.
    assert lateness[len(lateness) // 2] < 0.02, lateness[-10:]
    assert lateness[len(lateness) * 9 // 10] < 0.1, lateness[-10:]


def test_idle_watcher_does_not_wake_the_loop(watcher, net):
    if LIBKQUEUE and watcher.engine == "kqueue":
        pytest.skip("libkqueue has no fileno(): the bridge polls there (tested below)")
    pairs = net.pairs(100)

    async def main():
        with gaio.asyncio_bridge.attach(watcher, echo_handler(watcher)) as bridge:
            assert not bridge.polling
            for _, server in pairs:
                watcher.read(server, repeat=True)  # no deadline: nothing due
            await asyncio.sleep(0.1)  # the requests start
            before = bridge.wakeups
            await asyncio.sleep(0.5)
            assert bridge.wakeups == before
            pairs[7][0].sendall(b"ping")  # one arrival: one wake-up or so
            await asyncio.sleep(0.1)
            assert 1 <= bridge.wakeups - before <= 3
            pairs[7][0].settimeout(TIMEOUT)
            assert pairs[7][0].recv(4) == b"ping"

    asyncio.run(main())


def test_deadlines_end_on_time(watcher, net):
    (c1, s1), (c2, s2), (c3, s3) = net.pairs(3)
    ended = {}

    def on_result(res):
        ended.setdefault(res.ctx, time.monotonic())

    async def main():
        with gaio.asyncio_bridge.attach(watcher, on_result):
            start = time.monotonic()
            watcher.read(s1, bytearray(10), timeout=0.1, ctx="read 0.1")
            watcher.read(s2, repeat=True, timeout=0.25, ctx="idle 0.25")
            await asyncio.sleep(0.05)
            # A deadline earlier than the one the bridge's timer waits for.
            watcher.read(s3, bytearray(10), deadline=time.monotonic() + 0.02, ctx="at +0.07")
            await asyncio.sleep(0.4)
            return start

    start = asyncio.run(main())
    late = {"read 0.1": ended["read 0.1"] - start - 0.1,
            "idle 0.25": ended["idle 0.25"] - start - 0.25,
            "at +0.07": ended["at +0.07"] - start - 0.07}
    for name, by in late.items():
        assert -0.002 < by < 0.05, late


def test_on_result_exceptions_go_to_the_loop_and_the_batch_goes_on(watcher, net):
    (c1, s1), (c2, s2) = net.pairs(2)
    seen, reported = [], []

    def on_result(res):
        seen.append(res.ctx)
        if res.ctx == "first":
            raise RuntimeError("boom")

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context:
                                                          reported.append(context))
        with gaio.asyncio_bridge.attach(watcher, on_result):
            watcher.read(s1, bytearray(4), ctx="first")
            watcher.read(s2, bytearray(4), ctx="second")
            c1.sendall(b"a")
            c2.sendall(b"b")
            for _ in range(100):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.02)

    asyncio.run(main())
    assert sorted(seen) == ["first", "second"]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)


def test_asyncio_run_ending_detaches_the_bridge(watcher, net):
    client, server = net.pair()
    bridges = []

    async def main():
        bridges.append(gaio.asyncio_bridge.attach(watcher, lambda res: None))
        watcher.read(server, repeat=True)
        # main returns without closing the bridge

    asyncio.run(main())
    assert bridges[0].closed
    # The watcher is the caller's, still open and working.
    client.sendall(b"after")
    results = []
    end = time.monotonic() + TIMEOUT
    while not results and time.monotonic() < end:
        results = watcher.wait_io(0.1)
    assert bytes(results[0].buffer) == b"after"


def test_close_detaches_and_a_new_bridge_can_attach(watcher, net):
    client, server = net.pair()
    got = []

    async def main():
        first = gaio.asyncio_bridge.attach(watcher, lambda res: got.append(("first", res.size)))
        first.close()
        first.close()  # idempotent
        assert first.closed
        with gaio.asyncio_bridge.attach(watcher, lambda res: got.append(("second", res.size))):
            watcher.read(server, bytearray(8))
            client.sendall(b"12345")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.02)

    asyncio.run(main())
    assert got == [("second", 5)]


def test_closing_the_watcher_detaches_the_bridge(engine, net):
    client, server = net.pair()
    w = gaio.Watcher(engine=engine)

    def on_result(res):
        w.close()  # from a result: the bridge sees it before the next wake-up

    async def main():
        bridge = gaio.asyncio_bridge.attach(w, on_result)
        w.read(server, bytearray(4))
        client.sendall(b"x")
        for _ in range(100):
            if bridge.closed:
                break
            await asyncio.sleep(0.02)
        assert bridge.closed
        # A watcher closed from a task: the bridge detaches at its next
        # wake-up, or at close(), or when asyncio.run() ends.
        w2 = gaio.Watcher(engine=engine)
        second = gaio.asyncio_bridge.attach(w2, on_result)
        await asyncio.sleep(0.01)
        w2.close()
        await asyncio.sleep(0.05)
        return second

    second = asyncio.run(main())
    assert second.closed
    w.close()


def test_attach_needs_a_running_loop_or_one_given(watcher):
    with pytest.raises(RuntimeError):
        gaio.asyncio_bridge.attach(watcher, lambda res: None)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError):
            gaio.asyncio_bridge.Bridge(watcher, None, loop=loop)
    finally:
        loop.close()


@pytest.mark.skipif(not LIBKQUEUE, reason="only kqueue on libkqueue has no fileno()")
def test_without_fileno_the_bridge_polls(engine, net):
    if engine != "kqueue":
        pytest.skip("fileno() works on %s" % engine)
    w = gaio.Watcher(engine=engine)
    client, server = net.pair()
    got = []
    with pytest.raises(io.UnsupportedOperation):
        w.fileno()

    async def main():
        with gaio.asyncio_bridge.attach(w, lambda res: got.append(bytes(res.buffer)),
                                        poll_interval=0.01) as bridge:
            assert bridge.polling
            w.read(server, bytearray(4))
            client.sendall(b"poll")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.02)

    try:
        asyncio.run(main())
    finally:
        w.close()
    assert got == [b"poll"]


# ---------------------------------------------------------------- the example

def _status(sock, pending):
    sock.sendall(b"?\n")
    while b"\n" not in pending:
        chunk = sock.recv(100)
        assert chunk, "the status server closed"
        pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


@pytest.mark.parametrize("clients", [1000, pytest.param(10000, marks=pytest.mark.slow)])
def test_asyncio_push_example_holds_idle_clients(engine, clients):
    need_fds(clients + 100)  # the example, a process of its own, holds the other side
    example = Example([str(EXAMPLES / "asyncio_push.py"), "--port", "0", "--seconds", "120",
                       "--interval", "0.5"], engine)
    socks = []
    try:
        assert engine.encode() in example.first_line
        status_port = int(re.search(rb"(\d+)$", example._read_line(TIMEOUT)).group(1))
        status = socket.create_connection(("127.0.0.1", status_port), timeout=TIMEOUT)
        pending = bytearray()
        for _ in range(clients):
            socks.append(socket.create_connection(("127.0.0.1", example.port), timeout=TIMEOUT))
        end = time.monotonic() + 30
        while _status(status, pending) != b"clients %d" % clients:
            assert time.monotonic() < end, "the server never saw every client"
            time.sleep(0.05)
        # The asyncio side answers promptly while the gaio side holds them.
        started = time.monotonic()
        for _ in range(20):
            assert _status(status, pending) == b"clients %d" % clients
        assert (time.monotonic() - started) / 20 < 0.05
        # Every client gets a push.
        for sock in socks:
            line = b""
            while not line.endswith(b"\n"):
                chunk = sock.recv(64)
                assert chunk
                line += chunk
            assert re.match(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n", line), line
        # Half of them leave; the server sees it.
        for sock in socks[: clients // 2]:
            sock.close()
        end = time.monotonic() + 30
        while _status(status, pending) != b"clients %d" % (clients - clients // 2):
            assert time.monotonic() < end, "the server never saw the clients leave"
            time.sleep(0.05)
        status.close()
    finally:
        for sock in socks:
            sock.close()
    assert_clean_exit(example)
