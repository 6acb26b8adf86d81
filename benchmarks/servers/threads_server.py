"""Thread-per-connection echo server: blocking sockets, recv/sendall.

The simplest design there is; each thread keeps Python's default stack size.
"""
import threading

from _common import READ_SIZE, announce, make_listener, parse_args, set_nodelay


def echo(sock):
    with sock:
        try:
            while data := sock.recv(READ_SIZE):
                sock.sendall(data)
        except OSError:
            pass


def main():
    args = parse_args(__doc__)
    listener = make_listener(args.port, blocking=True)
    announce(listener.getsockname()[1])
    while True:
        sock, _ = listener.accept()
        set_nodelay(sock)
        threading.Thread(target=echo, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
