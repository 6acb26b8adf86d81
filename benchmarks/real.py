"""The real workloads: gaio's examples under the clients people already use.

`python -m benchmarks --workloads real` runs examples/http_server.py under
wrk, examples/resp_server.py under redis-benchmark (GET, with and without
pipelining), examples/proxy.py under iperf3 and examples/dns_server.py under
dnsperf, the HTTP example with --tls under wrk over https, openssl s_time
and a client holding idle TLS connections, and the echo servers with a
certificate under tls_loadgen (benchmarks/tls.py), each on every
gaio engine that runs here, against the same program
written as an asyncio Protocol (benchmarks/servers/*_protocol.py; for DNS a
DatagramProtocol) on uvloop and on asyncio, and, for RESP, against
redis-server itself as the ceiling.

Each measurement starts a fresh server pinned to CPU 0 and the client (and,
for the proxy, the iperf3 server behind it) pinned to CPU 1, both before they
exec. The server's CPU time is read from /proc/PID/stat (utime + stime, all
threads) just before the measured client starts and just after it exits, so
the result is reported twice: as the client saw it (requests/s, Gbit/s) and
per server CPU-second. On a shared machine the second is the steadier one: a
stall that takes the server's core away lowers the first, not the second.
"""
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from . import tls
from .catalog import REPO, SERVERS_DIR, gaio_engines, server_env
from .processes import CLIENT_CPU, SERVER_CPU, Child, MeasurementError, pinned_to, read_line

EXAMPLES = REPO / "examples"
READY_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_CONNS = 100
RESP_CONNS = 50
RESP_KEY = b"key:__rand_int__"  # the key redis-benchmark's GET asks for (no -r)
RESP_VALUE = b"VXK"             # what its SET would have written there (-d 3)
DNS_CLIENTS = 4      # dnsperf -c: sockets, so the server answers several addresses
DNS_OUTSTANDING = 100  # dnsperf -q (its default): queries in flight at most
# dnsperf -Q for the fixed-rate run: below what every responder here answers
# (asyncio's DatagramProtocol included), so that all do the same work and the
# server CPU it costs compares them (issue 19: <= 0.5x uvloop's per datagram)
DNS_FIXED_RATE = 10000
# What dnsperf asks, in turn: names with records of the type, one without
# (NXDOMAIN). Every answer fits in 512 bytes.
DNS_QUERIES = ("www.example.test A", "www.example.test AAAA", "v6.example.test AAAA",
               "nope.example.test A")
TOOLS = ("wrk", "redis-benchmark", "redis-server", "iperf3", "dnsperf", "openssl")
# The clients are not under test: a sanitizer's LD_PRELOAD is for Python only.
TOOL_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


@dataclass(frozen=True)
class RealWorkload:
    name: str        # command-line name
    title: str       # table heading
    program: str     # "http", "resp", "proxy", "dns", "https" or "tls-echo"
    tool: str        # the client ("": our own, benchmarks/tls_idle_client.py)
    unit: str        # of "rate", as the client reports it
    per_cpu_unit: str  # of "per_cpu": the same count over the server's CPU seconds
    pipeline: int = 1
    targets: tuple = ()  # ((reference server, lowest ratio of gaio to it), ...): the issue's
    conns: int = 0       # the idle TLS workloads: connections held
    lower_is_better: bool = False  # the idle TLS workloads' bytes: targets are highest ratios
    fixed_rate: int = 0  # requests/s the client holds to (dnsperf -Q); 0: as fast as it can


