"""A TLS connection's receive makes at most two recv calls per record on
every engine: the record's header, then its body with the next header if
that came too. A recv that brought less than it asked for emptied the
socket, so none looks for the next record right after and finds nothing
(before: three a record on the native readiness engines, 8,865 recvfrom
for 2,979 sendto in a TLS echo run, a third of them EAGAIN).

The calls are counted in a child interpreter by tests/c/recv_count.c, an
LD_PRELOAD shim over recv/recvfrom/recvmsg: the native engines' internal
ciphertext reads and the python engine's sock.recv alike. io_uring
receives through its ring, not these calls, and counts (nearly) none.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIM = ROOT / "tests" / "c" / "recv_count.c"
ROUNDS = 50

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CHILD = r"""
import ctypes, socket, sys
sys.path.insert(0, sys.argv[2])
import gaio
from conftest import Net, collect
from tls_support import gaio_pair

counted = ctypes.CDLL(None).gaio_test_recv_calls
counted.restype = ctypes.c_long
a, b = socket.socketpair()
b.send(b"x")
counted()
a.recv(1)
assert counted() == 1, "the shim counts no recv"
a.close()
b.close()

net = Net()
with gaio.Watcher(engine=sys.argv[1]) as w:
    client, server, _ = gaio_pair(w, net)
    # a server's usual read: standing, so the session looks for the next
    # record as soon as one was delivered
    w.read(server, ctx="r", repeat=True)
    counted()
    for i in range(int(sys.argv[3])):
        w.write(client, b"ping %03d" % i, ctx="w")
        got = {r.ctx: r for r in collect(w, 2)}
        assert bytes(got["r"].buffer) == b"ping %03d" % i
    print(counted())
    w.free(server)
    w.free(client)
net.close_all()
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    lib = tmp_path_factory.mktemp("recv_count") / "recv_count.so"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    built = subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", str(SHIM),
         "-o", str(lib), "-ldl"],
        capture_output=True, text=True, timeout=120, env=env)
    assert built.returncode == 0, built.stderr
    return lib


def test_two_recv_calls_per_record_at_most(engine, shim):
    # after .ci/sanitize's sanitizer runtimes, which must come first
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(shim)]))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, engine, str(ROOT / "tests"), str(ROUNDS)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, LD_PRELOAD=preload))
    assert done.returncode == 0, done.stdout + done.stderr
    calls = int(done.stdout.split()[-1])
    # one record a round (a short write is one record); a pass that comes
    # for another reason may look once and find nothing
    assert calls <= 2 * ROUNDS + 3, calls
