"""gevent echo server: StreamServer, one greenlet per connection, recv/sendall."""
import gevent.server
import gevent.socket

from _common import READ_SIZE, announce, make_listener, parse_args, set_nodelay


def echo(sock, _address):
    set_nodelay(sock)
    try:
        while data := sock.recv(READ_SIZE):
            sock.sendall(data)
    except OSError:
        pass
    finally:
        sock.close()


def main():
    args = parse_args(__doc__)
    listener = gevent.socket.socket(fileno=make_listener(args.port).detach())
    server = gevent.server.StreamServer(listener, echo)  # already listening, backlog 4096
    server.start()
    announce(server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    main()
