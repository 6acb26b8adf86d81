"""Shared fixtures and helpers for gaio's behavioural suite.

Every behavioural test takes the `engine` fixture (or `watcher`, built on it),
so it runs once per engine of this OS (TEST_ENGINES); an engine that cannot
run here is skipped with the reason gaio.available_engines() gives. The pure-Python engine
is the oracle: the native engines must pass the same tests unchanged.

GAIO_TEST_ENGINES=kqueue (a comma-separated list of engine names) restricts
the `engine` and `native_engine` fixtures to those engines; .ci/kqueue uses it
to run the whole suite on the kqueue engine built against libkqueue.

Leak accounting runs around every test: the set of open descriptors and the
number of threads (Python's and the kernel's) must be the same after the test's
own fixtures are torn down as before the test started.

Fixtures: engine, tls_engine, watcher, make_watcher(bufsize), net (a Net: listener(),
pair(unix=False), pairs(n), track(sock), forget()), pair.

Helpers that tests import directly (`from conftest import collect, ...`):
  waiting      collect(w, n, timeout, each), run_in_thread(fn, *args)
  peer side    recv_exactly, recv_until_eof, wait_readable, reset (RST close)
  data         pattern(n, seed), STUCK and stuck_pattern() (too big to fit in
               socket buffers: such a write stays pending)
  descriptors  open_fds, fd_inode, fds_of_inode, still_open, need_fds,
               os_thread_count
"""
import gc
import io
import os
import random
import resource
import select
import socket
import stat
import sys
import threading
import time

import pytest

import gaio

# Thousands-of-connections tests need more than the usual 1024 descriptors.
_SOFT, _HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
if _HARD == resource.RLIM_INFINITY or _SOFT < _HARD:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_HARD, _HARD))
    except (ValueError, OSError):  # macOS: the hard limit is "unlimited" but not settable
        pass


# ---------------------------------------------------------------- engines

_AVAILABLE = None


def _libkqueue_drain():
    """libkqueue_drain_pending_close() when gaio._native is linked against
    libkqueue (setup.py's GAIO_LIBKQUEUE; dlsym through the extension finds its
    libraries' symbols), else None. libkqueue emulates kqueue on Linux with
    helper threads and descriptors of its own, released asynchronously."""
    try:
        import ctypes

        from gaio import _native
        return ctypes.CDLL(_native.__file__).libkqueue_drain_pending_close
    except (ImportError, OSError, AttributeError):
        return None


_DRAIN_LIBKQUEUE = _libkqueue_drain()
# Tests of the kqueue engine mark libkqueue's known differences with it:
# xfail(LIBKQUEUE and engine == "kqueue", reason="libkqueue: ...").
LIBKQUEUE = _DRAIN_LIBKQUEUE is not None


def available_engines():
    """gaio.available_engines(), probed once per session."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = gaio.available_engines()
    return _AVAILABLE


def _of_this_os(name):
    """Whether engine `name` can exist on this OS at all. One that can but
    cannot run here (io_uring refused by the kernel, say) is still tested:
    its tests skip, saying why. One that cannot exist here (kqueue on Linux)
    belongs to the job that builds it (.ci/kqueue sets GAIO_TEST_ENGINES),
    not to every run's summary line as a thousand skips."""
    linux = sys.platform.startswith("linux")
    bsd = sys.platform == "darwin" or "bsd" in sys.platform
    return {"uring": linux, "epoll": linux, "kqueue": bsd}.get(name, True)


def _selected(engines):
    wanted = os.environ.get("GAIO_TEST_ENGINES", "").replace(",", " ").split()
    unknown = set(wanted) - set(gaio.ENGINES)
    assert not unknown, "GAIO_TEST_ENGINES names unknown engines: %s" % sorted(unknown)
    if wanted:
        return tuple(e for e in engines if e in wanted)
    return tuple(e for e in engines if _of_this_os(e))