REAL_WORKLOADS = (
    RealWorkload("http", "HTTP hello, wrk -c %d" % WRK_CONNS, "http", "wrk",
                 "requests/s", "requests per server CPU-s",
                 targets=(("uvloop-protocol", 1.2),)),
    RealWorkload("resp-get-P16", "RESP GET, redis-benchmark -c %d -P 16" % RESP_CONNS, "resp",
                 "redis-benchmark", "requests/s", "requests per server CPU-s", pipeline=16,
                 targets=(("uvloop-protocol", 1.2),)),
    RealWorkload("resp-get-P1", "RESP GET, redis-benchmark -c %d" % RESP_CONNS, "resp",
                 "redis-benchmark", "requests/s", "requests per server CPU-s", pipeline=1,
                 targets=(("redis-server", 0.8),)),
    RealWorkload("proxy", "TCP proxy, iperf3 -c through it", "proxy", "iperf3",
                 "Gbit/s", "Gbit per proxy CPU-s", targets=(("uvloop-protocol", 1.0),)),
    RealWorkload("dns", "DNS A/AAAA over UDP, dnsperf -c %d -q %d" % (
        DNS_CLIENTS, DNS_OUTSTANDING), "dns", "dnsperf", "queries/s",
                 "queries per server CPU-s", targets=(("uvloop-protocol", 2.0),)),
    # the target is on the second figure: queries per server CPU-s >= 2x is
    # server CPU per datagram <= 0.5x
    RealWorkload("dns-rate", "DNS A/AAAA over UDP at %d queries/s, dnsperf -c %d -Q %d" % (
        DNS_FIXED_RATE, DNS_CLIENTS, DNS_FIXED_RATE), "dns", "dnsperf", "queries/s",
                 "queries per server CPU-s", targets=(("uvloop-protocol", 2.0),),
                 fixed_rate=DNS_FIXED_RATE),
    RealWorkload("https", "HTTPS hello, wrk -c %d over TLS" % WRK_CONNS, "https", "wrk",
                 "requests/s", "requests per server CPU-s",
                 targets=(("uvloop-protocol", 1.2),)),
    RealWorkload("tls-handshakes", "TLS handshakes, openssl s_time -new", "https", "openssl",
                 "handshakes/s", "handshakes per server CPU-s",
                 targets=(("uvloop-protocol", 1.0),)),
    *(RealWorkload("tls-idle%d" % n, "Idle TLS connections, %s held" % format(n, ","), "https",
                   "", "bytes per connection", "", conns=n, lower_is_better=True,
                   targets=(("uvloop-protocol", 1 / 3), ("asyncio-protocol", 1 / 15)))
      for n in (1000, 10000)),
    *(RealWorkload(name, title, "tls-echo", tls.ECHO_CLIENT, "msgs/s",
                   "msgs per server CPU-s", targets=(("uvloop-protocol", 1.2),))
      for name, (title, _) in tls.ECHO_SHAPES.items()),
)
REAL_NAMES = tuple(w.name for w in REAL_WORKLOADS)
EXAMPLE = {"http": "http_server.py", "resp": "resp_server.py", "proxy": "proxy.py",
           "dns": "dns_server.py", "https": "http_server.py", "tls-echo": None}
TLS_PROGRAMS = ("https", "tls-echo")
PROTOCOL = {"http": "http_protocol.py", "resp": "resp_protocol.py", "proxy": "proxy_protocol.py",
            "dns": "dns_protocol.py", "https": "http_protocol.py"}
LOOPS = {"uvloop-protocol": "uvloop", "asyncio-protocol": "asyncio"}
CEILING = "redis-server"


@dataclass(frozen=True)
class RealServer:
    name: str       # gaio-ENGINE, uvloop-protocol, asyncio-protocol, redis-server
    group: str      # "gaio", "baseline" or "ceiling"
    programs: tuple  # the programs it has a version of

    def command(self, program, upstream=None):
        """(argv, environment, fixed port or None) of this server's `program`."""
        extra = ("--upstream", "127.0.0.1:%d" % upstream) if program == "proxy" else ()
        if program == "https":
            extra = tuple(tls.server_arguments(self.group))
        env = server_env()
        if program == "tls-echo":  # the echo harness's servers, not the examples
            return (tls.echo_server_argv(self.group, LOOPS.get(self.name),
                                         self.name[len("gaio-"):]), env, None)
        if self.group == "gaio":
            env["GAIO_ENGINE"] = self.name[len("gaio-"):]
            return ((sys.executable, str(EXAMPLES / EXAMPLE[program]), "--port", "0", *extra),
                    env, None)
        if self.group == "baseline":
            return ((sys.executable, str(SERVERS_DIR / PROTOCOL[program]),
                     "--loop", LOOPS[self.name], "--port", "0", *extra), env, None)
        port = free_port()
        return ((shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--protected-mode", "no",
                 "--loglevel", "warning"), TOOL_ENV, port)


