"""gaio echo server: the README's, on one Watcher and one thread.

    python benchmarks/servers/gaio_server.py --engine python|epoll|uring|kqueue
        [--certfile CERT --keyfile KEY]

A standing accept delivers each new connection; a standing read on it
delivers each arrival of bytes as a view of the watcher's internal buffer,
which goes straight back with a quiet write (no result unless it fails): one
result, one pass through Python, per message. Flow control is the watcher's
(write_high, 256 KiB): a connection whose peer does not read its echoes
stops being read, as uvloop's transports pause reading.

With --certfile/--keyfile (the TLS echo workloads) each accepted connection
first gets a server-side start_tls; the standing read, requested at once,
delivers decrypted bytes and the quiet writes go out encrypted.

Delegation takes each accepted socket's descriptor over (detach()), so the
server holds one descriptor per connection.
"""
import gaio

from _common import (add_tls_arguments, announce, make_listener, parse_args, set_nodelay,
                     tls_context)

HANDSHAKE_SECONDS = 10.0


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


# serve() with a handshake first, in a loop of its own so that the plain echo
# tables' loop does not pay for the TLS results' test
def serve_tls(watcher, context):
    ACCEPT, TLS = gaio.Op.ACCEPT, gaio.Op.TLS
    read, write, free, wait_io = watcher.read, watcher.write, watcher.free, watcher.wait_io
    start_tls = watcher.start_tls
    while True:
        for res in wait_io():
            op = res.op
            if op == ACCEPT:
                if res.accepted is not None:
                    set_nodelay(res.accepted)
                    start_tls(res.accepted, context, server_side=True, timeout=HANDSHAKE_SECONDS)
                    read(res.accepted, repeat=True)  # decrypted bytes once handshaken
            elif op == TLS:
                pass  # a failed handshake ends the standing read too, which frees the connection
            elif res.error is not None:
                free(res.conn)
            else:
                try:
                    write(res.conn, res.buffer, quiet=True)
                except ValueError:
                    pass


def main():
    def options(p):
        p.add_argument("--engine", default="auto")
        p.add_argument("--bufsize", type=int, default=65536)
        p.add_argument("--batch-wait", type=float, default=None,
                       help="Watcher(batch_wait=): seconds a wait that slept gathers for")
        add_tls_arguments(p)
    args = parse_args(__doc__, options)
    watcher = gaio.Watcher(args.bufsize, engine=args.engine, batch_wait=args.batch_wait)
    listener = make_listener(args.port)
    port = listener.getsockname()[1]  # the watcher takes the listener over at accept()
    watcher.accept(listener, repeat=True)
    announce(port)
    context = tls_context(args)
    if context is None:
        serve(watcher)
    else:
        serve_tls(watcher, context)


if __name__ == "__main__":
    main()
