"""No call stalls the interpreter: a thread that must wait for the watcher
(its lock is held by the thread in wait_io() for a whole batch of recv/send,
or free() waits for that thread to close the descriptor) waits without the
GIL, so the program's other Python threads go on meanwhile."""
import threading
import time

import pytest

import gaio
from conftest import pattern, recv_exactly

HOLD = 0.5          # seconds the core lock is held by another thread
STALL_LIMIT = 0.25  # a gap this long in a pure-Python loop is a stall


class Ticker:
    """A pure-Python loop on its own thread that records the longest gap
    between two of its iterations since the last reset()."""

    def __init__(self):
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last > self.worst:
                self.worst = now - last
            last = now

    def reset(self):
        time.sleep(0.02)  # let it run, so its first gap is not ours
        self.worst = 0.0

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def test_calls_made_while_the_core_lock_is_held_release_the_gil(native_engine, net):
    w = gaio.Watcher(engine=native_engine)
    try:
        a, b = net.pair()
        c, _d = net.pair()
        w.read(c, bytearray(8))  # delegated, to be freed below
        calls = [
            ("write", lambda: w.write(a, b"ping")),
            ("read", lambda: w.read(a, bytearray(8))),
            ("first request (delegation)", lambda: w.read(net.pair()[0], bytearray(8))),
            ("free", lambda: w.free(c)),
            ("stats", lambda: w.stats()),
            ("wait_io", lambda: w.wait_io(0)),
        ]
        with Ticker() as ticker:
            for name, call in calls:
                w._debug_hold_lock(HOLD)
                ticker.reset()
                t0 = time.monotonic()
                call()
                blocked = time.monotonic() - t0
                assert blocked >= HOLD * 0.6, "%s did not wait for the lock" % name
                assert ticker.worst < STALL_LIMIT, (
                    "%s stalled other threads for %.3f s" % (name, ticker.worst))
        for _ in range(3):
            w.wait_io(0.05)  # io_uring submits the write in a wait
        assert recv_exactly(b, 4) == b"ping"
    finally:
        w.close()


def test_close_while_the_core_lock_is_held_releases_the_gil(native_engine):
    w = gaio.Watcher(engine=native_engine)
    with Ticker() as ticker:
        w._debug_hold_lock(HOLD)
        ticker.reset()
        w.close()
        assert ticker.worst < STALL_LIMIT


@pytest.mark.parametrize("rounds", [3])
def test_other_threads_progress_while_wait_io_runs_under_load(engine, net, rounds):
    """One thread runs wait_io() over connections full of data (big batches
    of recv), another submits writes and frees connections, and a pure-Python
    loop keeps running all along."""
    w = gaio.Watcher(engine=engine)
    pairs = net.pairs(64)
    chunk = pattern(1 << 18)
    stop = threading.Event()
    errors = []

    def serve():
        # reads into big caller buffers: a batch moves megabytes under the lock
        try:
            for i, (_, server) in enumerate(pairs):
                w.read(server, bytearray(1 << 18), ctx=i)
            while not stop.is_set():
                for res in w.wait_io(0.05):
                    if res.op == gaio.Op.READ and res.error is None:
                        try:
                            w.read(res.conn, res.buffer, ctx=res.ctx)
                        except ValueError:
                            pass  # freed by the other thread since its result
        except gaio.WatcherClosedError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def feed():
        # the peers write as fast as the watcher reads
        try:
            while not stop.is_set():
                for client, _ in pairs[8:]:
                    try:
                        client.send(chunk, 0x40)  # MSG_DONTWAIT
                    except (BlockingIOError, OSError):
                        pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    waiter = threading.Thread(target=serve)
    feeder = threading.Thread(target=feed)
    with Ticker() as ticker:
        waiter.start()
        feeder.start()
        try:
            time.sleep(0.2)
            ticker.reset()
            # submit and free from this thread while the waiter is busy
            for r in range(rounds):
                for client, server in pairs[r * 2:r * 2 + 2]:
                    w.write(server, b"x" * 1000)
                    w.free(server)
                time.sleep(0.1)
            worst = ticker.worst
        finally:
            stop.set()
            feeder.join(10)
            waiter.join(10)
            w.close()
    assert not errors, errors
    assert worst < STALL_LIMIT * 2, "a Python thread stalled for %.3f s" % worst
