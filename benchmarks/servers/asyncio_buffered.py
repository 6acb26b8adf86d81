"""asyncio echo server with a BufferedProtocol: reads land in one shared buffer.

get_buffer() hands asyncio the same preallocated 64 KiB buffer for every
connection: the loop calls get_buffer(), recv_into() and buffer_updated()
back to back on one thread, and buffer_updated() writes a copy out at once,
so sharing is safe. This is BufferedProtocol at its leanest, the closest
asyncio gets to gaio's internal buffer (a buffer per connection would cost
64 KiB of RSS per idle connection).
"""
import asyncio

from _common import BACKLOG, READ_SIZE, announce, make_listener, parse_args, set_nodelay

SHARED_BUFFER = bytearray(READ_SIZE)
SHARED_VIEW = memoryview(SHARED_BUFFER)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        self.transport = transport

    def get_buffer(self, sizehint):
        return SHARED_VIEW

    def buffer_updated(self, nbytes):
        # write() may keep what it cannot send at once: give it its own copy.
        self.transport.write(SHARED_BUFFER[:nbytes])


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
