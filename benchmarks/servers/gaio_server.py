"""gaio echo server: one Watcher, one thread doing I/O, internal-buffer reads.

    python benchmarks/servers/gaio_server.py --engine python|epoll|uring

The loop is the README's echo server: `w.read(conn)` lands in the watcher's
internal buffer; the result's view is written straight back with
`w.write(res.conn, res.buffer)` (the watcher copies it at the request), and
the next read is requested when that write completes.

Accepting: gaio has no accept operation. A listener thread blocks in
accept() and hands each new socket to the watcher with `w.read(conn)`
(requests are thread-safe, SPEC R1). We chose this over polling a
non-blocking listener between short `wait_io(timeout)` calls because polling
adds a wake-up every few milliseconds even when idle, which would be charged
to gaio in the fixed-rate CPU-per-message run, and delays accepts by up to
the poll period. Cost: one extra thread, blocked in accept() (the GIL is
released there), so this server reports 2 threads with the python, epoll and
uring engines, whatever the number of connections.

Descriptors: delegation dup()s the accepted socket and closes the original,
so the server holds one descriptor per connection.
"""
import threading

import gaio

from _common import announce, make_listener, parse_args, set_nodelay


def accept_forever(listener, watcher):
    while True:
        conn, _ = listener.accept()
        set_nodelay(conn)
        try:
            watcher.read(conn)
        except gaio.WatcherClosedError:
            conn.close()
            return


def serve(watcher):
    READ = gaio.Op.READ
    read, write, free, wait_io = watcher.read, watcher.write, watcher.free, watcher.wait_io
    while True:
        for res in wait_io():
            if res.error is not None:  # EOF, reset, ...: the client is gone
                free(res.conn)
            elif res.op == READ:
                write(res.conn, res.buffer)
            else:
                read(res.conn)


def main():
    args = parse_args(__doc__, lambda p: p.add_argument("--engine", default="auto"))
    watcher = gaio.Watcher(engine=args.engine)
    listener = make_listener(args.port, blocking=True)
    threading.Thread(target=accept_forever, args=(listener, watcher),
                     name="accept", daemon=True).start()
    announce(listener.getsockname()[1])
    serve(watcher)


if __name__ == "__main__":
    main()
