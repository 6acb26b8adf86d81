"""Smoke test of the harness's real workloads (python -m benchmarks --workloads real).

A tiny run end to end: the HTTP example under wrk, the RESP example under
redis-benchmark (and redis-server beside it), the proxy under iperf3, the DNS
example under dnsperf, each on
gaio's python engine and as an asyncio Protocol, one second each; the TLS
echo workload under tls_loadgen, which must also catch a corrupted echo and
refuse a certificate its CA did not sign. Skips when a client is not
installed. Numbers are not judged: only that they are there, and that
BENCHMARKS.md gets the real section without losing what it had.
"""
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import build as bench_build  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks.real import parse_dnsperf, parse_redis_benchmark, parse_wrk  # noqa: E402
from benchmarks.tls import echo_client_problem, parse_s_time, pems  # noqa: E402

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness is Linux-only"),
]

TOOLS = ("wrk", "redis-benchmark", "redis-server", "iperf3", "dnsperf")


@pytest.mark.slow  # the README command stays under 5 minutes (issue 16); CI runs -m slow
def test_real_workloads_end_to_end(tmp_path):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip("not installed: %s (apt-get install wrk redis-tools redis-server iperf3 "
                    "dnsperf)"
                    % ", ".join(missing))
    pytest.importorskip("httptools", reason="the HTTP example needs httptools")
    (tmp_path / "BENCHMARKS.md").write_text("# gaio benchmarks\n\nthe echo run's tables\n")
    cmd = [sys.executable, "-m", "benchmarks", "--workloads", "http,resp-get-P1,proxy,dns",
           "--servers", "gaio-python,asyncio-protocol,redis-server", "--repeat", "1",
           "--duration", "0.3", "--warmup", "0", "--output", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=55)
    assert done.returncode == 0, done.stderr
    raw = json.loads(next((tmp_path / "raw").glob("*-real.json")).read_text())
    got = sorted((m["workload"], m["server"]) for m in raw["measurements"])
    assert got == [("dns", "asyncio-protocol"), ("dns", "gaio-python"),
                   ("http", "asyncio-protocol"), ("http", "gaio-python"),
                   ("proxy", "asyncio-protocol"), ("proxy", "gaio-python"),
                   ("resp-get-P1", "asyncio-protocol"), ("resp-get-P1", "gaio-python"),
                   ("resp-get-P1", "redis-server")], done.stderr
    for m in raw["measurements"]:
        assert "error" not in m, m
        assert m["rate"] > 0 and m["per_cpu"] > 0 and m["server_cpu_s"] > 0, m
    assert raw["machine"]["tools"]["wrk"]
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert table.startswith("# gaio benchmarks\n\nthe echo run's tables\n")
    assert report.REAL_BEGIN in table and table.rstrip().endswith(report.REAL_END)
    assert "| HTTP hello, wrk -c 100 ÷ asyncio-protocol |" in table
    assert "| DNS A/AAAA over UDP, dnsperf -c 4 -q 100 ÷ asyncio-protocol |" in table
    assert "| server | queries/s | queries per server CPU-s | mean ms |" in table
    assert "÷ redis-server (target ≥ 0.8×)" in table
    assert raw["command"] in table


def test_an_echo_report_keeps_the_real_section(tmp_path):
    real_run = {"kind": "real", "command": "python -m benchmarks --workloads real",
                "started": "s", "finished": "f", "skipped": {}, "servers": ["gaio-epoll"],
                "config": {"server_cpu": 0, "client_cpu": 1, "repeat": 1, "duration": 1,
                           "warmup": 0},
                "machine": {"cpu_model": "cpu", "cores": 2, "os": "Linux", "kernel": "k",
                            "python": "3", "python_implementation": "CPython", "packages": {},
                            "tools": {}},
                "workloads": [], "measurements": []}
    report.write(tmp_path, real_run)
    first = (tmp_path / "BENCHMARKS.md").read_text()
    assert report.REAL_BEGIN in first
    echo_run = dict(real_run, kind="", command="python -m benchmarks", servers=[],
                    skipped={}, machine=dict(real_run["machine"], cc="cc"))
    report.write(tmp_path, echo_run, charts=False)
    second = (tmp_path / "BENCHMARKS.md").read_text()
    assert second.startswith("# gaio benchmarks")
    assert "- Command: `python -m benchmarks`" in second
    assert second.count(report.REAL_BEGIN) == 1
    assert "--workloads real" in second  # the real section, kept
    report.write(tmp_path, real_run)  # and a second real run replaces, never appends
    assert (tmp_path / "BENCHMARKS.md").read_text().count(report.REAL_BEGIN) == 1


