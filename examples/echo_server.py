"""An echo server on a gaio Watcher: gaio's examples/echo-server, in Python.

    python examples/echo_server.py [--port PORT] [--seconds N]

Prints the address it listens on, then sends every client back what it
sends, until Ctrl-C (or for N seconds). GAIO_ENGINE=python|epoll|uring
chooses the engine.
"""
import argparse
import socket
import threading
import time

import gaio


def accept_forever(listener, w):
    # gaio has no accept operation: accept here and hand each connection to
    # the watcher with its first read (requests are thread-safe).
    while True:
        try:
            conn, addr = listener.accept()
            print("new client", addr, flush=True)
            w.read(conn)  # the watcher owns conn from here on
        except (OSError, gaio.WatcherClosedError):
            return  # shutting down


def main():
    parser = argparse.ArgumentParser(description="echo server on a gaio Watcher")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()

    listener = socket.create_server(("127.0.0.1", args.port))
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    with gaio.Watcher(4096) as w:
        print("echo server (engine %s) listening on %s:%d"
              % ((w.engine,) + listener.getsockname()), flush=True)
        threading.Thread(target=accept_forever, args=(listener, w), daemon=True).start()
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=0.5):
                    if res.error is not None:  # EOFError when the client closed, or a socket error
                        print("client gone:", repr(res.error), flush=True)
                        w.free(res.conn)
                    elif res.op == gaio.Op.READ:
                        # res.buffer views the shared internal buffer; write copies it.
                        # The next read waits for this write, as in gaio's example.
                        w.write(res.conn, res.buffer)
                    else:
                        w.read(res.conn)
        except KeyboardInterrupt:
            pass
    listener.close()


if __name__ == "__main__":
    main()
