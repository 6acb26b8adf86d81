"""Signals and the watcher: SIGPIPE never kills the process (R6).

Each case runs in a child process with SIGPIPE set back to SIG_DFL (what a C
host or a daemon may do; Python itself ignores it).
"""
import json
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