def has_module(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def discover():
    """(servers, {skipped server: reason}, {skipped workload: reason})."""
    servers, skipped = [], {}
    every = tuple(EXAMPLE)
    engines = gaio_engines()
    with_tls = tls.gaio_tls_engines()
    for engine, reason in engines.items():
        if reason is None:
            tls_refused = with_tls.get(engine, with_tls.get("*", "not probed"))
            if tls_refused is not None:
                skipped["gaio-%s (https)" % engine] = tls_refused
            servers.append(RealServer("gaio-" + engine, "gaio", tuple(
                p for p in every if p not in TLS_PROGRAMS or tls_refused is None)))
        else:
            skipped["gaio-" + engine] = reason
    for name, loop in LOOPS.items():
        if loop == "uvloop" and not has_module("uvloop"):
            skipped[name] = "uvloop is not installed (pip install '.[bench]')"
        else:
            servers.append(RealServer(name, "baseline", every))
    if shutil.which("redis-server"):
        servers.append(RealServer(CEILING, "ceiling", ("resp",)))
    else:
        skipped[CEILING] = "redis-server is not installed (apt-get install redis-server)"
    skipped_workloads = {}
    echo_problem = None
    if any(w.program == "tls-echo" for w in REAL_WORKLOADS):
        echo_problem = tls.echo_client_problem()
    for w in REAL_WORKLOADS:
        if w.program == "tls-echo":
            if shutil.which("openssl") is None:
                skipped_workloads[w.name] = "openssl (the certificate's maker) is not installed"
            elif echo_problem:
                skipped_workloads[w.name] = echo_problem
        elif w.tool and shutil.which(w.tool) is None:
            skipped_workloads[w.name] = "%s is not installed" % w.tool
        elif w.program == "https" and shutil.which("openssl") is None:
            skipped_workloads[w.name] = "openssl (the certificate's maker) is not installed"
        elif w.program in ("http", "https") and not has_module("httptools"):
            skipped_workloads[w.name] = "httptools is not installed (pip install '.[bench]')"
    return servers, skipped, skipped_workloads


def tool_versions():
    versions = {}
    for name, flag in (("wrk", "-v"), ("redis-benchmark", "--version"),
                       ("redis-server", "--version"), ("iperf3", "--version"),
                       ("dnsperf", "-h"), ("openssl", "version")):
        path = shutil.which(name)
        if path is None:
            versions[name] = None
            continue
        try:
            done = subprocess.run([path, flag], capture_output=True, text=True, timeout=10,
                                  env=TOOL_ENV)
            lines = (done.stdout or done.stderr).strip().splitlines()
            # dnsperf has no version flag: its help's second line is "Version X".
            versions[name] = "dnsperf " + lines[1] if name == "dnsperf" else lines[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            versions[name] = "?"
    return versions


# ---- processes ----------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of the whole process (all its threads, exited ones included)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds():
    """CPU time of the children waited for so far (the clients that ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_listening(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise MeasurementError("server did not listen on %d" % port) from None
            time.sleep(0.02)


class Process(Child):
    """A process started for one measurement, pinned before exec, stopped after."""

    def __init__(self, argv, env, cpu, fixed_port=None, ready=r"(\d+)$"):
        self.errlog = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if fixed_port else subprocess.PIPE,
            stderr=self.errlog, preexec_fn=pinned_to(cpu))
        self.pid = self.proc.pid
        try:
            if fixed_port:
                wait_listening(fixed_port, self.proc, READY_TIMEOUT)
                self.port = fixed_port
                self.first_line = ""
            else:
                self.first_line, self.port = self._first_line(ready)
        except BaseException:
            self.stop()
            raise

    def _first_line(self, ready):
        """(the first line matching `ready`, the port its group matched)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            line = read_line(self.proc.stdout, max(0.0, deadline - time.monotonic()))
            if line is None:
                raise MeasurementError("did not start: %s" % self.stderr_tail())
            match = re.search(ready, line)
            if match:
                return line, int(match.group(1))

    def stop(self):
        self.terminate()
        self.errlog.close()

    def __exit__(self, *exc):
        self.stop()


def run_client(argv, timeout):
    """Run a client pinned to the client CPU: (exit code, stdout, stderr)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=TOOL_ENV, stdin=subprocess.DEVNULL,
                            preexec_fn=pinned_to(CLIENT_CPU))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise MeasurementError("%s still running after %.0f s" % (argv[0], timeout)) from None
    return proc.returncode, out, err


def measured(server, argv, timeout, also=None):
    """Run the measured client; its output and the window's CPU figures.
    `also`: another process on the client CPU whose CPU counts as the client's."""
    others = cpu_seconds(also.pid) if also else 0.0
    children = children_cpu_seconds()
    before = cpu_seconds(server.pid)
    t0 = time.monotonic()
    code, out, err = run_client(argv, timeout)
    window = time.monotonic() - t0
    server_cpu = cpu_seconds(server.pid) - before if server.alive() else None
    client_cpu = children_cpu_seconds() - children + (
        cpu_seconds(also.pid) - others if also and also.alive() else 0.0)
    if server_cpu is None:
        raise MeasurementError("the server died: %s" % server.stderr_tail())
    if code != 0:
        raise MeasurementError("%s exited with %d: %s" % (
            os.path.basename(argv[0]), code, (err.strip() or out.strip())[-300:]))
    return out, err, {"window_s": window, "server_cpu_s": server_cpu,
                      "server_busy": server_cpu / window, "client_cpu_s": client_cpu,
                      "client_busy": client_cpu / window}


# ---- the clients ----------------------------------------------------------

def _whole_seconds(seconds):
    return max(1, round(seconds))  # wrk and iperf3 take whole seconds


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(match.group(1)) * WRK_UNITS[match.group(2)] if match else None


def parse_wrk(out):
    result = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
              "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for name, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        match = re.search(r"^\s+%s\s+(\S+)" % re.escape(name), out, re.M)
        if match:
            result[key] = _wrk_ms(match.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise MeasurementError("wrk: %s" % "; ".join(
            m.group(0) for m in (bad, errors) if m))
    return result


def measure_http(server, workload, duration, warmup):
    url = "%s://127.0.0.1:%d/" % ("https" if workload.program == "https" else "http", server.port)
    wrk = shutil.which("wrk")
    argv = [wrk, "-t", "1", "-c", str(WRK_CONNS), "--timeout", "5s", "--latency"]
    if warmup > 0:
        run_client(argv + ["-d", "%ds" % _whole_seconds(warmup), url], 60)
    secs = _whole_seconds(duration)
    out, _, record = measured(server, argv + ["-d", "%ds" % secs, url], secs + 60)
    record.update(parse_wrk(out))
    record["per_cpu"] = record["requests"] / record["server_cpu_s"]
    return record


def parse_redis_benchmark(out):
    rows = [line for line in out.splitlines() if line.startswith('"GET"')]
    if not rows:
        raise MeasurementError("redis-benchmark printed no GET line: %s" % out[-300:])
    fields = [f.strip('"') for f in rows[-1].split(",")]
    return {"rate": float(fields[1]), "p50_ms": float(fields[4]), "p99_ms": float(fields[6])}


def set_resp_key(port):
    """What redis-benchmark's GET asks for, so every reply is a value, not nil."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(RESP_KEY), RESP_KEY, len(RESP_VALUE), RESP_VALUE))
        reply = sock.recv(64)
    if reply != b"+OK\r\n":
        raise MeasurementError("SET answered %r" % reply)


def measure_resp(server, workload, duration, warmup):
    """redis-benchmark has no duration: a first run (the warm-up) measures the
    rate, the measured run asks for `duration` seconds' worth of requests."""
    set_resp_key(server.port)
    p = workload.pipeline
    argv = [shutil.which("redis-benchmark"), "-p", str(server.port), "-t", "get",
            "-c", str(RESP_CONNS), "-P", str(p), "--csv"]
    probe = 5000 * p
    code, out, err = run_client(argv + ["-n", str(probe)], 120)
    if code != 0:
        raise MeasurementError("redis-benchmark: %s" % (err or out)[-300:])
    rate = parse_redis_benchmark(out)["rate"]
    extra = int(rate * warmup) - probe
    if extra > 0:
        run_client(argv + ["-n", str(extra)], 120)
    n = max(probe, int(rate * duration) // p * p)
    out, err, record = measured(server, argv + ["-n", str(n)], duration * 10 + 60)
    if "ERR" in out + err:
        raise MeasurementError("redis-benchmark got errors: %s" % (out + err)[-300:])
    record.update(parse_redis_benchmark(out))
    record["requests"] = n
    record["per_cpu"] = n / record["server_cpu_s"]
    return record


def measure_proxy(server, workload, duration, warmup, upstream):
    secs = _whole_seconds(duration)
    argv = [shutil.which("iperf3"), "-c", "127.0.0.1", "-p", str(server.port),
            "-t", str(secs), "-J"]
    out, _, record = measured(server, argv, secs + 60, also=upstream)
    report = json.loads(out)
    if "error" in report:
        raise MeasurementError("iperf3: %s" % report["error"])
    received = report["end"]["sum_received"]
    record["bytes"] = received["bytes"]
    record["rate"] = received["bits_per_second"] / 1e9
    record["per_cpu"] = received["bytes"] * 8 / 1e9 / record["server_cpu_s"]
    record["retransmits"] = report["end"]["sum_sent"].get("retransmits", 0)
    return record


def parse_dnsperf(out):
    def number(label):
        match = re.search(r"%s:\s+([\d.]+)" % label, out)
        if match is None:
            raise MeasurementError("dnsperf printed no %r: %s" % (label, out[-300:]))
        return float(match.group(1))
    return {"sent": int(number("Queries sent")), "requests": int(number("Queries completed")),
            "lost": int(number("Queries lost")), "rate": number("Queries per second"),
            "avg_ms": number("Average Latency \\(s\\)") * 1e3}


def measure_dns(server, workload, duration, warmup):
    """dnsperf for `duration` seconds (after a `warmup` run of it), as fast
    as it goes or at the workload's fixed rate; a query unanswered for 5 s
    counts as lost, and the report flags it."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as queries:
        queries.write("\n".join(DNS_QUERIES) + "\n")
        queries.flush()
        argv = [shutil.which("dnsperf"), "-s", "127.0.0.1", "-p", str(server.port),
                "-d", queries.name, "-c", str(DNS_CLIENTS), "-q", str(DNS_OUTSTANDING)]
        if workload.fixed_rate:
            argv += ["-Q", str(workload.fixed_rate)]
        if warmup > 0:
            run_client(argv + ["-l", "%g" % warmup], 60)
        out, _, record = measured(server, argv + ["-l", "%g" % duration], duration + 60)
    record.update(parse_dnsperf(out))
    record["per_cpu"] = record["requests"] / record["server_cpu_s"]
    record["server_cpu_us_per_query"] = 1e6 / record["per_cpu"]
    return record


def measure(server, workload, duration, warmup):
    """One measurement of `workload` against a fresh `server` (and upstream)."""
    if workload.program == "proxy":
        iperf3 = [shutil.which("iperf3"), "-s", "-B", "127.0.0.1", "-p", str(free_port()),
                  "--forceflush"]
        with Process(iperf3, TOOL_ENV, CLIENT_CPU, ready=r"listening on (\d+)") as upstream:
            argv, env, port = server.command("proxy", upstream.port)
            with Process(argv, env, SERVER_CPU, port) as proc:
                return measure_proxy(proc, workload, duration, warmup, upstream)
    argv, env, port = server.command(workload.program)
    with Process(argv, env, SERVER_CPU, port) as proc:
        if workload.program == "tls-echo":  # gaio_server.py --engine E: E or an error
            return tls.measure_echo(proc, workload, duration, warmup, run_client)
        if server.group == "gaio" and "(engine %s)" % server.name[5:] not in proc.first_line:
            raise MeasurementError("not on its engine: %s" % proc.first_line)
        if workload.program == "https" and workload.tool == "openssl":
            return tls.measure_handshakes(proc, workload, duration, warmup, measured, run_client)
        if workload.program == "https" and workload.conns:
            return tls.measure_idle(proc, workload)
        if workload.program in ("http", "https"):
            return measure_http(proc, workload, duration, warmup)
        if workload.program == "dns":
            return measure_dns(proc, workload, duration, warmup)
        return measure_resp(proc, workload, duration, warmup)


def one_line(workload, record):
    r = record
    if workload.conns:
        return "%s %s  %d threads  connected in %.1f s" % (
            _fmt(r["rate"]), workload.unit, r["server_threads"], r["connect_s"])
    return "%s %s  %s %s  server busy %.0f%%  client busy %.0f%%" % (
        _fmt(r["rate"]), workload.unit, _fmt(r["per_cpu"]), workload.per_cpu_unit,
        100 * r["server_busy"], 100 * r["client_busy"])


def _fmt(value):
    return "%.3g" % value if value < 100 else format(round(value), ",")


def run_all(run, servers, workloads, repeat, duration, warmup, write_raw):
    """Round r runs every workload against every server before round r + 1."""
    pairs = [(w, s) for w in workloads for s in servers if w.program in s.programs]
    total = repeat * len(pairs)
    i = 0
    for rep in range(repeat):
        for workload, server in pairs:
            i += 1
            t0 = time.monotonic()
            try:
                record = measure(server, workload, duration, warmup)
            except (MeasurementError, OSError, ValueError, KeyError, AttributeError) as exc:
                record = {"error": "%s: %s" % (type(exc).__name__, exc)}
            record.update(server=server.name, workload=workload.name, repeat=rep)
            run["measurements"].append(record)
            head = "[%*d/%d] r%d %-12s %-16s" % (len(str(total)), i, total, rep + 1,
                                                 workload.name, server.name)
            body = ("FAILED: " + record["error"]) if "error" in record else one_line(
                workload, record)
            print("%s %s  (%.1f s)" % (head, body, time.monotonic() - t0),
                  file=sys.stderr, flush=True)
            write_raw()


def estimate_seconds(servers, workloads, repeat, duration, warmup):
    wrk = _whole_seconds(duration) + (_whole_seconds(warmup) if warmup else 0) + 0.6
    per = {"http": wrk, "https": wrk,
           "resp": duration + warmup + 0.8, "proxy": _whole_seconds(duration) + 0.8,
           "dns": duration + warmup + 0.6,
           "tls-echo": duration + warmup + 1.5}  # + the handshakes

    def seconds(w):
        if w.conns:  # handshakes on both sides, then the settle
            return 3 + w.conns / 400
        return per[w.program]
    return repeat * sum(seconds(w) for w in workloads for s in servers
                        if w.program in s.programs)
