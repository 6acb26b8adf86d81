"""Builds gaio's native core, gaio._native, when a C compiler is present.

The extension is optional: without a compiler (or off Linux/BSD/macOS) the
package installs anyway and runs on the pure-Python engine.

GAIO_COVERAGE=1 builds it with gcov instrumentation (.ci/coverage).
GAIO_SANITIZE=1 builds the core with AddressSanitizer and UBSan for the test
suite (see .ci/run); GAIO_NO_NATIVE=1 skips the extension altogether.

GAIO_LIBKQUEUE=<prefix> (Linux, for testing only) also compiles the kqueue
engine, against libkqueue installed under <prefix> (<prefix>/include/kqueue/
sys/event.h, <prefix>/lib/libkqueue.so; the library path is recorded as an
rpath). libkqueue emulates kqueue over epoll, so engine="auto" never picks it:
it runs only when asked by name. Off by default; refused for a wheel, which
must not depend on a library at a local path. See .ci/kqueue.
"""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Turn a failed compile into a warning: the python engine still works."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("GAIO_REQUIRE_NATIVE") == "1":
                raise
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        sys.stderr.write(
            "warning: gaio's native core was not built (%s); "
            "only engine='python' will be available\n" % exc
        )


def native_extension():
    if os.environ.get("GAIO_NO_NATIVE") == "1" or sys.platform == "win32":
        return []
    compile_args = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                    "-Wno-missing-field-initializers", "-fvisibility=hidden"]
    link_args = []
    if os.environ.get("GAIO_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined", "-g", "-O1"]
        compile_args = [a for a in compile_args if a != "-O2"] + san
        link_args += san
    if os.environ.get("GAIO_COVERAGE") == "1":
        cov = ["--coverage", "-g", "-O0"]
        compile_args = [a for a in compile_args if a != "-O2"] + cov
        link_args += ["--coverage"]
    include_dirs, library_dirs, libraries = [], [], []
    macros = [("_GNU_SOURCE", "1")]
    libkqueue = os.environ.get("GAIO_LIBKQUEUE", "").strip()
    if libkqueue:
        if any(cmd.startswith(("bdist", "sdist")) for cmd in sys.argv[1:]):
            sys.exit("GAIO_LIBKQUEUE builds are for testing: no wheel or sdist is made with it")
        prefix = os.path.abspath(libkqueue)
        include_dirs.append(os.path.join(prefix, "include", "kqueue"))
        library_dirs.append(os.path.join(prefix, "lib"))
        libraries.append("kqueue")
        link_args.append("-Wl,-rpath," + os.path.join(prefix, "lib"))
        macros.append(("GAIO_LIBKQUEUE", "1"))
    sources = sorted(glob.glob("src/native/*.c"))
    return [Extension(
        "gaio._native",
        sources=sources,
        depends=sorted(glob.glob("src/native/*.h")),
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=libraries,
        define_macros=macros,
    )] if sources else []


setup(ext_modules=native_extension(), cmdclass={"build_ext": OptionalBuildExt})
