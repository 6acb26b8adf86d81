"""examples/proxy.py written with asyncio Protocols, for asyncio or uvloop.

    python benchmarks/servers/proxy_protocol.py --loop asyncio|uvloop --upstream HOST:PORT [--port P]

Every accepted connection is relayed to a new connection to HOST:PORT, both
ways. The client's reading is paused until the upstream connection is made;
what arrives before (uvloop starts reading after connection_made() even if
it paused) waits in a list, as the example's writes queue behind its connect.
Each arrival is written to the other side's transport; a side whose transport
holds more than 256 KiB unwritten pauses reading of the side that feeds it
(the example's watcher has write_high = 256 KiB), so memory stays bounded.
When one side ends (EOF) or fails, the other is closed once what is buffered
for it is written (transport.close() flushes), as the example closes both
after the ended side's last bytes are delivered.
"""
import asyncio
import socket

from _common import BACKLOG, add_loop_argument, announce, make_listener, parse_args, run_on, \
    set_nodelay

WRITE_HIGH = 256 * 1024


class Side(asyncio.Protocol):
    """One end of a relay; `peer` is the other end (the client's is None until
    its upstream connection is made)."""

    def __init__(self, peer=None):
        self.peer = peer
        self.transport = None

    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.transport = transport

    def data_received(self, data):
        self.peer.transport.write(data)

    def pause_writing(self):  # our peer feeds us faster than our socket drains
        self.peer.transport.pause_reading()

    def resume_writing(self):
        self.peer.transport.resume_reading()

    def eof_received(self):
        if self.peer is not None:
            self.peer.transport.close()
        return False  # close this side too

    def connection_lost(self, exc):
        if self.peer is not None:
            self.peer.transport.close()


class Client(Side):
    def __init__(self, upstream):
        super().__init__()
        self.upstream = upstream
        self.early = []

    def data_received(self, data):
        if self.peer is None:
            self.early.append(data)
            self.transport.pause_reading()
            return
        self.peer.transport.write(data)

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self):
        host, port = self.upstream
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: Side(self), host, port)
        except OSError:
            self.transport.close()  # the upstream refused: the client goes too
            return
        if self.transport.is_closing():
            upstream.transport.close()
            return
        self.peer = upstream
        if self.early:
            upstream.transport.writelines(self.early)
            self.early = []
        self.transport.resume_reading()


def parse_address(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    return host, int(port)


async def serve(port, upstream):
    server = await asyncio.get_running_loop().create_server(
        lambda: Client(upstream), sock=make_listener(port), backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main():
    def options(p):
        add_loop_argument(p)
        p.add_argument("--upstream", type=parse_address, required=True,
                       help="the numeric address relayed to, HOST:PORT")
    args = parse_args(__doc__, options)
    run_on(args.loop, serve, args.port, args.upstream)


if __name__ == "__main__":
    main()
