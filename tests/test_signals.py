"""Signals and the watcher: SIGPIPE never kills the process (R6), and a signal
whose Python handler raises interrupts a blocked wait_io() (R10) however close
to the start of its sleep it arrives.

Each case runs in a child process: one with SIGPIPE set back to SIG_DFL (what
a C host or a daemon may do; Python itself ignores it), one with a handler
that raises, both bounded by a timeout so that a hang fails instead of
blocking the suite.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGPIPE") or not hasattr(signal, "setitimer"),
                                reason="POSIX signals")

# R6: "A peer that has gone away gives BrokenPipeError/ConnectionResetError,
# never a SIGPIPE that kills the process." R22: a quiet request that fails
# "delivers its result as usual, with its ctx". Every kind of write: sendfile
# (sendfile(2) has no MSG_NOSIGNAL), plain data and a vectored write.
SIGPIPE_CHILD = textwrap.dedent("""
    import json, signal, socket, sys, tempfile, time
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    import gaio
    engine, family, quiet = sys.argv[1], sys.argv[2], sys.argv[3] == "quiet"
    N = 40
    blob = b"z" * 65536
    f = tempfile.TemporaryFile()
    f.write(blob)
    f.flush()

    def gone_pair():
        if family == "unix":
            c, s = socket.socketpair()
        else:
            lis = socket.create_server(("127.0.0.1", 0))
            c = socket.create_connection(lis.getsockname())
            s, _ = lis.accept()
            lis.close()
        s.close()
        time.sleep(0.05)
        return c

    report = {}
    with gaio.Watcher(engine=engine) as w:
        for kind in ("sendfile", "write", "vector"):
            print("start", kind, flush=True)  # which one died, if one does
            conn = gone_pair()
            before = w.stats()["quiet_done"]
            for i in range(N):
                if kind == "sendfile":
                    w.sendfile(conn, f, ctx=i, quiet=quiet)
                elif kind == "write":
                    w.write(conn, blob, ctx=i, quiet=quiet)
                else:
                    w.write(conn, [blob[:1000], blob], ctx=i, quiet=quiet)
            results = []
            end = time.monotonic() + 20
            while w.stats()["pending"] and time.monotonic() < end:
                results += w.wait_io(0.2)
            report[kind] = {
                "pending": w.stats()["pending"],
                "quiet_done": w.stats()["quiet_done"] - before,
                "ctx": [r.ctx for r in results],
                "errors": [type(r.error).__name__ if r.error else None for r in results],
            }
            w.free(conn)
    print(json.dumps(report))
""")


@pytest.mark.parametrize("quiet", ["plain", "quiet"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_no_sigpipe_from_any_write_to_a_vanished_peer(engine, family, quiet):
    proc = subprocess.run([sys.executable, "-c", SIGPIPE_CHILD, engine, family, quiet],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, "child died (signal %d?) after %r: %s" % (
        -proc.returncode, proc.stdout.splitlines()[-1:], proc.stderr)
    report = json.loads(proc.stdout.splitlines()[-1])
    for kind, got in report.items():
        assert got["pending"] == 0, kind
        failed = [e for e in got["errors"] if e is not None]
        assert failed, (kind, got)  # the peer is gone: writes fail ...
        assert set(failed) <= {"BrokenPipeError", "ConnectionResetError"}, (kind, got)
        if quiet == "quiet":
            # ... and each failed quiet request delivers its result, with its ctx
            assert None not in got["errors"], (kind, got)
            assert len(got["ctx"]) + got["quiet_done"] == 40, (kind, got)
        else:
            assert sorted(got["ctx"]) == list(range(40)), (kind, got)


# R10: wait_io() "blocks ... until at least one result is ready"; DESIGN: a
# signal whose handler raises propagates that exception. A signal that comes
# just before the wait goes to sleep must not be left for the next completion:
# the child has no traffic at all, so a missed signal sleeps until the timeout.
# "timer": a process-directed SIGALRM armed a few microseconds ahead, so that
# it often lands in the gap between the call and the kernel wait (the child
# has no thread of its own then); a miss shows as a wait of `timeout` seconds.
# "thread": a thread sends SIGUSR1 to the main thread after a short sleep and,
# if the main thread is not interrupted within 2 s, counts a miss and sends
# again - so wait_io(None) can be tried too without hanging the test.
INTERRUPT_CHILD = textwrap.dedent("""
    import json, random, signal, sys, threading, time
    import gaio
    engine, how, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGALRM, handler)
    rng = random.Random(sys.argv[4])
    main = threading.get_ident()
    slowest, returned, missed = 0.0, 0, 0

    def sender(delay, done):
        global missed
        time.sleep(delay)
        signal.pthread_kill(main, signal.SIGUSR1)
        while not done.wait(2.0):
            missed += 1
            signal.pthread_kill(main, signal.SIGUSR1)

    with gaio.Watcher(engine=engine) as w:
        for i in range(rounds):
            thread, done = None, threading.Event()
            start = time.monotonic()
            try:
                if how == "timer":
                    signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, 20e-6))
                    w.wait_io(3.0)
                else:
                    thread = threading.Thread(target=sender, args=(rng.uniform(0, 1e-4), done))
                    thread.start()
                    w.wait_io(None if i % 2 else 5.0)
                returned += 1
            except Interrupted:
                pass
            finally:
                slowest = max(slowest, time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, 0)
                done.set()
                if thread is not None:
                    thread.join()
    print(json.dumps({"slowest": slowest, "returned": returned, "missed": missed}))
