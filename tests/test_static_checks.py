"""Static checks in the test suite, as uvloop runs flake8 and mypy in its own.

- ruff lints the package, examples, benchmarks and tests (rules: pyproject.toml
  [tool.ruff]).
- mypy checks the public stubs src/gaio/__init__.pyi and asyncio_bridge.pyi,
  the examples and tests/typecheck/: usage_ok.py must pass, usage_bad.py
  must fail on exactly its marked lines (settings: pyproject.toml [tool.mypy]).
- mypy.stubtest compares each stub with the module it describes, imported.
- docs/DESIGN.md's list of the engine contract is engine.h's, and the
  constants written in both languages (back-offs, defaults, limits, the
  resource errors) are equal.

A missing tool is a skip that says so (`pip install -e '.[test]'` brings both).
Caches live under .pytest_cache, so a second run takes a few seconds.
"""
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPECHECK = ROOT / "tests" / "typecheck"
LINTED = ["src/gaio", "examples", "benchmarks", "tests", "setup.py"]
TYPED = ["src/gaio/__init__.pyi", "src/gaio/asyncio_bridge.pyi", "examples", "tests/typecheck/usage_ok.py",
         "tests/typecheck/usage_bad.py"]
TOOL_TIMEOUT = 120  # a cold mypy run on a loaded machine; warm runs take seconds

pytestmark = pytest.mark.timeout(TOOL_TIMEOUT * 2 + 30)


def _module_or_skip(name):
    if importlib.util.find_spec(name) is None:
        pytest.skip("%s is not installed (pip install -e '.[test]')" % name)


def _ruff_command():
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    path = shutil.which("ruff")
    if path is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return [path]


