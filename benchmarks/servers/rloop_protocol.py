"""rloop echo server: asyncio_protocol.py's Protocol on rloop's event loop
(an asyncio loop written in Rust), a peer of uvloop_protocol.py.

rloop 0.5's Server.serve_forever() stops serving the listener (connections
are refused), so the loop runs forever on a future instead: create_server
already serves.
"""
import asyncio

import rloop

from asyncio_protocol import EchoProtocol
from _common import BACKLOG, announce, make_listener, parse_args


async def serve(port):
    server = await asyncio.get_running_loop().create_server(
        EchoProtocol, sock=make_listener(port), backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    args = parse_args(__doc__)
    loop = rloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve(args.port))
