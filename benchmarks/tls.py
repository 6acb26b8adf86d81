"""The TLS workloads of `--workloads real` (issue 20): the HTTP example with
--tls, and the echo servers with a certificate.

examples/http_server.py --tls on every gaio engine that has TLS, against
benchmarks/servers/http_protocol.py with --certfile/--keyfile
(`create_server(ssl=context)`) on uvloop and on asyncio, measured three ways:

- `https`: wrk over https, 100 keep-alive connections (requests/s);
- `tls-handshakes`: `openssl s_time -new`, a full handshake per connection,
  one at a time (handshakes/s);
- `tls-idle1000`, `tls-idle10000`: benchmarks/tls_idle_client.py holds N
  handshaken connections, each served one `GET /`; the server's RSS growth per
  connection.

And the echo servers (servers/gaio_server.py, asyncio_protocol.py on uvloop
and asyncio) with --certfile/--keyfile under tls_loadgen (loadgen.c over
OpenSSL, built by build.py): `tls-rr1k`, `tls-rr64`, the shapes of the echo
harness's rr1k and rr64, every connection handshaken before the clock starts.

One certificate for every server: ECDSA P-256 (what a public site serves
today), made with the `openssl` command for the run, never kept. A gaio
engine whose start_tls raises NotImplementedError is skipped with its words.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from . import procstat
from .build import BuildError, build
from .catalog import REPO, SERVERS_DIR, server_env
from .processes import CLIENT_CPU, MeasurementError, pinned_to, read_line

IDLE_CLIENT = REPO / "benchmarks" / "tls_idle_client.py"
IDLE_SETTLE = 1.0       # seconds between the last connection held and the RSS read

# Asked of the servers' interpreter, like catalog.gaio_engines(): whether a
# watcher of each engine takes a start_tls.
TLS_PROBE = """
import json, socket, ssl, gaio
out = {}
for engine, reason in gaio.available_engines().items():
    if reason is None:
        a, b = socket.socketpair()
        try:
            with gaio.Watcher(engine=engine) as w:
                w.start_tls(a, ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
                            server_side=True)
        except NotImplementedError as exc:
            reason = str(exc)
        finally:
            a.close()
            b.close()
    out[engine] = reason
print(json.dumps(out))
"""


def gaio_tls_engines():
    """{engine: None if it runs TLS here, else the reason}."""
    done = subprocess.run([sys.executable, "-c", TLS_PROBE], env=server_env(),
                          capture_output=True, text=True, timeout=60)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"*": "probing gaio's TLS failed: " + (done.stderr.strip() or "?")[-200:]}


_PEMS = {}


def pems():
    """{"ca", "cert", "key"}: a self-signed ECDSA P-256 certificate for
    localhost and 127.0.0.1 (its own CA), made once per run in a temporary
    directory removed at exit."""
    if not _PEMS:
        where = tempfile.mkdtemp(prefix="gaio-bench-tls-")
        cert, key = os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")
        subprocess.run([shutil.which("openssl") or "openssl", "req", "-x509", "-nodes",
                        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        _PEMS.update(ca=cert, cert=cert, key=key, dir=where)
        import atexit
        atexit.register(shutil.rmtree, where, True)
    return _PEMS


def server_arguments(group):
    """The command-line arguments that make the HTTP server of `group` ("gaio" or
    "baseline") serve HTTPS with the run's certificate."""
    p = pems()
    tls = ["--certfile", p["cert"], "--keyfile", p["key"]]
    return ["--tls", *tls] if group == "gaio" else tls


def raise_fd_limit():
    """The idle runs hold 10,000 connections: this process's hard limit,
    inherited by the servers and the clients it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_s_time(out):
    """The connection count of `openssl s_time`'s summary line."""
    for line in out.splitlines():
        if "connections in" in line and "real seconds" in line:
            return int(line.split()[0])
    raise MeasurementError("s_time printed no summary: %s" % out[-300:])


def measure_handshakes(server, workload, duration, warmup, measured, run_client):
    """openssl s_time -new: a new session per connection, one connection at a
    time, for `duration` whole seconds. The rate is over the measured wall time.
    `measured` and `run_client` are real.py's (which imports this module)."""
    secs = max(1, round(duration))
    argv = [shutil.which("openssl"), "s_time", "-connect", "127.0.0.1:%d" % server.port,
            "-new", "-CAfile", pems()["ca"]]
    if warmup > 0:
        run_client(argv + ["-time", str(max(1, round(warmup)))], 60)
    out, _, record = measured(server, argv + ["-time", str(secs)], secs + 60)
    n = parse_s_time(out)
    record["requests"] = n
    record["rate"] = n / record["window_s"]
    record["per_cpu"] = n / record["server_cpu_s"]
    return record