def test_client_outputs_are_parsed():
    wrk = ("Running 1s test @ http://127.0.0.1:1/\n  Latency Distribution\n"
           "     50%  612.00us\n     75%    1.00ms\n     90%    2.00ms\n     99%    3.50ms\n"
           "  25000 requests in 1.00s, 3.10MB read\nRequests/sec:  24990.12\n")
    assert parse_wrk(wrk) == {"requests": 25000, "rate": 24990.12, "p50_ms": 0.612,
                              "p99_ms": 3.5}
    with pytest.raises(Exception, match="Non-2xx"):
        parse_wrk(wrk + "  Non-2xx or 3xx responses: 3\n")
    csv = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",'
           '"p95_latency_ms","p99_latency_ms","max_latency_ms"\n'
           '"GET","200000.00","1.0","0.1","0.900","2.0","3.000","9.0"\n')
    assert parse_redis_benchmark(csv) == {"rate": 200000.0, "p50_ms": 0.9, "p99_ms": 3.0}
    dnsperf = ("Statistics:\n\n  Queries sent:         74992\n"
               "  Queries completed:    74990 (100.00%)\n  Queries lost:         2 (0.00%)\n\n"
               "  Response codes:       NOERROR 59994 (80.00%), NXDOMAIN 14996 (20.00%)\n"
               "  Run time (s):         2.003716\n  Queries per second:   37426.461634\n\n"
               "  Average Latency (s):  0.002306 (min 0.000042, max 0.017431)\n")
    assert parse_dnsperf(dnsperf) == {"sent": 74992, "requests": 74990, "lost": 2,
                                      "rate": 37426.461634, "avg_ms": 2.306}


