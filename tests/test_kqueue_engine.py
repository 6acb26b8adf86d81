"""The kqueue engine's own failure paths, on the libkqueue build (.ci/kqueue).

A kevent() that refuses a registration must fail the request that delegated
the socket with its errno and leave nothing registered or open; the watcher
goes on working. tests/c/kevent_fault.c, preloaded into a child interpreter,
makes kevent() refuse one filter; it needs libkqueue's <sys/event.h>, found
through $GAIO_LIBKQUEUE (the prefix setup.py built against).
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import LIBKQUEUE, available_engines

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIM = ROOT / "tests" / "c" / "kevent_fault.c"
PREFIX = os.environ.get("GAIO_LIBKQUEUE", "")

pytestmark = [
    pytest.mark.skipif(not LIBKQUEUE, reason="needs gaio built against libkqueue (.ci/kqueue)"),
    pytest.mark.skipif(not PREFIX, reason="needs $GAIO_LIBKQUEUE for libkqueue's header"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
]

CHILD = r"""
import errno, os, socket, sys, time
import gaio

w = gaio.Watcher(engine="kqueue")
for filt in sys.argv[1:]:
    a, b = socket.socketpair()
    number, spare = a.fileno(), os.dup(0)
    os.close(spare)  # the number the watcher's copy of a gets
    os.environ["GAIO_KEVENT_FAIL"] = filt
    try:
        w.read(a, bytearray(4))
    except MemoryError:
        pass  # the shim's ENOMEM: a MemoryError, as every ENOMEM is (DESIGN.md)
    else:
        raise AssertionError("a refused %s filter was not reported" % filt)
    finally:
        os.environ["GAIO_KEVENT_FAIL"] = ""
    # The binding closed the caller's socket when it took the descriptor
    # over, before the registration; the watcher's own copy is closed too.
    assert w.stats()["watched"] == 0, w.stats()
    for fd in (number, spare):
        try:
            os.fstat(fd)
        except OSError:
            pass
        else:
            raise AssertionError("descriptor %d left open" % fd)
    b.close()
    # kevent() works again: a new socket (likely the same descriptor number)
    # delegates and reads
    a, b = socket.socketpair()
    w.read(a, bytearray(4), ctx=filt)
    b.sendall(b"ping")
    end = time.monotonic() + 5
    results = []
    while not results and time.monotonic() < end:
        results = w.wait_io(0.5)
    assert [(r.ctx, r.size, r.error) for r in results] == [(filt, 4, None)], results
    w.free(a)
    w.wait_io(0)
    b.close()
w.close()
print("ok")
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    lib = tmp_path_factory.mktemp("kevent") / "kevent_fault.so"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    built = subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         "-I", os.path.join(PREFIX, "include", "kqueue"), str(SHIM), "-o", str(lib), "-ldl"],
        capture_output=True, text=True, timeout=120, env=env)
    assert built.returncode == 0, built.stderr
    return lib


@pytest.mark.parametrize("filt", ["write", "read"])
def test_refused_registration_fails_the_delegating_request(shim, filt):
    """kq_watch adds the write filter, then the read filter: a refused write
    filter fails at once; a refused read filter leaves the write filter added,
    which the engine must take back."""
    assert available_engines()["kqueue"] is None
    env = dict(os.environ, LD_PRELOAD=str(shim), GAIO_KEVENT_FAIL="")
    done = subprocess.run([sys.executable, "-c", CHILD, filt], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
