"""Run every workload against every server: repeated, interleaved, pinned.

Each measurement starts a fresh server pinned to CPU 0 and the load
generator pinned to CPU 1, so the server has a core of its own and its CPU
time (from /proc) is all its own work. Repeats are interleaved: round r
runs every workload against every server before round r + 1 starts, so a
slow spell on the machine spreads over all servers instead of sinking one.
"""
import argparse
import fnmatch
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import environment, procstat, real, report
from .build import HERE, BuildError, build_all
from .catalog import PRIMED, REPO, discover, server_env
from .processes import CLIENT_CPU, SERVER_CPU, Child, MeasurementError, read_line
from .processes import pin as _pin
from .workloads import all_workloads

READY_TIMEOUT = 30.0       # seconds for a server to print READY
PRIME_SETS = 3             # connection sets a PRIMED server serves before a timed run
IDLE_SETTLE = 0.3          # seconds between the client's READY and reading RSS
FD_RESERVE = 200           # descriptors left to the server process for itself
MAX_LOCAL_PORTS = 20000    # loadgen binds local ports 10000-32767
BUSY_LOAD_AVERAGE = 0.5    # warn above this 1-minute load average at the start


class ServerProcess(Child):
    """A server started for one measurement: pinned, READY awaited, stopped after."""

    def __init__(self, server):
        self.server = server
        self.errlog = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*server.argv, "--port", "0"], cwd=REPO, env=server_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.errlog)
        self.pid = self.proc.pid
        _pin(self.pid, SERVER_CPU)
        line = read_line(self.proc.stdout, READY_TIMEOUT)
        if not line or not line.startswith("READY "):
            self.stop()
            why = line or self.stderr_tail()
            self.errlog.close()
            raise MeasurementError("server did not start: %s" % why)
        self.port = int(line.split()[1])

    def stop(self):
        self.terminate()

    def __exit__(self, *exc):
        self.stop()
        self.errlog.close()


def _loadgen_argv(loadgen, workload, server):
    return [str(loadgen), workload.mode, "--port", str(server.port),
            "--server-pid", str(server.pid), *workload.args]


def _parse_loadgen(stdout, server):
    lines = [l for l in stdout.strip().splitlines() if l.startswith("{")]
    if not lines:
        raise MeasurementError("load generator printed no result; server: %s" % server.stderr_tail())
    result = json.loads(lines[-1])
    if "error" in result:
        raise MeasurementError("load generator: %s; server: %s"
                               % (result["error"], server.stderr_tail()))
    return result


