"""Turn a run's measurements into BENCHMARKS.md, one PNG chart per workload.

Every figure is the median over the repeats, with min-max beside it in the
per-workload tables. Flags mark numbers to read with care: `client-bound`
(the load generator was over 90% busy, so the server may be faster than
shown), `CPU contended` (a closed-loop run where neither the server nor the
client was 70% busy: something else had the CPU), `fell behind` (the fixed-rate run did not get its offered rate), a
count of failed repeats.
"""
import statistics
from pathlib import Path

from .catalog import UVLOOP_PROTOCOL

CLIENT_BUSY_LIMIT = 0.9
CONTENDED_BUSY = 0.7  # closed loop with neither side this busy: another process had the CPU


def _flatten(record, prefix=""):
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix + key] = float(value)
    return flat


class Cell:
    """All repeats of one workload against one server."""

    def __init__(self, records, workload):
        self.records = records
        self.ok = [_flatten(r) for r in records if "error" not in r]
        self.errors = [r["error"] for r in records if "error" in r]
        self.workload = workload
        self.flags = []
        # Idle runs time nothing that matters: a busy client there is no flaw.
        if workload["loadgen"][0] != "idle" and any(
                r.get("client_busy", 0) > CLIENT_BUSY_LIMIT for r in self.ok):
            self.flags.append("client-bound")
        if self.closed_loop and any(r.get("server_busy", 1) < CONTENDED_BUSY
                                    and r.get("client_busy", 1) < CONTENDED_BUSY for r in self.ok):
            self.flags.append("CPU contended")
        rate = self.offered_rate
        if rate is not None and any(
                r.get("msgs_per_s", 0) < 0.95 * rate or r.get("dropped", 0) > 0 for r in self.ok):
            self.flags.append("fell behind")
        if any(r.get("peer_closed", 0) > 0 for r in self.ok):
            self.flags.append("server closed idle conns")
        if self.errors:
            self.flags.append("%d/%d failed" % (len(self.errors), len(records)))

    @property
    def offered_rate(self):
        """The msgs/s a fixed-rate workload offers (its --rate); None for the others."""
        args = self.workload["loadgen"]
        return float(args[args.index("--rate") + 1]) if "--rate" in args else None

    @property
    def closed_loop(self):
        """rr without --rate, and stream: either the server or the client should be saturated."""
        args = self.workload["loadgen"]
        return args[0] == "stream" or (args[0] == "rr" and "--rate" not in args)

    def values(self, key):
        return [r[key] for r in self.ok if key in r]

    def median(self, key):
        vals = self.values(key)
        return statistics.median(vals) if vals else None

    def spread(self, key):
        vals = self.values(key)
        return (min(vals), max(vals)) if vals else None


def summarize(run, make_cell=Cell):
    """{(server, workload name): make_cell(records, workload)} of what was measured."""
    cells = {}
    for wl in run["workloads"]:
        for server in run["servers"]:
            records = [m for m in run["measurements"]
                       if m["server"] == server and m["workload"] == wl["name"]]
            if records:
                cells[server, wl["name"]] = make_cell(records, wl)
    return cells


# ---- number formatting --------------------------------------------------

def fmt(value, kind):
    if value is None:
        return "–"
    if kind == "count":
        return format(round(value), ",")
    if kind == "bytes":
        return format(round(value), ",")
    if kind == "us":
        return "%.1f" % value if value < 100 else format(round(value), ",")
    if kind == "s":
        return "%.3f" % value
    if kind == "percent":
        return "%.0f%%" % (100 * value)
    if kind == "ratio":  # small ones (idle TLS ÷ asyncio, target 0.067×) with a third digit
        return "%.2f×" % value if value >= 0.1 else "%.3f×" % value
    return "%.3g" % value if value < 100 else format(round(value), ",")


def fmt_range(cell, key, kind):
    med = cell.median(key)
    if med is None:
        return "–"
    lo, hi = cell.spread(key)
    if len(cell.values(key)) < 2:
        return fmt(med, kind)
    return "%s (%s–%s)" % (fmt(med, kind), fmt(lo, kind), fmt(hi, kind))


METRIC_KIND = {"msgs_per_s": "count", "mb_per_s": "count", "server_cpu_us_per_msg": "us",
               "seconds": "s", "rss_per_conn": "bytes"}


