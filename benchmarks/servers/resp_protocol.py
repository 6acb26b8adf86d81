"""examples/resp_server.py written as an asyncio Protocol, for asyncio or uvloop.

    python benchmarks/servers/resp_protocol.py --loop asyncio|uvloop [--port P]

The example's own parser and commands (`run_commands`, `Store`, imported from it):
the commands an arrival of bytes brings are run, their replies joined and
written at once; a partial command waits in a per-connection bytes object;
QUIT or a protocol error answers and closes. Reading pauses while more than
256 KiB of replies wait (the transport's high-water mark; the example's
watcher has write_high = 256 KiB). Only the I/O differs.
"""
import asyncio
import sys
from pathlib import Path

from _common import BACKLOG, add_loop_argument, announce, make_listener, parse_args, run_on, \
    set_nodelay

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from resp_server import Store, run_commands  # noqa: E402

WRITE_HIGH = 256 * 1024


class RespProtocol(asyncio.Protocol):
    def __init__(self, store):
        self.store = store
        self.pending = b""
        self.closing = False

    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.transport = transport

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def data_received(self, data):
        if self.closing:
            return
        data = self.pending + data if self.pending else data
        replies, self.pending, close = run_commands(self.store, data)
        if replies:
            self.transport.write(replies)
        if close:
            self.closing = True
            self.transport.close()  # after the replies are written


async def serve(port):
    store = Store()
    server = await asyncio.get_running_loop().create_server(
        lambda: RespProtocol(store), sock=make_listener(port), backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main():
    args = parse_args(__doc__, add_loop_argument)
    run_on(args.loop, serve, args.port)


if __name__ == "__main__":
    main()
