"""examples/dns_server.py written as an asyncio DatagramProtocol, for asyncio or uvloop.

    python benchmarks/servers/dns_protocol.py --loop asyncio|uvloop [--port P]

The example's own zone and wire codec (`Zone`, imported from it): each
datagram is answered, or dropped, by `Zone.respond`, and the answer goes back
to its sender with one `sendto`. Only the I/O differs.
"""
import asyncio
import socket
import sys
from pathlib import Path

from _common import HOST, add_loop_argument, announce, parse_args, run_on

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from dns_server import Zone  # noqa: E402


class DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone):
        self.zone = zone

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        answer = self.zone.respond(data)
        if answer is not None:
            self.transport.sendto(answer, addr)

    def error_received(self, exc):
        pass  # as the example: a socket error drops nothing but itself


async def serve(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, port))
    await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DnsProtocol(Zone()), sock=sock)
    announce(sock.getsockname()[1])
    await asyncio.Event().wait()  # forever: the harness stops the process


def main():
    args = parse_args(__doc__, add_loop_argument)
    run_on(args.loop, serve, args.port)


if __name__ == "__main__":
    main()