def _cache_dir(request, name):
    """A tool's cache: under .pytest_cache, or a temporary one without the cache plugin."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return str(cache.mkdir(name))
    return str(request.getfixturevalue("tmp_path_factory").mktemp(name))


def _run(command):
    """Run a tool from the repository root: (exit status, output)."""
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr


def test_ruff(request):
    ruff = _ruff_command()
    cache = _cache_dir(request, "ruff")
    code, out = _run(ruff + ["check", "--no-fix", "--output-format", "concise",
                             "--cache-dir", cache, *LINTED])
    assert code == 0, "ruff found problems:\n" + out


# --------------------------------------------------------------------- mypy

_ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$", re.M)
_MARK = re.compile(r"# E: (?P<codes>[a-z|-]+)\s*$")


@functools.lru_cache(maxsize=None)
def _mypy_errors(cache):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", cache, "--no-error-summary",
         "--no-pretty", "--show-error-codes", "--hide-error-context", *TYPED],
        cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not _ERROR.search(proc.stdout)):
        pytest.fail("mypy did not run (exit %d):\n%s%s"
                    % (proc.returncode, proc.stdout, proc.stderr))
    return tuple((m["path"].replace(os.sep, "/"), int(m["line"]), m["code"], m.group(0))
                 for m in _ERROR.finditer(proc.stdout))


@pytest.fixture
def mypy_errors(request):
    _module_or_skip("mypy")
    return _mypy_errors(_cache_dir(request, "mypy"))


def test_mypy_accepts_stub_examples_and_typed_usage(mypy_errors):
    unexpected = [text for path, _, _, text in mypy_errors
                  if path != "tests/typecheck/usage_bad.py"]
    assert not unexpected, "mypy errors:\n" + "\n".join(unexpected)


def test_mypy_rejects_each_marked_misuse(mypy_errors):
    path = "tests/typecheck/usage_bad.py"
    expected = {}
    for number, line in enumerate((ROOT / path).read_text().splitlines(), 1):
        mark = _MARK.search(line)
        if mark:
            expected[number] = set(mark["codes"].split("|"))
    assert len(expected) >= 10, "usage_bad.py lost its # E: marks"
    found = {}
    for error_path, number, code, _ in mypy_errors:
        if error_path == path:
            found.setdefault(number, set()).add(code)
    missed = sorted(n for n in expected if n not in found)
    unmarked = sorted(n for n in found if n not in expected)
    wrong = sorted(n for n in expected if n in found and not found[n] & expected[n])
    assert not (missed or unmarked or wrong), (
        "usage_bad.py: not rejected: lines %s; rejected but not marked: lines %s; "
        "wrong error code: %s" % (missed, unmarked, {n: found[n] for n in wrong}))


def test_typed_usage_runs():
    # The typed snippet is real code: run it (python engine), so the stub
    # cannot drift into describing an API that does not work.
    proc = subprocess.run([sys.executable, str(TYPECHECK / "usage_ok.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------- stubtest

def _stubtest(module, *extra):
    _module_or_skip("mypy")
    options = subprocess.run([sys.executable, "-m", "mypy.stubtest", "--help"],
                             capture_output=True, text=True, timeout=TOOL_TIMEOUT).stdout
    # PEP 800 @disjoint_base is too new to ask of a stub (stubtest >= 1.18 checks it).
    if "--ignore-disjoint-bases" in options:
        extra += ("--ignore-disjoint-bases",)
    return _run([sys.executable, "-m", "mypy.stubtest", module, "--concise",
                 "--mypy-config-file", "pyproject.toml", *extra])


def test_public_stub_matches_runtime():
    code, out = _stubtest("gaio",
                          "--allowlist", str(TYPECHECK / "stubtest_allowlist.txt"))
    assert code == 0, "src/gaio/__init__.pyi differs from gaio at run time:\n" + out


def test_asyncio_bridge_stub_matches_runtime():
    code, out = _stubtest("gaio.asyncio_bridge")
    assert code == 0, "src/gaio/asyncio_bridge.pyi differs from the module at run time:\n" + out


def test_native_stub_matches_runtime():
    if not (ROOT / "src" / "gaio" / "_native.pyi").exists():
        pytest.skip("src/gaio/_native.pyi does not exist")
    try:
        import gaio._native  # noqa: F401
    except ImportError as exc:
        pytest.skip("gaio._native is not built: %s" % exc)
    code, out = _stubtest("gaio._native")
    assert code == 0, "src/gaio/_native.pyi differs from gaio._native at run time:\n" + out


def _package_imports(module):
    """The gaio modules `module` (a name under src/gaio) imports, from its source."""
    import ast
    tree = ast.parse((ROOT / "src" / "gaio" / (module + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
    return {name for name in found if (ROOT / "src" / "gaio" / (name + ".py")).exists()}


def test_python_engine_imports_no_module_that_imports_it_back():
    seen, todo = set(), ["_python_watcher"]
    while todo:
        for name in _package_imports(todo.pop()):
            assert name != "_python_watcher", "an import cycle leads back to _python_watcher"
            if name not in seen:
                seen.add(name)
                todo.append(name)
    assert "_watcher" not in seen


# Constants written in both languages, side by side: (python module, name,
# C header under src/native, macro, how many C units make one Python unit).
TWIN_CONSTANTS = [
    ("_python_accept_connect", "ACCEPT_RETRY", "core.h", "GAIO_ACCEPT_RETRY_NS", 10 ** 9),  # R16
    ("_python_accept_connect", "CONNECT_RETRY", "core.h", "GAIO_CONNECT_RETRY_NS", 10 ** 9),  # R17
    ("_python_requests", "IOV_MAX", "readiness.h", "GAIO_IOV_MAX", 1),  # R18
    ("_python_args", "DEFAULT_BUFSIZE", "binding.h", "GAIO_DEFAULT_BUFSIZE", 1),
    ("_python_args", "MAX_BUFSIZE", "binding.h", "GAIO_MAX_BUFSIZE", 1),
    ("_python_args", "DEFAULT_WRITE_HIGH", "binding.h", "GAIO_DEFAULT_WRITE_HIGH", 1),  # R21
    ("_python_args", "MAX_BATCH_WAIT", "binding.h", "GAIO_MAX_BATCH_WAIT_S", 1),
    ("_python_backpressure", "WRITE_LOW_DIVISOR", "backpressure.h", "GAIO_WRITE_LOW_DIVISOR", 1),
    ("_python_internal_buffer", "ARENA_MULTIPLE", "core.h", "GAIO_IBUF_CHUNKS", 1),  # R4
    ("_python_datagrams", "DATAGRAMS_PER_PASS", "readiness.h", "GAIO_DATAGRAMS_PER_PASS", 1),  # R26
]


def _c_constant(header, macro):
    """The value of `#define macro <integer expression>` in src/native/header."""
    text = (ROOT / "src" / "native" / header).read_text()
    found = re.search(r"^#define %s (.+?)\s*(?:/\*.*)?$" % macro, text, re.M)
    assert found, "%s is not defined in %s" % (macro, header)
    expr = re.sub(r"(\d+)(?:ULL|LL|UL|U|L)\b", r"\1", found.group(1))
    assert re.fullmatch(r"[\d\s()<*+]+", expr), "%s is not an integer expression" % macro
    return eval(expr, {"__builtins__": {}})  # digits, <<, *, + and parentheses only


@pytest.mark.parametrize("module,name,header,macro,scale",
                         [pytest.param(*row, id=row[1]) for row in TWIN_CONSTANTS])
def test_constants_are_the_same_in_python_and_c(module, name, header, macro, scale):
    """A constant the python engine and the C core both need lives in two
    files, each naming the other; this keeps the two values equal."""
    value = getattr(importlib.import_module("gaio." + module), name)
    assert round(value * scale) == _c_constant(header, macro)


def test_resource_errors_are_the_same_in_python_and_c():
    """R16: the errors that back a standing accept off, not end it."""
    from gaio import _python_accept_connect
    header = (ROOT / "src" / "native" / "engine.h").read_text()
    body = header[header.index("static inline int gaio_resource_error(int err)"):]
    body = body[:body.index("}")]
    assert set(re.findall(r"err == (E[A-Z]+)", body)) == set(_python_accept_connect.RESOURCE_ERRORS)


def test_native_docstring_names_the_python_defaults():
    """The native Watcher's signature line shows the defaults the front uses."""
    from gaio import _python_args
    module = (ROOT / "src" / "native" / "module.c").read_text()
    assert "Watcher(bufsize=%d, *, engine, write_high=%d, batch_wait=0.0)" % (
        _python_args.DEFAULT_BUFSIZE, _python_args.DEFAULT_WRITE_HIGH) in module


