"""A small authoritative DNS server over UDP, on one gaio Watcher and one thread.

    python examples/dns_server.py [--port PORT] [--seconds N]

It answers for one zone, example.test., from the dict RECORDS below. Try:
dig @127.0.0.1 -p PORT www.example.test AAAA; dnsperf -s 127.0.0.1 -p PORT -d FILE
(FILE: lines such as `www.example.test A`). GAIO_ENGINE=python|epoll|uring
chooses the engine.

One standing read on an unconnected UDP socket: each result is one query,
with its sender in `res.address`; the answer goes back as one quiet
`write(sock, answer, address=res.address)`. No third-party package: the wire
codec (RFC 1035 section 4) is the `Zone` class below, shared with
benchmarks/servers/dns_protocol.py.

What it answers, and why (RFC 1035, and RFC 8906 "Failure to Communicate"):
- A, AAAA, NS, SOA or ANY for a name of the zone: its records, AA set.
- Another data type for such a name (MX, TXT, CAA...): NOERROR with no answer
  and the zone's SOA in the authority section (a NODATA answer, RFC 2308).
  Not NOTIMP: RFC 8906 3.1.2 expects a type a server does not implement to be
  answered as if it had no data of that type.
- A name of the zone it does not have: NXDOMAIN with the SOA (RFC 2308).
- Meta types other than ANY (zone transfers AXFR/IXFR, MAILA, MAILB, OPT,
  TSIG...): NOTIMP, which RFC 8906 3.1.2 allows for meta types.
- A name outside the zone, or a class other than IN: REFUSED (RFC 1035's
  "refuses for policy reasons": it is not authoritative there and does not
  recurse). NOTIMP would tell the resolver that queries as such are not
  implemented here.
- An opcode other than QUERY (IQUERY, STATUS, NOTIFY, UPDATE): NOTIMP, as RFC
  8906 3.1.4 expects; the question is not echoed (another opcode's sections
  need not be a question).
- Not exactly one question, or one that does not parse: FORMERR. A datagram
  shorter than a header, or a response (QR set): no answer at all, so that
  two servers cannot answer each other's answers forever.
- Flags: RD is copied, RA and every other flag are 0 (RFC 8906 3.1.3: a flag
  the server does not know is not copied).
- No EDNS: an OPT record in a query is ignored and none is sent back, which
  tells the client this server keeps to RFC 1035's 512 bytes (RFC 6891 7). An
  answer longer than that carries the records that fit and the TC bit; a
  resolver would then retry over TCP, which this example does not serve.
"""
import argparse
import ipaddress
import socket
import struct
import time

import gaio

ORIGIN = "example.test."
TTL = 300
RECORDS = {
    "example.test.": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "www.example.test.": {"A": ["192.0.2.10", "192.0.2.11"], "AAAA": ["2001:db8::10"]},
    "ns1.example.test.": {"A": ["192.0.2.53"]},
    "v6.example.test.": {"AAAA": ["2001:db8::6"]},
    "deep.sub.example.test.": {"A": ["192.0.2.20"]},  # so sub.example.test. exists, empty
    # 40 A records: 12 + 23 + 40 * 16 bytes, more than 512: answered with TC.
    "many.example.test.": {"A": ["192.0.2.%d" % i for i in range(100, 140)]},
}
SOA = ("ns1.example.test.", "hostmaster.example.test.", 2026120601, 3600, 900, 604800, TTL)

A, NS, SOA_TYPE, OPT, AAAA, ANY, IN = 1, 2, 6, 41, 28, 255, 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 3, 4, 5
QR, AA, TC, RD = 0x8000, 0x0400, 0x0200, 0x0100
UDP_LIMIT = 512  # RFC 1035 4.2.1, without EDNS
HEADER = struct.Struct(">HHHHHH")
TYPE_CLASS = struct.Struct(">HH")
RR_FIXED = struct.Struct(">HHIH")  # type, class, ttl, rdata length
TO_QUESTION = b"\xc0\x0c"  # a compression pointer to the question's name, at offset 12


