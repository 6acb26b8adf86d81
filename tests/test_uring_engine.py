"""io_uring engine specifics the behavioural suite cannot see: more operations
in flight than the submission ring has slots, cancellations racing data, and
close()/free() while the kernel still holds callers' buffers; standing
requests as multishot operations, and every fallback the engine takes on a
kernel without one (GAIO_URING_AVOID stands in for that kernel).

The engine has SQ_ENTRIES = 256 slots (src/native/engine_uring.c): the tests
below keep far more operations in flight than that.
"""
import socket
import threading
import time

import pytest

import gaio
from conftest import collect, need_fds, pattern, recv_exactly

SQ_ENTRIES = 256


def skip_without_uring():
    reason = gaio.available_engines()["uring"]
    if reason is not None:
        pytest.skip("io_uring unavailable here: %s" % reason)


TECHNIQUES = ("provided-buffers", "multishot-recv", "accept", "multishot-accept", "sendmsg",
              "defer-taskrun", "send-at-once", "send-large-at-once", "min-wait", "recv-poll-first",
              "poll-streams", "multishot-poll", "send-when-quiet", "look-in-user-space")
# What each mode of `standing_mode` avoids: its fallbacks are what a kernel
# without those operations gets.
AVOID = {
    "multishot": "",
    "multishot-recv": "multishot-poll",
    "one-shot": "multishot-recv,multishot-accept,multishot-poll",
    "poll": "multishot-recv,multishot-accept,accept,sendmsg,recv-poll-first",
    "stream-recv": "multishot-recv,multishot-accept,poll-streams,multishot-poll",
}
# The defaults (AVOIDED_BY_DEFAULT in uring_setup.c), bulk streams read by
# one-shot RECVs out of provided buffers and every RECV tried before it polls.
STREAMS_BY_RECV = "multishot-recv,send-at-once,min-wait,poll-streams,recv-poll-first"


def techniques():
    with gaio.Watcher(engine="uring") as w:
        return w._techniques()


@pytest.fixture(params=sorted(AVOID))
def standing_mode(request, monkeypatch):
    """Standing reads and accepts as multishot operations (6.0, 5.19), as one
    operation per arrival, or with accepts and vectored writes after POLL_ADD."""
    skip_without_uring()
    monkeypatch.delenv("GAIO_URING_NO_PBUF", raising=False)
    monkeypatch.setenv("GAIO_URING_AVOID", AVOID[request.param])
    avoided = set(AVOID["poll"].split(",") + AVOID[request.param].split(","))
    missing = {name: why for name, why in techniques().items() if why and name not in avoided}
    if request.param.startswith("multishot"):
        missing.update((name, why) for name, why in techniques().items()
                       if why and name not in AVOID[request.param].split(","))
    if missing:
        pytest.skip("this kernel lacks what mode %r tests: %s" % (request.param, missing))
    return request.param


@pytest.fixture(params=["provided-buffers", "streams-by-recv", "poll"])
def read_mode(request, monkeypatch):
    """Reads without a buffer: provided buffers (6.12; a bulk stream's reads
    POLL_ADD + recv(), or with poll-streams avoided RECVs), or POLL_ADD +
    recv() for all."""
    skip_without_uring()
    if request.param == "poll":
        monkeypatch.setenv("GAIO_URING_NO_PBUF", "1")
    else:
        monkeypatch.delenv("GAIO_URING_NO_PBUF", raising=False)
    if request.param == "streams-by-recv":
        monkeypatch.setenv("GAIO_URING_AVOID", STREAMS_BY_RECV)
    return request.param


@pytest.fixture
def uring(read_mode):
    w = gaio.Watcher(engine="uring")
    try:
        yield w
    finally:
        w.close()


def test_more_reads_in_flight_than_submission_slots(uring, net):
    n = 3 * SQ_ENTRIES + 7
    need_fds(2 * n + 16)
    pairs = net.pairs(n)
    bufs = {}
    for i, (_, server) in enumerate(pairs):
        bufs[i] = bytearray(16)
        uring.read(server, bufs[i], ctx=i)
    assert uring.wait_io(0.05) == []  # every read is now in the kernel
    for i, (client, _) in enumerate(pairs):
        client.sendall(b"%06d" % i)
    results = collect(uring, n, timeout=20)
    assert sorted(r.ctx for r in results) == list(range(n))
    for r in results:
        assert r.error is None and r.size == 6
        assert bytes(bufs[r.ctx][:6]) == b"%06d" % r.ctx
    assert uring.stats()["pending"] == 0


