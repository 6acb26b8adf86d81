"""gaio echo server: one Watcher, internal-buffer reads, one thread.

    python benchmarks/servers/gaio_server.py --engine python|epoll|uring

The loop is the README's echo server: `w.read(conn)` lands in the watcher's
internal buffer; the result's view is written straight back with
`w.write(res.conn, res.buffer)` (the watcher copies it at the request).
The next read is requested at once, as uvloop's transports keep reading,
with the same kind of flow control: a connection with MAX_WRITES echoes not
yet written (its peer does not read them) stops being read until one of
them completes. Reading only after the echo was written would serialise a
stream: one internal-buffer block per round trip through wait_io().

Accepting: gaio has no accept operation, so the server accepts itself, on
its one thread: wait_io() is called with a 2 ms timeout and, at most once
per 2 ms (or whenever wait_io() comes back empty), the non-blocking
listener is drained with accept() until EAGAIN, each new socket handed to
the watcher with `w.read(conn)`; after a round that found connections, the
next round comes at once. Under steady load that is one extra accept()
syscall per 2 ms, not per message; an idle server wakes 500 times a second.
Two designs without polling were measured and dropped (8,192-connection
burst against a 4,096 backlog, epoll engine, noisy 2-core machine):
  - a thread blocking in accept() and calling w.read(conn) itself
    (requests are thread-safe): every accept() drops and retakes the GIL
    against the busy I/O thread, the backlog overflows, and SYN
    retransmits made the burst take 1.1-2.1 s instead of 0.5-0.7 s;
  - a thread blocking in poll() on the listener that wakes the I/O thread
    through a socket pair read by the watcher: each wake-up still needs
    the GIL twice, and the burst took 2.1-3.1 s.

Descriptors: delegation takes the accepted socket's descriptor over
(detach()), so the server holds one descriptor per connection.
"""
import time

import gaio

from _common import announce, make_listener, parse_args, set_nodelay

ACCEPT_EVERY = 0.002  # seconds
MAX_WRITES = 4  # echoes in flight per connection (at most 4 x bufsize bytes) before reading pauses


def accept_pending(listener, watcher):
    """Accept every waiting connection and start reading it; how many there were."""
    accepted = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return accepted
        except OSError:  # EMFILE and the like: the next round retries
            return accepted
        set_nodelay(conn)
        watcher.read(conn)
        accepted += 1


def serve(watcher, listener):
    READ = gaio.Op.READ
    read, write, free, wait_io = watcher.read, watcher.write, watcher.free, watcher.wait_io
    monotonic = time.monotonic
    next_accept = 0.0
    writing = {}  # conn -> echoes requested and not yet completed (absent: none)
    while True:
        results = wait_io(ACCEPT_EVERY)
        now = monotonic()
        if now >= next_accept or not results:
            # While connections keep coming (a burst), look again next round.
            busy = accept_pending(listener, watcher)
            next_accept = now if busy else now + ACCEPT_EVERY
        for res in results:
            conn = res.conn
            if res.error is not None:  # EOF, reset, ...: the client is gone
                free(conn)
                writing.pop(conn, None)
            elif res.op == READ:
                try:
                    write(conn, res.buffer)
                except ValueError:  # a failed write earlier in this batch freed it
                    continue
                n = writing.get(conn, 0) + 1
                writing[conn] = n
                if n < MAX_WRITES:
                    read(conn)
            elif conn in writing:
                n = writing[conn] - 1
                if n:
                    writing[conn] = n
                else:
                    del writing[conn]  # an idle connection costs no entry
                if n == MAX_WRITES - 1:  # reading had paused: resume
                    read(conn)


def main():
    def options(p):
        p.add_argument("--engine", default="auto")
        p.add_argument("--bufsize", type=int, default=65536)
    args = parse_args(__doc__, options)
    watcher = gaio.Watcher(args.bufsize, engine=args.engine)
    listener = make_listener(args.port, blocking=False)
    announce(listener.getsockname()[1])
    serve(watcher, listener)


if __name__ == "__main__":
    main()
