"""R15: bad input never crashes the process. Random call sequences with random
and bad arguments against peers that send, read slowly, half-close, reset or
vanish: nothing crashes, nothing leaks (the leak accounting fixture checks
descriptors and threads), every request completes exactly once, and no byte is
lost or reordered."""
import array
import gc
import math
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import weakref

import pytest

import gaio
from conftest import collect, pattern, reset

ALLOWED_ERRORS = (EOFError, gaio.DeadlineExceededError, gaio.ConnClosedError,
                  ConnectionResetError, BrokenPipeError)


class Peer:
    """One delegated connection and the test-side socket talking to it."""

    def __init__(self, index, client, server, rng):
        self.index = index
        self.client = client
        self.server = server
        client.setblocking(False)
        self.stream = pattern(rng.randrange(1, 300_000), seed=1000 + index)
        self.sent = 0
        self.received = bytearray()
        self.slow = rng.random() < 0.3
        self.peer_state = "open"      # open | half-closed | reset | closed
        self.freed = False
        self.reads = []               # ctx in request order
        self.writes = []              # (ctx, data) in request order
        self.read_data = {}           # ctx -> bytes
        self.write_size = {}          # ctx -> size
        self.read_done_order = []     # ctx of data-carrying reads, completion order
        self.write_done_order = []

    def pump(self, rng, force_read=False):
        if self.peer_state in ("reset", "closed", "reset by watcher"):
            return
        if self.peer_state == "open" and self.sent < len(self.stream) and rng.random() < 0.5:
            chunk = self.stream[self.sent:self.sent + rng.randrange(1, 20000)]
            try:
                self.sent += self.client.send(chunk)
            except BlockingIOError:
                pass
            except ConnectionError:
                self.peer_state = "reset by watcher"
        if force_read or not self.slow or rng.random() < 0.1:
            for _ in range(4):
                try:
                    data = self.client.recv(1 << 16)
                except BlockingIOError:
                    break
                except ConnectionResetError:
                    # free() of a socket with unread input sends RST, which
                    # discards its unsent output: only a prefix can be checked
                    self.peer_state = "reset by watcher"
                    break
                if not data:
                    break
                self.received += data