def test_more_writes_than_submission_slots_on_one_wait(uring, net):
    n = 2 * SQ_ENTRIES + 3
    need_fds(2 * n + 16)
    pairs = net.pairs(n)
    for i, (_, server) in enumerate(pairs):
        uring.write(server, b"w%05d" % i, ctx=i)
        uring.read(server, ctx=("r", i))  # internal-buffer reads, polled
    writes = collect(uring, n, timeout=20)
    assert sorted(r.ctx for r in writes) == list(range(n))
    for i, (client, _) in enumerate(pairs):
        assert recv_exactly(client, 6) == b"w%05d" % i
        client.sendall(b"r%05d" % i)
    seen = {}
    collect(uring, n, timeout=20,
            each=lambda r: seen.__setitem__(r.ctx, bytes(r.buffer) if r.buffer else r.error))
    assert seen == {("r", i): b"r%05d" % i for i in range(n)}


@pytest.mark.parametrize("method", ["read", "read_full"])
def test_deadline_racing_data_loses_no_byte(uring, pair, method):
    """A recv that completes despite its cancellation reports its bytes: over
    many races the stream arrives whole and in order."""
    client, server = pair()
    sent = pattern(4000, seed=3)
    got = bytearray()
    timeouts = 0
    for i in range(200):
        chunk = sent[i * 20:(i + 1) * 20]
        buf = bytearray(20)
        getattr(uring, method)(server, buf, timeout=0.0005 * (i % 4))
        client.sendall(chunk)
        res = collect(uring, 1)[0]
        assert res.buffer is buf
        got += buf[:res.size]
        if res.error is not None:
            assert isinstance(res.error, gaio.DeadlineExceededError)
            timeouts += 1
        # whatever the race left in the socket comes next
        while len(got) < (i + 1) * 20:
            rest = bytearray(20)
            uring.read_full(server, memoryview(rest)[:(i + 1) * 20 - len(got)])
            res = collect(uring, 1)[0]
            assert res.error is None
            got += rest[:res.size]
    assert bytes(got) == sent
    assert uring.stats()["timeouts"] == timeouts


def test_close_cancels_reads_in_flight_before_buffers_are_let_go(net):
    """After close() returns, no kernel operation may still write into a
    caller's buffer (the kernel's writes are invisible to ASan: checked here)."""
    skip_without_uring()
    n = 400
    need_fds(2 * n + 16)
    pairs = net.pairs(n, unix=True)  # small socket buffers: the big writes stay in flight
    w = gaio.Watcher(engine="uring")
    bufs = []
    for client, server in pairs:
        buf = bytearray(64)
        bufs.append(buf)
        w.read(server, buf)
        w.read(server)  # queued behind it
        w.write(server, b"x" * (1 << 20))  # fills the socket: a send stays in flight
    assert w.wait_io(0.1) == []
    w.close()
    for client, _ in pairs:
        try:
            client.send(b"too late" * 8)
        except OSError:  # the watcher's side is gone: a reset is fine
            pass
    time.sleep(0.05)
    assert all(buf == bytearray(64) for buf in bufs)
    assert w.stats()["watched"] == 0


def test_free_with_a_read_in_flight_completes_only_after_the_kernel_let_go(uring, pair):
    client, server = pair()
    buf = bytearray(32)
    uring.read(server, buf, ctx="r")
    uring.read(server, ctx="behind")
    assert uring.wait_io(0.05) == []
    uring.free(server)
    results = collect(uring, 2)
    assert [r.ctx for r in results] == ["r", "behind"]
    assert all(isinstance(r.error, gaio.ConnClosedError) for r in results)
    try:
        client.send(b"after free")
    except OSError:
        pass
    time.sleep(0.02)
    assert buf == bytearray(32)


