"""A pool of TLS echo clients on one gaio Watcher and one thread.

    python examples/tls_echo_client.py --port PORT [--host 127.0.0.1] [--conns N]
        [--messages M] [--size S] [--cafile CA] [--server-hostname NAME] [--reversed]

Opens N connections at once, each a connect() followed at once by a
client-side start_tls (the handshake waits for the connect: no callback in
between), then on each connection M round trips: a line of S bytes written,
its answer read with read_full into the connection's own buffer and compared
byte for byte. A connection that is done is freed, which sends close_notify.
--reversed expects each line back reversed, as `openssl s_server -rev`
answers (without it, an echo). The certificate is checked against --cafile
(else the system's CAs) and --server-hostname (default localhost).

Prints one line, "N connections, M round trips each, ... all answers
verified", and exits 0; or prints each failure and exits 1.
GAIO_ENGINE=python|epoll|uring chooses the engine.
"""
import argparse
import socket
import ssl
import sys
import time

import gaio

HANDSHAKE_SECONDS = 30.0  # s_server answers one connection at a time: the last one waits


class Client:
    """One connection: which round trip it is on, its answer buffer."""

    __slots__ = ("sock", "number", "done", "answer", "expected", "failed")

    def __init__(self, number, size):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.number = number
        self.done = 0          # round trips verified
        self.answer = bytearray(size)
        self.expected = b""
        self.failed = None

    def line(self, size):
        """The next message: `size` bytes, the last a newline, unique to this connection and trip."""
        head = b"conn %d trip %d " % (self.number, self.done)
        body = (head * (size // len(head) + 1))[:size - 1]
        return body + b"\n"


def expect(line, reversed_lines):
    return line[-2::-1] + b"\n" if reversed_lines else line


def run(args):
    context = ssl.create_default_context(cafile=args.cafile)
    with gaio.Watcher() as w:
        clients = [Client(i, args.size) for i in range(args.conns)]
        for c in clients:
            w.connect(c.sock, (args.host, args.port), ctx=c)
            w.start_tls(c.sock, context, server_side=False, server_hostname=args.server_hostname,
                        ctx=c, timeout=HANDSHAKE_SECONDS)
        versions: set[str] = set()
        started = time.monotonic()
        left = len(clients)

        def send_next(c):
            line = c.line(args.size)
            c.expected = expect(line, args.reversed)
            w.write(c.sock, line, ctx=c, quiet=True)
            w.read_full(c.sock, c.answer, ctx=c)

        def finish(c, failure=None):
            nonlocal left
            if failure is not None:
                c.failed = failure
            w.free(c.sock)
            left -= 1

        while left:
            for res in w.wait_io(timeout=1.0):
                c = res.ctx
                if c.failed is not None or c.done == args.messages:
                    continue  # a result of a connection already finished
                if res.error is not None:
                    finish(c, "%s: %r" % (res.op.name, res.error))
                elif res.op == gaio.Op.TLS:
                    versions.add(res.tls.version() or "?" if res.tls else "?")
                    send_next(c)
                elif res.op == gaio.Op.READ:
                    if bytes(c.answer) != c.expected:
                        finish(c, "trip %d: sent %r, got %r" % (c.done, c.expected, c.answer))
                        continue
                    c.done += 1
                    if c.done == args.messages:
                        finish(c)
                    else:
                        send_next(c)
        seconds = time.monotonic() - started
    failed = [c for c in clients if c.failed is not None]
    for c in failed:
        print("connection %d failed: %s" % (c.number, c.failed), file=sys.stderr)
    trips = sum(c.done for c in clients)
    print("%d connections (engine %s, %s), %d round trips each of %d bytes: %d in %.3f s "
          "(%.0f/s), %s" % (args.conns, w.engine, "/".join(sorted(versions)) or "no TLS",
                            args.messages, args.size, trips, seconds, trips / seconds,
                            "%d failed" % len(failed) if failed else "all answers verified"),
          flush=True)
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description="TLS echo clients on a gaio Watcher")
    parser.add_argument("--host", default="127.0.0.1", help="a numeric address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100, help="round trips per connection")
    parser.add_argument("--size", type=int, default=64, help="bytes per message, at least 2")
    parser.add_argument("--cafile", help="the CA to trust (default: the system's)")
    parser.add_argument("--server-hostname", default="localhost",
                        help="the name the certificate must carry (and SNI)")
    parser.add_argument("--reversed", action="store_true",
                        help="expect lines back reversed (openssl s_server -rev)")
    args = parser.parse_args()
    if args.size < 2 or args.conns < 1 or args.messages < 1:
        parser.error("--size >= 2, --conns >= 1 and --messages >= 1, please")
    try:
        sys.exit(run(args))
    except NotImplementedError as exc:  # an engine without TLS yet
        sys.exit("examples/tls_echo_client.py: %s" % exc)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
