"""R13: engine selection: auto picks the fastest engine that runs here;
GAIO_ENGINE sets the default at each Watcher(); an explicit engine wins; an
unknown name is a ValueError; an engine that cannot run raises
EngineUnavailableError, never a silent fallback; a process out of descriptors
is an OSError, not an unavailable engine. Also bufsize validation."""
import contextlib
import errno
import gc
import os
import resource
import sys

import pytest

import gaio
from conftest import available_engines, collect, recv_exactly


def test_engine_and_bufsize_attributes(engine):
    with gaio.Watcher(4096, engine=engine) as w:
        assert w.engine == engine
        assert w.bufsize == 4096
        assert isinstance(w, gaio.Watcher)
        with pytest.raises(AttributeError):
            w.engine = "python" if engine != "python" else "epoll"
        with pytest.raises(AttributeError):
            w.bufsize = 1
        assert w.engine == engine and w.bufsize == 4096


def test_default_bufsize(engine):
    with gaio.Watcher(engine=engine) as w:
        assert w.bufsize == 65536


def test_gaio_engine_variable_sets_the_default(engine, monkeypatch, pair):
    monkeypatch.setenv("GAIO_ENGINE", engine)
    with gaio.Watcher() as w:
        assert w.engine == engine
        client, server = pair()
        w.write(server, b"via env")
        assert collect(w, 1)[0].error is None
        assert recv_exactly(client, 7) == b"via env"
    with gaio.Watcher(engine="auto") as w:
        assert w.engine == engine


def test_gaio_engine_is_read_at_each_watcher(engine, monkeypatch):
    monkeypatch.setenv("GAIO_ENGINE", engine)
    gaio.Watcher().close()
    monkeypatch.setenv("GAIO_ENGINE", "no-such-engine")
    with pytest.raises(ValueError):
        gaio.Watcher()
    monkeypatch.setenv("GAIO_ENGINE", engine)
    with gaio.Watcher() as w:
        assert w.engine == engine


@pytest.mark.parametrize("env", ["no-such-engine", "kqueue", "python", "uring"])
def test_explicit_engine_wins_over_the_variable(engine, monkeypatch, env):
    monkeypatch.setenv("GAIO_ENGINE", env)
    with gaio.Watcher(engine=engine) as w:
        assert w.engine == engine


# R13's order, written out here as the oracle: the code's own table
# (gaio.ENGINES) is what is under test.
SPEC_ORDER = ("uring", "epoll", "kqueue", "python")


def _runs(name):
    """Whether a watcher of this engine can be made, asked directly."""
    try:
        gaio.Watcher(engine=name).close()
    except gaio.EngineUnavailableError:
        return False
    return True


def test_engines_are_listed_in_the_spec_order():
    assert gaio.ENGINES == SPEC_ORDER


def test_auto_picks_the_first_engine_that_runs(monkeypatch):
    monkeypatch.delenv("GAIO_ENGINE", raising=False)
    # kqueue on Linux is libkqueue's emulation (a test build): by name only
    candidates = [e for e in SPEC_ORDER if not (e == "kqueue" and sys.platform.startswith("linux"))]
    expected = next(name for name in candidates if _runs(name))
    with gaio.Watcher() as w:
        assert w.engine == expected
    assert _runs("python")


def test_empty_variable_means_auto(monkeypatch):
    monkeypatch.setenv("GAIO_ENGINE", "")
    report = available_engines()
    expected = next(name for name in gaio.ENGINES if report[name] is None)
    with gaio.Watcher() as w:
        assert w.engine == expected


@pytest.mark.parametrize("name", ["nope", "EPOLL", "select", " python", "asyncio"])
def test_unknown_engine_name_is_a_value_error(name, monkeypatch):
    monkeypatch.delenv("GAIO_ENGINE", raising=False)
    with pytest.raises(ValueError):
        gaio.Watcher(engine=name)


def test_unknown_engine_in_the_variable_is_a_value_error(monkeypatch):
    monkeypatch.setenv("GAIO_ENGINE", "nope")
    with pytest.raises(ValueError):
        gaio.Watcher()


@pytest.mark.parametrize("name", gaio.ENGINES)
def test_engine_that_cannot_run_raises_never_falls_back(name, monkeypatch):
    reason = available_engines()[name]
    if reason is None:
        pytest.skip("engine %r runs here" % name)
    assert isinstance(reason, str) and reason
    with pytest.raises(gaio.EngineUnavailableError):
        gaio.Watcher(engine=name)
    monkeypatch.setenv("GAIO_ENGINE", name)
    with pytest.raises(gaio.EngineUnavailableError):
        gaio.Watcher()


