"""A push server on one gaio Watcher and one thread: gaio's examples/push-server, in Python.

    python examples/push_server.py [--port PORT] [--interval S] [--seconds N]

Accepts connections and, every S seconds (default 1), writes the time to
every connected client (try `nc 127.0.0.1 PORT`), until Ctrl-C (or for N
seconds). GAIO_ENGINE=python|epoll|uring chooses the engine.

A standing accept brings the clients in; a standing read on each is how the
server sees a client leave (what clients send is ignored); the pushes are
quiet writes, which deliver a result only when they fail.
"""
import argparse
import socket
import time

import gaio


def main():
    parser = argparse.ArgumentParser(description="push server on a gaio Watcher")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()

    listener = socket.create_server(("127.0.0.1", args.port))
    address = listener.getsockname()  # the watcher takes the listener over at accept()
    clients = set()
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    next_push = time.monotonic() + args.interval
    with gaio.Watcher(4096) as w:
        w.accept(listener, repeat=True)
        print("push server (engine %s) listening on %s:%d" % ((w.engine,) + address), flush=True)
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=max(0.0, next_push - time.monotonic())):
                    if res.op == gaio.Op.ACCEPT:
                        if res.accepted is not None:
                            print("new client", flush=True)
                            clients.add(res.accepted)
                            w.read(res.accepted, repeat=True)
                        else:  # out of descriptors (EMFILE...): the accept stands and retries
                            print("accept:", repr(res.error), flush=True)
                    elif res.error is not None:  # the client left: its read ended, or a push failed
                        clients.discard(res.conn)
                        w.free(res.conn)
                if time.monotonic() >= next_push:
                    push = time.strftime("%Y-%m-%d %H:%M:%S\n").encode()
                    for conn in clients:
                        w.write(conn, push, quiet=True)
                    next_push += args.interval
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