class Fuzz:
    def __init__(self, w, net, rng):
        self.w = w
        self.net = net
        self.rng = rng
        self.peers = []
        self.pending = {}   # ctx -> (peer, kind, buffer)
        self.next_ctx = 0

    # ------------------------------------------------------------ requests
    def new_peer(self):
        client, server = self.net.pair(unix=self.rng.random() < 0.3)
        self.peers.append(Peer(len(self.peers), client, server, self.rng))

    def _timing(self):
        r = self.rng.random()
        if r < 0.6:
            return {}
        if r < 0.75:
            return {"timeout": self.rng.choice([0, -1, 0.001, 0.01, 0.05])}
        if r < 0.9:
            return {"deadline": time.monotonic() + self.rng.choice([-1, 0.005, 0.03])}
        return {"timeout": None}

    def _ctx(self):
        self.next_ctx += 1
        return self.next_ctx

    def _buffer(self):
        n = self.rng.randrange(1, 70000)
        kind = self.rng.randrange(4)
        if kind == 0:
            return bytearray(n)
        if kind == 1:
            return memoryview(bytearray(n + 8))[4:4 + n]
        if kind == 2:
            return array.array("B", bytes(n))
        return None  # internal buffer

    def request(self, peer):
        kind = self.rng.choice(["read", "read", "read_full", "write", "write"])
        ctx = self._ctx()
        timing = self._timing()
        try:
            if kind == "read":
                buf = self._buffer()
                if buf is None:
                    self.w.read(peer.server, ctx=ctx, **timing)
                else:
                    self.w.read(peer.server, buf, ctx=ctx, **timing)
            elif kind == "read_full":
                buf = bytearray(self.rng.randrange(1, 50000))
                self.w.read_full(peer.server, buf, ctx=ctx, **timing)
            else:
                buf = pattern(self.rng.randrange(1, 200000), seed=ctx)
                if self.rng.random() < 0.3:
                    buf = bytearray(buf)
                self.w.write(peer.server, buf, ctx=ctx, **timing)
        except ValueError:
            assert peer.freed, "ValueError on a live connection"
            return
        assert not peer.freed, "request accepted on a freed connection"
        self.pending[ctx] = (peer, kind, buf)
        if kind == "write":
            peer.writes.append((ctx, bytes(memoryview(buf))))
        else:
            peer.reads.append(ctx)

    def bad_call(self, peer):
        before = self.w.stats()["submitted"]
        s = peer.server
        calls = [
            lambda: self.w.read(self.rng.choice([None, 3, "s", object(), b"x"])),
            lambda: self.w.read(s, self.rng.choice([b"", b"ro", "s", 5, bytearray()])),
            lambda: self.w.read_full(s, self.rng.choice([None, b"", bytearray(), "x"])),
            lambda: self.w.write(s, self.rng.choice([b"", "s", 5, object(), bytearray()])),
            lambda: self.w.write(object(), b"data"),
            lambda: self.w.read(s, timeout=math.nan),
            lambda: self.w.write(s, b"x", deadline=math.nan),
            lambda: self.w.read(s, bytearray(1), timeout=1, deadline=1),
            lambda: self.w.free(self.rng.choice([None, 1, "x", object()])),
            lambda: self.w.wait_io(math.nan),
            lambda: self.w.read_full(  # stream only, even since datagrams (R24)
                self.net.track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)), bytearray(1)),
        ]
        with pytest.raises((TypeError, ValueError)):
            self.rng.choice(calls)()
        assert self.w.stats()["submitted"] == before

    def free(self, peer):
        # a never-delegated socket is unknown to the watcher: free() leaves it
        # open and undelegated (our delegated sockets are exactly the closed ones)
        delegated = peer.server.fileno() == -1
        self.w.free(peer.server)
        if delegated:
            peer.freed = True
        else:
            assert peer.server.fileno() != -1

    def peer_event(self, peer):
        if peer.peer_state != "open":
            return
        event = self.rng.choice(["half-close", "reset", "close"])
        if event == "half-close":
            try:
                peer.client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            peer.peer_state = "half-closed"
        elif event == "reset":
            reset(peer.client)
            peer.peer_state = "reset"
        else:
            peer.client.close()
            peer.peer_state = "closed"

    # ------------------------------------------------------------ results
    def wait(self, timeout):
        for res in self.w.wait_io(timeout):
            self.check(res)

    def check(self, res):
        assert isinstance(res, gaio.OpResult)
        assert res.ctx in self.pending, "unknown or duplicate result %r" % (res,)
        peer, kind, buf = self.pending.pop(res.ctx)
        assert res.conn is peer.server
        assert res.error is None or isinstance(res.error, ALLOWED_ERRORS), res.error
        assert res.size >= 0
        if kind == "write":
            assert res.op == gaio.Op.WRITE
            assert res.size <= len(memoryview(buf))
            if res.error is None:
                assert res.size == len(memoryview(buf))
            peer.write_size[res.ctx] = res.size
            if res.size:
                peer.write_done_order.append(res.ctx)
            return
        assert res.op == gaio.Op.READ
        if buf is None:
            if res.size:
                assert res.is_swap_buffer and len(res.buffer) == res.size
                data = bytes(res.buffer)
            else:
                assert res.buffer is None and not res.is_swap_buffer
                data = b""
        else:
            assert res.buffer is buf and not res.is_swap_buffer
            data = bytes(memoryview(buf).cast("B")[:res.size])
        if res.error is None:
            assert res.size >= 1
            if kind == "read_full":
                assert res.size == len(buf)
        peer.read_data[res.ctx] = data
        if res.size:
            peer.read_done_order.append(res.ctx)

    # ------------------------------------------------------------ invariants
    def verify(self, peer):
        got = b"".join(peer.read_data[c] for c in peer.reads)
        assert got == peer.stream[:len(got)], "read bytes lost or reordered on %d" % peer.index
        assert len(got) <= peer.sent
        carried = [c for c in peer.reads if peer.read_data[c]]
        assert peer.read_done_order == carried, "reads completed out of order"
        written = b"".join(data[:peer.write_size[c]] for c, data in peer.writes)
        carried = [c for c, _ in peer.writes if peer.write_size[c]]
        assert peer.write_done_order == carried, "writes completed out of order"
        if peer.peer_state in ("open", "half-closed"):
            assert bytes(peer.received) == written, "written bytes lost or reordered"
        else:
            assert written.startswith(bytes(peer.received))