def one_line(workload, record):
    """The progress display's summary of one measurement."""
    r = _flatten(record)
    busy = "  client busy %.0f%%" % (100 * r["client_busy"]) if "client_busy" in r else ""
    if "server_busy" in r:
        busy = "  server busy %.0f%%%s" % (100 * r["server_busy"], busy)
    if workload.is_idle:
        return "RSS %+.0f B/conn  threads %d  fds %d" % (
            r["rss_per_conn"], r["server_threads"], r["server_fds"])
    if workload.mode == "burst":
        return "%.3f s  p99 done %.0f ms%s" % (r["seconds"], r["done_ms.p99"], busy)
    if workload.mode == "stream":
        return "%s MB/s  server %s µs/MB%s" % (fmt(r["mb_per_s"], "count"),
                                               fmt(r.get("server_cpu_us_per_mb"), "us"), busy)
    return "%s msgs/s  p50 %s µs  p99 %s µs  server %s µs/msg%s" % (
        fmt(r["msgs_per_s"], "count"), fmt(r["latency_us.p50"], "us"),
        fmt(r["latency_us.p99"], "us"), fmt(r.get("server_cpu_us_per_msg"), "us"), busy)


# ---- markdown -----------------------------------------------------------

def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


DETAIL_COLUMNS = {
    # mode: [(heading, key, kind)]
    "rr": [("msgs/s", "msgs_per_s", "count"), ("p50 µs", "latency_us.p50", "us"),
           ("p99 µs", "latency_us.p99", "us"), ("p99.9 µs", "latency_us.p999", "us"),
           ("server CPU µs/msg", "server_cpu_us_per_msg", "us"),
           ("server busy", "server_busy", "percent"), ("threads", "server_threads", "count")],
    "stream": [("MB/s", "mb_per_s", "count"), ("server CPU µs/MB", "server_cpu_us_per_mb", "us"),
               ("server busy", "server_busy", "percent"), ("threads", "server_threads", "count")],
    "burst": [("seconds", "seconds", "s"), ("p50 done ms", "done_ms.p50", "us"),
              ("p99 done ms", "done_ms.p99", "us"), ("server CPU s", "server_cpu_s", "s"),
              ("peak RSS bytes", "server_peak_rss", "bytes")],
    "idle": [("RSS bytes/conn", "rss_per_conn", "bytes"), ("RSS before", "rss_before", "bytes"),
             ("RSS after", "rss_after", "bytes"), ("threads", "server_threads", "count"),
             ("descriptors", "server_fds", "count"), ("setup s", "seconds", "s")],
}


def _loadgen_mode(wl):
    return wl["loadgen"][0]


def _summary_section(run, cells):
    wls = run["workloads"]
    header = ["server"] + ["%s<br>%s" % (wl["title"], wl["unit"]) for wl in wls]
    idle = [wl for wl in wls if _loadgen_mode(wl) == "idle"]
    if idle:
        header.append("threads<br>(%s)" % idle[-1]["title"])
    rows = []
    for server in run["servers"]:
        row = ["**%s**" % server if server.startswith("gaio-") else server]
        for wl in wls:
            cell = cells.get((server, wl["name"]))
            if cell is None:
                row.append("–")
                continue
            text = fmt(cell.median(wl["metric"]), METRIC_KIND.get(wl["metric"], "count"))
            row.append(text + (" †" if cell.flags else ""))
        if idle:
            cell = cells.get((server, idle[-1]["name"]))
            row.append(fmt(cell.median("server_threads"), "count") if cell else "–")
        rows.append(row)
    return _table(header, rows)


def _ratio_section(run, cells):
    gaio = [s for s in run["servers"] if s.startswith("gaio-")]
    if not gaio or UVLOOP_PROTOCOL not in run["servers"]:
        return None
    wls = run["workloads"]
    header = ["gaio engine"] + ["%s<br>%s ratio" % (wl["title"], wl["unit"]) for wl in wls]
    rows = []
    for server in gaio:
        row = ["**%s** ÷ %s" % (server, UVLOOP_PROTOCOL)]
        for wl in wls:
            mine = cells.get((server, wl["name"]))
            ref = cells.get((UVLOOP_PROTOCOL, wl["name"]))
            a = mine.median(wl["metric"]) if mine else None
            b = ref.median(wl["metric"]) if ref else None
            row.append(fmt(a / b, "ratio") if a is not None and b else "–")
        rows.append(row)
    return _table(header, rows)


