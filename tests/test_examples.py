"""The examples (which are also the README's) run, serve real clients, and stop cleanly.

Each example runs as its own process on the engine under test (GAIO_ENGINE),
is talked to over 127.0.0.1, then stopped with SIGINT (Ctrl-C): it must exit
with status 0 and no traceback. The README's echo server is run as written
there, too. Every wait is bounded.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import pattern, reset

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TIMEOUT = 10.0
TIMESTAMP = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

pytestmark = pytest.mark.timeout(120)


class Example:
    """One example process: started on `engine`, its port the last number of its first line."""

    def __init__(self, argv, engine):
        env = dict(os.environ, GAIO_ENGINE=engine)
        # SIGINT is reset to its default in the child so that Python turns
        # it into KeyboardInterrupt even when our own parent started us with
        # SIGINT ignored (background jobs).
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.first_line = self._read_line(TIMEOUT)
        match = re.search(rb"(\d+)$", self.first_line)
        assert match, "no port in the example's first line: %r" % self.first_line
        self.port = int(match.group(1))

    def _read_line(self, timeout):
        fd = self.proc.stdout.fileno()
        line = b""
        give_up_at = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = give_up_at - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                self.stop()
                raise AssertionError("example printed no line in %.0f s" % timeout)
            chunk = os.read(fd, 1)
            if not chunk:
                _, err = self.stop()
                raise AssertionError("example exited early: %s" % err.decode(errors="replace"))
            line += chunk
        return line.rstrip(b"\n")

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        return sock

    def stop(self):
        """Ctrl-C the example; (exit status, stderr). Kills it if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            return None, err
        return self.proc.returncode, err

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def run_example(engine):
    started = []

    def run(script, *args):
        # --seconds is a safety net: the example ends by itself if a test
        # fails to stop it.
        argv = [str(EXAMPLES / script), "--port", "0", "--seconds", "60", *args]
        example = Example(argv, engine)
        started.append(example)
        return example

    yield run
    for example in started:
        example.close()


def recv_exactly(sock, count):
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "connection closed after %d of %d bytes" % (len(data), count)
        data += chunk
    return bytes(data)


def recv_line(sock, pending):
    """One b"\\n"-terminated line from sock; `pending` (a bytearray) keeps the rest."""
    while b"\n" not in pending:
        chunk = sock.recv(4096)
        assert chunk, "connection closed mid-line"
        pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


def assert_clean_exit(example):
    status, err = example.stop()
    assert status == 0, "exit status %r, stderr:\n%s" % (status, err.decode(errors="replace"))
    assert b"Traceback" not in err, err.decode(errors="replace")


def test_echo_server_echoes_every_byte(run_example, engine):
    example = run_example("echo_server.py")
    assert engine.encode() in example.first_line
    small = example.connect()
    large = example.connect()
    try:
        small.sendall(b"hello, gaio")
        assert recv_exactly(small, 11) == b"hello, gaio"

        # More than the example's 4 KB internal buffer: echoed in many pieces.
        # Sent from a thread so that neither side's socket buffers can fill up
        # while nobody reads.
        data = pattern(256 * 1024)
        sender = threading.Thread(target=large.sendall, args=(data,))
        sender.start()
        try:
            assert recv_exactly(large, len(data)) == data
        finally:
            sender.join(TIMEOUT)

        small.sendall(b"again")
        assert recv_exactly(small, 5) == b"again"
    finally:
        small.close()
        large.close()
    assert_clean_exit(example)


def readme_echo_server():
    """The README's echo server, as the README shows it."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"An echo server \(the heart of.*?```python\n(.*?)```", text, re.DOTALL)
    assert match, "no echo server in README.md"
    return match.group(1)


def test_readme_echo_server_echoes(engine, tmp_path):
    script = tmp_path / "readme_echo_server.py"
    script.write_text(readme_echo_server())
    example = Example([str(script)], engine)
    try:
        with example.connect() as client:
            client.sendall(b"hello, README")
            assert recv_exactly(client, 13) == b"hello, README"
        with example.connect() as client:
            data = pattern(64 * 1024)
            client.sendall(data)
            assert recv_exactly(client, len(data)) == data
    finally:
        example.close()  # it serves forever: there is no clean exit to check


def test_echo_server_sees_client_leave(run_example):
    example = run_example("echo_server.py")
    with example.connect() as client:
        client.sendall(b"x")
        assert recv_exactly(client, 1) == b"x"
    # The server frees the connection on EOF and keeps serving others.
    with example.connect() as client:
        client.sendall(b"y")
        assert recv_exactly(client, 1) == b"y"
    assert_clean_exit(example)


def test_echo_server_survives_clients_that_reset(run_example):
    # Each client sends far more than the 4 KB internal buffer and resets
    # without reading: the server's quiet writes fail (a WRITE result, the
    # connection freed) while reads of the bytes still queued arrive in the
    # same batch, whose write-back then meets a freed connection.
    example = run_example("echo_server.py")
    for _ in range(5):
        with example.connect() as client:
            client.sendall(pattern(256 * 1024))
            reset(client)
        with example.connect() as client:
            client.sendall(b"still here")
            assert recv_exactly(client, 10) == b"still here"
    assert_clean_exit(example)


def test_push_server_pushes_to_every_client(run_example, engine):
    example = run_example("push_server.py", "--interval", "0.1")
    assert engine.encode() in example.first_line
    first, second = example.connect(), example.connect()
    try:
        pending = {first: bytearray(), second: bytearray()}
        for _ in range(3):
            for client in (first, second):
                assert TIMESTAMP.match(recv_line(client, pending[client]))
        # One client leaves; the server drops it and goes on pushing to the other.
        second.close()
        for _ in range(3):
            assert TIMESTAMP.match(recv_line(first, pending[first]))
    finally:
        first.close()
        second.close()
    assert_clean_exit(example)


@pytest.mark.parametrize("script", ["echo_server.py", "push_server.py"])
def test_example_bounded_run_ends_by_itself(engine, script):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--port", "0", "--seconds", "0.5"],
        capture_output=True, timeout=30, env=dict(os.environ, GAIO_ENGINE=engine))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"listening on 127.0.0.1:" in proc.stdout