def test_design_lists_the_engine_contract_as_engine_h_declares_it():
    """docs/DESIGN.md names every operation and flag of struct
    gaio_engine_ops (src/native/engine.h), and nothing else: a reader of the
    design finds the contract the engines really implement."""
    header = (ROOT / "src" / "native" / "engine.h").read_text()
    body = header[header.index("typedef struct gaio_engine_ops {"):]
    body = body[:body.index("} gaio_engine_ops;")]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    operations = set(re.findall(r"\(\*(\w+)\)\s*\(", body))
    flags = set(re.findall(r"^\s*int (\w+);", body, flags=re.M))
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    section = design[design.index("## The engine contract"):]
    first = section[:section.index(". An engine")]
    named = set(re.findall(r"`(\w+)`", first))
    assert operations and flags
    assert named == operations | flags, (
        "DESIGN.md lists %s; engine.h declares %s" % (sorted(named), sorted(operations | flags)))


def test_engines_reach_the_core_only_through_engine_h():
    """struct gaio_core is private to the core's files (core_private.h): an
    engine (or the binding) that read one of its fields would depend on the
    core's insides, which engine.h and core.h exist to hide."""
    native = ROOT / "src" / "native"
    core_files = {"core_private.h", "backpressure.c", "deadline_heap.c", "internal_buffer.c"}
    core_files |= {p.name for p in native.glob("core*.c")}
    for path in sorted(native.glob("*.[ch]")):
        text = path.read_text()
        if path.name not in core_files:
            assert '#include "core_private.h"' not in text, "%s includes core_private.h" % path.name
    for path in sorted(native.glob("engine_*.c")) + sorted(native.glob("uring_*.c")) + [
            native / "readiness.c", native / "datagram_io.c"]:
        code = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        assert not re.search(r"\bcore->", code), "%s dereferences the core (use engine.h)" % path.name
