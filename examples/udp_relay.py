"""A UDP relay on one gaio Watcher and one thread.

    python examples/udp_relay.py --upstream HOST:PORT [--port PORT] [--idle S] [--seconds N]

Datagrams from each client address to PORT go to HOST:PORT (numeric: the
watcher never does DNS) from a socket of that client's own, and what
upstream sends back to that socket goes to that client, from PORT. A
client's socket is closed after --idle seconds (default 60) with no datagram
either way. GAIO_ENGINE=python|epoll|uring chooses the engine.

Try it with iperf3, which keeps a TCP control connection on the same port
number beside its UDP data: iperf3 -s -p 5201; this with --port 5301
--upstream 127.0.0.1:5201; examples/proxy.py --port 5301 --upstream
127.0.0.1:5201 for the control connection (TCP and UDP ports are apart);
iperf3 -u -c 127.0.0.1 -p 5301 -b 100M (add -R for the other direction).

A standing read on the unconnected listening socket gives each datagram with
its sender (`res.address`); per client, a socket connected to upstream (so the
kernel keeps only upstream's datagrams for it, and the client is known by the
read's ctx) with a standing read of its own. Every datagram is relayed by a
quiet write of the internal buffer's view itself. Nothing holds a side back:
a datagram the kernel cannot take is dropped, as UDP drops any. With nobody
at upstream, its ICMP "port unreachable" comes back to the client's socket as
a ConnectionRefusedError result (R27): the read stands, the client gets
nothing, and the relay goes on.
"""
import argparse
import socket
import time

import gaio

# A relay's only store for datagrams that arrive while its thread is not
# running (another process had the core) is each socket's kernel receive
# buffer; the default, about 208 KiB, fills in 20 ms at 50 Mbit/s of
# 1400-byte datagrams. 1 MiB (the kernel doubles it, within
# net.core.rmem_max) rides out longer stalls.
RECEIVE_BUFFER = 1 << 20


class Session:
    """One client address and its socket to upstream."""

    __slots__ = ("client", "upstream", "last")

    def __init__(self, client, upstream, now):
        self.client, self.upstream, self.last = client, upstream, now


def parse_address(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host, int(port)
    except (OSError, ValueError):
        raise argparse.ArgumentTypeError("expected a numeric HOST:PORT, got %r" % text) from None


def main():
    parser = argparse.ArgumentParser(description="UDP relay on a gaio Watcher")
    parser.add_argument("--upstream", type=parse_address, required=True,
                        help="the numeric address relayed to, HOST:PORT")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--idle", type=float, default=60.0,
                        help="forget a client after this many seconds without a datagram")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.upstream[0] else socket.AF_INET

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    listener.bind(("127.0.0.1", args.port))
    address = listener.getsockname()  # the watcher takes the socket over at read()
    sessions: dict[object, Session] = {}  # client address -> Session
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    # The default 64 KiB internal buffer holds the largest UDP datagram whole.
    with gaio.Watcher() as w:
        w.read(listener, repeat=True)
        print("udp relay to %s:%d (engine %s) listening on %s:%d"
              % (args.upstream + (w.engine,) + address), flush=True)
        next_sweep = time.monotonic() + args.idle
        try:
            while True:
                results = w.wait_io(timeout=0.5)
                now = time.monotonic()
                if now >= stop_at:
                    break
                for res in results:
                    # Not a READ (the connect's result, a failed quiet write: a
                    # datagram lost) or an error (R27: nobody upstream; the
                    # read stands): nothing to relay.
                    if res.op != gaio.Op.READ or res.error is not None:
                        continue
                    session = res.ctx
                    if session is None:  # from a client, on the listening socket
                        session = sessions.get(res.address)
                        if session is None:
                            if res.address is None:
                                continue  # cannot be answered (R25)
                            upstream = socket.socket(family, socket.SOCK_DGRAM)
                            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                RECEIVE_BUFFER)
                            session = sessions[res.address] = Session(res.address, upstream, now)
                            w.connect(upstream, args.upstream, ctx=session)
                            w.read(upstream, repeat=True, ctx=session)
                        session.last = now
                        w.write(session.upstream, res.buffer, quiet=True, ctx=session)
                    else:  # from upstream, on a client's socket
                        session.last = now
                        w.write(listener, res.buffer, address=session.client, quiet=True)
                if now >= next_sweep:
                    next_sweep = now + min(args.idle, 1.0)
                    for client in [c for c, s in sessions.items() if now - s.last > args.idle]:
                        w.free(sessions.pop(client).upstream)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
