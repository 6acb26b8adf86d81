"""`python -m gaio demo`: an echo server on a Watcher, driven by a client process.

The server (see _demo_server) runs in this process; the load comes from
`python -m gaio._demo_client` in a child process over 127.0.0.1, so the two
sides do not share a GIL. The run has three phases:

1. the client opens every connection; the server accepts each one and leaves
   a read pending on it;
2. idle: both sides wait while this process measures its memory and threads,
   so the figure per connection is the cost of an idle connection with a
   pending read (gaio's use case: many connections, mostly idle);
3. load: the client keeps a few messages in flight on every connection for
   --duration seconds, checking every echoed byte, and reports its figures.
"""
import gc
import json
import os
import resource
import select
import subprocess
import sys
import threading
import time

from ._demo_server import EchoServer
from ._errors import EngineUnavailableError
from ._watcher import Watcher

IDLE_SETTLE = 0.5        # seconds all connections sit idle before memory is measured
STARTUP_TIMEOUT = 30.0   # for the client to start and connect, plus 1 s per 1000 connections


class DemoError(Exception):
    """A failure reported as one line, with a non-zero exit status."""


def proc_status(field):
    """An integer field of /proc/self/status ("VmRSS" in kB, "Threads"); None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise DemoError("%d connections need %d descriptors, but the hard limit is %d"
                            % (needed - 64, needed, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class ClientEvents:
    """The client's JSON-line events, read with a deadline (a hung client cannot hang us)."""

    def __init__(self, proc):
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.pending = b""

    def next(self, timeout):
        give_up_at = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = give_up_at - time.monotonic()
            if left <= 0:
                raise DemoError("the client process sent nothing for %.0f s" % timeout)
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    try:
                        code = "status %d" % self.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        code = "closed its output"
                    raise DemoError("the client process stopped (%s) before finishing" % code)
                self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        try:
            event = json.loads(line)
        except ValueError:
            raise DemoError("unexpected output from the client process: %r" % line[:200]) from None
        if event["event"] == "error":
            raise DemoError("client: " + event["message"])
        return event