def measure_idle(server, workload, timeout=600):
    """RSS growth per idle, handshaken TLS connection (each served once), and threads."""
    time.sleep(0.1)  # let the freshly started server settle
    rss_before = procstat.rss_bytes(server.pid)
    argv = [sys.executable, str(IDLE_CLIENT), "--port", str(server.port),
            "--conns", str(workload.conns), "--cafile", pems()["ca"]]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, preexec_fn=pinned_to(CLIENT_CPU))
    try:
        line = read_line(client.stdout, timeout) or ""
        if not line.startswith("READY"):
            client.kill()
            _, err = client.communicate()
            raise MeasurementError("idle client: %s %s" % (line, err.decode()[-300:]))
        time.sleep(IDLE_SETTLE)
        if not server.alive():
            raise MeasurementError("server died holding idle connections: %s"
                                   % server.stderr_tail())
        rss_after = procstat.rss_bytes(server.pid)
        record = {"rss_before": rss_before, "rss_after": rss_after,
                  "server_threads": procstat.threads(server.pid),
                  "server_fds": procstat.open_fds(server.pid),
                  "connect_s": float(line.split()[2])}
    finally:
        if client.poll() is None:
            client.stdin.close()  # the client lets go
            try:
                client.wait(30)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
    record["rate"] = (rss_after - rss_before) / workload.conns  # bytes per connection
    record["per_cpu"] = None
    return record


# ---- TLS echo: the echo servers under tls_loadgen ----------------------------

# name -> (title, tls_loadgen rr arguments): the echo harness's rr1k and rr64 shapes
ECHO_SHAPES = {
    "tls-rr1k": ("TLS echo rr 1 KiB x 500 conns", ("--conns", "500", "--size", "1024")),
    "tls-rr64": ("TLS echo rr 64 B x 50 conns", ("--conns", "50", "--size", "64")),
}
ECHO_CLIENT = "tls_loadgen"


def echo_client_problem():
    """None if tls_loadgen builds here, else why not (OpenSSL's headers missing...)."""
    try:
        build(ECHO_CLIENT)
    except BuildError as exc:
        return str(exc)
    return None


def echo_server_argv(group, loop=None, engine=None):
    """The echo server of `group` serving TLS with the run's certificate."""
    p = pems()
    tls = ("--certfile", p["cert"], "--keyfile", p["key"])
    if group == "gaio":
        return (sys.executable, str(SERVERS_DIR / "gaio_server.py"), "--engine", engine,
                "--port", "0", *tls)
    script = "uvloop_protocol.py" if loop == "uvloop" else "asyncio_protocol.py"
    return (sys.executable, str(SERVERS_DIR / script), "--port", "0", *tls)


def measure_echo(server, workload, duration, warmup, run_client):
    """tls_loadgen rr against `server`: every connection handshaken first (not
    measured), `warmup` seconds, then `duration` measured; the load generator
    reads the server's CPU (/proc/PID/task/*/schedstat) over that window
    itself. `run_client` is real.py's."""
    argv = [str(build(ECHO_CLIENT)), "rr", "--port", str(server.port),
            "--server-pid", str(server.pid), *ECHO_SHAPES[workload.name][1],
            "--duration", "%g" % duration, "--warmup", "%g" % warmup,
            "--cafile", pems()["ca"]]
    code, out, err = run_client(argv, duration + warmup + 90)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise MeasurementError("tls_loadgen printed no result (exit %d): %s; server: %s"
                               % (code, err.strip()[-300:], server.stderr_tail()))
    result = json.loads(lines[-1])
    if "error" in result:
        raise MeasurementError("tls_loadgen: %s; server: %s"
                               % (result["error"], server.stderr_tail()))
    if "server_cpu_s" not in result or not result["msgs"]:
        raise MeasurementError("tls_loadgen measured nothing: %s" % lines[-1][:300])
    lat = result["latency_us"]
    return {"window_s": result["duration_s"], "requests": result["msgs"],
            "rate": result["msgs_per_s"], "per_cpu": result["msgs"] / result["server_cpu_s"],
            "server_cpu_s": result["server_cpu_s"], "server_busy": result["server_busy"],
            "client_cpu_s": result["client_cpu_s"], "client_busy": result["client_busy"],
            "server_cpu_us_per_msg": result["server_cpu_us_per_msg"],
            "p50_ms": lat["p50"] / 1e3, "p99_ms": lat["p99"] / 1e3,
            "tls": result["tls"], "handshake_s": result["handshake_s"]}