def _run_beside(tmp_path, old_section, workloads, timeout):
    """A short harness run of `workloads` (gaio's engines and asyncio) into a
    BENCHMARKS.md that already holds `old_section`: (the process, its raw JSON)."""
    (tmp_path / "BENCHMARKS.md").write_text("# gaio benchmarks\n\n%s\n" % old_section)
    cmd = [sys.executable, "-m", "benchmarks", "--workloads", workloads,
           "--servers", "gaio-*,asyncio-protocol", "--repeat", "1", "--duration", "0.3",
           "--warmup", "0", "--output", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done, json.loads(next((tmp_path / "raw").glob("*-real.json")).read_text())


@pytest.mark.slow  # 25 s of servers and clients; the slow pass runs it
def test_tls_workloads_end_to_end(tmp_path):
    """The TLS workloads (benchmarks/tls.py) on the python engine and asyncio:
    wrk over https, openssl s_time, 1,000 idle TLS connections; an engine whose
    start_tls is not there yet is listed as skipped for them, never failed."""
    missing = [t for t in ("wrk", "openssl") if shutil.which(t) is None]
    if missing:
        pytest.skip("not installed: %s (apt-get install wrk openssl)" % ", ".join(missing))
    pytest.importorskip("httptools", reason="the HTTP example needs httptools")
    old_real = "%s\nthe plain real run's tables\n%s" % (report.REAL_BEGIN, report.REAL_END)
    done, raw = _run_beside(tmp_path, old_real, "https,tls-handshakes,tls-idle1000", timeout=85)
    by_workload = {}
    for m in raw["measurements"]:
        assert "error" not in m, m
        by_workload.setdefault(m["workload"], set()).add(m["server"])
    assert by_workload["https"] >= {"gaio-python", "asyncio-protocol"}, done.stderr
    assert by_workload["tls-handshakes"] == by_workload["https"] == by_workload["tls-idle1000"]
    for engine in raw["servers"]:
        if engine.startswith("gaio-") and engine not in by_workload["https"]:
            assert "start_tls" in raw["skipped"]["%s (https)" % engine]
    idle = [m for m in raw["measurements"] if m["workload"] == "tls-idle1000"]
    assert all(m["rate"] > 0 and m["server_threads"] >= 1 for m in idle), idle
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert old_real in table  # a TLS run writes its own section, keeps the other
    assert report.TLS_BEGIN in table and table.rstrip().endswith(report.TLS_END)
    assert "| HTTPS hello, wrk -c 100 over TLS ÷ asyncio-protocol |" in table
    assert "Idle TLS connections, 1,000 held ÷ asyncio-protocol (target ≤ 0.067×)" in table
    assert "| server | bytes per connection | server threads |" in table


def test_openssl_s_time_output_is_parsed():
    out = ("Collecting connection statistics for 2 seconds\n"
           "tttttttttttttttttttttttttttttttttttttttt\n\n"
           "1419 connections in 1.23s; 1153.66 connections/user sec, bytes read 0\n"
           "1419 connections in 3 real seconds, 0 bytes read per connection\n")
    assert parse_s_time(out) == 1419
    with pytest.raises(Exception, match="no summary"):
        parse_s_time("ERROR\n")


@pytest.mark.slow  # the README command stays under 5 minutes (issue 16); CI runs -m slow
def test_tls_echo_workload_end_to_end(tmp_path):
    """tls-rr64 (tls_loadgen, benchmarks/tls.py) against the TLS echo servers of
    every gaio engine that runs here and asyncio: handshakes, echoes checked
    byte by byte, the TLS echo section of BENCHMARKS.md beside the others."""
    if shutil.which("openssl") is None:
        pytest.skip("not installed: openssl (apt-get install openssl)")
    problem = echo_client_problem()
    if problem:
        pytest.skip(problem)
    old_tls = "%s\nthe https run's tables\n%s" % (report.TLS_BEGIN, report.TLS_END)
    done, raw = _run_beside(tmp_path, old_tls, "tls-rr64", timeout=55)
    servers = {m["server"] for m in raw["measurements"]}
    assert "asyncio-protocol" in servers and "gaio-python" in servers, done.stderr
    for m in raw["measurements"]:
        assert "error" not in m, m
        assert m["rate"] > 0 and m["per_cpu"] > 0 and m["requests"] > 0, m
        assert m["tls"].startswith("TLS") and m["handshake_s"] > 0, m
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert old_tls in table  # the echo run writes its own section, keeps the https one
    assert table.rstrip().endswith(report.TLS_ECHO_END)
    assert "| TLS echo rr 64 B x 50 conns ÷ uvloop-protocol" not in table  # not measured
    assert "| TLS echo rr 64 B x 50 conns ÷ asyncio-protocol |" in table
    assert "| server | msgs/s | msgs per server CPU-s | p50 ms | p99 ms |" in table


def test_tls_loadgen_fails_loudly_on_a_corrupted_echo(tmp_path):
    """A TLS server that changes one byte makes tls_loadgen fail, not count it."""
    problem = echo_client_problem() if shutil.which("openssl") else "openssl is not installed"
    if problem:
        pytest.skip(problem)
    p = pems()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(p["cert"], p["key"])
    listener = socket.create_server(("127.0.0.1", 0))

    def bad_echo():
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            data = bytearray(tls.recv(64))
            data[10] ^= 0xFF
            tls.sendall(data)
            try:
                tls.recv(64)  # until the client gives up
            except OSError:
                pass

    t = threading.Thread(target=bad_echo)
    t.start()
    try:
        done = subprocess.run(
            [str(bench_build.build("tls_loadgen")), "rr", "--port",
             str(listener.getsockname()[1]), "--conns", "1", "--size", "64", "--duration", "1",
             "--warmup", "0", "--cafile", p["ca"]], capture_output=True, text=True, timeout=15)
    finally:
        t.join(10)
        listener.close()
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "offset 10" in json.loads(done.stdout.splitlines()[-1])["error"]


def test_tls_loadgen_refuses_a_server_its_ca_did_not_sign(tmp_path):
    """--cafile verifies: a certificate from another CA fails the handshake loudly."""
    problem = echo_client_problem() if shutil.which("openssl") else "openssl is not installed"
    if problem:
        pytest.skip(problem)
    other_ca = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-keyout", str(tmp_path / "other.key"),
                    "-out", str(other_ca), "-days", "1", "-subj", "/CN=other"],
                   check=True, capture_output=True, timeout=30)
    p = pems()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(p["cert"], p["key"])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one():
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (OSError, ssl.SSLError):  # the client aborts the handshake
            conn.close()

    t = threading.Thread(target=serve_one)
    t.start()
    try:
        done = subprocess.run(
            [str(bench_build.build("tls_loadgen")), "rr", "--port",
             str(listener.getsockname()[1]), "--conns", "1", "--duration", "1", "--warmup", "0",
             "--cafile", str(other_ca)], capture_output=True, text=True, timeout=15)
    finally:
        t.join(10)
        listener.close()
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "certificate verify failed" in json.loads(done.stdout.splitlines()[-1])["error"]