@pytest.mark.parametrize("seed", range(1, 7))
def test_random_call_sequences(watcher, net, seed):
    rng = random.Random(seed)
    fz = Fuzz(watcher, net, rng)
    for _ in range(3):
        fz.new_peer()
    end = time.monotonic() + 8
    for step in range(1500):
        if time.monotonic() > end:
            break
        live = [p for p in fz.peers if not p.freed]
        r = rng.random()
        peer = rng.choice(fz.peers)
        if r < 0.05 and len(live) < 10:
            fz.new_peer()
        elif r < 0.45:
            fz.request(peer)
        elif r < 0.55:
            fz.bad_call(peer)
        elif r < 0.58:
            fz.free(peer)
        elif r < 0.61:
            fz.peer_event(peer)
        else:
            fz.wait(rng.choice([-1, 0, 0, 0.001, 0.005]))
        for p in fz.peers:
            p.pump(rng)
    # wind down: free everything; every request completes exactly once
    for p in fz.peers:
        if not p.freed:
            fz.free(p)
        if not p.freed:  # never delegated: still ours to close
            p.server.close()
    deadline = time.monotonic() + 10
    while fz.pending and time.monotonic() < deadline:
        fz.wait(0.05)
    assert not fz.pending, "requests never completed: %r" % list(fz.pending)[:10]
    assert watcher.wait_io(0.01) == []
    for p in fz.peers:
        if p.peer_state in ("open", "half-closed"):
            p.client.settimeout(10)
            while True:
                try:
                    data = p.client.recv(1 << 20)
                except ConnectionResetError:
                    # free() of a socket with unread input sends RST, which
                    # discards its unsent output: only a prefix can be checked
                    p.peer_state = "reset by watcher"
                    break
                if not data:
                    break
                p.received += data
        fz.verify(p)
    s = watcher.stats()
    assert s["pending"] == 0 and s["watched"] == 0
    assert s["submitted"] == s["completed"]
    assert s["completed"] >= 100, "too few requests to prove anything: %r" % s


def test_threads_hammering_then_close(watcher, net):
    """Requests from several threads while another waits; close() in the
    middle: every call either works or raises WatcherClosedError."""
    pairs = net.pairs(8)
    stop = threading.Event()
    unexpected = []

    def hammer(index):
        rng = random.Random(index)
        client, server = pairs[index]
        client.setblocking(False)
        while not stop.is_set():
            try:
                if rng.random() < 0.5:
                    watcher.write(server, b"h" * rng.randrange(1, 5000), timeout=0.5)
                else:
                    watcher.read(server, timeout=rng.choice([0, 0.01]))
                try:
                    client.recv(1 << 16)
                except (BlockingIOError, OSError):
                    pass
            except gaio.WatcherClosedError:
                return
            except BaseException as exc:
                unexpected.append(exc)
                return

    def waiter():
        while True:
            try:
                watcher.wait_io(0.01)
            except gaio.WatcherClosedError:
                return
            except BaseException as exc:
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(len(pairs))]
    threads.append(threading.Thread(target=waiter))
    for t in threads:
        t.start()
    time.sleep(0.5)
    watcher.close()
    stop.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert not unexpected, unexpected


def test_random_junk_everywhere_never_crashes(watcher, pair):
    client, server = pair()
    rng = random.Random(99)
    junk = [None, 0, -1, 2 ** 70, 1.5, math.nan, math.inf, -math.inf, "", "x", b"", b"x",
            bytearray(), bytearray(3), memoryview(b"ro"), object(), [], (), {}, server,
            socket, len, type, Ellipsis, NotImplemented, True]
    # wait_io gets only junk that cannot block for long
    wait_junk = [0, -1, -math.inf, math.nan, "", "x", b"", object(), [], 0.001, 1j]
    for _ in range(600):
        name = rng.choice(["read", "read_full", "write", "free", "wait_io"])
        pool = wait_junk if name == "wait_io" else junk
        nargs = rng.randrange(1 if name == "wait_io" else 0, 3)  # wait_io() would block
        args = [rng.choice(pool) for _ in range(nargs)]
        kwargs = {}
        if name != "free" and name != "wait_io" and rng.random() < 0.5:
            kwargs[rng.choice(["ctx", "timeout", "deadline"])] = rng.choice(junk)
        try:
            result = getattr(watcher, name)(*args, **kwargs)
        except (TypeError, ValueError, OverflowError):
            continue
        if name == "wait_io":
            assert isinstance(result, list)
        if server.fileno() == -1:  # delegated by an accepted junk request: drain it
            break
    watcher.free(server)
    end = time.monotonic() + 5
    while watcher.stats()["pending"] and time.monotonic() < end:
        watcher.wait_io(0.05)
    assert watcher.stats()["pending"] == 0
    collect(watcher, 0)


