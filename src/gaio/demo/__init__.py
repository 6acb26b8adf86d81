"""`python -m gaio demo`: an echo server on a Watcher, driven by a client process.

The server (see gaio.demo.server) runs in this process; the load comes from
`python -m gaio.demo.client` in a child process over 127.0.0.1, so the two
sides do not share a GIL. The run goes in three phases:

1. connect: the client opens half of its connections; the server accepts each
   one and leaves a read pending on it; after a moment idle this process reads
   its memory; then the same again for the other half, and the threads are
   counted. The growth over the second half, per connection, is the cost of
   one more idle connection with a pending read (gaio's use case: many
   connections, mostly idle), free of one-time costs paid by the first ones;
2. load: the client keeps a few messages in flight on every connection for
   --duration seconds, checks every echoed byte, and reports its figures;
3. shutdown: the client closes its watcher, the server frees every connection
   at EOF, then its threads are joined and the client process is reaped.
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

from .server import EchoServer
from .._errors import EngineUnavailableError
from .._watcher import Watcher

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
    command = [sys.executable, "-m", "gaio.demo.client", "--port", str(port),
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
    """Until the server has `conns` connections, each with its read pending, then idle."""
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


def rss_kb():
    gc.collect()
    return proc_status("VmRSS")


def send_line(proc, text):
    try:
        proc.stdin.write(text.encode() + b"\n")
        proc.stdin.flush()
    except BrokenPipeError:
        pass  # the client is gone: the next event read reports how it ended


def measure_idle(args, rss_none, rss_half):
    rss_all = rss_kb()
    known = None not in (rss_none, rss_half, rss_all)
    return {
        "rss_kb": (rss_none, rss_half, rss_all),
        "rss_per_conn": ((rss_all - rss_half) * 1024 / (args.conns - args.conns // 2)
                         if known else None),
        "py_threads": threading.active_count(),
        "os_threads": proc_status("Threads"),
    }


def report(args, engine, client_engine, idle, result, stats):
    elapsed = result["elapsed"]
    if idle["rss_per_conn"] is None:
        rss = "n/a (no /proc/self/status)"
    else:
        none, half, full = (format(kb, ",") for kb in idle["rss_kb"])
        rss = ("%.0f B  (VmRSS %s kB with no connection, %s kB with %d idle, %s kB with %d)"
               % (idle["rss_per_conn"], none, half, args.conns // 2, full, args.conns))
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
    try:
        server = EchoServer(watcher)
    except OSError as exc:
        watcher.close()
        raise DemoError("cannot listen on 127.0.0.1: %s" % exc) from None
    server.start()
    proc = None
    try:
        print("gaio demo: echo server on engine %r at 127.0.0.1:%d; client process: "
              "%d connections, %d-byte messages, %d in flight per connection, %g s"
              % (engine, server.port, args.conns, args.size, args.depth, args.duration))
        sys.stdout.flush()
        rss_none = rss_kb()
        proc = start_client(args, server.port, client_engine)
        events = ClientEvents(proc)
        connect_timeout = STARTUP_TIMEOUT + args.conns / 1000

        events.next(connect_timeout)
        wait_until_all_idle(server, args.conns // 2, connect_timeout)
        rss_half = rss_kb()
        send_line(proc, "more")
        client_engine = events.next(connect_timeout)["engine"]
        print("  client pid %d (engine %s): %d connection(s) open and idle"
              % (proc.pid, client_engine, args.conns))
        sys.stdout.flush()
        wait_until_all_idle(server, args.conns, connect_timeout)
        idle = measure_idle(args, rss_none, rss_half)
        send_line(proc, "go")

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
