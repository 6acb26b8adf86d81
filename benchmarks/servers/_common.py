"""What every Python echo server here shares: arguments, the listener, READY.

Each server is one small script started by the harness as
`python benchmarks/servers/NAME.py [--port P] [...]`; it binds 127.0.0.1 with
backlog 4096, sets TCP_NODELAY on every connection and prints
"READY <port>" on stdout once it is listening.
"""
import argparse
import resource
import socket
import ssl

BACKLOG = 4096
HOST = "127.0.0.1"
READ_SIZE = 65536


def parse_args(description, add_arguments=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    if add_arguments:
        add_arguments(parser)
    return parser.parse_args()


def raise_fd_limit():
    """Idle-connection runs hold ~20,000 sockets: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_listener(port, blocking=False):
    raise_fd_limit()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(BACKLOG)
    sock.setblocking(blocking)
    return sock


def set_nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def announce(port):
    print("READY %d" % port, flush=True)


def add_tls_arguments(parser):
    """--certfile/--keyfile: serve TLS (the TLS echo workloads, benchmarks/tls.py)."""
    parser.add_argument("--certfile", help="TLS: the certificate chain (PEM)")
    parser.add_argument("--keyfile", help="TLS: its private key (PEM)")


def tls_context(args):
    """The server's context when --certfile is given, else None: the same
    for every server, so that they negotiate the same protocol and cipher."""
    if not args.certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.certfile, args.keyfile)
    return context


def add_loop_argument(parser):
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the event loop: asyncio's own, or uvloop's")


def run_on(loop_name, coroutine_function, *args):
    """Run coroutine_function(*args) to completion on a fresh loop of that name."""
    import asyncio
    if loop_name == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(coroutine_function(*args))
