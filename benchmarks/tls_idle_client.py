"""The client of the idle TLS workloads: N handshaken HTTPS connections, each served once, held.

    python benchmarks/tls_idle_client.py --port P --conns N --cafile CA

Opens the connections at most IN_FLIGHT at a time (non-blocking sockets, one
selector, the stdlib's ssl: nothing of gaio's, so a bug of gaio's cannot flatter
gaio), completes each handshake, sends one `GET /` and reads the answer up to
its body, then leaves the connection idle. Prints "READY <n> <seconds>" once
all N are held, then holds them until stdin closes. A failure prints
"FAILED <reason>" and exits 1.
"""
import argparse
import os
import resource
import selectors
import socket
import ssl
import sys
import time

IN_FLIGHT = 200
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
BODY = b"Hello, world!\n"


class Conn:
    """One connection on its way: "connect", "handshake", "request", "answer", then held."""

    def __init__(self, address, context):
        self.context = context
        self.tls = socket.socket()
        self.tls.setblocking(False)
        self.tls.connect_ex(address)
        self.fd = self.tls.fileno()  # the selector's key: wrapping keeps the descriptor
        self.step = "connect"
        self.got = b""

    def advance(self):
        """Go as far as the socket allows: the events to wait for next, or None when held."""
        try:
            if self.step == "connect":  # writable: connected, or refused
                error = self.tls.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, "connect: %s" % os.strerror(error))
                self.tls = self.context.wrap_socket(self.tls, server_hostname="localhost",
                                                    do_handshake_on_connect=False)
                self.step = "handshake"
            if self.step == "handshake":
                self.tls.do_handshake()
                self.step = "request"
            if self.step == "request":
                self.tls.send(REQUEST)  # small enough for one record, taken whole
                self.step = "answer"
            while self.step == "answer":
                data = self.tls.recv(4096)
                if not data:
                    raise ConnectionError("the server closed before answering")
                self.got += data
                if self.got.endswith(BODY):
                    return None
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except (ssl.SSLWantWriteError, BlockingIOError):
            return selectors.EVENT_WRITE
        return selectors.EVENT_READ


def open_all(port, conns, context):
    held, waiting = [], 0
    sel = selectors.DefaultSelector()
    opened = 0
    while len(held) < conns:
        while opened < conns and waiting < IN_FLIGHT:
            c = Conn(("127.0.0.1", port), context)
            sel.register(c.fd, selectors.EVENT_WRITE, c)
            opened += 1
            waiting += 1
        events = sel.select(timeout=30)
        if not events:
            raise TimeoutError("nothing moved for 30 s (%d held)" % len(held))
        for key, _ in events:
            c = key.data
            want = c.advance()
            if want is None:
                sel.unregister(c.fd)
                held.append(c)
                waiting -= 1
            elif want != key.events:
                sel.modify(c.fd, want, c)
    sel.close()
    return held


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = ssl.create_default_context(cafile=args.cafile)
    started = time.monotonic()
    try:
        held = open_all(args.port, args.conns, context)
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
        print("FAILED %s: %s" % (type(exc).__name__, exc), flush=True)
        sys.exit(1)
    print("READY %d %.3f" % (len(held), time.monotonic() - started), flush=True)
    sys.stdin.read()  # hold them until the harness lets go


if __name__ == "__main__":
    main()
