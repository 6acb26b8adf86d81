"""An HTTP/1.1 server on one gaio Watcher and one thread.

    python examples/http_server.py [--port PORT] [--root DIR] [--seconds N]
                                   [--tls --certfile CERT --keyfile KEY]

    GET /            "Hello, world!" (also /hello)
    GET /static/P    the file DIR/P, sent with sendfile (no copy through Python)

Keep-alive and pipelining: each connection has a standing read and an
httptools parser (`pip install gaio[http]`: the parser uvicorn uses), fed the
internal buffer's view in place; the responses to every request a read
brought go out as one quiet vectored write, in order with the files' sendfile
requests. A request the parser refuses gets 400 and the connection closes once
it is written. A client that sends requests without reading the answers stops
being read once 256 KiB of them wait (the watcher's write_high), so it cannot
grow the server's memory. GAIO_ENGINE=python|epoll|uring chooses the engine.
Try: curl -v http://127.0.0.1:PORT/ or wrk -c 100 -d 5 http://127.0.0.1:PORT/

With --tls every accepted connection starts with a server-side start_tls
(ALPN http/1.1) and the same standing read, requested at once: it receives
only decrypted bytes, or the handshake's error, which frees the connection
like a client that left. A handshake gets --handshake-seconds (10), so a
client that stops halfway holds a descriptor that long and no longer. Try:
curl --cacert CA https://localhost:PORT/ or wrk https://127.0.0.1:PORT/
"""
import argparse
import email.utils
import mimetypes
import os
import socket
import ssl
import stat
import sys
import time
from urllib.parse import unquote

try:
    import httptools
except ImportError:
    sys.exit("examples/http_server.py needs httptools: pip install 'gaio[http]'")

import gaio

HELLO = b"Hello, world!\n"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def parse(parser, data):
    """Feed the parser: "ok", "upgrade" (not served here) or "bad" (answer 400).

    httptools reports an exception raised in one of our callbacks - a bug of
    ours, or Ctrl-C's KeyboardInterrupt arriving while one ran - as
    HttpParserCallbackError, a kind of HttpParserError: it is raised again
    as itself, so it neither becomes the client's 400 nor is lost."""
    try:
        parser.feed_data(data)
    except httptools.HttpParserCallbackError as exc:
        raise (exc.__context__ or exc) from None
    except httptools.HttpParserUpgrade:  # no upgrades here: answer, then close
        return "upgrade"
    except httptools.HttpParserError:
        return "bad"
    return "ok"


def request_line(parser, url):
    """What a complete request asks (httptools parser, its URL bytes):
    (method, path without the query, version tuple, keep-alive)."""
    version = tuple(int(n) for n in parser.get_http_version().split("."))
    return parser.get_method(), url.partition(b"?")[0], version, parser.should_keep_alive()


class Clock:
    """The Date header, formatted once a second."""

    second = -1
    date = b""

    def now(self):
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.date = email.utils.formatdate(second, usegmt=True).encode()
        return self.date


CLOCK = Clock()