def test_many_watchers_open_and_close_with_operations_in_flight(net):
    skip_without_uring()
    for round_ in range(30):
        client, server = net.pair()
        with gaio.Watcher(engine="uring") as w:
            w.read(server, bytearray(8))
            w.read(server)
            if round_ % 2:
                w.wait_io(0)
        client.close()


def test_wake_from_another_thread_while_reads_are_in_flight(uring, pair):
    import threading
    client, server = pair()
    uring.read(server, bytearray(8), ctx="late")
    later = threading.Timer(0.05, lambda: uring.write(server, b"ping", ctx="w"))
    later.start()
    try:
        start = time.monotonic()
        res = collect(uring, 1)[0]
        assert res.ctx == "w" and res.error is None
        assert time.monotonic() - start < 1.0
    finally:
        later.join()
    client.sendall(b"pong")
    assert collect(uring, 1)[0].ctx == "late"


def test_more_completions_at_once_than_the_completion_ring_holds(uring, net):
    """4096 CQ slots (CQ_ENTRIES): the rest wait in the kernel (FEAT_NODROP)
    and are flushed by the engine; none is lost."""
    n = 4300
    need_fds(2 * n + 64)
    pairs = net.pairs(n, unix=True)
    bufs = [bytearray(4) for _ in range(n)]
    for i, (_, server) in enumerate(pairs):
        uring.read(server, bufs[i], ctx=i)
    assert uring.wait_io(0.2) == []  # all armed in the kernel
    for i, (client, _) in enumerate(pairs):
        client.send(b"%04d" % (i % 10000))
    time.sleep(0.2)  # every completion is posted before the next wait
    results = collect(uring, n, timeout=30)
    assert sorted(r.ctx for r in results) == list(range(n))
    assert all(r.size == 4 and bytes(bufs[r.ctx]) == b"%04d" % r.ctx for r in results)


@pytest.mark.parametrize("bufsize", [1, 7, 64])
def test_internal_buffer_reads_beyond_the_batch_budget_keep_every_stream(read_mode, net, bufsize):
    """More bytes arrive in one wait than a batch may hand out (4 x bufsize):
    the rest waits (parked, with provided buffers) and comes first later."""
    pairs = net.pairs(12)
    sent = [pattern(40 * bufsize + 3, seed=i) for i in range(len(pairs))]
    got = [bytearray() for _ in pairs]
    with gaio.Watcher(bufsize, engine="uring") as w:
        for i, (client, server) in enumerate(pairs):
            client.sendall(sent[i])
            w.read(server, ctx=i)
        time.sleep(0.05)  # everything is there before the first wait
        end = time.monotonic() + 30
        while any(len(g) < len(s) for g, s in zip(got, sent)):
            assert time.monotonic() < end, [len(g) for g in got]
            batch = w.wait_io(1)
            assert sum(r.size for r in batch) <= 4 * bufsize
            for res in batch:
                assert res.error is None and res.is_swap_buffer, res
                assert 1 <= res.size <= bufsize
                got[res.ctx] += res.buffer
                if len(got[res.ctx]) < len(sent[res.ctx]):
                    w.read(pairs[res.ctx][1], ctx=res.ctx)
    assert [bytes(g) for g in got] == sent


def test_internal_buffer_read_racing_its_deadline_loses_no_byte(uring, pair):
    client, server = pair()
    sent = pattern(2000, seed=5)
    got = bytearray()
    for i in range(100):
        uring.read(server, timeout=0.0005 * (i % 4))
        client.sendall(sent[i * 20:(i + 1) * 20])
        res = collect(uring, 1)[0]
        if res.error is None:
            got += res.buffer
        else:
            assert isinstance(res.error, gaio.DeadlineExceededError) and res.size == 0
        while len(got) < (i + 1) * 20:
            uring.read(server)
            res = collect(uring, 1)[0]
            assert res.error is None, res
            got += res.buffer
    assert bytes(got) == sent


