"""A TCP relay on one gaio Watcher and one thread.

    python examples/proxy.py --upstream HOST:PORT [--port PORT] [--seconds N]

Every connection accepted on PORT is relayed to a new connection to
HOST:PORT (a numeric address: the watcher never does DNS), both ways, until
either side ends. GAIO_ENGINE=python|epoll|uring chooses the engine.
Try: iperf3 -s -p 5201, then this with --upstream 127.0.0.1:5201, then
iperf3 -c 127.0.0.1 -p PORT (add -R for the other direction).

A standing accept; per client, a connect upstream and a standing read on
each side (the upstream one may be requested before the connect is done);
each arrival is written, as the internal buffer's view itself, to the other
side. So back-pressure holds: a side whose peer stops reading has more than
write_high (256 KiB) of the other side's bytes waiting, the other side's
read stops taking bytes, and TCP slows its sender. Memory stays bounded
whatever the two peers do.

The writes are not quiet, for one reason: when one side ends (EOF), the
bytes it sent last must reach the other side before the proxy closes it,
and only a write's result says they did. gaio has no half-close (shutdown)
request, so once a side has ended and its bytes are delivered, the relay
closes both connections.
"""
import argparse
import socket
import time

import gaio


class Relay:
    """One client and its upstream connection."""

    __slots__ = ("client", "upstream", "writes", "ended", "freed")

    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.writes = 0      # writes not yet completed, both ways
        self.ended = False   # a side ended: close once `writes` is 0
        self.freed = False

    def other(self, conn):
        return self.upstream if conn is self.client else self.client

    def close(self, w):
        if not self.freed:
            self.freed = True
            w.free(self.client)
            w.free(self.upstream)


def parse_address(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host, int(port)
    except (OSError, ValueError):
        raise argparse.ArgumentTypeError("expected a numeric HOST:PORT, got %r" % text) from None


def main():
    parser = argparse.ArgumentParser(description="TCP relay on a gaio Watcher")
    parser.add_argument("--upstream", type=parse_address, required=True,
                        help="the numeric address relayed to, HOST:PORT")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.upstream[0] else socket.AF_INET

    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    address = listener.getsockname()  # the watcher takes the listener over at accept()
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    # Reads of up to 256 KiB (the default internal buffer is 64 KiB): a bulk
    # relay then costs a quarter of the results and writes per byte.
    with gaio.Watcher(bufsize=256 * 1024) as w:
        w.accept(listener, repeat=True)
        print("proxy to %s:%d (engine %s) listening on %s:%d"
              % (args.upstream + (w.engine,) + address), flush=True)
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=0.5):
                    op = res.op
                    relay = res.ctx
                    if op == gaio.Op.READ:
                        if relay.freed:
                            continue
                        if res.error is None:
                            relay.writes += 1
                            w.write(relay.other(res.conn), res.buffer, ctx=relay)
                        else:  # EOF, reset, or the connect upstream failed
                            relay.ended = True
                            if relay.writes == 0 or not isinstance(res.error, EOFError):
                                relay.close(w)
                    elif op == gaio.Op.WRITE:
                        relay.writes -= 1
                        if res.error is not None or (relay.ended and relay.writes == 0):
                            relay.close(w)
                    elif op == gaio.Op.ACCEPT:
                        if res.accepted is not None:  # else EMFILE...: the accept retries
                            client = res.accepted
                            upstream = socket.socket(family, socket.SOCK_STREAM)
                            for sock in (client, upstream):
                                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                            relay = Relay(client, upstream)
                            w.connect(upstream, args.upstream, ctx=relay)
                            w.read(client, repeat=True, ctx=relay)
                            w.read(upstream, repeat=True, ctx=relay)
                    elif op == gaio.Op.CONNECT and res.error is not None:
                        relay.close(w)  # the upstream refused: the client goes too
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