def _detail_section(run, wl, cells):
    columns = DETAIL_COLUMNS[_loadgen_mode(wl)]
    header = ["server"] + [c[0] for c in columns] + ["client busy", "flags"]
    rows = []
    for server in run["servers"]:
        cell = cells.get((server, wl["name"]))
        if cell is None:
            continue
        row = [server] + [fmt_range(cell, key, kind) for _, key, kind in columns]
        row.append(fmt(cell.median("client_busy"), "percent"))
        row.append(", ".join(cell.flags))
        rows.append(row)
    return _table(header, rows)


def _load(value):
    return "%.2f" % value if value is not None else "?"


def _setup_section(run):
    m = run["machine"]
    pk = m["packages"]
    cfg = run["config"]
    lines = [
        "- Command: `%s`" % run["command"],
        "- Run: %s – %s UTC%s" % (run["started"], run.get("finished", "unfinished"),
                                  " (interrupted: incomplete)" if run.get("interrupted") else ""),
        "- Machine: %s, %d cores, %s %s" % (m["cpu_model"], m["cores"], m["os"], m["kernel"]),
        "- Python %s (%s); %s" % (m["python"], m["python_implementation"], ", ".join(
            "%s %s" % (name, pk.get(name) or "not installed") for name in pk)),
        "- Load generator and C server built with: %s" % m["cc"],
        "- 1-minute load average at start / end (includes the run itself at the end): %s / %s"
        % (_load(m.get("load_average_at_start")), _load(m.get("load_average_at_end"))),
        "- Each measurement: a fresh server pinned to CPU %d, the load generator (benchmarks/loadgen.c, "
        "one thread, epoll) pinned to CPU %d; %d repeat(s), interleaved across servers; "
        "rr/stream runs measure %g s after %g s warm-up. Figures are medians; "
        "min–max in the detail tables." % (cfg["server_cpu"], cfg["client_cpu"], cfg["repeat"],
                                          cfg["duration"], cfg["warmup"]),
    ]
    return "\n".join(lines)


def markdown(run, cells, charts):
    parts = ["# gaio benchmarks", "", _setup_section(run), ""]
    if run["skipped"]:
        parts += ["Skipped (not runnable here):", ""]
        parts += ["- %s: %s" % (n, r) for n, r in run["skipped"].items()]
        parts.append("")
    parts += ["## Summary", "",
              "Medians. Higher is better for msgs/s and MB/s; lower for CPU µs/msg, seconds "
              "and RSS bytes per connection. † marks a flag in the detail table below "
              "(client-bound, CPU contended, fell behind, failures).", "",
              _summary_section(run, cells), ""]
    ratios = _ratio_section(run, cells)
    if ratios:
        parts += ["## gaio vs uvloop Protocol", "",
                  "Ratio of medians, gaio engine ÷ uvloop Protocol, per workload: above 1× "
                  "gaio is faster in msgs/s and MB/s; below 1× it uses less CPU per message, "
                  "finishes the burst sooner, or holds an idle connection in less memory.", "",
                  ratios, ""]
    parts += ["## Workloads", "",
              "- **rr**: each connection sends a request and waits for the whole echo before "
              "the next; msgs/s counts echoes completed; latency is per request.",
              "- **stream**: 64 KiB blocks sent continuously (at most 256 KiB unanswered per "
              "connection); MB/s counts echoed bytes (one direction).",
              "- **fixed rate** (10,000 and 50,000 msgs/s by default): the same offered load for "
              "every server (requests on a fixed schedule; latency from the scheduled send time), "
              "to compare server CPU per message; `fell behind` marks a server that did not get "
              "95% of it through.",
              "- **burst**: all connections opened at once (listen backlog 4096), 1 KiB echoed "
              "on each, then closed; seconds until the last one is done.",
              "- **idle**: N connections, each serviced once then held; RSS growth of the server "
              "divided by N (one-time allocations are included, so the 1,000-connection figure "
              "overstates), with the server's thread and descriptor counts.",
              "",
              "*server busy* is the server's CPU time over the window's wall time. In the "
              "closed-loop rr and stream runs a server should be near 100% busy unless the "
              "client is: when neither is, something else took the CPU (a noisy machine).", ""]
    for wl in run["workloads"]:
        parts += ["### %s" % wl["title"], "", _detail_section(run, wl, cells), ""]
        if wl["name"] in charts:
            parts += ["![%s](%s)" % (wl["title"], charts[wl["name"]]), ""]
    failures = [(m["server"], m["workload"], m["repeat"], m["error"])
                for m in run["measurements"] if "error" in m]
    if failures:
        parts += ["## Failures", ""]
        parts += ["- %s, %s, repeat %d: %s" % f for f in failures]
        parts.append("")
    return "\n".join(parts)


