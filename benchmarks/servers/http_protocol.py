"""examples/http_server.py written as an asyncio Protocol, for asyncio or uvloop.

    python benchmarks/servers/http_protocol.py --loop asyncio|uvloop [--port P]
        [--certfile CERT --keyfile KEY]

The same parser (httptools, fed each arrival of bytes), the same routes and
the same response bytes (the example's own `head()` builds them), the
responses to every request one arrival brought handed to the transport in one
`writelines`, and the same back-pressure: reading pauses while more than
256 KiB of responses wait (the transport's high-water mark; the example's
watcher has write_high = 256 KiB). Only the I/O differs. /static/ is not
served: the benchmark asks for / only, and a sendfile between pipelined
responses is another program in asyncio.

With --certfile and --keyfile it serves HTTPS as an asyncio program does:
`create_server(ssl=context)`, the context made as the example's --tls makes
it (examples/http_server.py's tls_context(): ALPN http/1.1).
"""
import asyncio
import sys
from pathlib import Path

import httptools

from _common import BACKLOG, add_loop_argument, announce, make_listener, parse_args, run_on, \
    set_nodelay

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from http_server import HELLO, head, parse, request_line, tls_context  # noqa: E402

WRITE_HIGH = 256 * 1024


class HttpProtocol(asyncio.Protocol):
    """One connection; the parser's protocol too (its on_* callbacks)."""

    def connection_made(self, transport):
        set_nodelay(transport.get_extra_info("socket"))
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.out = []
        self.closing = False

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        if self.closing:
            return
        url, self.url = self.url, b""
        method, path, version, keep_alive = request_line(self.parser, url)
        if method not in (b"GET", b"HEAD"):
            self.answer(405, b"", keep_alive, version)
        elif path in (b"/", b"/hello"):
            self.answer(200, HELLO, keep_alive, version, head_only=method == b"HEAD")
        else:
            self.answer(404, b"not found\n", keep_alive, version)

    def answer(self, status, body, keep_alive, version=(1, 1), head_only=False):
        self.out.append(head(status, len(body), keep_alive, version=version))
        if body and not head_only:
            self.out.append(body)
        if not keep_alive:
            self.closing = True

    def data_received(self, data):
        if self.closing:
            return
        parsed = parse(self.parser, data)
        if parsed == "upgrade":
            self.closing = True
        elif parsed == "bad":
            self.answer(400, b"bad request\n", keep_alive=False)
        if self.out:
            out, self.out = self.out, []
            self.transport.writelines(out)
        if self.closing:
            self.transport.close()  # after what is buffered is written


async def serve(port, context):
    server = await asyncio.get_running_loop().create_server(
        HttpProtocol, sock=make_listener(port), backlog=BACKLOG, ssl=context)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def add_arguments(parser):
    add_loop_argument(parser)
    parser.add_argument("--certfile", help="HTTPS: the certificate chain (PEM)")
    parser.add_argument("--keyfile", help="HTTPS: its private key (PEM)")


def main():
    args = parse_args(__doc__, add_arguments)
    context = tls_context(args.certfile, args.keyfile) if args.certfile else None
    run_on(args.loop, serve, args.port, context)


if __name__ == "__main__":
    main()
