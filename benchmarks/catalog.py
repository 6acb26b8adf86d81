"""The echo servers measured, and which of them can run here.

A server whose dependency is missing, or a gaio engine that cannot run on
this machine, is reported as skipped with the reason, never as an error.
"""
import fnmatch
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from .build import HERE

SERVERS_DIR = HERE / "servers"
REPO = HERE.parent


@dataclass(frozen=True)
class Server:
    name: str             # command-line and table name
    argv: tuple           # the command, without --port
    group: str            # "gaio", "ceiling" or "baseline"
    needs: str = ""       # module that must be importable
    only: tuple = ()      # workload-name globs it runs (empty: every workload)

    @property
    def is_gaio(self):
        return self.group == "gaio"

    def runs(self, workload_name):
        return not self.only or any(fnmatch.fnmatch(workload_name, p) for p in self.only)


def _python(script, *args):
    return (sys.executable, str(SERVERS_DIR / script), *args)


# The batch_wait of the gaio-ENGINE-bwN servers, in microseconds.
BATCH_WAIT_US = 100
# The bufsize of the gaio-ENGINE-bufNk servers: uvloop's read size (its
# transports recv into a 256 KiB buffer); gaio's default is 64 KiB.
STREAM_BUFSIZE = 256 * 1024

# (name, script, module needed); in the order tables list them after gaio and C.
BASELINES = (
    ("uvloop-protocol", "uvloop_protocol.py", "uvloop"),
    ("uvloop-streams", "uvloop_streams.py", "uvloop"),
    ("rloop-protocol", "rloop_protocol.py", "rloop"),
    ("asyncio-protocol", "asyncio_protocol.py", ""),
    ("asyncio-buffered", "asyncio_buffered.py", ""),
    ("asyncio-streams", "asyncio_streams.py", ""),
    ("trio", "trio_server.py", "trio"),
    ("gevent", "gevent_server.py", "gevent"),
    ("threads", "threads_server.py", ""),
    ("selectors", "selectors_server.py", ""),
)
UVLOOP_PROTOCOL = "uvloop-protocol"  # the reference the project's targets are stated against
# rloop 0.5 in a fresh process serves its first hundred or so connections at a
# quarter of its speed (two sets of 50: 10-13k msgs/s, p50 3-4 ms; from the
# third set on 30-50k, uvloop's pace, in the same minute on this machine) and
# an unmeasured warm-up on the same connections does not help: only new
# connections do. Its steady state is what a long-running server sees, so it is
# measured after that. The others are not primed: none of them changes pace.
PRIMED = frozenset({"rloop-protocol"})


def server_env():
    """Servers import gaio from this checkout's src/ (native extension built in place)."""
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("GAIO_ENGINE", None)  # each gaio server names its engine
    return env


def gaio_engines():
    """{engine: None if it runs here, else the reason}, asked of the servers'
    interpreter, in gaio's order of preference (gaio.ENGINES); {"*": reason}
    when gaio cannot be asked."""
    probe = "import gaio, json; print(json.dumps(gaio.available_engines()))"
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=server_env(),
                              capture_output=True, text=True, timeout=60)
    except subprocess.SubprocessError as exc:
        return {"*": "probing gaio failed: %s" % exc}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = "gaio does not import: " + (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"*": reason}


def discover(c_epoll_binary, c_uring_binary=None):
    """(servers that can run, {skipped name: reason})."""
    servers, skipped = [], {}
    engines = gaio_engines()
    for engine in engines:
        name = "gaio-" + engine
        if engines[engine] is None:
            servers.append(Server(name, _python("gaio_server.py", "--engine", engine), "gaio"))
        else:
            skipped[name] = engines[engine]
    # Watcher(batch_wait=) trades latency for fewer wake-ups: it only matters
    # where the load is spread out in time, the fixed-rate workloads.
    for engine in engines:
        if engines[engine] is None and engine != "python":
            servers.append(Server("gaio-%s-bw%d" % (engine, BATCH_WAIT_US),
                                  _python("gaio_server.py", "--engine", engine, "--batch-wait",
                                          str(BATCH_WAIT_US / 1e6)), "gaio", only=("rate*",)))
    # A standing read's result holds at most bufsize bytes, so a bulk stream
    # costs a recv, a send and a result per bufsize: the stream workload shows
    # what Watcher(bufsize) buys there (the other workloads read less a time).
    for engine in engines:
        if engines[engine] is None:
            servers.append(Server("gaio-%s-buf%dk" % (engine, STREAM_BUFSIZE // 1024),
                                  _python("gaio_server.py", "--engine", engine, "--bufsize",
                                          str(STREAM_BUFSIZE)), "gaio", only=("stream",)))
    if c_epoll_binary is not None:
        servers.append(Server("c-epoll", (str(c_epoll_binary),), "ceiling"))
    if c_uring_binary is not None:
        # where gaio's io_uring probe refuses the kernel, the C server (which
        # needs more of it: multishot RECV, 6.0) cannot run either
        if engines.get("uring", "uring not probed") is None:
            servers.append(Server("c-uring", (str(c_uring_binary),), "ceiling"))
        else:
            skipped["c-uring"] = engines.get("uring") or engines.get("*", "uring not probed")
    for name, script, module in BASELINES:
        if module and importlib.util.find_spec(module) is None:
            skipped[name] = "%s is not installed (pip install '.[bench]')" % module
        else:
            servers.append(Server(name, _python(script), "baseline", module))
    return servers, skipped
