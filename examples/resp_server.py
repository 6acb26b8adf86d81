"""A Redis-protocol (RESP2) server over a dict, on one gaio Watcher and one thread.

    python examples/resp_server.py [--port PORT] [--seconds N]

Commands: PING, ECHO, SET, GET, DEL, INCR, MGET (and QUIT, COMMAND, CONFIG
GET, enough for redis-cli and redis-benchmark). Try:
redis-cli -p PORT set greeting hello; redis-benchmark -p PORT -t ping,set,get -P 16

Each connection has a standing read; the commands a read brings (any number:
clients pipeline) are parsed from the internal buffer's bytes, and their
replies go out in one quiet write. A partial command waits in a per-connection
bytes object until the rest arrives. A client that pipelines commands without
reading the replies stops being read once 256 KiB of them wait (the watcher's
write_high). GAIO_ENGINE=python|epoll|uring chooses the engine.
"""
import argparse
import socket
import time

import gaio

MAX_INLINE = 64 * 1024       # an inline command longer than this is an error, as in Redis
MAX_BULK = 512 * 1024 * 1024
OK = b"+OK\r\n"
NIL = b"$-1\r\n"


class ProtocolError(Exception):
    pass


def parse(data, pos):
    """One command from data[pos:]: (list of bytes arguments, next pos), or
    (None, pos) when it is not all there yet."""
    if data[pos] == 42:  # b"*": an array of bulk strings, what clients send
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            return None, pos
        try:
            count = int(data[pos + 1:nl])
        except ValueError:
            raise ProtocolError("invalid multibulk length") from None
        p = nl + 2
        args = []
        for _ in range(count):
            if p >= len(data):
                return None, pos
            if data[p] != 36:  # b"$"
                raise ProtocolError("expected '$', got '%s'" % chr(data[p]))
            nl = data.find(b"\r\n", p)
            if nl < 0:
                return None, pos
            try:
                length = int(data[p + 1:nl])
            except ValueError:
                raise ProtocolError("invalid bulk length") from None
            if not 0 <= length <= MAX_BULK:
                raise ProtocolError("invalid bulk length")
            start = nl + 2
            if start + length + 2 > len(data):
                return None, pos
            args.append(data[start:start + length])
            p = start + length + 2
        return args, p
    nl = data.find(b"\n", pos)  # an inline command: `PING` typed into telnet
    if nl < 0:
        if len(data) - pos > MAX_INLINE:
            raise ProtocolError("too big inline request")
        return None, pos
    return data[pos:nl].split(), nl + 1


def bulk(value):
    return NIL if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def error(text):
    return b"-ERR " + text.encode() + b"\r\n"


class Store:
    """The commands, over one dict of bytes to bytes."""

    def __init__(self):
        self.data = {}
        # name: (method, number of arguments: exact if > 0, at least -n if < 0)
        self.commands = {
            b"PING": (self.ping, -1), b"ECHO": (self.echo, 2), b"SET": (self.set, 3),
            b"GET": (self.get, 2), b"DEL": (self.delete, -2), b"INCR": (self.incr, 2),
            b"MGET": (self.mget, -2), b"COMMAND": (self.command, -1),
            b"CONFIG": (self.config, -2),
        }

    def run(self, args):
        name = args[0].upper()
        entry = self.commands.get(name)
        if entry is None:
            return error("unknown command '%s', with args beginning with: %s" % (
                args[0].decode(errors="replace"),
                " ".join("'%s'" % a.decode(errors="replace") for a in args[1:3])))
        method, arity = entry
        if (arity > 0 and len(args) != arity) or len(args) < -arity:
            return error("wrong number of arguments for '%s' command"
                         % name.lower().decode())
        return method(args)

    def ping(self, args):
        if len(args) > 2:
            return error("wrong number of arguments for 'ping' command")
        return bulk(args[1]) if len(args) == 2 else b"+PONG\r\n"

    def echo(self, args):
        return bulk(args[1])

    def set(self, args):
        self.data[args[1]] = args[2]
        return OK

    def get(self, args):
        return bulk(self.data.get(args[1]))

    def delete(self, args):
        data = self.data
        removed = 0
        for key in args[1:]:
            if data.pop(key, None) is not None:
                removed += 1
        return b":%d\r\n" % removed

    def incr(self, args):
        try:
            value = int(self.data.get(args[1], b"0")) + 1
        except ValueError:
            value = None
        if value is None or not -2**63 <= value < 2**63:
            return error("value is not an integer or out of range")
        self.data[args[1]] = b"%d" % value
        return b":%d\r\n" % value

    def mget(self, args):
        get = self.data.get
        return b"*%d\r\n" % (len(args) - 1) + b"".join(bulk(get(k)) for k in args[1:])

    def command(self, args):  # redis-cli asks for command docs: it has none to show
        return b"*0\r\n"

    def config(self, args):  # CONFIG GET save / appendonly, as redis-benchmark asks
        if args[1].upper() != b"GET" or len(args) != 3:
            return error("only CONFIG GET parameter is supported")
        value = {b"save": b"", b"appendonly": b"no"}.get(args[2].lower())
        if value is None:
            return b"*0\r\n"
        return b"*2\r\n" + bulk(args[2]) + bulk(value)


class Client:
    """One connection: bytes of a command not complete yet."""

    __slots__ = ("conn", "pending", "freed")

    def __init__(self, conn):
        self.conn = conn
        self.pending = b""
        self.freed = False


def run_commands(store, data):
    """Run the whole commands at the start of `data`: (their replies joined,
    the bytes left over for the next read, whether to close after the
    replies: QUIT or a protocol error)."""
    replies = []
    pos, end = 0, len(data)
    close = False
    try:
        while pos < end:
            args, pos = parse(data, pos)
            if args is None:
                break
            if not args:
                continue
            if args[0].upper() == b"QUIT":
                replies.append(OK)
                close = True
                break
            replies.append(store.run(args))
    except ProtocolError as exc:
        replies.append(error("Protocol error: %s" % exc))
        close = True
    return b"".join(replies), (data[pos:] if pos < end and not close else b""), close


def serve(w, client, view, store):
    """Run the commands a read brought; queue their replies."""
    data = client.pending + view if client.pending else bytes(view)
    replies, client.pending, close = run_commands(store, data)
    if close:  # not quiet: its result frees the connection once the reply is out
        w.write(client.conn, replies, ctx=client)
        client.freed = True  # ignore what else it sends
    elif replies:
        w.write(client.conn, replies, ctx=client, quiet=True)


def main():
    parser = argparse.ArgumentParser(description="Redis-protocol server on a gaio Watcher")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()

    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    address = listener.getsockname()  # the watcher takes the listener over at accept()
    store = Store()
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    with gaio.Watcher() as w:
        w.accept(listener, repeat=True)
        print("resp server (engine %s) listening on %s:%d" % ((w.engine,) + address), flush=True)
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=0.5):
                    if res.op == gaio.Op.READ:
                        client = res.ctx
                        if client.freed:
                            continue
                        if res.error is None:
                            serve(w, client, res.buffer, store)
                        else:  # EOF or reset: the client is gone
                            client.freed = True
                            w.free(res.conn)
                    elif res.op == gaio.Op.ACCEPT:
                        if res.accepted is not None:  # else EMFILE...: the accept retries
                            conn = res.accepted
                            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                            w.read(conn, repeat=True, ctx=Client(conn))
                    else:  # WRITE: after QUIT or a protocol error, or a quiet write failed
                        res.ctx.freed = True
                        w.free(res.conn)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