def start_client(args, port, engine):
    command = [sys.executable, "-m", "gaio._demo_client", "--port", str(port),
               "--conns", str(args.conns), "--size", str(args.size),
               "--duration", str(args.duration), "--depth", str(args.depth),
               "--engine", engine]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def reap(proc):
    """Make sure the client process is gone and waited for, whatever happened."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        try:
            pipe.close()
        except OSError:
            pass  # the client left before reading "go": nothing to flush to


def wait_until_all_idle(server, conns, timeout):
    """Until the server has every connection, each with its read pending."""
    give_up_at = time.monotonic() + timeout
    while server.accepted < conns or server.watcher.stats()["pending"] < conns:
        if server.failure is not None:
            raise DemoError("server: %r" % server.failure)
        if time.monotonic() >= give_up_at:
            raise DemoError("the server accepted %d of %d connections in %.0f s"
                            % (server.accepted, conns, timeout))
        time.sleep(0.01)
    time.sleep(IDLE_SETTLE)


def wait_until_all_ended(server, conns, timeout):
    """Until the server has seen every connection end (the client closed them all)."""
    give_up_at = time.monotonic() + timeout
    while server.ended < conns:
        if server.failure is not None:
            raise DemoError("server: %r" % server.failure)
        if time.monotonic() >= give_up_at:
            raise DemoError("the server saw %d of %d connections end in %.0f s"
                            % (server.ended, conns, timeout))
        time.sleep(0.01)


class Progress:
    """One line, rewritten each second on a terminal, appended otherwise."""

    def __init__(self, stream):
        self.stream = stream
        self.rewrite = stream.isatty()
        self.shown = False

    def show(self, elapsed, msgs):
        text = "  running: %5.1f s  %12s messages echoed" % (elapsed, format(msgs, ","))
        self.stream.write(("\r" + text) if self.rewrite else (text + "\n"))
        self.stream.flush()
        self.shown = True

    def end(self):
        if self.rewrite and self.shown:
            self.stream.write("\n")


def measure_idle(server, conns, rss_before):
    gc.collect()
    rss_after = proc_status("VmRSS")
    return {
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_per_conn": (None if rss_before is None or rss_after is None
                         else (rss_after - rss_before) * 1024 / conns),
        "py_threads": threading.active_count(),
        "os_threads": proc_status("Threads"),
    }


def report(args, engine, client_engine, idle, result, stats):
    elapsed = result["elapsed"]
    rss = ("%.0f B  (VmRSS %s kB with no connection, %s kB with %d idle ones)"
           % (idle["rss_per_conn"], format(idle["rss_before_kb"], ","),
              format(idle["rss_after_kb"], ","), args.conns)
           if idle["rss_per_conn"] is not None else "n/a (no /proc/self/status)")
    lines = [
        ("engine", "%s  (client: %s)" % (engine, client_engine)),
        ("messages/s", format(round(result["msgs"] / elapsed), ",")),
        ("MB/s", "%.2f  (payload echoed, 1 MB = 10^6 B)" % (result["bytes"] / elapsed / 1e6)),
        ("latency p50", "%.3f ms" % (result["p50"] * 1e3)),
        ("latency p99", "%.3f ms" % (result["p99"] * 1e3)),
        ("RSS growth/conn", rss),
        ("server threads", "%d (threading.active_count), %s (/proc/self/status Threads)"
         % (idle["py_threads"], idle["os_threads"] if idle["os_threads"] else "n/a")),
        ("echoes checked", format(result["checked"], ",")),
        ("watcher stats", " ".join("%s=%s" % item for item in sorted(stats.items()))),
    ]
    print("results:")
    for label, value in lines:
        print("  %-16s %s" % (label + ":", value))


def run(args):
    """The demo; returns the exit status. Raises DemoError for a one-line failure."""
    raise_fd_limit(args.conns + 64)
    try:
        watcher = Watcher(args.bufsize, engine=args.engine)
    except (EngineUnavailableError, ValueError, TypeError) as exc:
        raise DemoError(str(exc)) from None
    engine = watcher.engine
    client_engine = engine if args.client_engine == "same" else args.client_engine
    server = EchoServer(watcher)
    server.start()
    proc = None
    try:
        print("gaio demo: echo server on engine %r at 127.0.0.1:%d; client process: "
              "%d connections, %d-byte messages, %d in flight per connection, %g s"
              % (engine, server.port, args.conns, args.size, args.depth, args.duration))
        sys.stdout.flush()
        gc.collect()
        rss_before = proc_status("VmRSS")
        proc = start_client(args, server.port, client_engine)
        events = ClientEvents(proc)

        connected = events.next(STARTUP_TIMEOUT + args.conns / 1000)
        client_engine = connected["engine"]
        print("  client pid %d (engine %s) connected; idle for %.1f s, then load"
              % (proc.pid, client_engine, IDLE_SETTLE))
        sys.stdout.flush()
        wait_until_all_idle(server, args.conns, STARTUP_TIMEOUT + args.conns / 1000)
        idle = measure_idle(server, args.conns, rss_before)
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # the client is gone: the next event read reports how it ended

        progress = Progress(sys.stdout)
        try:
            while True:
                event = events.next(args.duration + STARTUP_TIMEOUT)
                if event["event"] != "progress":
                    break
                progress.show(event["elapsed"], event["msgs"])
                if server.failure is not None:
                    raise DemoError("server: %r" % server.failure)
        finally:
            progress.end()
        if proc.wait(timeout=STARTUP_TIMEOUT) != 0:
            raise DemoError("the client process exited with status %d" % proc.returncode)
        wait_until_all_ended(server, args.conns, STARTUP_TIMEOUT)
        stats = watcher.stats()
    finally:
        if proc is not None:
            reap(proc)
        server.stop()
    if server.failure is not None:
        raise DemoError("server: %r" % server.failure)
    report(args, engine, client_engine, idle, event, stats)
    return 0
