"""Push connections on a gaio Watcher inside an asyncio program.

    python examples/asyncio_push.py [--port PORT] [--status-port PORT]
                                    [--interval S] [--seconds N]

The push clients (PORT: try `nc 127.0.0.1 PORT`) live on a gaio Watcher,
which gaio.asyncio_bridge drives from the asyncio loop: every S seconds
(default 1) an asyncio task writes the time to each of them. Everything else
is ordinary asyncio: the status server (STATUS-PORT) is asyncio.start_server,
and answers each line it gets with the number of push clients. Ten thousand
idle push clients cost the loop one registered descriptor and a few hundred
bytes each; it wakes only when one of them does something or a push is due.
GAIO_ENGINE=python|epoll|uring chooses the engine.
"""
import argparse
import asyncio
import socket
import time

import gaio
import gaio.asyncio_bridge


async def serve(args):
    listener = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    address = listener.getsockname()  # the watcher takes the listener over at accept()
    clients = set()

    def on_result(res):
        if res.op == gaio.Op.ACCEPT:
            if res.accepted is not None:  # else EMFILE...: the accept stands and retries
                clients.add(res.accepted)
                w.read(res.accepted, repeat=True)  # to see the client leave
        elif res.error is not None:  # the client left: its read ended, or a push failed
            clients.discard(res.conn)
            w.free(res.conn)

    async def status(reader, writer):
        try:
            while await reader.readline():
                writer.write(b"clients %d\n" % len(clients))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            # Cancelled: the program is stopping (Python 3.11's start_server
            # would log a handler that ends cancelled as an error).
            pass
        finally:
            writer.close()

    with gaio.Watcher(4096) as w, gaio.asyncio_bridge.attach(w, on_result):
        w.accept(listener, repeat=True)
        status_server = await asyncio.start_server(status, "127.0.0.1", args.status_port)
        async with status_server:
            print("asyncio push server (engine %s) listening on %s:%d"
                  % ((w.engine,) + address), flush=True)
            print("status on 127.0.0.1:%d" % status_server.sockets[0].getsockname()[1],
                  flush=True)
            stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
            while time.monotonic() < stop_at:
                await asyncio.sleep(min(args.interval, max(0.0, stop_at - time.monotonic())))
                push = time.strftime("%Y-%m-%d %H:%M:%S\n").encode()
                for conn in clients:
                    w.write(conn, push, quiet=True)


def main():
    parser = argparse.ArgumentParser(description="push server on gaio inside asyncio")
    parser.add_argument("--port", type=int, default=0, help="push port; 0 picks a free one")
    parser.add_argument("--status-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
