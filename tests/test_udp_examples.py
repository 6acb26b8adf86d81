"""The datagram examples, driven by the clients people already use.

examples/dns_server.py by dig (every kind of answer, checked exactly) and
dnsperf (every query answered); examples/udp_relay.py by iperf3 -u (both
directions, with examples/proxy.py beside it on the same port number for
iperf3's TCP control connection) and by a client whose upstream is not there
yet. Every example runs as its own process on the engine under test
(GAIO_ENGINE) and must stop on SIGINT with status 0.

A test whose client is not installed skips, saying so (.ci/run installs them
from Debian's packages: bind9-dnsutils dnsperf iperf3). Runs are short by
default (2 s); the 5 s runs are marked slow.
"""
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from test_examples import EXAMPLES, TIMEOUT, Example, assert_clean_exit
from test_real_servers import TOOL_ENV, iperf_server, run_tool, slow_param  # noqa: F401

pytestmark = pytest.mark.timeout(180)

APT = "apt-get install bind9-dnsutils dnsperf iperf3"


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip("%s is not installed (%s)" % (name, APT))
    return path


@pytest.fixture
def start(engine):
    """start(script, *args) -> a running Example; killed at teardown if still running."""
    started = []

    def run(script, *args):
        example = Example([str(EXAMPLES / script), "--port", "0", "--seconds", "120", *args],
                          engine)
        started.append(example)
        return example

    yield run
    for example in started:
        example.close()


def udp_client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    return sock


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- DNS


@pytest.fixture
def dns(start):
    return start("dns_server.py")


def dig(server, *args):
    """dig's output for one query to the example: non-recursive, one try, UDP."""
    code, out, err = run_tool([tool("dig"), "@127.0.0.1", "-p", str(server.port), "+norecurse",
                               "+time=2", "+tries=1", *args])
    assert code == 0, out + err
    return out


def status_and_flags(out):
    match = re.search(r"status: (\w+), .*\n;; flags: ([\w ]*);", out)
    assert match, out
    return match.group(1), match.group(2).split()


def records(out):
    """The record lines dig printed (+noall +answer / +authority), tabs and TTLs as given."""
    return [" ".join(line.split()) for line in out.splitlines() if line and line[0] != ";"]


SOA = ("example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. "
       "2026120601 3600 900 604800 300")


def test_dns_dig_answers(dns, engine):
    assert engine.encode() in dns.first_line
    out = dig(dns, "www.example.test", "A")
    assert status_and_flags(out) == ("NOERROR", ["qr", "aa"])
    assert "QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 0" in out
    assert records(dig(dns, "www.example.test", "A", "+noall", "+answer")) == [
        "www.example.test. 300 IN A 192.0.2.10", "www.example.test. 300 IN A 192.0.2.11"]
    assert records(dig(dns, "www.example.test", "AAAA", "+noall", "+answer")) == [
        "www.example.test. 300 IN AAAA 2001:db8::10"]
    assert records(dig(dns, "v6.example.test", "AAAA", "+noall", "+answer")) == [
        "v6.example.test. 300 IN AAAA 2001:db8::6"]
    # Names are matched without regard to case, and the question's case comes back.
    assert records(dig(dns, "WwW.Example.TEST", "A", "+noall", "+answer")) == [
        "WwW.Example.TEST. 300 IN A 192.0.2.10", "WwW.Example.TEST. 300 IN A 192.0.2.11"]
    # The apex: its SOA and NS (RFC 8906 3.1.1), and ANY (dig sends it over TCP unless told).
    assert records(dig(dns, "example.test", "SOA", "+noall", "+answer")) == [SOA]
    assert records(dig(dns, "example.test", "NS", "+noall", "+answer")) == [
        "example.test. 300 IN NS ns1.example.test."]
    assert records(dig(dns, "example.test", "ANY", "+notcp", "+noall", "+answer")) == [
        "example.test. 300 IN A 192.0.2.1", "example.test. 300 IN NS ns1.example.test.",
        SOA, "example.test. 300 IN AAAA 2001:db8::1"]
    # RD is copied, RA never set: this server does not recurse.
    assert status_and_flags(dig(dns, "+recurse", "www.example.test", "A")) == (
        "NOERROR", ["qr", "aa", "rd"])
    assert_clean_exit(dns)


