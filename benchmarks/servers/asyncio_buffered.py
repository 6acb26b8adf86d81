"""asyncio echo server with a BufferedProtocol: reads land in one reused buffer.

get_buffer() hands asyncio a preallocated 64 KiB bytearray per connection
(the BufferedProtocol contract keeps it per protocol); buffer_updated()
writes a copy of the bytes received back.
"""
import asyncio

from _common import BACKLOG, READ_SIZE, announce, make_listener, parse_args, set_nodelay


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        self.transport = transport
        self.buffer = bytearray(READ_SIZE)
        self.view = memoryview(self.buffer)

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        # write() may keep what it cannot send at once: give it its own copy.
        self.transport.write(self.buffer[:nbytes])


async def serve(port):
    server = await asyncio.get_running_loop().create_server(
        EchoBufferedProtocol, sock=make_listener(port), backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main():
    args = parse_args(__doc__)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