def test_resizing_a_buffer_under_a_pending_request_is_refused_or_harmless(watcher, pair):
    """The caller must not change a buffer in flight; if it tries to resize
    one, the process must survive (an export held by the watcher makes the
    resize raise BufferError; under AddressSanitizer anything else shows up)."""
    client, server = pair()
    rbuf = bytearray(4096)
    wbuf = bytearray(pattern(16 << 20, seed=41))
    watcher.read(server, rbuf, ctx="r")
    watcher.write(server, wbuf, ctx="w")
    resized = []
    for buf in (rbuf, wbuf):
        try:
            buf.extend(bytes(1 << 20))  # realloc would move the memory
            resized.append(buf)
        except BufferError:
            pass
        try:
            del buf[:]
            resized.append(buf)
        except BufferError:
            pass
    client.sendall(b"after resize")
    client.setblocking(False)
    results = []
    end = time.monotonic() + 20
    while len(results) < 2 and time.monotonic() < end:
        results.extend(watcher.wait_io(0.005))
        try:
            client.recv(1 << 20)
        except BlockingIOError:
            pass
    assert sorted(r.ctx for r in results) == ["r", "w"]
    if not resized:
        by_ctx = {r.ctx: r for r in results}
        assert by_ctx["w"].error is None and by_ctx["w"].size == 16 << 20
        assert rbuf[:by_ctx["r"].size] == b"after resize"[:by_ctx["r"].size]


def test_no_memory_growth_over_many_requests(watcher, net):
    """Results, views, copies, ctx objects, deadline entries and connections
    are all freed: Python-visible memory does not grow with traffic."""

    def cycles(n):
        for i in range(n):
            client, server = net.pair(unix=True)
            client.sendall(b"x" * 100)
            watcher.read(server, ctx=object())                       # internal buffer
            collect(watcher, 1)
            watcher.read(server, bytearray(16), ctx=[i], timeout=0)   # deadline path
            watcher.write(server, b"y" * 50, ctx={"i": i}, timeout=5)
            res = collect(watcher, 2)
            client.sendall(b"z")
            watcher.read(server)
            echo = collect(watcher, 1)[0]
            watcher.write(echo.conn, echo.buffer)                     # copy of a view
            watcher.read(server, bytearray(8))                        # ended by free
            collect(watcher, 1)
            watcher.free(server)
            collect(watcher, 1)
            client.close()
            del res, echo
        net.close_all()

    cycles(100)  # warm up caches and free lists
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        cycles(600)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in growth)
    top = "\n".join(str(stat) for stat in growth[:8])
    assert total < 30_000, "memory grew by %d bytes over 600 cycles:\n%s" % (total, top)


