"""An echo server on one gaio Watcher and one thread: gaio's examples/echo-server, in Python.

    python examples/echo_server.py [--port PORT] [--seconds N]

Prints the address it listens on, then sends every client back what it
sends, until Ctrl-C (or for N seconds). GAIO_ENGINE=python|epoll|uring
chooses the engine.

A standing accept delivers one result per new connection, a standing read
one result per arrival of bytes, and each view goes straight back with a
quiet write, which delivers nothing unless it fails: one pass through Python
per message. A client that does not read its echoes stops being read
(the watcher's write_high), so it cannot grow the server's memory.
"""
import argparse
import socket
import time

import gaio


def main():
    parser = argparse.ArgumentParser(description="echo server on a gaio Watcher")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()

    listener = socket.create_server(("127.0.0.1", args.port))
    address = listener.getsockname()  # the watcher takes the listener over at accept()
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    with gaio.Watcher(4096) as w:
        w.accept(listener, repeat=True)
        print("echo server (engine %s) listening on %s:%d" % ((w.engine,) + address), flush=True)
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=0.5):
                    if res.op == gaio.Op.ACCEPT:
                        if res.accepted is not None:
                            print("new client", flush=True)
                            w.read(res.accepted, repeat=True)
                        else:  # out of descriptors (EMFILE...): the accept stands and retries
                            print("accept:", repr(res.error), flush=True)
                    elif res.error is not None:  # the read ended (EOF, reset) or a write failed
                        print("client gone (%s): %r" % (res.op.name, res.error), flush=True)
                        w.free(res.conn)
                    else:
                        try:
                            w.write(res.conn, res.buffer, quiet=True)
                        except ValueError:  # freed earlier in this batch: its write failed
                            pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
