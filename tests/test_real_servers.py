"""The real-server examples, driven by the clients people already use.

examples/http_server.py by curl and wrk, examples/resp_server.py by redis-cli
and redis-benchmark, examples/proxy.py by iperf3 (both directions), each also
by a client that stops reading. Every example runs as its own process on the
engine under test (GAIO_ENGINE) and must stop on SIGINT with status 0.

A test whose client is not installed skips, saying so (.ci/run installs them
from Debian's packages: wrk redis-tools redis-server iperf3 curl). Runs are
short by default (wrk and iperf3 2 s each); the issue's 5 s runs are marked
slow.
"""
import hashlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import pattern, reset
from test_examples import EXAMPLES, TIMEOUT, Example, assert_clean_exit, recv_exactly

pytestmark = pytest.mark.timeout(180)

BIG = 100 << 20  # the 100 MiB file


# The clients are not under test: .ci/sanitize's LD_PRELOAD of the sanitizer
# runtimes is for the Python processes only.
TOOL_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip("%s is not installed (apt-get install wrk redis-tools iperf3 curl)" % name)
    return path


def run_tool(argv, timeout=60, input=None):
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, input=input, env=TOOL_ENV)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(
        errors="replace")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def slow_param(fast, slow):
    """[fast value, slow value marked slow]: the issue's numbers run in CI's slow pass."""
    return [fast, pytest.param(slow, marks=pytest.mark.slow)]


# ---------------------------------------------------------------- HTTP

@pytest.fixture(scope="module")
def web_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "small.txt").write_bytes(b"a static file\n")
    chunk = pattern(1 << 20)
    with open(root / "big.bin", "wb") as f:
        for i in range(BIG >> 20):
            f.write(chunk[i:] + chunk[:i])
    return root


@pytest.fixture
def http(start, web_root):
    pytest.importorskip("httptools", reason="examples/http_server.py needs httptools")
    return start("http_server.py", "--root", str(web_root))


def http_url(example, path="/"):
    return "http://127.0.0.1:%d%s" % (example.port, path)


def test_http_curl_status_headers_body_and_keep_alive(http, engine):
    curl = tool("curl")
    assert engine.encode() in http.first_line
    code, out, err = run_tool([curl, "-sv", "--http1.1", http_url(http, "/"),
                               http_url(http, "/static/small.txt"), http_url(http, "/nope")])
    assert code == 0, err
    assert out == "Hello, world!\n" "a static file\n" "not found\n"
    assert "< HTTP/1.1 200 OK" in err and "< HTTP/1.1 404 Not Found" in err
    assert "< Content-Length: 14" in err and "< Content-Type: text/plain" in err
    assert "< Date: " in err
    # Three requests, one connection: curl says so when it reuses it.
    assert err.count("Re-using existing connection") == 2, err
    assert err.count("Connected to") == 1, err
    assert_clean_exit(http)


def test_http_curl_100_mib_file_byte_exact(http, web_root, tmp_path):
    curl = tool("curl")
    out_file = tmp_path / "got.bin"
    code, out, err = run_tool([curl, "-s", "-o", str(out_file), "-w", "%{http_code} %{size_download}",
                               http_url(http, "/static/big.bin")])
    assert code == 0, err
    assert out == "200 %d" % BIG
    assert _sha256(out_file) == _sha256(web_root / "big.bin")
    assert_clean_exit(http)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_until_eof(sock):
    sock.settimeout(TIMEOUT)
    data = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk


def test_http_malformed_request_gets_400_and_the_connection_closes(http):
    with http.connect() as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # a good one first
                       b"GET / HTTP/1.1\r\nthis is no header\r\n\r\n"
                       b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # never answered
        data = _read_until_eof(client)
    first, _, rest = data.partition(b"Hello, world!\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in rest and rest.endswith(b"\r\n\r\nbad request\n")
    # The server goes on serving others.
    with http.connect() as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert _read_until_eof(client).endswith(b"Hello, world!\n")
    assert_clean_exit(http)


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, ZeroDivisionError])
def test_http_an_exception_in_a_parser_callback_is_not_a_bad_request(raised):
    """Ctrl-C while httptools runs one of the example's callbacks must stop
    the server, not become a 400 (CI once saw the example ignore its SIGINT
    under wrk): the callback's own exception comes out of parse()."""
    httptools = pytest.importorskip("httptools")
    sys.path.insert(0, str(EXAMPLES))
    try:
        from http_server import parse
    finally:
        sys.path.remove(str(EXAMPLES))

    class Raising:
        def on_url(self, url):
            raise raised()

    with pytest.raises(raised):
        parse(httptools.HttpRequestParser(Raising()), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse(httptools.HttpRequestParser(object()), b"GET / HTTP/1.1\r\n\r\n") == "ok"
    assert parse(httptools.HttpRequestParser(object()), b"NOT HTTP\r\n\r\n") == "bad"


def test_http_pipelined_requests_answered_in_order(http):
    requests = []
    for i in range(60):
        path = b"/static/small.txt" if i % 3 == 1 else (b"/hello?n=%d" % i)
        requests.append(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    requests.append(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    with http.connect() as client:
        # In pieces that split requests anywhere: the parser keeps its state.
        blob = b"".join(requests)
        for at in range(0, len(blob), 97):
            client.sendall(blob[at:at + 97])
        data = _read_until_eof(client)
    bodies = re.findall(rb"HTTP/1.1 200 OK\r\n.*?\r\n\r\n(Hello, world!\n|a static file\n)",
                        data, re.DOTALL)
    expected = [b"a static file\n" if i % 3 == 1 else b"Hello, world!\n" for i in range(60)]
    assert bodies == expected + [b"Hello, world!\n"]
    assert_clean_exit(http)


def test_http_client_that_never_reads_is_held_back(http):
    """Pipelined requests, responses never read: the server stops reading it
    (back-pressure) instead of queueing responses without bound."""
    rss_before = rss_kib(http.proc.pid)
    burst = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    client = http.connect()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.setblocking(False)
    sent = 0
    stalled_since = None
    give_up = time.monotonic() + 30
    try:
        while time.monotonic() < give_up:
            try:
                sent += client.send(burst)
                stalled_since = None
            except BlockingIOError:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if now - stalled_since > 1.0:
                    break
                select.select([], [client], [], 0.1)
            assert sent < 256 << 20, "the server read 256 MiB of requests it cannot answer"
        else:
            pytest.fail("the client could still send after 30 s (%d bytes)" % sent)
        grew = rss_kib(http.proc.pid) - rss_before
        # (AddressSanitizer keeps freed memory in quarantine: RSS says nothing there)
        if not os.environ.get("GAIO_SANITIZED"):
            assert grew < 64 * 1024, "the server grew by %d KiB for a client that does not read" % grew
        # Everyone else is served meanwhile.
        with http.connect() as other:
            other.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert _read_until_eof(other).endswith(b"Hello, world!\n")
    finally:
        reset(client)
    assert_clean_exit(http)


@pytest.mark.parametrize("seconds", slow_param(1, 5))
def test_http_wrk_100_connections_all_200(http, seconds):
    wrk = tool("wrk")
    code, out, err = run_tool([wrk, "-t", "2", "-c", "100", "-d", "%ds" % seconds,
                               "--timeout", "5s", http_url(http, "/")], timeout=seconds + 60)
    assert code == 0, out + err
    print(out)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    assert total > 0 and rate > 0, out
    assert "Socket errors" not in out, out
    assert "Non-2xx or 3xx responses" not in out, out
    assert_clean_exit(http)


# ---------------------------------------------------------------- RESP


@pytest.fixture
def resp(start):
    return start("resp_server.py")


def cli(example, *args, input=None):
    code, out, err = run_tool([tool("redis-cli"), "-p", str(example.port), *args], input=input)
    assert code == 0, err
    return out


def test_resp_redis_cli_commands(resp, engine):
    assert engine.encode() in resp.first_line
    assert cli(resp, "PING") == "PONG\n"
    assert cli(resp, "PING", "hi there") == "hi there\n"
    assert cli(resp, "ECHO", "a\r\nb") == "a\r\nb\n"  # bulk strings are binary-safe
    assert cli(resp, "SET", "k1", "v1") == "OK\n"
    assert cli(resp, "GET", "k1") == "v1\n"
    assert cli(resp, "--no-raw", "GET", "missing") == "(nil)\n"
    assert cli(resp, "INCR", "n") == "1\n"
    assert cli(resp, "INCR", "n") == "2\n"
    assert "not an integer" in cli(resp, "INCR", "k1")
    assert cli(resp, "--no-raw", "MGET", "k1", "missing", "n") == \
        '1) "v1"\n2) (nil)\n3) "2"\n'
    assert cli(resp, "DEL", "k1", "n", "missing") == "2\n"
    assert cli(resp, "--no-raw", "GET", "k1") == "(nil)\n"
    assert "unknown command" in cli(resp, "FLUB", "x")
    assert "wrong number of arguments" in cli(resp, "GET")
    big = "x" * 300000  # more than one read's worth: a command in many pieces
    assert cli(resp, "-x", "SET", "big", input=big.encode()) == "OK\n"
    assert cli(resp, "GET", "big") == big + "\n"
    assert_clean_exit(resp)


def test_resp_redis_cli_pipe_every_reply(resp):
    tool("redis-cli")
    commands = []
    for i in range(20000):
        commands.append(b"*3\r\n$3\r\nSET\r\n$%d\r\nkey%d\r\n$%d\r\nvalue%d\r\n"
                        % (len(b"key%d" % i), i, len(b"value%d" % i), i))
        commands.append(b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n")
    proc = subprocess.run(["redis-cli", "-p", str(resp.port), "--pipe"], env=TOOL_ENV,
                          input=b"".join(commands), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert b"errors: 0, replies: 40000" in proc.stdout, proc.stdout
    assert cli(resp, "GET", "counter") == "20000\n"
    assert cli(resp, "MGET", "key0", "key12345", "key19999") == "value0\nvalue12345\nvalue19999\n"
    assert_clean_exit(resp)


def test_resp_pipelined_replies_byte_exact(resp):
    """Every reply of a deep pipeline, checked byte for byte (split at random)."""
    with resp.connect() as client:
        sent, expected = bytearray(), bytearray()
        for i in range(3000):
            key = b"p%d" % (i % 50)
            sent += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n" % (
                len(key), key, len(b"%d" % i), i)
            expected += b"+OK\r\n"
            sent += b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
            expected += b"$%d\r\n%d\r\n" % (len(b"%d" % i), i)
            sent += b"PING\r\n"  # inline, as typed into telnet
            expected += b"+PONG\r\n"
        sender = threading.Thread(target=client.sendall, args=(bytes(sent),))
        sender.start()
        try:
            assert recv_exactly(client, len(expected)) == bytes(expected)
        finally:
            sender.join(TIMEOUT)
    assert_clean_exit(resp)


@pytest.mark.parametrize("pipeline", [1, 16])
@pytest.mark.parametrize("requests", slow_param(10000, 50000))
def test_resp_redis_benchmark(resp, pipeline, requests):
    bench = tool("redis-benchmark")
    code, out, err = run_tool([bench, "-p", str(resp.port), "-t", "ping,set,get", "-c", "50",
                               "-n", str(requests), "-P", str(pipeline), "--csv"],
                              timeout=120)
    assert code == 0, out + err
    print(out)
    rates = {}
    for line in out.splitlines()[1:]:
        fields = [f.strip('"') for f in line.split(",")]
        rates[fields[0]] = float(fields[1])
    assert set(rates) >= {"PING_INLINE", "PING_MBULK", "SET", "GET"}, out
    assert all(rate > 0 for rate in rates.values()), out
    assert "ERR" not in out + err and "rror" not in err, out + err
    # redis-benchmark's SET wrote its 3-byte value "VXK" to key:__rand_int__ (no -r).
    assert cli(resp, "GET", "key:__rand_int__") == "VXK\n"
    assert_clean_exit(resp)


# ---------------------------------------------------------------- proxy


@pytest.fixture
def iperf_server():
    iperf3 = tool("iperf3")
    port = free_port()
    proc = subprocess.Popen([iperf3, "-s", "-p", str(port), "-B", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=TOOL_ENV)
    deadline = time.monotonic() + TIMEOUT
    while True:  # until it listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "iperf3 -s did not start"
            time.sleep(0.05)
    time.sleep(0.2)  # it takes the probe as a client that left: let it go back to listening
    yield port
    proc.terminate()
    proc.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("seconds", slow_param(1, 5))
@pytest.mark.parametrize("reverse", [False, True], ids=["upload", "download"])
def test_proxy_iperf3(start, iperf_server, reverse, seconds):
    proxy = start("proxy.py", "--upstream", "127.0.0.1:%d" % iperf_server)
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(proxy.port), "-t", str(seconds), "-J"]
    code, out, err = run_tool(argv + (["-R"] if reverse else []), timeout=seconds + 60)
    report = json.loads(out)
    assert code == 0 and "error" not in report, out + err
    received = report["end"]["sum_received"]
    sent = report["end"]["sum_sent"]
    print("iperf3 through the proxy (%s): %.2f Gbit/s" % (
        "download" if reverse else "upload", received["bits_per_second"] / 1e9))
    # A timed run: the receiver's count may stop short of the sender's.
    assert 0 < received["bytes"] <= sent["bytes"], (sent, received)
    assert_clean_exit(proxy)


class Upstream:
    """A loopback server on a thread: mode "echo" sends back what it gets,
    "flood" sends without end and counts what the kernel took."""

    def __init__(self, mode):
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.listener.settimeout(TIMEOUT)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(30)
                if self.mode == "echo":
                    while True:
                        data = conn.recv(1 << 16)
                        if not data:
                            return
                        conn.sendall(data)
                chunk = pattern(1 << 16)
                while True:
                    self.sent += conn.send(chunk)
        except OSError as exc:  # the flood ends when the proxy closes it
            self.error = exc

    def close(self):
        self.listener.close()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


def test_proxy_relays_both_ways_byte_exact(start):
    upstream = Upstream("echo")
    try:
        proxy = start("proxy.py", "--upstream", "127.0.0.1:%d" % upstream.port)
        data = pattern(8 << 20, seed=3)
        with proxy.connect() as client:
            sender = threading.Thread(target=client.sendall, args=(data,))
            sender.start()
            try:
                assert recv_exactly(client, len(data)) == data
            finally:
                sender.join(TIMEOUT)
        assert_clean_exit(proxy)
    finally:
        upstream.close()


def test_proxy_delivers_the_last_bytes_before_closing(start):
    """The client sends and closes at once: the bytes still reach upstream,
    whose EOF then comes through the proxy."""
    got = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))

    def sink():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            while chunk := conn.recv(1 << 16):
                got.extend(chunk)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    try:
        proxy = start("proxy.py", "--upstream", "127.0.0.1:%d" % listener.getsockname()[1])
        data = pattern(4 << 20, seed=5)
        with proxy.connect() as client:
            client.sendall(data)
        thread.join(TIMEOUT)
        assert bytes(got) == data
        assert_clean_exit(proxy)
    finally:
        listener.close()
        thread.join(TIMEOUT)


def test_proxy_client_that_stops_reading_slows_the_fast_side(start):
    upstream = Upstream("flood")
    try:
        proxy = start("proxy.py", "--upstream", "127.0.0.1:%d" % upstream.port)
        rss_before = rss_kib(proxy.proc.pid)
        client = proxy.connect()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        try:
            # The flood stops once the kernel buffers and write_high are full.
            deadline = time.monotonic() + 30
            last = -1
            while upstream.sent != last:
                assert time.monotonic() < deadline, "the upstream is never slowed"
                last = upstream.sent
                time.sleep(0.5)
            assert 0 < upstream.sent < 128 << 20, upstream.sent
            grew = rss_kib(proxy.proc.pid) - rss_before
            if not os.environ.get("GAIO_SANITIZED"):  # RSS is ASan's quarantine there
                assert grew < 32 * 1024, "the proxy grew by %d KiB" % grew
            # It still relays: the client reads, the flood resumes.
            got = recv_exactly(client, 16 << 20)
            assert len(got) == 16 << 20
            assert upstream.sent > last
        finally:
            reset(client)
        upstream.thread.join(TIMEOUT)  # the proxy closed upstream: the flood ended
        assert isinstance(upstream.error, OSError)
        assert_clean_exit(proxy)
    finally:
        upstream.close()


def test_proxy_upstream_refused_closes_the_client(start):
    proxy = start("proxy.py", "--upstream", "127.0.0.1:%d" % free_port())
    with proxy.connect() as client:
        client.settimeout(TIMEOUT)
        try:
            assert client.recv(1) == b""
        except ConnectionResetError:
            pass
    assert_clean_exit(proxy)


# ---------------------------------------------------------------- all of them


@pytest.mark.parametrize("script, args", [
    ("http_server.py", []), ("resp_server.py", []),
    ("proxy.py", ["--upstream", "127.0.0.1:9"]), ("asyncio_push.py", [])])
def test_real_example_bounded_run_ends_by_itself(engine, script, args):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--port", "0", "--seconds", "0.5", *args],
        capture_output=True, timeout=30, env=dict(os.environ, GAIO_ENGINE=engine))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"listening on 127.0.0.1:" in proc.stdout
    assert b"(engine %s)" % engine.encode() in proc.stdout


def test_http_example_says_what_is_missing_without_httptools(tmp_path):
    (tmp_path / "httptools.py").write_text("raise ImportError('no httptools here')\n")
    proc = subprocess.run([sys.executable, str(EXAMPLES / "http_server.py"), "--port", "0"],
                          capture_output=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert proc.returncode != 0
    assert b"pip install 'gaio[http]'" in proc.stderr
    assert b"Traceback" not in proc.stderr

