"""The load generator of `python -m gaio demo`, run as its own process.

    python -m gaio.demo.client --port P --conns N --size S --duration D
                                --depth K --engine E

It opens half of its N connections to 127.0.0.1:P and waits for a "more"
line on stdin, opens the other half and waits for "go" (the parent measures
the server at both points, every connection idle), then keeps K messages in
flight on each connection for D seconds and checks every echoed byte. It
talks to the parent in JSON lines on stdout: "connected" (twice), one
"progress" per second, then "result" (or "error", with exit status 1).

The client dogfoods gaio: one Watcher drives every connection, a write request
per message and a read_full request per echo, so its cost per message stays
small next to the server it measures.
"""
import argparse
import collections
import json
import resource
import socket
import struct
import sys
import time

import gaio

# Each message starts with (connection index, sequence number) so that an echo
# landing on the wrong connection or out of order cannot match by accident.
HEADER = struct.Struct("<IQ")
PROGRESS_INTERVAL = 1.0
DRAIN_TIMEOUT = 10.0  # seconds to collect the echoes in flight at the end


class DemoClientError(Exception):
    """A failure the client reports as its one-line "error" event."""


def emit(event, **fields):
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Connection:
    """One client connection: the messages in flight and the buffer echoes land in."""

    __slots__ = ("sock", "index", "next_seq", "in_flight", "echo_buf")

    def __init__(self, sock, index, size):
        self.sock = sock
        self.index = index
        self.next_seq = 0
        self.in_flight = collections.deque()  # (message, time sent), oldest first
        self.echo_buf = bytearray(size)


class LoadGenerator:
    def __init__(self, watcher, size, depth):
        self.watcher = watcher
        self.size = size
        self.depth = depth
        self.filler = bytes(i & 0xFF for i in range(size))
        self.conns = []
        self.sending = False
        self.echoed = 0          # messages echoed back and checked
        self.latencies = []      # seconds, one per echoed message while sending

    def connect(self, port, count):
        for index in range(len(self.conns), len(self.conns) + count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            # Small pipelined messages: without TCP_NODELAY, Nagle's algorithm
            # meets delayed ACKs and every round trip costs tens of ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(Connection(sock, index, self.size))

    def message(self, conn):
        header = HEADER.pack(conn.index, conn.next_seq)
        conn.next_seq += 1
        if self.size <= HEADER.size:
            return header[:self.size]
        return header + self.filler[HEADER.size:]

    def send(self, conn):
        data = self.message(conn)
        conn.in_flight.append((data, time.monotonic()))
        self.watcher.write(conn.sock, data, ctx=conn)

    def start(self):
        """Fill every connection's pipeline; each conn's first request delegates it."""
        self.sending = True
        for conn in self.conns:
            for _ in range(self.depth):
                self.send(conn)
            self.watcher.read_full(conn.sock, conn.echo_buf, ctx=conn)

    def in_flight(self):
        return sum(len(conn.in_flight) for conn in self.conns)

    def handle(self, results):
        for res in results:
            conn = res.ctx
            if res.error is not None:
                raise DemoClientError("connection %d: %s failed after %d bytes: %r"
                                      % (conn.index, res.op.name.lower(), res.size, res.error))
            if res.op == gaio.Op.WRITE:
                continue
            expected, sent_at = conn.in_flight.popleft()
            if conn.echo_buf != expected:
                raise DemoClientError("connection %d: echo of message %d differs from what was sent"
                                      % (conn.index, HEADER.unpack_from(expected)[1]
                                         if len(expected) >= HEADER.size else -1))
            self.echoed += 1
            if self.sending:
                self.latencies.append(time.monotonic() - sent_at)
                self.send(conn)
            if conn.in_flight:
                self.watcher.read_full(conn.sock, conn.echo_buf, ctx=conn)


def percentile(sorted_values, fraction):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def run(args):
    raise_fd_limit(args.conns + 64)
    watcher = gaio.Watcher(engine=args.engine)
    try:
        load = LoadGenerator(watcher, args.size, args.depth)
        half = args.conns // 2
        for count, go_on in ((half, "more"), (args.conns - half, "go")):
            load.connect(args.port, count)
            emit("connected", conns=len(load.conns), engine=watcher.engine)
            if sys.stdin.readline().strip() != go_on:
                return 0  # the parent gave up before the run: nothing to report

        started = time.monotonic()
        stop_at = started + args.duration
        next_progress = started + PROGRESS_INTERVAL
        load.start()
        while True:
            now = time.monotonic()
            if now >= next_progress:
                emit("progress", elapsed=round(now - started, 3), msgs=load.echoed)
                next_progress += PROGRESS_INTERVAL
            if now >= stop_at:
                break
            load.handle(watcher.wait_io(min(stop_at, next_progress) - now))
        load.sending = False
        elapsed = time.monotonic() - started
        echoed_in_window = load.echoed

        # Collect the echoes still in flight so that every byte sent is checked.
        give_up_at = time.monotonic() + DRAIN_TIMEOUT
        while load.in_flight():
            if time.monotonic() >= give_up_at:
                raise DemoClientError("%d echoes still missing %.0f s after the run ended"
                                      % (load.in_flight(), DRAIN_TIMEOUT))
            load.handle(watcher.wait_io(0.5))

        latencies = sorted(load.latencies)
        emit("result", engine=watcher.engine, msgs=echoed_in_window, elapsed=elapsed,
             bytes=echoed_in_window * args.size, checked=load.echoed,
             p50=percentile(latencies, 0.50), p99=percentile(latencies, 0.99))
        return 0
    finally:
        watcher.close()  # closes every connection: the server sees EOF on each


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m gaio.demo.client",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--engine", default="auto")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130  # Ctrl-C reaches the whole process group; the parent reports it
    except BrokenPipeError:
        return 1    # the parent is gone
    except Exception as exc:  # reported by the parent as one line
        message = str(exc) if isinstance(exc, DemoClientError) else repr(exc)
        try:
            emit("error", message=message)
        except BrokenPipeError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