def test_available_engines_reports_every_engine():
    report = gaio.available_engines()
    assert set(report) == set(gaio.ENGINES)
    assert report["python"] is None
    assert all(v is None or (isinstance(v, str) and v) for v in report.values())


def test_engine_type_error(monkeypatch):
    with pytest.raises((TypeError, ValueError)):
        gaio.Watcher(engine=None)
    with pytest.raises(TypeError):
        gaio.Watcher(65536, "python")  # engine is keyword-only


@pytest.mark.parametrize("bufsize,exc", [
    (True, TypeError), (False, TypeError), (1.0, TypeError), (65536.0, TypeError),
    ("65536", TypeError), (None, TypeError), (b"1", TypeError), ([1], TypeError),
    (0, ValueError), (-1, ValueError), (2 ** 30 + 1, ValueError), (2 ** 64, ValueError),
    (-2 ** 64, ValueError),
])
def test_bad_bufsize(engine, bufsize, exc):
    with pytest.raises(exc):
        gaio.Watcher(bufsize, engine=engine)
    with pytest.raises(exc):
        gaio.Watcher(bufsize=bufsize, engine=engine)


@pytest.mark.parametrize("bufsize", [1, 2, 4096, 1 << 20])
def test_good_bufsize(engine, pair, bufsize):
    with gaio.Watcher(bufsize, engine=engine) as w:
        assert w.bufsize == bufsize
        client, server = pair()
        client.sendall(b"abc")
        w.read(server)
        res = collect(w, 1)[0]
        assert 1 <= res.size <= min(3, bufsize)
        assert bytes(res.buffer) == b"abc"[:res.size]


def test_int_subclass_bufsize_is_accepted(engine):
    class Size(int):
        pass

    with gaio.Watcher(Size(2048), engine=engine) as w:
        assert w.bufsize == 2048


@contextlib.contextmanager
def _descriptor_table_full():
    """RLIMIT_NOFILE lowered so that the next descriptor fails with EMFILE."""
    gc.collect()
    lowest_free = os.dup(0)  # the number the next descriptor would get
    os.close(lowest_free)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _emfile_from(make):
    try:
        with _descriptor_table_full():
            make()
    except gaio.EngineUnavailableError as exc:
        raise AssertionError("EMFILE reported as an unavailable engine: %s" % exc) from None
    except OSError as exc:
        return exc
    raise AssertionError("no error although no descriptor was left")


@pytest.mark.parametrize("name", gaio.ENGINES + ("auto",))
def test_full_descriptor_table_is_an_oserror_not_an_unavailable_engine(name, monkeypatch):
    """EMFILE (like ENFILE, ENOMEM, ENOBUFS) is the process's state, not a
    missing kernel feature: every engine raises the OSError, and auto does not
    move on to a slower engine because descriptors ran out for a moment."""
    if name != "auto" and available_engines()[name] is not None:
        pytest.skip("engine %r unavailable: %s" % (name, available_engines()[name]))
    monkeypatch.delenv("GAIO_ENGINE", raising=False)
    tried_python = []
    python_watcher = gaio._watcher._python_watcher
    monkeypatch.setattr(gaio._watcher, "_python_watcher",
                        lambda bufsize, *rest: tried_python.append(1) or python_watcher(bufsize, *rest))
    fds = sorted(os.listdir("/proc/self/fd"))
    exc = _emfile_from(lambda: gaio.Watcher(engine=name))
    assert type(exc) is OSError and exc.errno == errno.EMFILE, repr(exc)
    native = [e for e in gaio._watcher.NATIVE_ENGINES if available_engines()[e] is None]
    if name == "auto" and native:
        assert not tried_python, "auto moved on from %r to python" % native[0]
    assert sorted(os.listdir("/proc/self/fd")) == fds  # nothing half-made left open
    with gaio.Watcher(engine=name) as w:  # and with descriptors back, it runs
        assert name in ("auto", w.engine)


def test_available_engines_raises_the_oserror_when_it_cannot_probe():
    """Out of descriptors, available_engines() cannot tell whether an engine
    runs here: it raises the OSError rather than report engines unavailable."""
    exc = _emfile_from(gaio.available_engines)
    assert type(exc) is OSError and exc.errno == errno.EMFILE, repr(exc)
    assert gaio.available_engines()["python"] is None
