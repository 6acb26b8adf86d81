"""`python -m gaio demo`: an echo server on a Watcher, driven by a client process.

The server (see gaio.demo.server) runs in this process, on one watcher and
one thread; the load comes from `python -m gaio.demo.client` in a child
process over 127.0.0.1, so the two sides do not share a GIL. The client's
stdin and stdout are a socket pair whose other end is on the server's
watcher too, so waiting for the client is waiting on the watcher, and the
one thread does everything. The run goes in three phases:

1. connect: the client opens half of its connections; the server accepts each
   one and leaves a standing read on it; after a moment idle this process
   reads its memory; then the same again for the other half, and the threads
   are counted. The growth over the second half, per connection, is the cost
   of one more idle connection with a pending read (gaio's use case: many
   connections, mostly idle), free of one-time costs paid by the first ones;
2. load: the client keeps a few messages in flight on every connection for
   --duration seconds, checks every echoed byte, and reports its figures;
3. shutdown: the client closes its watcher and exits, the server frees every
   connection at EOF, and the client process is reaped.
"""
import collections
import gc
import json
import resource
import socket
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


def serve(watcher, done, timeout):
    """Hand each result to its ctx (the echo server or the client channel)
    until done() is true: True; or until `timeout` seconds have passed: False."""
    give_up_at = time.monotonic() + timeout
    while not done():
        left = give_up_at - time.monotonic()
        if left <= 0:
            return False
        for res in watcher.wait_io(left):
            res.ctx.on_result(res)
    return True


class ClientChannel:
    """The client process's stdin and stdout: our end of their socket pair, on the watcher.

    Commands ("more", "go") go out as quiet writes; the client's JSON-line
    events come in through a standing read. Every wait for an event is
    bounded: a hung client cannot hang us.
    """

    def __init__(self, watcher, sock, proc):
        self.watcher = watcher
        self.sock = sock
        self.proc = proc
        self.events = collections.deque()
        self.partial = b""
        self.closed = None  # why the channel ended: EOFError once the client has exited
        watcher.read(sock, repeat=True, ctx=self)

    def on_result(self, res):
        if res.error is not None:
            if self.closed is None:
                self.closed = res.error
            self.watcher.free(res.conn)
            return
        *lines, self.partial = (self.partial + res.buffer).split(b"\n")
        for line in lines:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                raise DemoError("unexpected output from the client process: %r"
                                % line[:200]) from None

    def send(self, command):
        if self.closed is None:  # else the client is gone: the next event says how it ended
            self.watcher.write(self.sock, command.encode() + b"\n", quiet=True, ctx=self)

    def next(self, timeout):
        """The client's next event; DemoError for an "error" event, a client
        that stopped, or nothing within `timeout` seconds."""
        if not serve(self.watcher, lambda: self.events or self.closed is not None, timeout):
            raise DemoError("the client process sent nothing for %.0f s" % timeout)
        if not self.events:
            try:
                code = "status %d" % self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = "closed its output"
            raise DemoError("the client process stopped (%s) before finishing" % code)
        event = self.events.popleft()
        if event["event"] == "error":
            raise DemoError("client: " + event["message"])
        return event


def start_client(args, port, engine):
    """The client process, its stdin and stdout one end of a socket pair: (proc, the other end)."""
    command = [sys.executable, "-m", "gaio.demo.client", "--port", str(port),
               "--conns", str(args.conns), "--size", str(args.size),
               "--duration", str(args.duration), "--depth", str(args.depth),
               "--engine", engine]
    ours, theirs = socket.socketpair()
    try:
        return subprocess.Popen(command, stdin=theirs, stdout=theirs), ours
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()


def reap(proc):
    """Make sure the client process is gone and waited for, whatever happened."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_all_idle(watcher, server, conns, timeout):
    """Serve until the server has taken `conns` connections in (each with its
    standing read), then IDLE_SETTLE seconds more."""
    if not serve(watcher, lambda: server.accepted >= conns, timeout):
        why = "; last accept error: %r" % server.accept_error if server.accept_error else ""
        raise DemoError("the server accepted %d of %d connections in %.0f s%s"
                        % (server.accepted, conns, timeout, why))
    serve(watcher, lambda: False, IDLE_SETTLE)


def wait_until_all_ended(watcher, server, client, conns, timeout):
    """Serve until the server has seen every connection end and the client has
    exited (its end of the channel closed)."""
    if not serve(watcher, lambda: server.ended >= conns and client.closed is not None, timeout):
        if server.ended < conns:
            raise DemoError("the server saw %d of %d connections end in %.0f s"
                            % (server.ended, conns, timeout))
        raise DemoError("the client process did not exit %.0f s after its result" % timeout)


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


def open_watcher(args):
    """The server's watcher, on the engine asked for; a one-line DemoError if it cannot open."""
    try:
        return Watcher(args.bufsize, engine=args.engine)
    except (EngineUnavailableError, ValueError, TypeError) as exc:
        raise DemoError(str(exc)) from None


def run(args):
    """The demo; returns the exit status. Raises DemoError for a one-line failure."""
    raise_fd_limit(args.conns + 64)
    watcher = open_watcher(args)
    proc = None
    try:
        engine = watcher.engine
        client_engine = engine if args.client_engine == "same" else args.client_engine
        try:
            server = EchoServer(watcher)
        except OSError as exc:
            raise DemoError("cannot listen on 127.0.0.1: %s" % exc) from None
        print("gaio demo: echo server on engine %r at 127.0.0.1:%d; client process: "
              "%d connections, %d-byte messages, %d in flight per connection, %g s"
              % (engine, server.port, args.conns, args.size, args.depth, args.duration))
        sys.stdout.flush()
        rss_none = rss_kb()
        proc, sock = start_client(args, server.port, client_engine)
        client = ClientChannel(watcher, sock, proc)
        connect_timeout = STARTUP_TIMEOUT + args.conns / 1000

        client.next(connect_timeout)
        wait_until_all_idle(watcher, server, args.conns // 2, connect_timeout)
        rss_half = rss_kb()
        client.send("more")
        client_engine = client.next(connect_timeout)["engine"]
        print("  client pid %d (engine %s): %d connection(s) open and idle"
              % (proc.pid, client_engine, args.conns))
        sys.stdout.flush()
        wait_until_all_idle(watcher, server, args.conns, connect_timeout)
        idle = measure_idle(args, rss_none, rss_half)
        client.send("go")

        progress = Progress(sys.stdout)
        try:
            while True:
                event = client.next(args.duration + STARTUP_TIMEOUT)
                if event["event"] != "progress":
                    break
                progress.show(event["elapsed"], event["msgs"])
        finally:
            progress.end()
        wait_until_all_ended(watcher, server, client, args.conns, STARTUP_TIMEOUT)
        if proc.wait(timeout=STARTUP_TIMEOUT) != 0:
            raise DemoError("the client process exited with status %d" % proc.returncode)
        stats = watcher.stats()
    finally:
        if proc is not None:
            reap(proc)
        watcher.close()
    report(args, engine, client_engine, idle, event, stats)
    return 0
