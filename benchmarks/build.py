"""Compile the benchmark's C parts with the system compiler into benchmarks/build/."""
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
SOURCES = {
    "loadgen": HERE / "loadgen.c",
    "c_epoll": HERE / "servers" / "c_epoll.c",
    "c_uring": HERE / "servers" / "c_uring.c",
}
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra"]


class BuildError(RuntimeError):
    pass


def build(name):
    """Path of the binary `name`, compiled first if missing or older than its source."""
    source = SOURCES[name]
    binary = BUILD_DIR / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    compiler = os.environ.get("CC", "cc")
    cmd = [compiler, *CFLAGS, "-o", str(binary), str(source), "-lm"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise BuildError("no C compiler: %r not found (set CC)" % compiler) from None
    if done.returncode != 0:
        raise BuildError("%s failed:\n%s" % (" ".join(cmd), done.stderr))
    return binary


def build_all():
    return {name: build(name) for name in SOURCES}
