"""The native core's Python surface: C types, builtin methods, no Python layer.

These checks are specific to gaio._native (engines uring/epoll/kqueue); the
behavioural suite (tests/test_r*.py) covers what every engine must do.
"""
import gc
import socket
import ssl
import types

import pytest

import gaio
from conftest import LIBKQUEUE, collect, os_thread_count

_native = pytest.importorskip("gaio._native")

# native_engine: conftest's fixture (every native engine, or $GAIO_TEST_ENGINES's).


@pytest.fixture(scope="module")
def engine_reasons():
    return gaio.available_engines()


@pytest.fixture
def nw(native_engine):
    w = gaio.Watcher(engine=native_engine)
    yield w
    w.close()


def _one_read(w):
    a, b = socket.socketpair()
    w.read(a, ctx="c")
    b.sendall(b"abc")
    results = collect(w, 1)
    b.close()
    return results[0], a


def test_watcher_is_the_native_type(nw, native_engine):
    assert type(nw) is _native.Watcher
    assert isinstance(nw, gaio.Watcher)
    assert nw.engine == native_engine
    assert nw.bufsize == 65536


def test_methods_are_builtin_methods_without_python_wrapper(nw):
    for name in ("read", "read_full", "write", "free", "wait_io", "close", "stats"):
        method = getattr(nw, name)
        assert isinstance(method, types.BuiltinMethodType), name
        assert method.__self__ is nw


def test_opresult_is_native_immutable_without_dict(nw):
    res, conn = _one_read(nw)
    assert type(res) is _native.OpResult
    assert isinstance(res, gaio.OpResult)
    assert not hasattr(res, "__dict__")
    assert res.op is gaio.Op.READ and res.conn is conn and res.ctx == "c"
    assert res.size == 3 and res.error is None and res.is_swap_buffer is True
    assert res.address is None and res.truncated is False  # 0.3's datagram fields
    assert res.tls is None  # ... and TLS's
    for field in ("op", "conn", "ctx", "buffer", "size", "error", "is_swap_buffer",
                  "address", "truncated", "tls"):
        with pytest.raises(AttributeError):
            setattr(res, field, None)
    with pytest.raises(AttributeError):
        res.extra = 1
    assert repr(res).startswith("OpResult(op=READ, conn=")
    nw.free(conn)


def test_start_tls_takes_a_session_on_a_native_engine(nw, native_engine):
    """start_tls checks its arguments as the python engine does, then queues
    the handshake: the socket is delegated, the session waits for its peer."""
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TypeError, match="^context must be an ssl.SSLContext, not int$"):
            nw.start_tls(a, 1, server_side=True)
        assert a.fileno() != -1 and nw.stats()["watched"] == 0
        nw.start_tls(a, ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), server_side=True)
        assert nw.stats()["watched"] == 1 and nw.stats()["pending"] == 1
        assert nw.wait_io(0.01) == []
        assert nw.stats()["tls_handshakes"] == 0 and gaio.Op.TLS == 5
        nw.free(a)


def test_attributes_are_read_only(nw):
    with pytest.raises(AttributeError):
        nw.engine = "python"
    with pytest.raises(AttributeError):
        nw.bufsize = 1


def test_unknown_native_engine_name_is_value_error():
    with pytest.raises(ValueError):
        _native.Watcher(4096, engine="select")
    with pytest.raises(ValueError):
        _native.Watcher(4096, engine="python")


@pytest.mark.parametrize("bufsize, exc", [(0, ValueError), (2**30 + 1, ValueError),
                                          (-1, ValueError), (True, TypeError),
                                          (1.0, TypeError), ("1", TypeError)])
def test_bufsize_checked_like_the_front(bufsize, exc, engine_reasons):
    if engine_reasons.get("epoll") is not None:
        pytest.skip("epoll unavailable")
    with pytest.raises(exc):
        _native.Watcher(bufsize, engine="epoll")


def test_starts_no_thread(native_engine, request):
    if native_engine == "kqueue" and LIBKQUEUE:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "libkqueue runs two helper threads while a kqueue is open "
            "(libkqueue_mon, which frees closed kqueues, and a signal thread)")))
    before = os_thread_count()
    watchers = [gaio.Watcher(engine=native_engine) for _ in range(3)]
    pairs = [socket.socketpair() for _ in range(50)]
    for i, w in enumerate(watchers):
        for a, _ in pairs[10 * i:10 * i + 10]:
            w.read(a)
    try:
        assert os_thread_count() <= before
        assert all(w.stats()["threads"] == 0 for w in watchers)
    finally:  # close even on failure (xfail on libkqueue): no leak at teardown
        for w in watchers:
            w.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_watcher_with_ctx_cycle_is_collected(native_engine):
    """ctx may reference the watcher: the GC must see through pending requests."""
    import weakref
    w = gaio.Watcher(engine=native_engine)
    a, b = socket.socketpair()
    w.read(a, ctx=w)
    ref = weakref.ref(w)
    del w
    gc.collect()
    assert ref() is None
    b.close()


def test_watcher_with_standing_read_ctx_cycle_is_collected(native_engine):
    """A standing read is found through its connection's map entry, not the
    live list: the GC must see its ctx too, and a second one's behind it."""
    import weakref
    w = gaio.Watcher(engine=native_engine)
    a, b = socket.socketpair()
    w.read(a, repeat=True, ctx=w)
    w.read(a, repeat=True, ctx=w)
    ref = weakref.ref(w)
    del w
    gc.collect()
    assert ref() is None
    b.close()