# What tests parametrize over (in gaio.ENGINES' order): this OS's engines, or
# those GAIO_TEST_ENGINES names.
TEST_ENGINES = _selected(gaio.ENGINES)
NATIVE_TEST_ENGINES = _selected(gaio._watcher.NATIVE_ENGINES)


@pytest.fixture(params=TEST_ENGINES)
def engine(request):
    reason = available_engines().get(request.param, "not probed")
    if reason is not None:
        pytest.skip("engine %r unavailable: %s" % (request.param, reason))
    return request.param


@pytest.fixture(params=NATIVE_TEST_ENGINES)
def native_engine(request):
    """For tests of the C core itself: the native engines only."""
    reason = available_engines().get(request.param, "not probed")
    if reason is not None:
        pytest.skip("engine %r unavailable: %s" % (request.param, reason))
    return request.param


@pytest.fixture
def needs_fileno(request, engine):
    """For tests of fileno(): libkqueue (the kqueue engine's Linux test build)
    has no descriptor to offer, so there it is a strict expected failure."""
    if LIBKQUEUE and engine == "kqueue":
        request.node.add_marker(pytest.mark.xfail(
            strict=True, raises=io.UnsupportedOperation,
            reason="libkqueue: its kqueue descriptor is a pipe's write end, never readable"))
    return engine


# TLS sessions (R28-R31) run on every engine (kqueue: run by .ci/kqueue, on
# libkqueue). A test still failing on a native engine would be listed by name
# in NATIVE_TLS_PENDING_TESTS, a strict xfail there: none is.
NATIVE_TLS_PENDING = "issue 20: TLS on this native engine is not done yet"
NATIVE_TLS_ENGINES = ("epoll", "uring", "kqueue")
NATIVE_TLS_PENDING_TESTS = frozenset()


@pytest.fixture
def tls_engine(request, engine):
    """For the TLS tests (tests/test_r28_*, test_r29_*, test_r30_*, through
    `pytestmark = pytest.mark.usefixtures("tls_engine")`): a strict expected
    failure where TLS is not done yet, so that the mark goes the day it passes."""
    if engine != "python" and (engine not in NATIVE_TLS_ENGINES or
                               request.node.originalname in NATIVE_TLS_PENDING_TESTS):
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=NATIVE_TLS_PENDING))
    return engine


@pytest.fixture
def watcher(engine):
    w = gaio.Watcher(engine=engine)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def make_watcher(engine):
    """Factory for extra watchers of the test's engine, all closed at teardown."""
    made = []

    def make(bufsize=65536, **kwargs):
        w = gaio.Watcher(bufsize, engine=engine, **kwargs)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


# ---------------------------------------------------------------- leak accounting

_PROC = os.path.isdir("/proc/self/fd")
# Without /proc (BSD, macOS: /dev/fd may list only 0-2 there) descriptors are
# probed one by one. The kernel hands out the lowest free number, so the probe
# stops this many unused numbers past the highest descriptor it found.
_PROBE_GAP = 4096


def _identity(fd):
    """What descriptor fd refers to: the readlink target of /proc/self/fd/N
    ('socket:[1234]'), else the file type, device and inode from fstat()."""
    if _PROC:
        return os.readlink("/proc/self/fd/%d" % fd)
    st = os.fstat(fd)
    return "%o:%d:%d" % (stat.S_IFMT(st.st_mode), st.st_dev, st.st_ino)


def open_fds():
    """{fd: identity} of this process, minus the listing's own descriptor."""
    out = {}
    if _PROC:
        for name in os.listdir("/proc/self/fd"):
            try:
                out[int(name)] = _identity(int(name))
            except OSError:  # the listdir's own descriptor, gone by now
                pass
        return out
    fd, last = 0, -1
    while fd - last <= _PROBE_GAP:
        try:
            out[fd] = _identity(fd)
            last = fd
        except OSError:
            pass
        fd += 1
    return out


