"""A push server on a gaio Watcher: gaio's examples/push-server, in Python.

    python examples/push_server.py [--port PORT] [--interval S] [--seconds N]

Accepts connections and, every S seconds (default 1), writes the time to
every connected client (try `nc 127.0.0.1 PORT`), until Ctrl-C (or for N
seconds). GAIO_ENGINE=python|epoll|uring chooses the engine.
"""
import argparse
import queue
import socket
import threading
import time

import gaio


def accept_forever(listener, new_conns):
    # gaio has no accept operation; new connections go to the main loop,
    # which alone touches the set of clients.
    while True:
        try:
            conn, addr = listener.accept()
        except OSError:
            return  # listener closed: shutting down
        print("new client", addr, flush=True)
        new_conns.put(conn)


def main():
    parser = argparse.ArgumentParser(description="push server on a gaio Watcher")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()

    listener = socket.create_server(("127.0.0.1", args.port))
    new_conns: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
    clients = set()
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    next_push = time.monotonic() + args.interval
    with gaio.Watcher(4096) as w:
        print("push server (engine %s) listening on %s:%d"
              % ((w.engine,) + listener.getsockname()), flush=True)
        threading.Thread(target=accept_forever, args=(listener, new_conns), daemon=True).start()
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=max(0.0, next_push - time.monotonic())):
                    if res.error is not None:  # the client left: its read saw EOF, or a write failed
                        clients.discard(res.conn)
                        w.free(res.conn)
                    elif res.op == gaio.Op.READ:
                        w.read(res.conn)  # ignore what clients send; keep a read pending to see them leave
                while not new_conns.empty():
                    conn = new_conns.get()
                    clients.add(conn)
                    w.read(conn)
                if time.monotonic() >= next_push:
                    push = time.strftime("%Y-%m-%d %H:%M:%S\n").encode()
                    for conn in clients:
                        w.write(conn, push)
                    next_push += args.interval
        except KeyboardInterrupt:
            pass
    listener.close()


if __name__ == "__main__":
    main()
