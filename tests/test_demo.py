"""`python -m gaio demo` runs on every engine, prints its figures, and fails in one line.

The demo is run as a user would run it, in a subprocess, with every wait bounded.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import gaio
from conftest import LIBKQUEUE, available_engines

pytestmark = pytest.mark.timeout(120)


def run_demo(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "gaio", "demo", *args],
                          capture_output=True, text=True, timeout=timeout)


def figure(output, label):
    """The first number after "label:" in the demo's results."""
    match = re.search(r"^\s*%s:\s+([\d,.]+)" % re.escape(label), output, re.MULTILINE)
    assert match, "no %r in the demo's output:\n%s" % (label, output)
    return float(match.group(1).replace(",", ""))


def test_demo_prints_its_figures(engine):
    proc = run_demo("--engine", engine, "--duration", "2", "--conns", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^\s*engine:\s+%s\b" % engine, out, re.MULTILINE), out
    assert figure(out, "messages/s") > 0
    assert figure(out, "MB/s") > 0
    p50, p99 = figure(out, "latency p50"), figure(out, "latency p99")
    assert 0 < p50 <= p99
    assert "RSS growth/conn:" in out
    # One thread does everything: accepting, echoing, talking to the client
    # process; the watcher starts no thread of its own (R12).
    threads = re.search(r"server threads:\s+(\d+) \(threading.active_count\), (\S+)", out)
    os_threads = ("1", "n/a")
    if LIBKQUEUE and engine == "kqueue":
        os_threads += ("3",)  # libkqueue's own two helper threads (see test_native_types)
    assert threads and threads.group(1) == "1" and threads.group(2) in os_threads, out
    assert figure(out, "echoes checked") >= figure(out, "messages/s")
    assert "running:" in out  # the progress line
    assert "Traceback" not in proc.stderr


def test_demo_auto_engine_runs_and_says_which():
    # `python -m gaio demo`, the README's command, runs on whatever "auto" picks.
    w = gaio.Watcher()
    auto = w.engine
    w.close()
    proc = run_demo("--duration", "1", "--conns", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = re.search(r"^\s*engine:\s+(\w+)", proc.stdout, re.MULTILINE).group(1)
    assert ran == auto, proc.stdout
    assert "echo server on engine %r at" % auto in proc.stdout, proc.stdout


def test_demo_unknown_engine_is_a_usage_error():
    proc = run_demo("--engine", "nosuch", timeout=30)
    assert proc.returncode == 2
    assert "invalid choice: 'nosuch'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", [n for n, why in available_engines().items() if why]
                         or [pytest.param(None, marks=pytest.mark.skip("every engine runs here"))])
def test_demo_unavailable_engine_fails_in_one_line(name):
    proc = run_demo("--engine", name, timeout=30)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gaio demo: error: "), proc.stderr
    assert proc.stdout == ""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_demo_interrupted_reaps_its_client(how):
    # Ctrl-C signals the whole process group; `kill` signals the demo alone,
    # which must then stop the client itself. SIGINT is reset to its default
    # in the child in case we were started with it ignored.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gaio", "demo", "--engine", "python", "--duration", "30",
         "--conns", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        client_pid = None
        give_up_at = time.monotonic() + 60
        for line in proc.stdout:  # every wait is bounded by the test's timeout
            match = re.search(rb"client pid (\d+)", line)
            if match:
                client_pid = int(match.group(1))
            if b"running:" in line or time.monotonic() > give_up_at:
                break
        assert client_pid is not None and _pid_alive(client_pid)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.terminate()
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert b"interrupted" in err and b"Traceback" not in err, err
        assert not _pid_alive(client_pid)  # reaped by the demo, not left to init
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