def test_dns_dig_negative_answers(dns):
    # A name of the zone it does not have: NXDOMAIN, the SOA in authority (RFC 2308).
    out = dig(dns, "nope.example.test", "A")
    assert status_and_flags(out) == ("NXDOMAIN", ["qr", "aa"])
    assert records(dig(dns, "nope.example.test", "A", "+noall", "+authority")) == [SOA]
    # A name it has, without that type (MX; A of a v6-only name; an empty
    # non-terminal): NODATA, not NOTIMP (RFC 8906 3.1.2).
    for name, qtype in (("www.example.test", "MX"), ("v6.example.test", "A"),
                        ("sub.example.test", "A"), ("www.example.test", "TYPE65000")):
        out = dig(dns, name, qtype)
        assert status_and_flags(out) == ("NOERROR", ["qr", "aa"]), (name, qtype, out)
        assert "ANSWER: 0, AUTHORITY: 1" in out
        assert records(dig(dns, name, qtype, "+noall", "+authority")) == [SOA]
    # Outside the zone, or another class: REFUSED, not authoritative.
    for args in (("example.org", "A"), ("test", "SOA"), ("xexample.test", "A"),
                 ("-c", "CH", "version.bind", "TXT")):
        out = dig(dns, *args)
        assert status_and_flags(out) == ("REFUSED", ["qr"]), (args, out)
        assert "QUERY: 1, ANSWER: 0, AUTHORITY: 0" in out
    # Another opcode, a meta type: NOTIMP (RFC 8906 3.1.4, 3.1.2).
    out = dig(dns, "+noedns", "+opcode=status", "example.test")
    assert re.search(r"opcode: STATUS, status: NOTIMP", out), out
    for qtype in ("MAILB", "TYPE128"):
        out = dig(dns, "+noedns", "+notcp", "example.test", qtype)
        assert status_and_flags(out) == ("NOTIMP", ["qr"]), (qtype, out)
    assert_clean_exit(dns)


def test_dns_dig_truncated_answer(dns):
    """40 A records do not fit in 512 bytes: the records that fit, and TC."""
    out = dig(dns, "+notcp", "+ignore", "many.example.test", "A")
    assert status_and_flags(out) == ("NOERROR", ["qr", "aa", "tc"])
    assert "MSG SIZE  rcvd: 499" in out  # 12 + 23 + 29 * 16 bytes; one more would be 515
    answer = records(dig(dns, "+notcp", "+ignore", "many.example.test", "A", "+noall", "+answer"))
    assert answer == ["many.example.test. 300 IN A 192.0.2.%d" % i for i in range(100, 129)]
    # Under 512 bytes nothing is cut.
    assert "tc" not in status_and_flags(dig(dns, "+notcp", "+ignore", "www.example.test"))[1]
    assert_clean_exit(dns)


def _query(ident, name=b"\x03www\x07example\x04test\x00", qtype=1, flags=0, qdcount=1):
    return struct.pack(">HHHHHH", ident, flags, qdcount, 0, 0, 0) + name + struct.pack(
        ">HH", qtype, 1)


def test_dns_bad_queries_get_formerr_or_nothing(dns):
    """Not one question, a compressed question name: FORMERR with the query's id.
    A runt, or a response (QR set): no answer at all. The server goes on."""
    with udp_client() as client:
        address = ("127.0.0.1", dns.port)
        client.sendto(b"\x12\x34\x00", address)  # shorter than a header
        client.sendto(_query(7, flags=0x8000), address)  # a response
        client.sendto(_query(8, qdcount=2), address)
        client.sendto(_query(9, name=b"\x03www\xc0\x0c"), address)
        client.sendto(_query(10, name=b"\x03www\x07exam"), address)  # cut short
        client.sendto(_query(11), address)
        got = [client.recvfrom(2048)[0] for _ in range(4)]
        for ident, answer in zip((8, 9, 10), got):
            assert answer == struct.pack(">HHHHHH", ident, 0x8001, 0, 0, 0, 0)
        ident, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", got[3])
        assert (ident, flags, qd, an, ns, ar) == (11, 0x8400, 1, 2, 0, 0)
        client.settimeout(0.3)
        with pytest.raises(socket.timeout):
            client.recvfrom(2048)
    assert_clean_exit(dns)


QUERIES = ["www.example.test A", "www.example.test AAAA", "nope.example.test A",
           "example.test SOA", "v6.example.test AAAA", "many.example.test A"]


@pytest.mark.parametrize("seconds", slow_param(1, 5))
def test_dns_dnsperf_every_query_answered(dns, tmp_path, seconds):
    """dnsperf keeps at most 100 queries outstanding (-q), from 4 sockets: its
    ~100 small datagrams take well under the 208 KiB (rmem_default) of the
    server's receive buffer, so the kernel has no reason to drop one, and a
    query counts as lost only after 5 s unanswered. So none may be lost."""
    dnsperf = tool("dnsperf")
    data = tmp_path / "queries.txt"
    data.write_text("\n".join(QUERIES) + "\n")
    code, out, err = run_tool([dnsperf, "-s", "127.0.0.1", "-p", str(dns.port), "-d", str(data),
                               "-l", str(seconds), "-c", "4", "-q", "100"],
                              timeout=seconds + 60)
    assert code == 0, out + err
    print(out)
    sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    assert sent > 1000 and completed == sent and lost == 0, out
    codes = dict((name, int(n)) for name, n in re.findall(r"(\w+) (\d+) \(", re.search(
        r"Response codes:\s+(.*)", out).group(1)))
    # One query in six is for a name the zone lacks; every answer is one of the two.
    assert set(codes) == {"NOERROR", "NXDOMAIN"} and sum(codes.values()) == completed, out
    assert abs(codes["NXDOMAIN"] - completed / 6) <= 100, out
    assert_clean_exit(dns)


