"""The io_uring kernel layer (src/native/uring_ring.c) tested on its own.

tests/c/uring_smoke.c is compiled with gcc and run: recv/send on a
socketpair, a buffer-select recv, a timed wait, a cancelled recv, more SQEs
than the ring holds; with "multishot", the operations the engine uses when the
kernel has them (multishot recv and accept, sendmsg, accept). Exit 77 means
io_uring, or the feature, is missing here: skip, not pass.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NATIVE = ROOT / "src" / "native"
SMOKE = ROOT / "tests" / "c" / "uring_smoke.c"

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="io_uring is Linux only"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
]


def clean_environment(**extra):
    """Our environment without a sanitizer preload (.ci/sanitize sets one for
    Python; gcc and the smoke binary must not inherit it)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def smoke_binary(tmp_path_factory):
    binary = tmp_path_factory.mktemp("uring") / "uring_smoke"
    cmd = ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
           "-g", "-I", str(NATIVE), str(SMOKE), str(NATIVE / "uring_ring.c"), "-o", str(binary)]
    if os.environ.get("GAIO_SANITIZED") == "1":  # under .ci/sanitize: the C layer too
        cmd[1:1] = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env=clean_environment())
    assert built.returncode == 0, built.stderr
    return binary


def run(binary, *args, **env):
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60,
                          env=clean_environment(**env))


def test_ring_send_recv_cancel_and_full_sq(smoke_binary):
    done = run(smoke_binary, GAIO_URING_DISABLE="")
    if done.returncode == 77:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok:")


def test_multishot_recv_accept_and_sendmsg(smoke_binary):
    done = run(smoke_binary, "multishot", GAIO_URING_DISABLE="")
    if done.returncode == 77:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok:")


def test_environment_variable_refuses_with_its_reason(smoke_binary):
    done = run(smoke_binary, GAIO_URING_DISABLE="1")
    assert done.returncode == 77
    assert "GAIO_URING_DISABLE=1" in done.stdout