def os_thread_count():
    """Kernel threads of this process: sees native threads Python does not
    know. Without /proc, Python's own count is all there is."""
    if os.path.isdir("/proc/self/task"):
        return len(os.listdir("/proc/self/task"))
    return threading.active_count()


def _settle(check, seconds=1.0):
    """Retry `check` (which returns a problem string or None) for a while."""
    end = time.monotonic() + seconds
    while True:
        gc.collect()
        if _DRAIN_LIBKQUEUE is not None:  # kqueues closed by now are freed on return
            _DRAIN_LIBKQUEUE()
        problem = check()
        if problem is None or time.monotonic() > end:
            return problem
        time.sleep(0.02)


def pytest_collection_finish(session):
    """Every object made so far (modules, test items, hypothesis) goes to the
    permanent generation: the two full collections leak accounting makes per
    test then look at what tests made, not at the whole session's heap."""
    gc.collect()
    gc.freeze()


def _collect_and_freeze():
    """Collect, then move what survives to the permanent generation, before
    each test: the test's own garbage is all the next collections look at.
    Without this the session's reports (pytest keeps three per test, about
    fifteen objects) are walked by every collection, and one collection grows
    from about 1 ms at the first test to tens of ms at the two thousandth."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def leak_accounting():
    """Descriptors and threads after the test (and its fixtures) == before."""
    # Probe the engines first: an engine's first use may allocate what lives as
    # long as the process (libkqueue's close-monitor epoll and eventfd).
    available_engines()
    _collect_and_freeze()
    fds_before = open_fds()
    py_threads_before = threading.active_count()
    os_threads_before = os_thread_count()
    live_before = _live_counts()
    yield

    def fd_problem():
        now = open_fds()
        leaked = {fd: t for fd, t in now.items()
                  if fd not in fds_before or fds_before[fd] != t}
        if leaked:
            return "descriptors leaked: %r" % leaked
        return None

    # Fewer threads after than before is no leak: a thread of an earlier test
    # may still have been finishing (the kernel reaps it after join() returns).
    def thread_problem():
        if threading.active_count() > py_threads_before:
            return "Python threads: %d before, %d after: %r" % (
                py_threads_before, threading.active_count(), threading.enumerate())
        if os_thread_count() > os_threads_before:
            return "OS threads: %d before, %d after" % (os_threads_before, os_thread_count())
        return None

    # Native watchers: request structs and internal-buffer memory held by
    # every watcher, back where they were (a request never disposed, a
    # chunk kept for a view nobody holds).
    def live_problem():
        now = _live_counts()
        if now != live_before:
            return "native core holds %r, held %r before" % (now, live_before)
        return None

    def problem():
        found = [p for p in (fd_problem(), thread_problem(), live_problem()) if p]
        return "; ".join(found) or None

    # one collection per test when all is well (the checks share it)
    found = _settle(problem)
    assert not found, found


def _live_counts():
    native = gaio._watcher._native
    return native._live_counts() if native is not None else {}


# ---------------------------------------------------------------- sockets

class Net:
    """Loopback sockets for one test; every socket made here is closed at teardown."""

    def __init__(self):
        self._listener = None
        self._owned = []

    def track(self, sock):
        self._owned.append(sock)
        return sock

    def listener(self):
        if self._listener is None:
            self._listener = self.track(
                socket.create_server(("127.0.0.1", 0), backlog=4096))
        return self._listener

    def pair(self, unix=False):
        """(client, server): a connected TCP pair over 127.0.0.1 (or AF_UNIX)."""
        if unix:
            a, b = socket.socketpair()
            return self.track(a), self.track(b)
        lis = self.listener()
        client = self.track(socket.create_connection(lis.getsockname()))
        server, _ = lis.accept()
        return client, self.track(server)

    def pairs(self, n, unix=False):
        return [self.pair(unix=unix) for _ in range(n)]

    def forget(self):
        """Drop our references to the sockets made so far (not the listener),
        so a test can let them be collected."""
        self._owned = [self._listener] if self._listener is not None else []

    def close_all(self):
        for s in self._owned:
            s.close()
        self._owned.clear()
        self._listener = None


@pytest.fixture
def net():
    n = Net()
    try:
        yield n
    finally:
        n.close_all()


@pytest.fixture
def pair(net):
    """pair(unix=False) -> (client socket, server-side accepted socket)."""
    return net.pair


def need_fds(count):
    """Skip unless `count` more descriptors fit under the (raised) soft limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and len(open_fds()) + count > soft:
        pytest.skip("needs %d more descriptors, RLIMIT_NOFILE is %d" % (count, soft))