def test_many_idle_connections_hold_no_provided_buffer(uring, net):
    """Every connection has a read without a buffer in the kernel, yet only the
    ones that receive take buffer space (the kernel picks at arrival)."""
    n = 600
    need_fds(2 * n + 16)
    pairs = net.pairs(n, unix=True)
    for i, (_, server) in enumerate(pairs):
        uring.read(server, ctx=i)
    assert uring.wait_io(0.05) == []
    for i in range(0, n, 50):
        pairs[i][0].sendall(b"hi %d" % i)
    seen = {}
    collect(uring, n // 50, each=lambda r: seen.__setitem__(r.ctx, bytes(r.buffer)))
    assert seen == {i: b"hi %d" % i for i in range(0, n, 50)}


def test_techniques_name_their_fallbacks_and_why(monkeypatch):
    skip_without_uring()
    monkeypatch.delenv("GAIO_URING_NO_PBUF", raising=False)
    monkeypatch.setenv("GAIO_URING_AVOID", "provided-buffers,accept")
    t = techniques()
    assert sorted(t) == sorted(TECHNIQUES)
    assert "GAIO_URING_AVOID" in t["provided-buffers"] and "GAIO_URING_AVOID" in t["accept"]
    assert t["multishot-recv"] == "needs provided buffers"
    assert t["multishot-accept"] == "needs accept"
    monkeypatch.setenv("GAIO_URING_AVOID", "sendmsg,no-such-thing")
    t = techniques()
    assert "GAIO_URING_AVOID" in t["sendmsg"]
    assert all(t[name] is None or "GAIO_URING_AVOID" not in t[name]
               for name in TECHNIQUES if name != "sendmsg")
    monkeypatch.delenv("GAIO_URING_AVOID")
    monkeypatch.setenv("GAIO_URING_NO_PBUF", "1")
    assert "GAIO_URING_NO_PBUF" in techniques()["provided-buffers"]
    with gaio.Watcher(engine="epoll") as w:
        assert w._techniques() == {}


@pytest.mark.parametrize("bufsize", [1, 7, 64])
def test_standing_reads_beyond_the_batch_budget_keep_every_stream(standing_mode, net, bufsize):
    """More bytes than a batch may hand out, on 12 standing reads at once (the
    buffer ring runs dry, bytes are parked and the multishot receives
    stopped): every stream arrives whole, then its end of stream."""
    pairs = net.pairs(12)
    sent = [pattern(40 * bufsize + 3, seed=i) for i in range(len(pairs))]
    got = [bytearray() for _ in pairs]
    ended = set()
    with gaio.Watcher(bufsize, engine="uring") as w:
        for i, (_, server) in enumerate(pairs):
            w.read(server, repeat=True, ctx=i)
        assert w.wait_io(0.02) == []  # in the kernel before the bytes come
        for i, (client, _) in enumerate(pairs):
            client.sendall(sent[i])
            client.shutdown(socket.SHUT_WR)
        time.sleep(0.05)
        end = time.monotonic() + 30
        while len(ended) < len(pairs):
            assert time.monotonic() < end, [len(g) for g in got]
            batch = w.wait_io(1)
            assert sum(r.size for r in batch) <= 4 * bufsize
            for res in batch:
                assert res.ctx not in ended, res
                if res.error is None:
                    assert res.is_swap_buffer and 1 <= res.size <= bufsize, res
                    got[res.ctx] += res.buffer
                else:
                    assert isinstance(res.error, EOFError) and res.size == 0, res
                    ended.add(res.ctx)
    assert [bytes(g) for g in got] == sent


def test_standing_read_racing_its_deadline_loses_no_byte(standing_mode, pair):
    client, server = pair()
    sent = pattern(3000, seed=7)
    got = bytearray()
    with gaio.Watcher(engine="uring") as w:
        for i in range(100):
            w.read(server, repeat=True, ctx="s", deadline=time.monotonic() + 0.0005 * (i % 4))
            chunk = sent[i * 30:(i + 1) * 30]
            client.sendall(chunk[:15])
            client.sendall(chunk[15:])
            ended = False
            while not ended:
                for res in collect(w, 1):
                    if res.error is None:
                        got += res.buffer
                    else:
                        assert isinstance(res.error, gaio.DeadlineExceededError) and res.size == 0
                        ended = True
            while len(got) < (i + 1) * 30:  # what the race left in the socket comes next
                w.read(server, ctx="rest")
                res = collect(w, 1)[0]
                assert res.error is None, res
                got += res.buffer
            assert w.stats()["pending"] == 0
    assert bytes(got) == sent


def test_free_during_a_stream_delivers_a_prefix(standing_mode, pair):
    client, server = pair()
    sent = pattern(4 << 20, seed=8)
    got = bytearray()

    def send():
        try:
            client.sendall(sent)
        except OSError:  # freed: the watcher's side is gone
            pass

    sender = threading.Thread(target=send)
    with gaio.Watcher(4096, engine="uring") as w:
        w.read(server, repeat=True, ctx="s")
        sender.start()
        try:
            while len(got) < 100000:
                for res in w.wait_io(0.05):
                    assert res.error is None, res
                    got += res.buffer
            w.free(server)
            ended = False
            while not ended:
                for res in collect(w, 1):
                    if res.error is None:
                        got += res.buffer
                    else:
                        assert isinstance(res.error, gaio.ConnClosedError), res
                        ended = True
        finally:
            client.close()
            sender.join(10)
    assert sent.startswith(got)


def test_standing_accepts_ended_while_connections_arrive_leak_nothing(standing_mode, net):
    """Standing accepts end (deadline, free) while clients connect: every
    client gets an accepted socket back or sees its connection end; none is
    left open in the watcher (the leak accounting checks the descriptors)."""
    clients, accepted = [], []
    with gaio.Watcher(engine="uring") as w:
        for round_ in range(24):
            lis = net.track(socket.create_server(("127.0.0.1", 0), backlog=64))
            addr = lis.getsockname()  # the socket object is detached once delegated
            if round_ % 2:
                w.accept(lis, repeat=True, ctx=round_, deadline=time.monotonic() + 0.001 * (round_ % 4))
            else:
                w.accept(lis, repeat=True, ctx=round_)
            for _ in range(6):
                clients.append((net.track(socket.create_connection(addr)), addr))
            if not round_ % 2:
                w.wait_io(0.001 * (round_ % 3))
                w.free(lis)
            ended = False
            while not ended:
                for res in collect(w, 1):
                    assert res.ctx == round_
                    if res.accepted is not None:
                        accepted.append(net.track(res.accepted))
                    else:
                        assert isinstance(res.error, (gaio.ConnClosedError, gaio.DeadlineExceededError))
                        ended = True
            if round_ % 2:
                w.free(lis)
        assert w.stats()["pending"] == 0
    served = {(s.getpeername(), s.getsockname()) for s in accepted}
    assert len(served) == len(accepted)
    for c, addr in clients:
        if (c.getsockname(), addr) in served:
            continue
        c.settimeout(5)
        try:
            assert c.recv(1) == b""  # closed unaccepted, or accepted and closed
        except ConnectionResetError:
            pass


def test_server_on_standing_requests_echoes_byte_exact(standing_mode, net):
    """A standing accept, a standing read per connection, each view written
    back as a vectored write of two pieces: every client gets its bytes back."""
    lis = net.listener()
    addr = lis.getsockname()
    n = 24
    sent = [pattern(20000 + 97 * i, seed=i) for i in range(n)]
    echoed = [bytearray() for _ in range(n)]
    with gaio.Watcher(4096, engine="uring") as w:
        w.accept(lis, repeat=True, ctx="lis")
        clients = [net.track(socket.create_connection(addr)) for _ in range(n)]
        for i, c in enumerate(clients):
            c.setblocking(False)
            c.sendall(sent[i])  # fits the socket buffers
        end = time.monotonic() + 30
        while any(len(e) < len(s) for e, s in zip(echoed, sent)):
            assert time.monotonic() < end, [len(e) for e in echoed]
            for res in w.wait_io(0.02):
                assert res.error is None, res
                if res.op == gaio.Op.ACCEPT:
                    w.read(net.track(res.accepted), repeat=True, ctx="conn")
                else:
                    half = res.size // 2
                    w.write(res.conn, [res.buffer[:half], res.buffer[half:]], quiet=True)
            for i, c in enumerate(clients):
                try:
                    echoed[i] += c.recv(1 << 16)
                except BlockingIOError:
                    pass
        assert w.stats()["accepted"] == n
    assert [bytes(e) for e in echoed] == sent


def test_more_standing_reads_than_submission_slots(standing_mode, net):
    n = 2 * SQ_ENTRIES + 5
    need_fds(2 * n + 16)
    pairs = net.pairs(n, unix=True)
    seen = {}
    with gaio.Watcher(engine="uring") as w:
        for i, (_, server) in enumerate(pairs):
            w.read(server, repeat=True, ctx=i)
        assert w.wait_io(0.05) == []
        for round_ in range(2):
            for i, (client, _) in enumerate(pairs):
                client.sendall(b"%d:%05d;" % (round_, i))
            want = {i: b"".join(b"%d:%05d;" % (r, i) for r in range(round_ + 1)) for i in range(n)}
            end = time.monotonic() + 20
            while seen != want:
                assert time.monotonic() < end
                for res in w.wait_io(0.1):
                    assert res.error is None, res
                    seen[res.ctx] = seen.get(res.ctx, b"") + bytes(res.buffer)


def test_accepts_taken_past_a_lowered_limit_are_held_then_closed_with_the_listener(
        standing_mode, net):
    """IORING_OP_ACCEPT keeps the RLIMIT_NOFILE of its submission: a standing
    accept armed before the limit was lowered takes connections past it (in
    every mode where it is in the kernel). They are held, not delivered: EMFILE
    is reported as accept4() would; free() of the listener closes them (the
    clients see the end, no descriptor is left)."""
    import errno
    import os
    import resource

    from conftest import open_fds
    with gaio.Watcher(engine="uring") as w:
        lis = net.track(socket.create_server(("127.0.0.1", 0), backlog=16))
        address = lis.getsockname()
        w.accept(lis, ctx="L", repeat=True)
        assert w.wait_io(0.05) == []
        clients = [net.track(socket.socket()) for _ in range(3)]
        old = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(open_fds()) + 24, old[1]))
        fillers = []
        try:
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        try:
            for client in clients:
                client.connect(address)
            results = []
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                results += w.wait_io(0.05)
            for res in results:
                if res.accepted is not None:
                    net.track(res.accepted)
            assert results and all(r.accepted is None and r.error.errno == errno.EMFILE
                                   for r in results)
            w.free(lis)
            res = collect(w, 1)[0]
            assert isinstance(res.error, gaio.ConnClosedError)
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, old)
        for client in clients:  # closed, never delivered: each client sees the end
            client.settimeout(5)
            try:
                assert client.recv(1) == b""
            except ConnectionResetError:  # never accepted (POLL_ADD + accept4())
                pass


