"""The workloads: what the load generator is asked to do against every server."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    name: str              # command-line and file name
    title: str             # table heading
    mode: str              # loadgen mode
    args: tuple            # loadgen arguments besides --port/--server-pid
    metric: str            # the headline number (a key of the measurement)
    unit: str
    higher_is_better: bool
    seconds: float         # rough wall time, for the progress estimate
    idle_conns: int = 0    # idle workloads: connections held

    @property
    def is_idle(self):
        return self.mode == "idle"


def _num(x):
    return ("%g" % x)


# The second fixed rate. At 10,000 msgs/s over 50 connections a server mostly
# wakes up for one message at a time, so its CPU per message is largely the
# cost of a wake-up; at 50,000 several messages share one, and the figure is
# closer to the cost of a message itself. A server that cannot keep up is
# flagged "fell behind" by the report.
HIGH_RATE = 50000


def _rate(name, rate, timed, run_s):
    return Workload(name, "fixed rate %s msgs/s, 64 B x 50 conns" % format(int(rate), ","), "rr",
                    ("--conns", "50", "--size", "64", "--rate", _num(rate), *timed),
                    "server_cpu_us_per_msg", "server CPU µs/msg", False, run_s)


def all_workloads(duration, warmup, rate, max_idle_conns, quick=False):
    """Every workload, in run order. `rate` is the offered msgs/s of the
    "rate" workload ("rate50k" offers HIGH_RATE); `quick` shrinks burst and
    idle for a smoke run."""
    timed = ("--duration", _num(duration), "--warmup", _num(warmup))
    burst_conns = 2048 if quick else 8192
    idle_counts = [1000] if quick else [1000, 10000, max_idle_conns]
    run_s = duration + warmup + 0.2  # + connecting and starting the server
    workloads = [
        Workload("rr64", "rr 64 B x 50 conns", "rr",
                 ("--conns", "50", "--size", "64", *timed),
                 "msgs_per_s", "msgs/s", True, run_s),
        Workload("rr1k", "rr 1 KiB x 500 conns", "rr",
                 ("--conns", "500", "--size", "1024", *timed),
                 "msgs_per_s", "msgs/s", True, run_s),
        Workload("stream", "stream 64 KiB blocks x 4 conns", "stream",
                 ("--conns", "4", *timed),
                 "mb_per_s", "MB/s", True, run_s),
        _rate("rate", rate, timed, run_s),
        _rate("rate50k", HIGH_RATE, timed, run_s),
        Workload("burst", "burst %s conns x 1 KiB" % format(burst_conns, ","), "burst",
                 ("--conns", str(burst_conns), "--size", "1024", "--timeout", "30"),
                 "seconds", "s", False, 1.5),
    ]
    for n in idle_counts:
        workloads.append(Workload(
            "idle%d" % n, "idle %s conns" % format(n, ","), "idle",
            ("--conns", str(n), "--size", "64", "--timeout", "60"),
            "rss_per_conn", "bytes RSS/conn", False, 0.3 + n / 7000, idle_conns=n))
    return workloads