# ---- charts -------------------------------------------------------------

GROUP_COLOURS = {"gaio": "#1f77b4", "c-epoll": "#2ca02c", "c-uring": "#98df8a", "other": "#9a9a9a"}


def _colour(server):
    if server.startswith("gaio-"):
        return GROUP_COLOURS["gaio"]
    return GROUP_COLOURS.get(server, GROUP_COLOURS["other"])


def write_charts(out_dir, run, cells):
    """{workload: file name} of the charts written; {} without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("benchmarks: matplotlib is not installed: no charts (pip install matplotlib)")
        return {}
    written = {}
    m = run["machine"]
    for wl in run["workloads"]:
        names, meds, lows, highs = [], [], [], []
        for server in run["servers"]:
            cell = cells.get((server, wl["name"]))
            med = cell.median(wl["metric"]) if cell else None
            if med is None:
                continue
            lo, hi = cell.spread(wl["metric"])
            names.append(server)
            meds.append(med)
            lows.append(med - lo)
            highs.append(hi - med)
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.42 * len(names) + 1.4))
        ys = range(len(names))
        ax.barh(ys, meds, xerr=[lows, highs], color=[_colour(n) for n in names],
                ecolor="#333333", capsize=3)
        kind = METRIC_KIND.get(wl["metric"], "count")
        for y, med, high in zip(ys, meds, highs):
            ax.text(med + high, y, "  " + fmt(med, kind), va="center", fontsize=8)
        ax.set_xlim(0, max(m + h for m, h in zip(meds, highs)) * 1.18 or 1)
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        better = "higher is better" if wl["higher_is_better"] else "lower is better"
        ax.set_xlabel("%s (%s; median, min–max)" % (wl["unit"], better))
        ax.set_title("%s\n%s, %d cores, Linux %s" % (wl["title"], m["cpu_model"], m["cores"],
                                                     m["kernel"]), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        name = "%s.png" % wl["name"]
        fig.savefig(Path(out_dir) / name, dpi=110)
        plt.close(fig)
        written[wl["name"]] = name
    return written


# ---- the real workloads (python -m benchmarks --workloads real) ------------

REAL_BEGIN = "<!-- real workloads: begin (written by --workloads real; kept by other runs) -->"
REAL_END = "<!-- real workloads: end -->"
REAL_REFERENCES = ("uvloop-protocol", "asyncio-protocol", "redis-server")


class RealCell:
    """All repeats of one real workload against one server."""

    def __init__(self, records):
        self.ok = [r for r in records if "error" not in r]
        self.errors = [r["error"] for r in records if "error" in r]
        self.flags = []
        timed = [r for r in self.ok if "client_busy" in r]  # not the idle TLS runs
        if any(r["client_busy"] > CLIENT_BUSY_LIMIT for r in timed):
            self.flags.append("client-bound")
        if any(r["server_busy"] < CONTENDED_BUSY and r["client_busy"] < CONTENDED_BUSY
               for r in timed):
            self.flags.append("CPU contended")
        lost = sum(r.get("lost", 0) for r in self.ok)
        if lost:
            self.flags.append("%d queries lost" % lost)
        if self.errors:
            self.flags.append("%d/%d failed" % (len(self.errors), len(records)))

    def values(self, key):
        return [r[key] for r in self.ok if r.get(key) is not None]

    def median(self, key):
        vals = self.values(key)
        return statistics.median(vals) if vals else None

    def text(self, key, kind):
        vals = self.values(key)
        if not vals:
            return "–"
        med = statistics.median(vals)
        if len(vals) < 2:
            return fmt(med, kind)
        return "%s (%s–%s)" % (fmt(med, kind), fmt(min(vals), kind), fmt(max(vals), kind))


def _real_cells(run):
    return summarize(run, lambda records, wl: RealCell(records))


def _real_ratio(cells, server, reference, workload):
    """(wall-clock ratio, per-CPU-second ratio) of medians, or None where missing."""
    mine, ref = cells.get((server, workload)), cells.get((reference, workload))
    if mine is None or ref is None:
        return None
    out = []
    for key in ("rate", "per_cpu"):
        a, b = mine.median(key), ref.median(key)
        out.append(a / b if a is not None and b else None)
    return tuple(out)


def _ratio_text(pair):
    if pair is None:
        return "–"
    return " / ".join(fmt(x, "ratio") if x is not None else "–" for x in pair)


def real_ratio_table(run, cells):
    """Rows: workload ÷ reference; columns: gaio engines; cells: wall / per CPU-s."""
    gaio = [s for s in run["servers"] if s.startswith("gaio-")]
    header = ["gaio ÷ reference<br>(requests/s or Gbit/s / per server CPU-s; "
              "idle: bytes per connection)"] + [
        "**%s**" % s for s in gaio]
    rows = []
    for wl in run["workloads"]:
        for ref in REAL_REFERENCES:
            if (ref, wl["name"]) not in cells:
                continue
            target = dict((r, t) for r, t in wl["targets"]).get(ref)
            label = "%s ÷ %s" % (wl["title"], ref)
            if target and wl.get("lower_is_better"):
                label += " (target ≤ %.2g×)" % target
            elif target:
                label += " (target ≥ %.1f×)" % target
            rows.append([label] + [_ratio_text(_real_ratio(cells, s, ref, wl["name"]))
                                   for s in gaio])
    return _table(header, rows)


# The latencies each client reports: iperf3 and openssl s_time none, dnsperf only a mean.
REAL_LATENCY = {"wrk": (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")),
                "redis-benchmark": (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")),
                "dnsperf": (("mean ms", "avg_ms"),),
                "tls_loadgen": (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"))}


def _real_idle_detail(run, wl, cells):
    """The idle TLS workloads: memory, threads, descriptors; no rate."""
    header = ["server", "bytes per connection", "server threads", "server descriptors",
              "all connected in s", "flags"]
    rows = []
    for server in run["servers"]:
        cell = cells.get((server, wl["name"]))
        if cell is None:
            continue
        name = "**%s**" % server if server.startswith("gaio-") else server
        rows.append([name, cell.text("rate", "count"), fmt(cell.median("server_threads"), "count"),
                     fmt(cell.median("server_fds"), "count"), fmt(cell.median("connect_s"), "s"),
                     ", ".join(cell.flags)])
    return _table(header, rows)


def _real_detail(run, wl, cells):
    if wl.get("lower_is_better"):
        return _real_idle_detail(run, wl, cells)
    latency = REAL_LATENCY.get(wl["tool"], ())
    kind = "num" if wl["program"] == "proxy" else "count"
    header = ["server", wl["unit"], wl["per_cpu_unit"]] + [title for title, _ in latency] + [
        "server CPU s", "server busy", "client busy", "flags"]
    rows = []
    for server in run["servers"]:
        cell = cells.get((server, wl["name"]))
        if cell is None:
            continue
        name = "**%s**" % server if server.startswith("gaio-") else server
        row = [name, cell.text("rate", kind), cell.text("per_cpu", kind)]
        row += [cell.text(key, "num") for _, key in latency]
        row += [fmt(cell.median("server_cpu_s"), "s"), fmt(cell.median("server_busy"), "percent"),
                fmt(cell.median("client_busy"), "percent"), ", ".join(cell.flags)]
        rows.append(row)
    return _table(header, rows)


def _real_setup(run):
    m = run["machine"]
    cfg = run["config"]
    pk = m["packages"]
    tools = m.get("tools", {})
    lines = [
        "- Command: `%s`" % run["command"],
        "- Run: %s – %s UTC%s" % (run["started"], run.get("finished", "unfinished"),
                                  " (interrupted: incomplete)" if run.get("interrupted") else ""),
        "- Machine: %s, %d cores, %s %s" % (m["cpu_model"], m["cores"], m["os"], m["kernel"]),
        "- Python %s (%s); %s" % (m["python"], m["python_implementation"], ", ".join(
            "%s %s" % (name, pk.get(name) or "not installed") for name in pk)),
        "- Clients: %s" % "; ".join("%s" % (v or "%s not installed" % k)
                                    for k, v in tools.items()),
        "- 1-minute load average at start / end: %s / %s"
        % (_load(m.get("load_average_at_start")), _load(m.get("load_average_at_end"))),
        "- Each measurement: a fresh server pinned to CPU %d, the client pinned to CPU %d "
        "(the proxy's iperf3 server too), both before exec; %d repeat(s), interleaved across "
        "servers; %g s measured (wrk and iperf3: whole seconds) after a %g s warm-up run of "
        "the same client (none for iperf3). Server CPU from /proc/PID/stat over the measured "
        "client's run. Figures are medians, min–max in brackets."
        % (cfg["server_cpu"], cfg["client_cpu"], cfg["repeat"], cfg["duration"],
           cfg["warmup"]),
    ]
    if run["workloads"] and all(wl["tool"] == "tls_loadgen" for wl in run["workloads"]):
        lines[-1] = (
            "- Each measurement: a fresh server pinned to CPU %d, tls_loadgen pinned to CPU %d "
            "before exec; %d repeat(s), interleaved across servers; every connection "
            "handshaken, then a %g s warm-up and %g s measured in the same connections. "
            "Server CPU read by tls_loadgen from /proc/PID/task/*/schedstat over the measured "
            "window. Figures are medians, min–max in brackets."
            % (cfg["server_cpu"], cfg["client_cpu"], cfg["repeat"], cfg["warmup"],
               cfg["duration"]))
    return "\n".join(lines)


REAL_INTRO = (
        "gaio's examples (examples/http_server.py, resp_server.py, proxy.py, dns_server.py; "
        "`GAIO_ENGINE` per engine) against the same programs written as asyncio Protocols "
        "(benchmarks/servers/http_protocol.py, resp_protocol.py, proxy_protocol.py, "
        "dns_protocol.py, a DatagramProtocol: the same "
        "parser, commands and response bytes, the same 256 KiB back-pressure) on uvloop "
        "(`uvloop-protocol`) and on asyncio (`asyncio-protocol`), and `redis-server` (no "
        "persistence) as the RESP ceiling. HTTP: `wrk -t 1 -c 100 GET /` (keep-alive). RESP: "
        "`redis-benchmark -t get -c 50` with `-P 16` and without pipelining, the key set "
        "first so every reply is a 3-byte value. Proxy: `iperf3 -c` through the proxy to an "
        "`iperf3 -s`, one stream, client to server. DNS: `dnsperf -c 4 -q 100` (4 sockets, "
        "at most 100 queries in flight) asking A and AAAA of names the zone has and A of one "
        "it lacks (NXDOMAIN), in turn; every answer under 512 bytes; and the same at a fixed "
        "rate (`dnsperf -Q`, below every responder's maximum), where the figure to read is "
        "queries per server CPU-second (its inverse is the server's CPU per datagram).")
TLS_INTRO = (
        "The HTTP example with `--tls` (examples/http_server.py: a server-side `start_tls` per "
        "connection) against benchmarks/servers/http_protocol.py with `create_server(ssl="
        "context)` on uvloop and asyncio, the same context (ALPN http/1.1) and one ECDSA "
        "P-256 certificate for all: `wrk -t 1 -c 100` over https (keep-alive: a handshake per "
        "connection, then requests); `openssl s_time -new` (a full handshake per connection, "
        "one connection at a time: a ping-pong between the two cores, so neither side is "
        "busy); and benchmarks/tls_idle_client.py holding N handshaken connections, each "
        "served one `GET /`, the server's RSS growth per connection (lower is better: the "
        "targets are highest ratios). A gaio engine whose `start_tls` is not there yet is "
        "skipped for these, saying so.")
TLS_ECHO_INTRO = (
        "The echo servers of the echo tables (benchmarks/servers/gaio_server.py: a standing "
        "accept, a server-side `start_tls` and a standing read per connection, each "
        "decrypted view written back quiet; asyncio_protocol.py with `create_server(ssl="
        "context)` on uvloop and asyncio) with one ECDSA P-256 certificate and the same "
        "default server context, under tls_loadgen (benchmarks/loadgen.c built with OpenSSL: "
        "one thread, epoll, every echoed byte checked): all connections handshaken first, "
        "not measured; then each sends a request and waits for its whole echo before the "
        "next. rloop is not among them: rloop 0.5's `create_server(ssl=)` raises "
        "NotImplementedError.")


def real_markdown(run, begin=None, end=None, title=None, intro=REAL_INTRO):
    begin, end = begin or REAL_BEGIN, end or REAL_END
    title = title or "Real servers: the examples under wrk, redis-benchmark, iperf3, dnsperf"
    cells = _real_cells(run)
    parts = [begin, "## " + title, "", _real_setup(run), ""]
    if run["skipped"]:
        parts += ["Skipped (not runnable here): " + "; ".join(
            "%s: %s" % (n, r) for n, r in run["skipped"].items()), ""]
    parts += [
        intro, "",
        "Ratio of medians, gaio engine ÷ reference, as *wall-clock rate / per server "
        "CPU-second*: above 1× gaio serves more requests (bytes) per second, or per second of "
        "its core. When the two disagree, a stall took the server's core or the client "
        "limited the run (flags below): read the per-CPU-second one.", "",
        real_ratio_table(run, cells), ""]
    for wl in run["workloads"]:
        parts += ["### %s" % wl["title"], "", _real_detail(run, wl, cells), ""]
    failures = [(m["server"], m["workload"], m["repeat"], m["error"])
                for m in run["measurements"] if "error" in m]
    if failures:
        parts += ["Failures:", ""] + ["- %s, %s, repeat %d: %s" % f for f in failures] + [""]
    parts.append(end)
    return "\n".join(parts)


TLS_BEGIN = "<!-- TLS workloads: begin (written by --workloads real with TLS; kept by other runs) -->"
TLS_END = "<!-- TLS workloads: end -->"
TLS_TITLE = "TLS: the HTTP example with --tls under wrk, openssl s_time, idle connections"
TLS_ECHO_BEGIN = ("<!-- TLS echo workloads: begin (written by --workloads real with tls-rr*; "
                  "kept by other runs) -->")
TLS_ECHO_END = "<!-- TLS echo workloads: end -->"
TLS_ECHO_TITLE = "TLS echo: request/response under tls_loadgen"

# A real run's workloads fall into these sections by program, each between its
# own two comments, so that a run of some keeps the others' tables:
# (programs, begin, end, title, intro); the first takes every other program.
REAL_SECTIONS = (
    ((), REAL_BEGIN, REAL_END, None, REAL_INTRO),
    (("https",), TLS_BEGIN, TLS_END, TLS_TITLE, TLS_INTRO),
    (("tls-echo",), TLS_ECHO_BEGIN, TLS_ECHO_END, TLS_ECHO_TITLE, TLS_ECHO_INTRO),
)


def _real_section(text, begin=REAL_BEGIN, end=REAL_END):
    """The section between `begin` and `end` of an existing BENCHMARKS.md, or ""."""
    a, b = text.find(begin), text.find(end)
    return text[a:b + len(end)] if a >= 0 and b > a else ""


def _section_of(program):
    for i, (programs, *_) in enumerate(REAL_SECTIONS):
        if program in programs:
            return i
    return 0


def _real_sections(run):
    """[(begin, end, markdown)]: the sections of REAL_SECTIONS this run has
    workloads in (a run without any writes the plain one)."""
    out = []
    ran = {_section_of(wl["program"]) for wl in run["workloads"]} or {0}
    for i, (_, begin, end, title, intro) in enumerate(REAL_SECTIONS):
        if i not in ran:
            continue
        wls = [wl for wl in run["workloads"] if _section_of(wl["program"]) == i]
        names = {wl["name"] for wl in wls}
        part = dict(run, workloads=wls,
                    measurements=[m for m in run["measurements"] if m["workload"] in names])
        out.append((begin, end, real_markdown(part, begin, end, title, intro)))
    return out


def write(out_dir, run, charts=True):
    """Write BENCHMARKS.md (and charts). A real run replaces only its own
    section of the file; an echo run rewrites the rest and keeps that section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "BENCHMARKS.md"
    old = md_path.read_text() if md_path.exists() else ""
    if run.get("kind") == "real":
        text = old
        for begin, end, section in _real_sections(run):
            kept = _real_section(text, begin, end)
            if kept:
                text = text.replace(kept, section)
            else:
                text = (text.rstrip("\n") + "\n\n" if text else "# gaio benchmarks\n\n") + section
        md_path.write_text(text.rstrip("\n") + "\n")
        return [md_path]
    cells = summarize(run)
    chart_files = write_charts(out_dir, run, cells) if charts else {}
    text = markdown(run, cells, chart_files)
    for _, begin, end, _, _ in REAL_SECTIONS:
        kept = _real_section(old, begin, end)
        if kept:
            text = text.rstrip("\n") + "\n\n" + kept + "\n"
    md_path.write_text(text)
    return [md_path] + [out_dir / f for f in chart_files.values()]