ABUSE_CHILD = textwrap.dedent("""
    import copy, gc, pickle, socket, sys
    import gaio

    engine = sys.argv[1]
    w = gaio.Watcher(1024, engine=engine)
    a, b = socket.socketpair()
    a.sendall(b"abuse")
    w.read(b)
    [res] = w.wait_io(5)
    W, R = type(w), type(res)

    def attempt(fn):
        try:
            fn()
        except Exception:
            pass

    # objects made without __init__
    for make in (lambda: W.__new__(W), lambda: W.__new__(W, 1024), lambda: R.__new__(R)):
        try:
            bare = make()
        except Exception:
            continue
        for name in ("read", "read_full", "write", "free", "wait_io", "close", "stats"):
            attempt(lambda: getattr(bare, name)(a))
            attempt(lambda: getattr(bare, name)(0))
            if name != "wait_io":  # a working bare watcher would block forever
                attempt(lambda: getattr(bare, name)())
        for name in ("engine", "bufsize", "op", "conn", "ctx", "buffer", "size", "error"):
            attempt(lambda: getattr(bare, name))
        attempt(lambda: repr(bare))
        del bare
        gc.collect()

    # __init__ again on a live watcher, copies and pickles
    attempt(lambda: w.__init__(1))
    attempt(lambda: w.__init__(2 ** 40))
    attempt(lambda: w.__init__("x"))
    attempt(lambda: copy.copy(w))
    attempt(lambda: copy.deepcopy(w))
    attempt(lambda: pickle.dumps(w))
    attempt(lambda: copy.copy(res))
    attempt(lambda: pickle.dumps(res))
    attempt(lambda: R(0, a, None, None, 0, None, False))
    attempt(lambda: a.sendall(b"still"))  # a re-init may have closed b
    attempt(lambda: w.read(b))
    attempt(lambda: w.wait_io(0.5))
    w.close()
    attempt(lambda: w.__init__(1024))
    attempt(lambda: w.read(b))
    attempt(lambda: w.wait_io(0))
    w.close()
    del w, res
    gc.collect()
    print("survived")
""")


def test_objects_abused_by_the_caller_never_crash(engine):
    """Bare objects made without __init__, __init__ called again, copies and
    pickles: exceptions are fine, a crash is not (run in a child process)."""
    proc = subprocess.run([sys.executable, "-c", ABUSE_CHILD, engine],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "child died (%d): %s" % (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "survived"


def test_cycles_through_results_are_collected(watcher, pair):
    """A result kept by its own ctx (a handler storing its last result) forms
    a cycle the garbage collector must be able to break."""
    class Handler:
        pass

    client, server = pair()
    handler = Handler()
    ref = weakref.ref(handler)
    watcher.write(server, b"cycle", ctx=handler)
    handler.last = collect(watcher, 1)[0]
    del handler
    gc.collect()
    assert ref() is None, "a result/ctx cycle was never collected"


def test_every_request_completes_exactly_once_under_threads(watcher, net):
    """Four threads make requests and free connections while the main thread
    waits: every accepted request yields exactly one result."""
    submitted = []          # ctx of accepted requests (list.append is atomic)
    errors = []
    stop = threading.Event()
    lock = threading.Lock()

    def producer(index):
        rng = random.Random(index)
        try:
            client, server = net.pair(unix=True)
            serial = 0
            while not stop.is_set():
                serial += 1
                ctx = (index, serial)
                action = rng.random()
                if action < 0.1:
                    watcher.free(server)
                    client.close()
                    client, server = net.pair(unix=True)
                    continue
                if action < 0.5:
                    watcher.read(server, bytearray(rng.randrange(1, 64)), ctx=ctx,
                                 timeout=rng.choice([None, 0, 0.01]))
                elif action < 0.7:
                    watcher.read(server, ctx=ctx)
                else:
                    watcher.write(server, b"w" * rng.randrange(1, 3000), ctx=ctx,
                                  timeout=rng.choice([None, 0.05]))
                with lock:
                    submitted.append(ctx)
                try:
                    client.send(b"r" * rng.randrange(1, 50), socket.MSG_DONTWAIT)
                    client.recv(1 << 16, socket.MSG_DONTWAIT)
                except OSError:
                    pass
                if serial % 50 == 0:
                    time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    seen = []
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        seen.extend(r.ctx for r in watcher.wait_io(0.01))
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    # end every remaining request: free each connection the threads left open
    for sock in list(net._owned):
        if sock is not net._listener and sock.fileno() == -1:
            watcher.free(sock)
    deadline = time.monotonic() + 10
    while len(seen) < len(submitted) and time.monotonic() < deadline:
        seen.extend(r.ctx for r in watcher.wait_io(0.05))
    assert len(seen) == len(set(seen)), "a request completed twice"
    assert sorted(seen) == sorted(submitted), "%d submitted, %d completed" % (
        len(submitted), len(seen))
    assert len(submitted) > 200, "the threads made too few requests to prove anything"
