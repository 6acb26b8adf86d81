"""close() from another thread while wait_io() blocks: the waiter raises, and
whatever it calls next (stats, close) sees the finished teardown, never a
half-closed core. Also: objects made by __new__ alone are inert."""
import socket
import threading

import pytest

import gaio

_native = pytest.importorskip("gaio._native")


def test_stats_right_after_a_closing_wake_are_final(native_engine):
    for _ in range(20):
        w = gaio.Watcher(engine=native_engine)
        a, b = socket.socketpair()
        w.write(a, b"x")
        assert w.wait_io(2)
        w.read(a)
        closer = threading.Timer(0.005, w.close)
        closer.start()
        with pytest.raises(gaio.WatcherClosedError):
            while True:
                w.wait_io(5)
        stats = w.stats()
        w.close()
        closer.join()
        assert stats["submitted"] == 2 and stats["watched"] == 0 and stats["pending"] == 0
        assert w.stats() == stats
        b.close()


def test_new_without_init_is_inert_and_init_runs_once(native_engine):
    bare = _native.Watcher.__new__(_native.Watcher)
    with pytest.raises(gaio.WatcherClosedError):
        bare.wait_io()
    bare.close()
    assert bare.stats()["submitted"] == 0
    w = _native.Watcher(4096, engine=native_engine)
    with pytest.raises(RuntimeError):
        w.__init__(4096, engine=native_engine)
    assert w.engine == native_engine and w.bufsize == 4096
    w.close()