def wire_name(text):
    """'www.example.test.' as labels on the wire: b'\\x03www\\x07example\\x04test\\x00'."""
    labels = [label.encode("ascii") for label in text.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def rr(owner, rtype, rdata):
    return owner + RR_FIXED.pack(rtype, IN, TTL, len(rdata)) + rdata


def header(ident, flags, qd=0, an=0, ns=0):
    return HEADER.pack(ident, flags, qd, an, ns, 0)


class Zone:
    """One zone's records, kept as answer bytes: a query costs a parse, two dict
    look-ups and a join."""

    def __init__(self, origin=ORIGIN, records=RECORDS, soa=SOA):
        self.origin = wire_name(origin).lower()
        mname, rname, *numbers = soa
        soa_rdata = wire_name(mname) + wire_name(rname) + struct.pack(">5I", *numbers)
        # The negative answers' authority section: the owner written out whole.
        self.soa_authority = rr(self.origin, SOA_TYPE, soa_rdata)
        # name (lower-case wire bytes) -> {type: [answer records]}; the owner
        # of each is the question's name, as a pointer.
        self.names: dict[bytes, dict[int, list[bytes]]] = {}
        for name, types in records.items():
            node = self._node(wire_name(name).lower())
            for type_name, values in types.items():
                rtype = {"A": A, "AAAA": AAAA}[type_name]
                node.setdefault(rtype, []).extend(
                    rr(TO_QUESTION, rtype, ipaddress.ip_address(v).packed) for v in values)
        apex = self._node(self.origin.lower())
        apex[SOA_TYPE] = [rr(TO_QUESTION, SOA_TYPE, soa_rdata)]
        apex[NS] = [rr(TO_QUESTION, NS, wire_name(mname))]
        for node in self.names.values():
            node[ANY] = [record for rtype in sorted(node) for record in node[rtype]]

    def _node(self, name):
        """The node of `name`, made with those of the names between it and the
        origin (which exist, empty: asked for, they are NODATA, not NXDOMAIN)."""
        node = self.names.setdefault(name, {})
        while len(name) > len(self.origin):
            name = name[name[0] + 1:]
            self.names.setdefault(name, {})
        return node

    def respond(self, data):
        """The answer (bytes) to the query `data` (any bytes-like), or None."""
        if len(data) < 12:
            return None
        ident, flags, qdcount, _, _, _ = HEADER.unpack_from(data)
        if flags & QR:
            return None
        opcode = flags & 0x7800
        flags = QR | opcode | (flags & RD)
        if opcode:
            return header(ident, flags | NOTIMP)
        end = question_end(data) if qdcount == 1 else None
        if end is None:
            return header(ident, flags | FORMERR)
        question = bytes(data[12:end + 4])
        name = question[:-4].lower()
        qtype, qclass = TYPE_CLASS.unpack_from(question, len(question) - 4)
        if qclass != IN or not self.holds(name):
            return header(ident, flags | REFUSED, 1) + question
        if qtype == OPT or 128 <= qtype < ANY:
            return header(ident, flags | NOTIMP, 1) + question
        node = self.names.get(name)
        if node is None:
            return header(ident, flags | AA | NXDOMAIN, 1, 0, 1) + question + self.soa_authority
        answers = node.get(qtype)
        if not answers:
            return header(ident, flags | AA, 1, 0, 1) + question + self.soa_authority
        room = UDP_LIMIT - 12 - len(question)
        for count, record in enumerate(answers):
            room -= len(record)
            if room < 0:
                flags |= TC
                answers = answers[:count]
                break
        return header(ident, flags | AA, 1, len(answers)) + question + b"".join(answers)

    def holds(self, name):
        """Whether the lower-case wire name is the origin or under it, label-wise."""
        start = len(name) - len(self.origin)
        if start < 0 or name[start:] != self.origin:
            return False
        pos = 0
        while pos < start:  # the suffix must begin at a label, not inside one
            pos += name[pos] + 1
        return pos == start


def question_end(data):
    """Where the question's name (at offset 12) ends, if a type and class follow it;
    None if it does not parse (a compression pointer has no place in a question)."""
    pos, size = 12, len(data)
    while pos < size:
        length = data[pos]
        if length == 0:
            end = pos + 1
            return end if end + 4 <= size and end - 12 <= 255 else None
        if length > 63:
            return None
        pos += length + 1
    return None


def main():
    parser = argparse.ArgumentParser(description="authoritative DNS server on a gaio Watcher")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    address = sock.getsockname()  # the watcher takes the socket over at read()
    zone = Zone()
    stop_at = time.monotonic() + args.seconds if args.seconds else float("inf")
    with gaio.Watcher() as w:
        w.read(sock, repeat=True)
        print("dns server for %s (engine %s) listening on %s:%d"
              % ((ORIGIN, w.engine) + address), flush=True)
        try:
            while time.monotonic() < stop_at:
                for res in w.wait_io(timeout=0.5):
                    # Anything else is dropped, as UDP may drop any datagram: a
                    # socket error (R27: the read stands), a failed answer, an
                    # unanswerable sender, a query cut to the buffer.
                    if res.op == gaio.Op.READ and res.error is None and not res.truncated \
                            and res.address is not None:
                        answer = zone.respond(res.buffer)
                        if answer is not None:
                            w.write(sock, answer, address=res.address, quiet=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