def test_standing_read_goes_from_stream_to_messages_and_back(standing_mode, pair):
    """A standing read that gets bulk arrivals (read in place after POLL_ADD
    with poll-streams, else RECVs), then small messages one at a time, then
    bulk again, then the end: every byte in order, each message answered
    alone, then EOFError."""
    client, server = pair()
    bufsize = 16384
    got = bytearray()
    sent = bytearray()

    def take_until(n):
        end = time.monotonic() + 10
        while len(got) < n:
            assert time.monotonic() < end, (len(got), n)
            for res in w.wait_io(1):
                assert res.error is None and res.is_swap_buffer, res
                got.extend(res.buffer)

    with gaio.Watcher(bufsize, engine="uring") as w:
        w.read(server, repeat=True)
        for rnd in range(3):
            bulk = pattern(20 * bufsize + 11, seed=rnd)
            sender = threading.Thread(target=client.sendall, args=(bulk,))
            sender.start()
            sent += bulk
            take_until(len(sent))
            sender.join()
            for i in range(20):
                msg = pattern(100 + i, seed=100 * rnd + i)
                client.sendall(msg)
                sent += msg
                take_until(len(sent))
        assert bytes(got) == bytes(sent)
        client.shutdown(socket.SHUT_WR)
        res = collect(w, 1)[0]
        assert isinstance(res.error, EOFError) and res.size == 0, res
