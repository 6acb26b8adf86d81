"""asyncio echo server with a Protocol: data_received() writes the bytes back.

The fastest plain-asyncio shape; uvloop_protocol.py runs this same code on
uvloop's loop. asyncio already sets TCP_NODELAY on TCP transports; it is set
again here so every server visibly does the same. With --certfile/--keyfile
(the TLS echo workloads) it serves TLS: `create_server(ssl=context)`.
"""
import asyncio

from _common import (BACKLOG, add_tls_arguments, announce, make_listener, parse_args,
                     set_nodelay, tls_context)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(port, context=None):
    server = await asyncio.get_running_loop().create_server(
        EchoProtocol, sock=make_listener(port), backlog=BACKLOG, ssl=context)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main(new_event_loop=asyncio.new_event_loop):
    args = parse_args(__doc__, add_tls_arguments)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve(args.port, tls_context(args)))


if __name__ == "__main__":
    main()
