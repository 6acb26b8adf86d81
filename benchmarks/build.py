"""Compile the benchmark's C parts with the system compiler into benchmarks/build/."""
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra"]


@dataclass(frozen=True)
class Binary:
    sources: tuple        # .c files compiled, and the headers they include (for the rebuild)
    flags: tuple = ()
    libs: tuple = ("-lm",)
    needs: str = ""       # what to install when it does not compile for want of a library


SOURCES = {
    "loadgen": Binary((HERE / "loadgen.c",)),
    "c_epoll": Binary((HERE / "servers" / "c_epoll.c",)),
    "c_uring": Binary((HERE / "servers" / "c_uring.c",)),
    # loadgen.c again, over TLS: only the TLS echo workloads need it (and OpenSSL)
    "tls_loadgen": Binary((HERE / "loadgen.c", HERE / "loadgen_tls.c", HERE / "loadgen_tls.h"),
                          ("-DLOADGEN_TLS",), ("-lssl", "-lcrypto", "-lm"),
                          needs="OpenSSL's headers and libraries: apt-get install libssl-dev"),
}
ECHO_BINARIES = ("loadgen", "c_epoll", "c_uring")


class BuildError(RuntimeError):
    pass


def build(name):
    """Path of the binary `name`, compiled first if missing or older than a source."""
    spec = SOURCES[name]
    binary = BUILD_DIR / name
    if binary.exists() and all(binary.stat().st_mtime >= s.stat().st_mtime for s in spec.sources):
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    compiler = os.environ.get("CC", "cc")
    cmd = [compiler, *CFLAGS, *spec.flags, "-o", str(binary),
           *(str(s) for s in spec.sources if s.suffix == ".c"), *spec.libs]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise BuildError("no C compiler: %r not found (set CC)" % compiler) from None
    if done.returncode != 0:
        if spec.needs and ("openssl/" in done.stderr or "-lssl" in done.stderr):
            raise BuildError("%s needs %s" % (name, spec.needs))
        raise BuildError("%s failed:\n%s" % (" ".join(cmd), done.stderr))
    return binary


def build_all():
    """The echo harness's binaries (tls_loadgen is built by the TLS workloads)."""
    return {name: build(name) for name in ECHO_BINARIES}
