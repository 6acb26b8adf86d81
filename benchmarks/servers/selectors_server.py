"""stdlib selectors echo server: non-blocking sockets, one callback per event.

Bytes the kernel does not take at once are kept per connection and the
socket waits for EVENT_WRITE (not read meanwhile), as a careful hand-written
selectors loop does.
"""
import selectors

from _common import READ_SIZE, announce, make_listener, parse_args, set_nodelay

selector = selectors.DefaultSelector()


def on_accept(listener):
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        set_nodelay(sock)
        selector.register(sock, selectors.EVENT_READ, on_readable)


def close(sock):
    selector.unregister(sock)
    sock.close()


def on_readable(sock):
    try:
        data = sock.recv(READ_SIZE)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        return close(sock)
    rest = send_some(sock, data)
    if rest:
        selector.modify(sock, selectors.EVENT_WRITE, lambda s: on_writable(s, rest))


def on_writable(sock, data):
    rest = send_some(sock, data)
    if rest:
        selector.modify(sock, selectors.EVENT_WRITE, lambda s: on_writable(s, rest))
    elif rest is not None:
        selector.modify(sock, selectors.EVENT_READ, on_readable)


def send_some(sock, data):
    """What is left to send (b"" when done), or None if the socket was closed."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        close(sock)
        return None
    return data[sent:] if sent < len(data) else b""


def main():
    args = parse_args(__doc__)
    listener = make_listener(args.port)
    selector.register(listener, selectors.EVENT_READ, on_accept)
    announce(listener.getsockname()[1])
    while True:
        for key, _ in selector.select():
            key.data(key.fileobj)


if __name__ == "__main__":
    main()
