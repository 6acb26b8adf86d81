"""trio echo server: one task per connection, receive_some() then send_all().

trio's SocketStream sets TCP_NODELAY itself.
"""
import trio

from _common import READ_SIZE, announce, make_listener, parse_args


async def echo(stream):
    try:
        while data := await stream.receive_some(READ_SIZE):
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def serve(port):
    sock = trio.socket.from_stdlib_socket(make_listener(port))
    listener = trio.SocketListener(sock)
    announce(sock.getsockname()[1])
    await trio.serve_listeners(echo, [listener])


def main():
    args = parse_args(__doc__)
    trio.run(serve, args.port)


if __name__ == "__main__":
    main()
