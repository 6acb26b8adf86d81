"""The echo server of `python -m gaio demo`: one watcher, one thread.

The README's echo server, with TCP_NODELAY and a few counters. A standing
accept delivers each new connection, a standing read on each delivers every
arrival of bytes, and the view goes straight back with a quiet write: one
result, one pass through Python, per message. The watcher's back-pressure
(write_high) stops reading a client that does not read its echoes, so a
slow client slows its own connection down instead of growing the server's
memory.

The server does not own the loop: every request it makes carries it as
`ctx`, and whoever waits on the watcher hands it those results
(`res.ctx.on_result(res)`), so the demo's one thread can also talk to its
client process over the same watcher.
"""
import socket

from .._result import Op


class EchoServer:
    def __init__(self, watcher, host="127.0.0.1"):
        self.watcher = watcher
        listener = socket.create_server((host, 0), backlog=4096)
        self.port = listener.getsockname()[1]
        self.accepted = 0          # connections taken in
        self.ended = 0             # connections whose read ended (EOF, an error) and were freed
        self.accept_error = None   # the last resource error of the accept (EMFILE, ...)
        try:
            watcher.accept(listener, repeat=True, ctx=self)  # delegates the listener
        except BaseException:
            listener.close()
            raise

    def on_result(self, res):
        w = self.watcher
        if res.op == Op.ACCEPT:
            if res.accepted is not None:
                res.accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                w.read(res.accepted, repeat=True, ctx=self)
                self.accepted += 1
            else:  # out of descriptors or memory: the accept stands and retries by itself
                self.accept_error = res.error
        elif res.error is not None:
            # The standing read ended (EOF, a reset: once per connection), or a
            # quiet write failed (then the read ends too, ConnClosedError).
            if res.op == Op.READ:
                self.ended += 1
            w.free(res.conn)
        else:
            try:
                w.write(res.conn, res.buffer, quiet=True, ctx=self)
            except ValueError:  # freed earlier in this batch: its write failed
                pass