# ---------------------------------------------------------------- waiting

def collect(w, n, timeout=5.0, each=None):
    """wait_io() with bounded timeouts until at least `n` results arrived.

    `each(result)` runs while the result's batch is live (internal-buffer views
    are still valid). Fails the test if `timeout` seconds pass first.
    """
    end = time.monotonic() + timeout
    out = []
    while len(out) < n:
        left = end - time.monotonic()
        if left <= 0:
            pytest.fail("collect: %d of %d results within %.1fs: %r"
                        % (len(out), n, timeout, out[:20]))
        batch = w.wait_io(min(left, 0.25))
        for res in batch:
            if each is not None:
                each(res)
        out.extend(batch)
    return out


def wait_readable(sock, timeout=2.0):
    r, _, _ = select.select([sock], [], [], timeout)
    assert r, "socket not readable within %.1fs" % timeout


def recv_exactly(sock, n, timeout=10.0):
    """Read exactly n bytes from a test-side socket, bounded in time."""
    sock.settimeout(timeout)
    chunks = bytearray()
    end = time.monotonic() + timeout
    while len(chunks) < n:
        if time.monotonic() > end:
            pytest.fail("recv_exactly: %d of %d bytes" % (len(chunks), n))
        data = sock.recv(min(n - len(chunks), 1 << 20))
        if not data:
            pytest.fail("recv_exactly: EOF after %d of %d bytes" % (len(chunks), n))
        chunks += data
    return bytes(chunks)


def recv_until_eof(sock, timeout=10.0, limit=1 << 30):
    sock.settimeout(timeout)
    chunks = bytearray()
    end = time.monotonic() + timeout
    while True:
        if time.monotonic() > end:
            pytest.fail("recv_until_eof: no EOF within %.1fs (%d bytes)" % (timeout, len(chunks)))
        data = sock.recv(1 << 20)
        if not data:
            return bytes(chunks)
        chunks += data
        assert len(chunks) <= limit


# More bytes than loopback socket buffers can hold (send buffer up to
# tcp_wmem's 4 MiB plus an unread receive window): a write this large to a
# peer that does not read stays pending.
STUCK = 64 << 20


def stuck_pattern(seed=0):
    """STUCK reproducible bytes, cheaply (a 1 MiB pattern repeated)."""
    return pattern(1 << 20, seed) * (STUCK >> 20)


def pattern(n, seed=0):
    """n reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


def reset(sock):
    """Close `sock` so the peer gets a RST (SO_LINGER 0), not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


# ---------------------------------------------------------------- descriptors of a socket

def fd_inode(sock):
    """The kernel object a socket's descriptor refers to, e.g. 'socket:[1234]'."""
    return _identity(sock.fileno())


def fds_of_inode(inode):
    """Every descriptor of this process referring to `inode` (an fd_inode value)."""
    return [fd for fd, target in open_fds().items() if target == inode]


def still_open(inodes):
    """The subset of `inodes` that some descriptor of this process still refers to."""
    targets = set(open_fds().values())
    return [i for i in inodes if i in targets]


def run_in_thread(fn, *args):
    """Start fn(*args) in a thread; returns (thread, box) where box gets 'result'/'error'."""
    box = {}

    def body():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # reported to the test thread
            box["error"] = exc

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, box
