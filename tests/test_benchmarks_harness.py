"""Smoke test of the benchmark harness (benchmarks/): builds, runs, reports.

Builds the load generator and the C epoll and io_uring servers, runs a
one-second rr against the C servers and against gaio's echo server on the python engine,
checks that a corrupted echo is caught, and runs `python -m benchmarks` end
to end on one workload. Numbers are not judged: only that they are there.
"""
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import build as bench_build  # noqa: E402
from benchmarks.catalog import Server, SERVERS_DIR, gaio_engines  # noqa: E402
from benchmarks.report import Cell  # noqa: E402
from benchmarks.run import ServerProcess, parse_args  # noqa: E402
from benchmarks.workloads import all_workloads  # noqa: E402

pytestmark = [
    pytest.mark.timeout(20),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="loadgen.c is Linux-only"),
    pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)"),
]


@pytest.fixture(scope="module")
def binaries():
    return bench_build.build_all()


def run_loadgen(loadgen, *args, timeout=15):
    done = subprocess.run([str(loadgen), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, (done.stdout, done.stderr)
    return done.returncode, json.loads(lines[0]), done.stderr


def check_rr_result(result):
    assert result["mode"] == "rr"
    assert result["errors"] == 0 and "error" not in result
    assert result["conns"] == 4 and result["size"] == 64
    assert result["msgs"] > 0 and result["msgs_per_s"] > 0 and result["mb_per_s"] > 0
    lat = result["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"] * 1.05
    assert 0 <= result["client_busy"] <= 1.5
    assert result["server_cpu_s"] >= 0
    assert result["server_cpu_us_per_msg"] >= 0


@pytest.mark.parametrize("server", [
    pytest.param("c-epoll", id="c-epoll"),
    pytest.param("c-uring", id="c-uring"),
    pytest.param("gaio-python", id="gaio-python"),
])
def test_short_rr_run_reports_every_field(binaries, server):
    if server == "c-uring":
        reason = gaio_engines().get("uring", "uring not probed")
        if reason is not None:
            pytest.skip("c_uring needs what gaio's uring needs: %s" % reason)
    if server.startswith("c-"):
        spec = Server(server, (str(binaries[server.replace("-", "_")]),), "ceiling")
    else:
        spec = Server(server, (sys.executable, str(SERVERS_DIR / "gaio_server.py"),
                               "--engine", "python"), "gaio")
    with ServerProcess(spec) as proc:
        code, result, err = run_loadgen(
            binaries["loadgen"], "rr", "--port", proc.port, "--conns", 4, "--size", 64,
            "--duration", 1, "--warmup", 0.2, "--server-pid", proc.pid)
        assert proc.alive(), proc.stderr_tail()
    assert code == 0, err
    check_rr_result(result)


def test_corrupted_echo_fails_loudly(binaries):
    """A server that changes one byte must make the load generator fail, not count it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def bad_echo():
        conn, _ = listener.accept()
        with conn:
            data = bytearray(conn.recv(64))
            data[10] ^= 0xFF
            conn.sendall(data)
            conn.recv(64)  # until the client gives up

    t = threading.Thread(target=bad_echo)
    t.start()
    try:
        code, result, err = run_loadgen(
            binaries["loadgen"], "rr", "--port", listener.getsockname()[1], "--conns", 1,
            "--size", 64, "--duration", 1, "--warmup", 0)
    finally:
        t.join(10)
        listener.close()
    assert code == 2
    assert "offset 10" in result["error"]
    assert "FAILED" in err


def default_workloads():
    args = parse_args([])
    return {w.name: w for w in all_workloads(args.duration, args.warmup, args.rate, 19800)}


def test_full_run_has_both_fixed_rates():
    workloads = default_workloads()
    for name, rate in (("rate", "10000"), ("rate50k", "50000")):
        w = workloads[name]
        assert w.mode == "rr" and w.metric == "server_cpu_us_per_msg"
        args = list(w.args)
        assert args[args.index("--rate") + 1] == rate
        assert args[args.index("--conns") + 1] == "50" and args[args.index("--size") + 1] == "64"
    assert workloads["rate50k"].title == "fixed rate 50,000 msgs/s, 64 B x 50 conns"
    # --rate moves the first fixed rate only: rate50k is what its name says
    moved = {w.name: w for w in all_workloads(2, 0.5, 20000, 19800)}
    assert "20000" in moved["rate"].args and "50000" in moved["rate50k"].args


def test_fell_behind_is_judged_against_each_workloads_own_rate():
    workloads = default_workloads()

    def flags(name, msgs_per_s):
        w = workloads[name]
        wl = {"name": w.name, "loadgen": [w.mode, *w.args]}
        return Cell([{"msgs_per_s": msgs_per_s, "client_busy": 0.2}], wl).flags

    assert flags("rate", 9990) == []
    assert flags("rate50k", 49900) == []
    assert flags("rate50k", 30000) == ["fell behind"]  # 30,000 would do for "rate"
    assert flags("rr64", 30000) == []  # closed loop: nothing offered


def test_harness_end_to_end(binaries, tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "--servers", "c-epoll,gaio-python",
           "--workloads", "rr64", "--repeat", "1", "--duration", "0.5", "--warmup", "0.1",
           "--output", str(tmp_path), "--no-charts"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=18)
    assert done.returncode == 0, done.stderr
    assert "[1/2] r1 rr64" in done.stderr  # one progress line per measurement
    raw = json.loads(next((tmp_path / "raw").glob("*.json")).read_text())
    assert sorted(m["server"] for m in raw["measurements"]) == ["c-epoll", "gaio-python"]
    for m in raw["measurements"]:
        assert "error" not in m, m
        assert m["msgs_per_s"] > 0 and m["server_threads"] >= 1
    assert raw["machine"]["cores"] >= 1 and raw["machine"]["kernel"]
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| c-epoll |" in table and "gaio-python" in table
    assert raw["command"] in table