def head(status, length, keep_alive, content_type=b"text/plain", version=(1, 1)):
    """A response's status line and headers."""
    lines = [b"HTTP/1.1 %d %s" % (status, REASONS[status].encode()),
             b"Server: gaio", b"Date: " + CLOCK.now(),
             b"Content-Type: " + content_type, b"Content-Length: %d" % length]
    if not keep_alive:
        lines.append(b"Connection: close")
    elif version < (1, 1):
        lines.append(b"Connection: keep-alive")
    if status == 405:
        lines.append(b"Allow: GET, HEAD")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Http:
    """One connection: its parser (this object is the parser's protocol) and
    the responses not yet handed to the watcher."""

    __slots__ = ("w", "conn", "root", "parser", "url", "out", "closing", "freed")

    def __init__(self, w, conn, root):
        self.w, self.conn, self.root = w, conn, root
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.out = []        # response bytes for the next write
        self.closing = False  # the last response is queued: ignore what follows
        self.freed = False

    # ---- the parser's callbacks (called from feed_data)

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        if self.closing:
            return
        url, self.url = self.url, b""
        method, path, version, keep_alive = request_line(self.parser, url)
        if method not in (b"GET", b"HEAD"):
            self.answer(405, b"", keep_alive, version=version)
        elif path in (b"/", b"/hello"):
            self.answer(200, HELLO, keep_alive, version=version, head_only=method == b"HEAD")
        elif path.startswith(b"/static/"):
            self.send_file(path[len(b"/static/"):], keep_alive, version,
                           head_only=method == b"HEAD")
        else:
            self.answer(404, b"not found\n", keep_alive, version=version)

    # ---- responses

    def answer(self, status, body, keep_alive, version=(1, 1), head_only=False):
        self.out.append(head(status, len(body), keep_alive, version=version))
        if body and not head_only:
            self.out.append(body)
        if not keep_alive:
            self.closing = True

    def send_file(self, name, keep_alive, version, head_only):
        parts = unquote(name.decode("latin-1")).split("/")
        fd = -1
        if not any(p in ("", ".", "..") or "\0" in p for p in parts):
            path = os.path.join(self.root, *parts)
            try:  # O_NONBLOCK: a FIFO must not block the server (it is refused below)
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                pass
        st = os.fstat(fd) if fd >= 0 else None
        if st is None or not stat.S_ISREG(st.st_mode):
            if fd >= 0:
                os.close(fd)
            return self.answer(404, b"not found\n", keep_alive, version=version)
        content_type = (mimetypes.guess_type(path)[0] or "application/octet-stream").encode()
        self.out.append(head(200, st.st_size, keep_alive, content_type, version))
        if head_only or st.st_size == 0:
            os.close(fd)
        else:
            self.flush(quiet=True)
            # Not quiet: its result says when the file can be closed (and,
            # after the last response, the connection).
            self.w.sendfile(self.conn, fd, 0, st.st_size, ctx=(self, fd, not keep_alive))
        if not keep_alive:
            self.closing = True

    def flush(self, quiet):
        if self.out:
            out, self.out = self.out, []
            self.w.write(self.conn, out, ctx=self, quiet=quiet)

    # ---- results

    def feed(self, view):
        if self.closing:
            return
        parsed = parse(self.parser, view)
        if parsed == "upgrade":  # an upgrade: the answers so far, then close
            self.closing = True
        elif parsed == "bad":
            self.answer(400, b"bad request\n", keep_alive=False)
        # The last response's write is not quiet: its result closes the connection.
        self.flush(quiet=not self.closing)

    def free(self):
        if not self.freed:
            self.freed = True
            self.w.free(self.conn)


def tls_context(certfile, keyfile):
    """The server's context: its certificate, and HTTP/1.1 offered by ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["http/1.1"])
    return context


def serve(w, conn, http, tls, handshake_seconds):
    """An accepted connection's first requests: its handshake (with --tls), its standing read."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        try:
            w.start_tls(conn, tls, server_side=True, ctx=http, timeout=handshake_seconds)
        except NotImplementedError as exc:  # an engine without TLS yet
            sys.exit("examples/http_server.py --tls: %s" % exc)
    w.read(conn, repeat=True, ctx=http)


def main():
    parser = argparse.ArgumentParser(description="HTTP/1.1 server on a gaio Watcher")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--root", default=".", help="the directory served under /static/")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    parser.add_argument("--tls", action="store_true", help="HTTPS: needs --certfile, --keyfile")
    parser.add_argument("--certfile", help="the server's certificate chain (PEM)")
    parser.add_argument("--keyfile", help="its private key (PEM)")
    parser.add_argument("--handshake-seconds", type=float, default=10.0,
                        help="how long a TLS handshake may take")
    args = parser.parse_args()
    if args.tls and not (args.certfile and args.keyfile):
        parser.error("--tls needs --certfile and --keyfile")
    tls = tls_context(args.certfile, args.keyfile) if args.tls else None

    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    address = listener.getsockname()  # the watcher takes the listener over at accept()
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    with gaio.Watcher() as w:
        w.accept(listener, repeat=True)
        print("%s server (engine %s) listening on %s:%d"
              % (("https" if tls else "http", w.engine) + address), flush=True)
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=0.5):
                    op = res.op
                    if op == gaio.Op.READ:
                        http = res.ctx
                        if http.freed:
                            continue
                        if res.error is None:
                            http.feed(res.buffer)
                        else:  # EOF or reset: the client is gone
                            http.free()
                    elif op == gaio.Op.ACCEPT:
                        if res.accepted is not None:  # else EMFILE...: the accept retries
                            conn = res.accepted
                            serve(w, conn, Http(w, conn, args.root), tls, args.handshake_seconds)
                    elif op == gaio.Op.TLS:
                        if res.error is not None:  # garbage, a deadline, a bad certificate...
                            res.ctx.free()
                    elif op == gaio.Op.SENDFILE:
                        http, fd, last = res.ctx
                        os.close(fd)
                        if res.error is not None or last:
                            http.free()
                    else:  # WRITE: a connection's last response is out, or a write failed
                        res.ctx.free()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
