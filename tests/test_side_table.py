"""The engines' side table (src/native/side_table.c: io_uring's parked bytes,
by connection id) tested on its own: tests/c/side_table_check.c is compiled
with gcc and run against a plain array, allocation failures included."""
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NATIVE = ROOT / "src" / "native"
CHECK = ROOT / "tests" / "c" / "side_table_check.c"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def test_side_table_matches_a_plain_array(tmp_path):
    binary = tmp_path / "side_table_check"
    cmd = ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-I", str(NATIVE),
           str(CHECK), str(NATIVE / "side_table.c"), str(NATIVE / "alloc.c"), "-o", str(binary)]
    if os.environ.get("GAIO_SANITIZED") == "1":  # under .ci/sanitize: the C code too
        cmd[1:1] = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert built.returncode == 0, built.stderr
    done = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.startswith("ok:"), done.stdout + done.stderr