""")


@pytest.mark.parametrize("how,rounds", [("timer", 400), ("thread", 100)])
def test_signal_at_the_start_of_a_wait_interrupts_it(engine, how, rounds):
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT_CHILD, engine, how, str(rounds), str(os.getpid())],
        capture_output=True, text=True, timeout=rounds * 3 + 60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    # every wait raised the handler's exception, each within a second
    assert report["returned"] == 0 and report["missed"] == 0, report
    assert report["slowest"] < 1.0, report


# The same gap, made certain. CPython 3.11 re-takes the GIL by recomputing
# its "something to do" flag (eval_breaker) with a plain load and store; a
# signal whose C handler runs between the two, on this thread, marks itself
# tripped and then sees the flag overwritten, so the interpreter's own checks
# skip its handler until the next GIL re-take - perhaps the end of the sleep.
# A CI run met it in one of its 400 timer rounds (78,000 here never did). gdb stops the child at the last
# point before the guard is up and leaves that state (tripped, flag lost):
#  - python engine: inside set_wakeup_fd(), after its fstat() gave the GIL
#    back and before it installs the descriptor;
#  - native engines: as the guard is entered (gaio__sig_guard_enter).
# The wait must still raise the handler's exception at once.
LOST_FLAG_CHILD = textwrap.dedent("""
    import signal, sys, time
    import gaio

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGALRM, handler)
    with gaio.Watcher(engine=sys.argv[1]) as w:
        start = time.monotonic()
        try:
            w.wait_io(5.0)
            print("RESULT returned", time.monotonic() - start)
        except Interrupted:
            print("RESULT interrupted", time.monotonic() - start)
""")

LOST_FLAG_GDB = """
set pagination off
set breakpoint pending on
tbreak {first}
commands
  silent
  {then}
end
run
"""

TRIP_WITH_FLAG_LOST = """
    printf "INJECTED\\n"
    set var Handlers[{sig}].tripped._value = 1
    set var is_tripped._value = 1
    set var _PyRuntime.ceval.signals_pending._value = 1
    continue
"""


def test_signal_whose_check_was_lost_before_the_wait_still_interrupts_it(engine, tmp_path):
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    if os.environ.get("GAIO_SANITIZED"):
        pytest.skip("gdb would run with the sanitizer runtime preloaded")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the injected state is CPython 3.11's (signalmodule.c, ceval_gil.h)")
    trip = TRIP_WITH_FLAG_LOST.format(sig=int(signal.SIGALRM))
    if engine == "python":
        # the descriptor check after fstat: no GIL re-take from there on
        script = LOST_FLAG_GDB.format(first="signal_set_wakeup_fd", then=(
            "tbreak _Py_get_blocking\n  commands\n  silent\n" + trip + "  end\n  continue"))
    else:
        script = LOST_FLAG_GDB.format(first="gaio__sig_guard_enter", then=trip.strip())
    commands = tmp_path / "lost.gdb"
    commands.write_text(script)
    proc = subprocess.run(
        ["gdb", "-q", "-batch", "-nx", "-iex", "set auto-load off", "-x", str(commands),
         "--args", sys.executable, "-c", LOST_FLAG_CHILD, engine],
        capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    if "No symbol" in out or "ptrace" in out:
        pytest.skip("gdb cannot reach this Python's signal state: %s" % out[-300:])
    assert "INJECTED" in out, out[-2000:]  # the stop was reached: the test saw the gap
    result = [line.split() for line in out.splitlines() if line.startswith("RESULT ")]
    assert result, out[-2000:]
    what, seconds = result[-1][1], float(result[-1][2])
    assert what == "interrupted" and seconds < 1.0, out[-2000:]
