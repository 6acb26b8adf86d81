"""A peer's TLS 1.2 renegotiation (the 0.3 edge cases): `openssl s_client
-tls1_2` against a gaio server capped at TLS 1.2, its `R` command on stdin.
OpenSSL 3 refuses a client's renegotiation on the server side by itself
(a no_renegotiation alert, which s_client answers with a fatal
handshake_failure): the connection's requests end with ssl.SSLError, and
later ones with its class; nothing leaks, the watcher and its other
connections go on. Python's ssl cannot start a renegotiation, hence the tool.
"""
import ssl
import subprocess

import pytest

from conftest import collect
from test_real_servers import TOOL_ENV, tool
from tls_support import HOST, authority, gaio_pair, server_context

pytestmark = [pytest.mark.usefixtures("tls_engine"), pytest.mark.timeout(120)]


def _s_client(port, ca, log):
    """openssl s_client at TLS 1.2 on port, its stdin a pipe, its output in log."""
    return subprocess.Popen([tool("openssl"), "s_client", "-tls1_2", "-connect",
                             "127.0.0.1:%d" % port, "-CAfile", ca, "-servername", HOST],
                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                            env=TOOL_ENV)


def _say(proc, line):
    proc.stdin.write(line)
    proc.stdin.flush()


def test_a_peers_tls12_renegotiation_fails_the_connection_alone(watcher, net, tmp_path):
    ca = tmp_path / "ca.pem"
    authority().ca.cert_pem.write_to_path(str(ca))
    other_client, other_server, _ = gaio_pair(watcher, net)  # a bystander
    listener = net.listener()
    log = open(tmp_path / "s_client.log", "wb")
    proc = _s_client(listener.getsockname()[1], str(ca), log)
    try:
        conn, _ = listener.accept()
        net.track(conn)
        watcher.start_tls(conn, server_context(tls12=True), server_side=True, ctx="tls")
        res = collect(watcher, 1, timeout=10)[0]
        assert res.error is None and res.tls.version() == "TLSv1.2"
        watcher.read(conn, ctx="before")
        _say(proc, b"hello\n")
        res = collect(watcher, 1, timeout=10)[0]
        assert (res.ctx, res.error, bytes(res.buffer)) == ("before", None, b"hello\n")

        watcher.read(conn, ctx="during")
        _say(proc, b"R\n")
        res = collect(watcher, 1, timeout=10)[0]
        assert res.ctx == "during" and isinstance(res.error, ssl.SSLError), res
        failure = type(res.error)
        # later requests end with its class (R30), none is left pending
        watcher.write(conn, b"after\n", ctx="write")
        watcher.read(conn, ctx="after")
        later = {r.ctx: r for r in collect(watcher, 2, timeout=10)}
        assert {ctx: type(r.error) for ctx, r in later.items()} == {"write": failure,
                                                                    "after": failure}
        proc.stdin.close()
        assert proc.wait(20) != 0  # s_client gave up on its renegotiation
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    out = (tmp_path / "s_client.log").read_text(errors="replace")
    assert "RENEGOTIATING" in out, out[-2000:]
    assert watcher.stats()["pending"] == 0
    watcher.free(conn)

    # the bystander is unharmed
    watcher.write(other_client, b"still here", ctx="w")
    watcher.read(other_server, ctx="r")
    got = {r.ctx: r for r in collect(watcher, 2)}
    assert got["w"].error is None and bytes(got["r"].buffer) == b"still here"
    watcher.free(other_client)
    watcher.free(other_server)
    stats = watcher.stats()
    assert stats["watched"] == 0 and stats["pending"] == 0
    assert stats["tls_handshakes"] == 3