# ---------------------------------------------------------------- UDP relay


def iperf3_udp(port, seconds, reverse):
    argv = [tool("iperf3"), "-u", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds),
            "-b", "50M", "-l", "1400", "-w", "1M", "-J"] + (["-R"] if reverse else [])
    code, out, err = run_tool(argv, timeout=seconds + 60)
    report = json.loads(out)
    assert code == 0 and "error" not in report, out + err
    return report["end"]


@pytest.mark.parametrize("seconds", slow_param(1, 5))
@pytest.mark.parametrize("reverse", [False, True], ids=["upload", "download"])
def test_udp_relay_iperf3(start, iperf_server, reverse, seconds):  # noqa: F811
    upstream = "127.0.0.1:%d" % iperf_server
    # iperf3's control connection is TCP, to the same port number: the TCP
    # port first (an outgoing connection may hold a free UDP port's number).
    control = start("proxy.py", "--upstream", upstream)
    relay = start("udp_relay.py", "--upstream", upstream, "--port", str(control.port))
    assert relay.port == control.port
    end = iperf3_udp(relay.port, seconds, reverse)
    received, sent = end["sum_received"], end["sum_sent"]
    stream = end["streams"][0]["udp"]
    print("iperf3 -u through the relay (%s): %d of %d datagrams, %d lost, %d out of order" % (
        "download" if reverse else "upload", received["packets"], sent["packets"],
        received["lost_packets"], stream["out_of_order"]))
    # A timed run: the receiver's count may stop short of the sender's.
    assert 0 < received["packets"] <= sent["packets"], end
    # One socket each way and one thread: nothing is reordered. 50 Mbit/s of
    # 1400-byte datagrams is 4,500 a second; every socket on the way (the
    # relay's, iperf3's: -w) has a receive buffer of 2 MiB, about 200 ms of
    # them. The full suite on this 2-core machine still starves a process that
    # long now and then, and UDP drops what does not fit: up to 1% may be
    # lost, as iperf3 counts it (the default 208 KiB buffers lost 1.4% once).
    assert stream["out_of_order"] == 0, end
    assert received["lost_percent"] <= 1.0, end
    assert_clean_exit(relay)
    assert_clean_exit(control)


class UdpEcho:
    """A UDP echo on a thread, at a given port; it remembers who sent."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.senders = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                data, sender = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            self.senders.append(sender)
            self.sock.sendto(data, sender)

    def close(self):
        self.running = False
        self.thread.join(TIMEOUT)
        self.sock.close()


def test_udp_relay_with_no_upstream_gives_nothing_and_goes_on(start):
    port = free_udp_port()  # nobody there: the relay's socket gets "port unreachable"
    relay = start("udp_relay.py", "--upstream", "127.0.0.1:%d" % port)
    address = ("127.0.0.1", relay.port)
    with udp_client() as a, udp_client() as b:
        a.settimeout(0.5)
        for i in range(3):
            a.sendto(b"anyone? %d" % i, address)
        with pytest.raises(socket.timeout):
            a.recvfrom(2048)
        echo = UdpEcho(port)
        try:
            a.settimeout(TIMEOUT)
            # The same client (its socket upstream took the errors) and a new one.
            for client in (a, b):
                sent = [b"%d from %r" % (i, client.getsockname()) for i in range(100)]
                for data in sent:
                    client.sendto(data, address)
                got = [client.recvfrom(2048) for _ in sent]
                assert [data for data, _ in got] == sent  # whole, in order
                assert {sender for _, sender in got} == {address}
            assert len(set(echo.senders)) == 2  # one socket upstream per client
            # A large datagram, whole.
            big = bytes(range(256)) * 200
            b.sendto(big, address)
            assert b.recvfrom(65536)[0] == big
        finally:
            echo.close()
    assert_clean_exit(relay)


def test_udp_relay_forgets_an_idle_client(start):
    echo = UdpEcho(0)
    try:
        relay = start("udp_relay.py", "--upstream", "127.0.0.1:%d" % echo.sock.getsockname()[1],
                      "--idle", "0.3")
        with udp_client() as client:
            for data in (b"first", b"second"):
                if data == b"second":
                    # more than --idle plus its wait_io(0.5) and its sweep's period
                    time.sleep(1.5)
                client.sendto(data, ("127.0.0.1", relay.port))
                assert client.recvfrom(2048)[0] == data
            # Its socket upstream was closed: the second went out of a new one.
            assert len(set(echo.senders)) == 2, echo.senders
        assert_clean_exit(relay)
    finally:
        echo.close()


@pytest.mark.parametrize("script, args", [
    ("dns_server.py", []), ("udp_relay.py", ["--upstream", "127.0.0.1:9"])])
def test_udp_example_bounded_run_ends_by_itself(engine, script, args):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--port", "0", "--seconds", "0.5", *args],
        capture_output=True, timeout=30, env=dict(os.environ, GAIO_ENGINE=engine))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"listening on 127.0.0.1:" in proc.stdout
    assert b"(engine %s)" % engine.encode() in proc.stdout
