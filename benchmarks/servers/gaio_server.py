"""gaio echo server: the README's, on one Watcher and one thread.

    python benchmarks/servers/gaio_server.py --engine python|epoll|uring|kqueue

A standing accept delivers each new connection; a standing read on it
delivers each arrival of bytes as a view of the watcher's internal buffer,
which goes straight back with a quiet write (no result unless it fails): one
result, one pass through Python, per message. Flow control is the watcher's
(write_high, 256 KiB): a connection whose peer does not read its echoes
stops being read, as uvloop's transports pause reading.

Delegation takes each accepted socket's descriptor over (detach()), so the
server holds one descriptor per connection.
"""
import gaio

from _common import announce, make_listener, parse_args, set_nodelay


def serve(watcher):
    ACCEPT = gaio.Op.ACCEPT
    read, write, free, wait_io = watcher.read, watcher.write, watcher.free, watcher.wait_io
    while True:
        for res in wait_io():
            if res.op == ACCEPT:
                if res.accepted is not None:  # else out of descriptors: the accept retries
                    set_nodelay(res.accepted)
                    read(res.accepted, repeat=True)
            elif res.error is not None:  # the read ended (EOF, reset) or a quiet write failed
                free(res.conn)
            else:
                try:
                    write(res.conn, res.buffer, quiet=True)
                except ValueError:  # freed earlier in this batch: its write failed
                    pass


def main():
    def options(p):
        p.add_argument("--engine", default="auto")
        p.add_argument("--bufsize", type=int, default=65536)
        p.add_argument("--batch-wait", type=float, default=None,
                       help="Watcher(batch_wait=): seconds a wait that slept gathers for")
    args = parse_args(__doc__, options)
    watcher = gaio.Watcher(args.bufsize, engine=args.engine, batch_wait=args.batch_wait)
    listener = make_listener(args.port)
    port = listener.getsockname()[1]  # the watcher takes the listener over at accept()
    watcher.accept(listener, repeat=True)
    announce(port)
    serve(watcher)


if __name__ == "__main__":
    main()
