"""Typed use of gaio's public API: mypy accepts this file as it is, and it runs.

tests/test_static_checks.py type-checks it against src/gaio/__init__.pyi (the
assert_type lines pin what the stub promises) and runs it once, so the code a
type checker accepts is code that works.
"""
from __future__ import annotations

import array
import socket
import sys
import time
from typing import TYPE_CHECKING, Literal

import gaio

if TYPE_CHECKING:
    # Never executed: type checkers know typing_extensions from their own stubs.
    from typing_extensions import Buffer, assert_type
else:
    def assert_type(value, _type):
        return value

EngineName = Literal["uring", "epoll", "kqueue", "python"]


def send(w: gaio.Watcher, conn: socket.socket, data: Buffer) -> None:
    # PEP 688 buffers (collections.abc.Buffer, typing_extensions.Buffer) are accepted.
    w.write(conn, data, ctx=len(memoryview(data)))


def engines_here() -> list[str]:
    report = gaio.available_engines()
    assert_type(report, dict[str, str | None])
    for name in gaio.ENGINES:
        assert_type(name, EngineName)
    return [name for name, reason in report.items() if reason is None]


def echo_once(engine: str) -> bytes:
    """Send b"ping" from a to b, echo it back from b's internal-buffer view, read it in full."""
    a, b = socket.socketpair()
    echoed = bytearray(4)
    with gaio.Watcher(4096, engine=engine) as w:
        assert_type(w, gaio.Watcher)
        assert_type(w.engine, EngineName)
        assert_type(w.bufsize, int)
        send(w, a, array.array("B", b"ping"))
        w.read(b, timeout=5)
        w.read_full(a, memoryview(echoed), ctx="echo", deadline=time.monotonic() + 5.0)
        done = False
        while not done:
            results = w.wait_io(timeout=5.0)
            assert_type(results, list[gaio.OpResult])
            assert results, "no result within 5 s"
            for res in results:
                assert_type(res.op, gaio.Op)
                assert_type(res.conn, socket.socket)
                assert_type(res.size, int)
                assert_type(res.is_swap_buffer, bool)
                if res.error is not None:
                    assert_type(res.error, EOFError | OSError)
                    if isinstance(res.error, gaio.DeadlineExceededError):
                        raise TimeoutError("echo_once timed out") from res.error
                    raise res.error
                if res.op is gaio.Op.READ and res.is_swap_buffer:
                    assert bytes(res.buffer) == b"ping"
                    w.write(res.conn, res.buffer)  # the watcher copies the view
                elif res.op is gaio.Op.READ:
                    done = res.ctx == "echo"
        counters: dict[str, int] = w.stats()
        assert counters["completed"] == 4
        w.free(a)
        w.free(b)
    try:
        w.wait_io(0)
    except gaio.WatcherClosedError:
        pass
    return bytes(echoed)


def serve_v02(w: gaio.Watcher, listener: socket.socket, path: str) -> int:
    """0.2 in types only (not run): standing requests, quiet writes, sendfile."""
    w.accept(listener, repeat=True, timeout=60.0)
    fd: int = w.fileno()
    left: float | None = w.next_timeout()
    served = 0
    for res in w.wait_io(left):
        if res.op is gaio.Op.ACCEPT and res.accepted is not None:
            w.read(res.accepted, repeat=True, timeout=30)
            with open(path, "rb") as f:
                w.sendfile(res.accepted, f, 0, None, quiet=True)
            w.write(res.accepted, [b"a", bytearray(b"b"), memoryview(b"c")], quiet=True)
            served += 1
        elif res.op is gaio.Op.READ and res.error is None:
            w.write(res.conn, res.buffer, quiet=True)
    client = socket.socket()
    w.connect(client, ("127.0.0.1", 80), ctx="c", timeout=1)
    gaio.Watcher(write_high=None).close()
    return served + fd


def main() -> int:
    assert "python" in engines_here()
    assert echo_once("python") == b"ping"
    print("usage_ok: python engine echoed b'ping'", gaio.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
