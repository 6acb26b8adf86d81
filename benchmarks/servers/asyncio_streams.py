"""asyncio echo server with streams: the high-level API most code uses.

One coroutine per connection: `await reader.read()`, `writer.write()`,
`await writer.drain()`. uvloop_streams.py runs this same code on uvloop.
"""
import asyncio

from _common import BACKLOG, READ_SIZE, announce, make_listener, parse_args, set_nodelay


async def echo(reader, writer):
    set_nodelay(writer.get_extra_info("socket"))
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(port):
    server = await asyncio.start_server(echo, sock=make_listener(port), backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main(new_event_loop=asyncio.new_event_loop):
    args = parse_args(__doc__)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve(args.port))


if __name__ == "__main__":
    main()
