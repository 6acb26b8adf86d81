"""Misuses of gaio's API that the stub must reject. Never run.

tests/test_static_checks.py expects mypy to report an error on exactly the
lines marked `# E: <code>` (alternatives separated by |), and on no other line.
"""
import socket

import gaio


def misuse(w: gaio.Watcher, conn: socket.socket, res: gaio.OpResult) -> None:
    w.write(conn, "text")  # E: arg-type
    w.read(conn, timeout="1s")  # E: arg-type
    w.read(conn.fileno())  # E: arg-type
    w.read(conn, bytearray(8), None)  # E: call-arg|misc
    w.read_full(conn)  # E: call-arg
    w.free(conn=conn)  # E: call-arg
    w.wait_io(timeout=None, deadline=1.0)  # E: call-arg
    gaio.Watcher("64k")  # E: arg-type
    gaio.Watcher(4096, "python")  # E: call-arg|misc
    w.engine = "python"  # E: misc
    res.size = 0  # E: misc|property
    print(res.error.errno)  # E: union-attr
    size_text: str = res.size  # E: assignment
    results: list[bytes] = w.wait_io()  # E: assignment
    stats: dict[str, str] = w.stats()  # E: assignment
    print(size_text, results, stats)


def misuse_v02(w: gaio.Watcher, conn: socket.socket, res: gaio.OpResult) -> None:
    w.accept(conn, quiet=True)  # E: call-arg
    w.write(conn, [b"a", "b"])  # E: list-item|arg-type
    w.sendfile(conn, "/etc/hosts")  # E: arg-type
    w.read_full(conn, bytearray(1), repeat=True)  # E: call-arg
    gaio.Watcher(write_high="256k")  # E: arg-type
    res.accepted = conn  # E: misc|attr-defined|property