def measure_timed(loadgen, workload, server, timeout):
    lg = subprocess.Popen(_loadgen_argv(loadgen, workload, server),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pin(lg.pid, CLIENT_CPU)
    try:
        out, _ = lg.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeasurementError("load generator still running after %.0f s" % timeout) from None
    finally:
        if lg.poll() is None:  # timed out or interrupted: never leave it running
            lg.kill()
            lg.communicate()
    result = _parse_loadgen(out, server)
    if server.alive():
        result["server_threads"] = procstat.threads(server.pid)
        result["server_peak_rss"] = procstat.peak_rss_bytes(server.pid)
    return result


def warm(loadgen, server):
    """One connection served with a stream of bytes and closed, before an idle
    baseline: what a server touches once and for all when bytes first come (an
    internal buffer, io_uring's provided-buffer ring) is then in the baseline,
    not divided among the idle connections, so the figure is per connection at
    every count. Every server is warmed the same way."""
    done = subprocess.run([str(loadgen), "stream", "--port", str(server.port), "--conns", "1",
                           "--duration", "0.2", "--warmup", "0"],
                          capture_output=True, text=True, timeout=60)
    _parse_loadgen(done.stdout, server)  # a failure here is the measurement's


def measure_idle(loadgen, workload, server, timeout):
    """RSS growth per connection and thread count with N idle connections held."""
    warm(loadgen, server)
    time.sleep(0.1)  # let the server finish settling
    rss_before = procstat.rss_bytes(server.pid)
    lg = subprocess.Popen(_loadgen_argv(loadgen, workload, server), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _pin(lg.pid, CLIENT_CPU)
    try:
        line = read_line(lg.stdout, timeout)
        if line != "READY":
            lg.kill()
            out, _ = lg.communicate()
            _parse_loadgen((line or "") + "\n" + out.decode(errors="replace"), server)
            raise MeasurementError("no READY from the load generator within %.0f s" % timeout)
        time.sleep(IDLE_SETTLE)
        if not server.alive():
            raise MeasurementError("server died holding idle connections: %s" % server.stderr_tail())
        held = {
            "rss_before": rss_before,
            "rss_after": procstat.rss_bytes(server.pid),
            "server_threads": procstat.threads(server.pid),
            "server_fds": procstat.open_fds(server.pid),
        }
        out, _ = lg.communicate(timeout=30)  # closes stdin: the client lets go and reports
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.communicate()
    result = _parse_loadgen(out.decode(errors="replace"), server)
    result.update(held)
    result["rss_per_conn"] = (held["rss_after"] - rss_before) / workload.idle_conns
    return result


def prime(loadgen, server):
    """PRIME_SETS short sets of rr connections, unmeasured (catalog.PRIMED says why)."""
    for _ in range(PRIME_SETS):
        done = subprocess.run([str(loadgen), "rr", "--port", str(server.port), "--conns", "50",
                               "--duration", "0.3", "--warmup", "0"],
                              capture_output=True, text=True, timeout=60)
        _parse_loadgen(done.stdout, server)  # a failure here is the measurement's


def measure(loadgen, server, workload):
    """One measurement against a fresh server: the loadgen's JSON plus /proc samples."""
    timeout = workload.seconds * 3 + 90
    with ServerProcess(server) as proc:
        if workload.is_idle:
            return measure_idle(loadgen, workload, proc, timeout)
        if server.name in PRIMED:
            prime(loadgen, proc)
        return measure_timed(loadgen, workload, proc, timeout)


def _select(names, patterns, what, aliases=None):
    """The names matching comma-separated globs; an alias stands for its list."""
    if not patterns:
        return list(names)
    chosen = []
    for pattern in patterns.split(","):
        pattern = pattern.strip()
        if aliases and pattern in aliases:
            chosen += [n for n in aliases[pattern] if n not in chosen]
            continue
        matched = [n for n in names if fnmatch.fnmatch(n, pattern)]
        if not matched:
            raise SystemExit("unknown %s %r; choose from: %s" % (what, pattern, ", ".join(names)))
        chosen += [n for n in matched if n not in chosen]
    return [n for n in names if n in chosen]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure gaio's engines against asyncio, uvloop, trio, gevent, threads, "
                    "selectors and a C epoll server, in one run. --workloads real: gaio's "
                    "examples under wrk, redis-benchmark and iperf3 against the same programs "
                    "on uvloop and asyncio, and redis-server.")
    p.add_argument("--servers", help="comma-separated names or globs (default: all), e.g. 'gaio-*,uvloop-protocol'")
    p.add_argument("--workloads", help="comma-separated names or globs (default: all the echo "
                   "workloads), e.g. 'rr64,idle*'; 'real' (or some of %s) for the examples "
                   "under real clients, in a run of their own" % ", ".join(real.REAL_NAMES))
    p.add_argument("--repeat", type=int, help="runs of each measurement (default 3; --quick: 1)")
    p.add_argument("--duration", type=float, help="measured seconds per rr/stream run (default 2; --quick: 0.5)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each (default 0.5; --quick: 0.2)")
    p.add_argument("--rate", type=float, default=10000, help="offered msgs/s of the 'rate' workload (default 10000; 'rate50k' offers 50000)")
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run: 1 repeat, short runs, fewer connections")
    p.add_argument("--output", type=Path, default=HERE / "results", help="where BENCHMARKS.md, charts and raw/ go")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument("--list", action="store_true", help="list servers and workloads, then exit")
    p.add_argument("--report", type=Path, metavar="RAW_JSON",
                   help="measure nothing: rewrite BENCHMARKS.md and charts in --output from a raw/*.json")
    args = p.parse_args(argv)
    quick_defaults = {"repeat": 1, "duration": 0.5, "warmup": 0.2}
    full_defaults = {"repeat": 3, "duration": 2.0, "warmup": 0.5}
    for key, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0 or args.rate <= 0:
        p.error("--repeat, --duration and --rate must be positive")
    return args


def max_idle_conns():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = MAX_LOCAL_PORTS + FD_RESERVE
    return min(hard - FD_RESERVE, MAX_LOCAL_PORTS)


def _progress(i, total, rep, workload, server, record, seconds):
    head = "[%*d/%d] r%d %-10s %-17s" % (len(str(total)), i, total, rep + 1,
                                          workload.name, server.name)
    if "error" in record:
        return "%s FAILED: %s" % (head, record["error"])
    return "%s %s  (%.1f s)" % (head, report.one_line(workload, record), seconds)


def _run_all(run, loadgen, servers, workloads, repeat, raw_path):
    """Round r runs every workload against every server before round r + 1."""
    total = repeat * sum(s.runs(w.name) for w in workloads for s in servers)
    i = 0
    for rep in range(repeat):
        for workload in workloads:
            for server in servers:
                if not server.runs(workload.name):
                    continue
                i += 1
                t0 = time.monotonic()
                try:
                    record = measure(loadgen, server, workload)
                except (MeasurementError, OSError, ValueError) as exc:
                    record = {"error": str(exc)}
                record.update(server=server.name, workload=workload.name, repeat=rep)
                run["measurements"].append(record)
                print(_progress(i, total, rep, workload, server, record, time.monotonic() - t0),
                      file=sys.stderr, flush=True)
                raw_path.write_text(json.dumps(run, indent=1))


def _keep_off_server_cpu():
    if os.cpu_count() and os.cpu_count() > CLIENT_CPU:
        os.sched_setaffinity(0, set(range(os.cpu_count())) - {SERVER_CPU})
    else:
        print("benchmarks: one CPU only: server and client share it, numbers mean little",
              file=sys.stderr)


def _start(argv, args, machine, kind=""):
    """A run's record, before any measurement, and the raw file it goes to."""
    started = datetime.now(timezone.utc)
    run = {
        "command": shlex.join(["python", "-m", "benchmarks", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine,
        "config": {"repeat": args.repeat, "duration": args.duration, "warmup": args.warmup,
                   "rate": args.rate, "quick": args.quick, "server_cpu": SERVER_CPU,
                   "client_cpu": CLIENT_CPU},
        "measurements": [],
    }
    if kind:
        run["kind"] = kind
    raw_dir = args.output / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    name = started.strftime("%Y%m%dT%H%M%SZ") + ("-" + kind if kind else "") + ".json"
    return run, raw_dir / name


def _announce(run, n_servers, n_workloads, repeat, total, estimate):
    print("benchmarks: %d servers x %d workloads x %d repeats = %d measurements, about %d:%02d min"
          % (n_servers, n_workloads, repeat, total, estimate // 60, estimate % 60),
          file=sys.stderr)
    for name, reason in run["skipped"].items():
        print("benchmarks: skipped %s: %s" % (name, reason), file=sys.stderr)
    load = run["machine"]["load_average_at_start"]
    if load is not None and load > BUSY_LOAD_AVERAGE:
        print("benchmarks: load average %.2f: other processes are busy, expect noisy numbers"
              % load, file=sys.stderr)


def _finish(run, raw_path, args, measure_all):
    try:
        measure_all()
    except KeyboardInterrupt:
        run["interrupted"] = True
        print("\nbenchmarks: interrupted; reporting what was measured", file=sys.stderr)
    run["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run["machine"]["load_average_at_end"] = environment.load_average()
    raw_path.write_text(json.dumps(run, indent=1))
    written = report.write(args.output, run, charts=not args.no_charts)
    print("benchmarks: raw results in %s" % raw_path, file=sys.stderr)
    for path in written:
        print("benchmarks: wrote %s" % path, file=sys.stderr)
    return 130 if run.get("interrupted") else 0


def main_real(args, argv, names):
    """The examples under wrk, redis-benchmark and iperf3 (benchmarks/real.py)."""
    servers, skipped, skipped_workloads = real.discover()
    chosen = _select([s.name for s in servers] + list(skipped), args.servers, "server")
    skipped = {n: r for n, r in skipped.items() if n in chosen}
    servers = [s for s in servers if s.name in chosen]
    workloads = [w for w in real.REAL_WORKLOADS if w.name in names]
    for w in workloads:
        if w.name in skipped_workloads:
            skipped[w.name] = skipped_workloads[w.name]
    workloads = [w for w in workloads if w.name not in skipped_workloads]
    _keep_off_server_cpu()
    real.tls.raise_fd_limit()
    machine = environment.describe()
    machine["tools"] = real.tool_versions()
    run, raw_path = _start(argv, args, machine, kind="real")
    run.update(servers=[s.name for s in servers], skipped=skipped,
               workloads=[{"name": w.name, "title": w.title, "unit": w.unit,
                           "per_cpu_unit": w.per_cpu_unit, "tool": w.tool,
                           "program": w.program, "pipeline": w.pipeline,
                           "targets": [list(t) for t in w.targets], "conns": w.conns,
                           "lower_is_better": w.lower_is_better} for w in workloads])
    total = args.repeat * sum(1 for w in workloads for s in servers if w.program in s.programs)
    estimate = int(real.estimate_seconds(servers, workloads, args.repeat, args.duration,
                                         args.warmup))
    _announce(run, len(servers), len(workloads), args.repeat, total, estimate)
    return _finish(run, raw_path, args, lambda: real.run_all(
        run, servers, workloads, args.repeat, args.duration, args.warmup,
        lambda: raw_path.write_text(json.dumps(run, indent=1))))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.report:
        for path in report.write(args.output, json.loads(args.report.read_text()),
                                 charts=not args.no_charts):
            print("benchmarks: wrote %s" % path, file=sys.stderr)
        return 0
    workloads = all_workloads(args.duration, args.warmup, args.rate, max_idle_conns(), args.quick)
    if args.workloads and not args.list:
        names = _select([w.name for w in workloads] + list(real.REAL_NAMES), args.workloads,
                        "workload", {"real": real.REAL_NAMES})
        real_names = [n for n in names if n in real.REAL_NAMES]
        if real_names and len(real_names) < len(names):
            raise SystemExit("the real workloads (%s) run in a run of their own"
                             % ", ".join(real.REAL_NAMES))
        if real_names:
            return main_real(args, argv, real_names)
    try:
        binaries = build_all()
    except BuildError as exc:
        print("benchmarks: cannot build the load generator: %s" % exc, file=sys.stderr)
        return 1
    servers, skipped = discover(binaries["c_epoll"], binaries["c_uring"])
    if args.list:
        print("servers:   " + ", ".join(s.name for s in servers))
        for name, reason in skipped.items():
            print("skipped:   %s (%s)" % (name, reason))
        print("workloads: " + ", ".join(w.name for w in workloads))
        servers, skipped, skipped_workloads = real.discover()
        print("real workloads (--workloads real): " + ", ".join(real.REAL_NAMES))
        print("real servers: " + ", ".join(s.name for s in servers))
        for name, reason in {**skipped, **skipped_workloads}.items():
            print("skipped:   %s (%s)" % (name, reason))
        return 0
    chosen = _select([s.name for s in servers] + list(skipped), args.servers, "server")
    skipped = {n: r for n, r in skipped.items() if n in chosen}
    servers = [s for s in servers if s.name in chosen]
    chosen = _select([w.name for w in workloads], args.workloads, "workload")
    workloads = [w for w in workloads if w.name in chosen]
    _keep_off_server_cpu()  # the harness itself stays off the server's core

    run, raw_path = _start(argv, args, environment.describe())
    run.update(servers=[s.name for s in servers], skipped=skipped,
               workloads=[{"name": w.name, "title": w.title, "metric": w.metric,
                           "unit": w.unit, "higher_is_better": w.higher_is_better,
                           "loadgen": [w.mode, *w.args]} for w in workloads])
    total = args.repeat * sum(s.runs(w.name) for w in workloads for s in servers)
    estimate = args.repeat * sum(w.seconds * sum(s.runs(w.name) for s in servers)
                                 for w in workloads)
    _announce(run, len(servers), len(workloads), args.repeat, total, estimate)
    return _finish(run, raw_path, args, lambda: _run_all(
        run, binaries["loadgen"], servers, workloads, args.repeat, raw_path))
