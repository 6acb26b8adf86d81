"""R28: start_tls(conn, context, server_side=..., server_hostname=None)
begins a TLS session on a connected stream socket, configured by a standard
ssl.SSLContext. It queues with the connection's writes; no read takes bytes
from the socket until the handshake is done; it completes with Op.TLS, size
0, buffer None and `tls` the session's SSLObject (None on failure). After a
failed handshake every request on the connection completes with the same
error class, and start_tls again is a ValueError.
Written from the SPEC's words (docs/SPEC.md, "Rules - TLS", and the 0.3
edge cases).
"""
import re
import socket
import ssl
import sys
import time

import pytest

import gaio
from conftest import collect
from tls_support import (
    HOST,
    Peer,
    client_context,
    gaio_pair,
    handshake_with_peer,
    recv_all,
    server_context,
    wrap_peer,
)

# the native engines' cases are strict expected failures (conftest.py)
pytestmark = pytest.mark.usefixtures("tls_engine")


def _echo_once(tls):
    tls.sendall(tls.recv(100))


# ---------------------------------------------------------------- the result

def test_client_handshake_result_fields(watcher, net):
    ours, peer, res = handshake_with_peer(watcher, net, _echo_once, ctx="hello")
    assert res.op == gaio.Op.TLS and res.op == 5
    assert res.conn is ours and res.ctx == "hello"
    assert res.error is None and res.size == 0 and res.buffer is None
    assert res.is_swap_buffer is False
    assert res.address is None and res.truncated is False
    assert isinstance(res.tls, ssl.SSLObject)
    assert res.tls.version() in ("TLSv1.2", "TLSv1.3")
    assert res.tls.cipher() is not None
    assert res.tls.server_side is False and res.tls.server_hostname == HOST
    assert res.tls.getpeercert()["subjectAltName"][0] == ("DNS", HOST)
    assert watcher.stats()["tls_handshakes"] == 1
    watcher.write(ours, b"ping", ctx="w")
    watcher.read(ours, ctx="r")
    got = {}
    collect(watcher, 2, each=lambda r: got.__setitem__(r.ctx, (r, bytes(r.buffer))))
    assert got["r"][1] == b"ping"
    assert got["r"][0].tls is None and got["w"][0].tls is None  # only TLS results carry it
    peer.finish()


def test_server_handshake_with_python_client(watcher, net):
    ours, peer, res = handshake_with_peer(watcher, net, _echo_once, client=False, ctx="srv")
    assert res.error is None and res.op == gaio.Op.TLS
    assert res.tls.server_side is True and res.tls.server_hostname is None
    watcher.write(ours, b"hello")
    watcher.read(ours, bytearray(10), ctx="r")
    got = collect(watcher, 2)
    reads = [r for r in got if r.ctx == "r"]
    assert bytes(reads[0].buffer[:reads[0].size]) == b"hello"
    peer.finish()


def test_gaio_to_gaio_handshake_and_alpn(watcher, net):
    client, server, res = gaio_pair(watcher, net,
                                    server_context(alpn=["h2", "http/1.1"]),
                                    client_context(alpn=["http/1.1"]))
    assert res["client"].tls.selected_alpn_protocol() == "http/1.1"
    assert res["server"].tls.selected_alpn_protocol() == "http/1.1"
    assert res["client"].tls.version() == res["server"].tls.version()
    assert watcher.stats()["tls_handshakes"] == 2


def test_sni_reaches_the_servers_callback(watcher, net):
    names = []

    def sni(obj, name, ctx):
        names.append(name)

    gaio_pair(watcher, net, server_context(sni=sni))
    assert names == [HOST]


def test_sni_callback_exception_fails_the_handshake(watcher, net, monkeypatch):
    def sni(obj, name, ctx):
        raise LookupError("no certificate for %s" % name)

    # CPython hands a callback's exception to sys.unraisablehook and fails
    # the handshake with ssl.SSLError (CALLBACK_FAILED): gaio changes neither
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    client, server = net.pair()
    watcher.start_tls(server, server_context(sni=sni), server_side=True, ctx="server")
    watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST,
                      ctx="client")
    results = {r.ctx: r for r in collect(watcher, 2)}
    assert isinstance(results["server"].error, ssl.SSLError)
    assert isinstance(results["client"].error, ssl.SSLError)
    assert results["server"].tls is None and results["client"].tls is None
    assert watcher.stats()["tls_handshakes"] == 0
    assert [type(u.exc_value) for u in unraisable] == [LookupError]


def test_mutual_tls(watcher, net):
    client, server, res = gaio_pair(watcher, net, server_context(client_cert=True),
                                    client_context(cert=True))
    subject = dict(item[0] for item in res["server"].tls.getpeercert()["subject"])
    assert res["server"].tls.getpeercert()["subjectAltName"] == (
        ("email", "client@example.com"),)
    assert subject == {} or subject  # trustme's client certificate has no CN


def test_client_without_certificate_is_refused(watcher, net):
    client, server = net.pair()
    watcher.start_tls(server, server_context(client_cert=True), server_side=True, ctx="server")
    watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST,
                      ctx="client")
    results = {r.ctx: r for r in collect(watcher, 2)}
    assert isinstance(results["server"].error, ssl.SSLError)
    if results["client"].error is None:
        # TLS 1.3: the client's handshake is done before the server checks it;
        # the rejection arrives as the next read's error
        watcher.read(client, ctx="read")
        res = collect(watcher, 1)[0]
        assert isinstance(res.error, ssl.SSLError), res
    else:
        assert isinstance(results["client"].error, ssl.SSLError)


# ---------------------------------------------------------------- failures

def test_verification_failure_then_every_request_fails_alike(watcher, net):
    client, server = net.pair()
    peer = Peer(lambda: _refused_by_client(server))
    watcher.start_tls(client, client_context(trust=False), server_side=False,
                      server_hostname=HOST, ctx="tls")
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, ssl.SSLCertVerificationError), res
    assert res.tls is None and res.op == gaio.Op.TLS and res.size == 0
    assert watcher.stats()["tls_handshakes"] == 0
    watcher.read(client, ctx="read")
    watcher.read(client, bytearray(4), ctx="read-buf")
    watcher.write(client, b"x", ctx="write")
    watcher.write(client, b"x", ctx="quiet", quiet=True)
    later = {r.ctx: r for r in collect(watcher, 4)}
    for name in ("read", "read-buf", "write", "quiet"):
        assert type(later[name].error) is ssl.SSLCertVerificationError, later[name]
    with pytest.raises(ValueError, match="^start_tls\\(\\) on a connection already in TLS$"):
        watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST)
    assert watcher.stats()["timeouts"] == 0
    peer.finish()


def _refused_by_client(sock):
    with pytest.raises(ssl.SSLError):
        wrap_peer(sock, server_context(), server_side=True)


def test_requests_pending_at_a_failed_handshake_fail_alike(watcher, net):
    client, server = net.pair()
    peer = Peer(lambda: _refused_by_client(server))
    watcher.start_tls(client, client_context(trust=False), server_side=False,
                      server_hostname=HOST, ctx="tls")
    watcher.read(client, ctx="read")
    watcher.read(client, repeat=True, ctx="standing")
    watcher.write(client, [b"a", b"b"], ctx="vector")
    got = collect(watcher, 4)
    assert got[0].ctx == "tls"
    assert {r.ctx: type(r.error) for r in got} == dict.fromkeys(
        ("tls", "read", "standing", "vector"), ssl.SSLCertVerificationError)
    assert watcher.stats()["pending"] == 0
    peer.finish()


def test_peer_closes_mid_handshake(watcher, net):
    client, server = net.pair()
    watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST)
    assert watcher.wait_io(0.05) == []
    server.settimeout(5)
    assert server.recv(1)  # the ClientHello has left
    server.close()
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, (ssl.SSLEOFError, ConnectionResetError)), res


def test_handshake_deadline(watcher, net):
    client, server = net.pair()  # the server never speaks TLS
    watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST,
                      timeout=0.1, ctx="tls")
    watcher.read(client, ctx="read")
    got = collect(watcher, 2)
    assert [r.ctx for r in got] == ["tls", "read"]
    assert all(isinstance(r.error, gaio.DeadlineExceededError) for r in got)
    assert watcher.stats()["timeouts"] == 1  # the read's is the same class, not a timeout


def test_free_during_handshake(watcher, net):
    client, server = net.pair()
    watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST)
    watcher.read(client)
    watcher.wait_io(0.05)
    watcher.free(client)
    got = collect(watcher, 2)
    assert all(isinstance(r.error, gaio.ConnClosedError) for r in got)
    assert sorted(r.op for r in got) == [gaio.Op.READ, gaio.Op.TLS]


# ---------------------------------------------------------------- order

def test_writes_before_start_tls_go_out_in_plaintext_first(watcher, net):
    client, server = net.pair()

    def peer():
        server.settimeout(10)
        line = b""
        while not line.endswith(b"\n"):
            line += server.recv(1)
        tls = wrap_peer(server, server_context(), server_side=True)
        try:
            return line, recv_all(tls, 6)
        finally:
            tls.close()

    p = Peer(peer)
    watcher.write(client, b"STARTTLS", ctx="plain1")
    watcher.write(client, [b"\r", b"\n"], ctx="plain2")
    watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST,
                      ctx="tls")
    watcher.write(client, b"secret", ctx="sealed")
    got = collect(watcher, 4)
    assert [r.ctx for r in got] == ["plain1", "plain2", "tls", "sealed"]
    assert all(r.error is None for r in got)
    assert p.finish() == (b"STARTTLS\r\n", b"secret")


def test_reads_pending_at_start_tls_get_only_decrypted_bytes(watcher, net):
    ours, theirs = net.pair()
    watcher.read(ours, ctx="one-shot")
    watcher.wait_io(0.02)  # it is pending when start_tls comes

    def peer():
        tls = wrap_peer(theirs, client_context(), server_side=False)
        try:
            tls.sendall(b"first")
            time.sleep(0.1)
            tls.sendall(b"second")
            time.sleep(0.1)
        finally:
            tls.close()

    p = Peer(peer)
    watcher.start_tls(ours, server_context(), server_side=True, ctx="tls")
    got = []
    collect(watcher, 2, each=lambda r: got.append((r.ctx, r.error, bytes(r.buffer or b""))))
    assert got[0][0] == "tls" and got[0][1] is None
    assert got[1] == ("one-shot", None, b"first")
    watcher.read(ours, repeat=True, ctx="standing")
    collect(watcher, 1, each=lambda r: got.append((r.ctx, r.error, bytes(r.buffer or b""))))
    assert got[2] == ("standing", None, b"second")
    p.finish()


def test_read_with_a_buffer_pending_at_start_tls_gets_only_decrypted_bytes(watcher, net):
    """A read into the caller's buffer made before start_tls (on io_uring its
    receive is in the kernel then) gets the decrypted bytes, never the
    ciphertext that follows start_tls."""
    ours, theirs = net.pair()
    buf = bytearray(64)
    watcher.read(ours, buf, ctx="buffered")
    watcher.wait_io(0.02)  # it is pending (submitted) when start_tls comes

    def peer():
        tls = wrap_peer(theirs, client_context(), server_side=False)
        try:
            tls.sendall(b"first")
            time.sleep(0.1)
        finally:
            tls.close()

    p = Peer(peer)
    watcher.start_tls(ours, server_context(), server_side=True, ctx="tls")
    got = collect(watcher, 2)
    assert [r.ctx for r in got] == ["tls", "buffered"]
    assert got[0].error is None and got[1].error is None
    assert got[1].buffer is buf and bytes(buf[:got[1].size]) == b"first"
    p.finish()


def test_standing_read_pending_at_start_tls(watcher, net):
    ours, theirs = net.pair()
    watcher.read(ours, repeat=True, ctx="standing")
    watcher.start_tls(ours, server_context(), server_side=True, ctx="tls")

    def peer():
        tls = wrap_peer(theirs, client_context(), server_side=False)
        try:
            tls.sendall(b"x" * 1000)
            tls.unwrap()  # sends close_notify, then waits for ours (free() sends it)
        finally:
            tls.close()

    p = Peer(peer)
    data = bytearray()
    ends = []

    def each(r):
        if r.ctx == "standing":
            if r.error is None:
                data.extend(r.buffer)
            else:
                ends.append(r.error)

    deadline = time.monotonic() + 10
    while not ends and time.monotonic() < deadline:
        for r in watcher.wait_io(0.1):
            each(r)
    assert bytes(data) == b"x" * 1000
    assert isinstance(ends[0], EOFError) and not isinstance(ends[0], ssl.SSLError)
    watcher.free(ours)
    p.finish()


def test_start_tls_right_after_connect(watcher, net):
    lis = net.listener()
    sock = net.track(socket.socket())

    def peer():
        s, _ = lis.accept()
        tls = wrap_peer(s, server_context(), server_side=True)
        try:
            tls.sendall(tls.recv(10))
        finally:
            tls.close()

    p = Peer(peer)
    watcher.connect(sock, lis.getsockname(), ctx="connect")
    watcher.start_tls(sock, client_context(), server_side=False, server_hostname=HOST,
                      ctx="tls")
    watcher.write(sock, b"echo", ctx="write")
    watcher.read(sock, ctx="read")
    got = []
    collect(watcher, 4, each=lambda r: got.append((r.ctx, r.error, r.buffer and bytes(r.buffer))))
    assert [g[0] for g in got[:2]] == ["connect", "tls"]
    assert all(g[1] is None for g in got)
    assert ("read", None, b"echo") in got
    p.finish()


def test_start_tls_after_a_failed_connect_fails_with_its_class(watcher, net):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()  # nobody listens there
    sock = net.track(socket.socket())
    watcher.connect(sock, address, ctx="connect")
    first = collect(watcher, 1)[0]
    assert isinstance(first.error, ConnectionRefusedError)
    watcher.start_tls(sock, client_context(), server_side=False, server_hostname=HOST,
                      ctx="tls")
    res = collect(watcher, 1)[0]
    assert type(res.error) is ConnectionRefusedError and res.tls is None


def test_start_tls_while_connect_pending_then_fails(watcher, net):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()
    sock = net.track(socket.socket())
    watcher.connect(sock, address, ctx="connect")
    watcher.start_tls(sock, client_context(), server_side=False, server_hostname=HOST,
                      ctx="tls")
    got = collect(watcher, 2)
    assert [r.ctx for r in got] == ["connect", "tls"]
    assert all(type(r.error) is ConnectionRefusedError for r in got)


# ---------------------------------------------------------------- arguments

def _match(message):
    return "^%s$" % re.escape(message)


def test_start_tls_on_a_listener(watcher, net):
    with pytest.raises(ValueError, match=_match("start_tls() on a listening socket")):
        watcher.start_tls(net.listener(), server_context(), server_side=True)
    lis = net.track(socket.create_server(("127.0.0.1", 0)))
    watcher.accept(lis, timeout=0)
    collect(watcher, 1)
    with pytest.raises(ValueError, match=_match("start_tls() on a listening socket")):
        watcher.start_tls(lis, server_context(), server_side=True)  # delegated


UNCONNECTED = "start_tls() needs a connected socket (or one on which connect() was requested)"


def test_start_tls_on_an_unconnected_socket(watcher, net):
    sock = net.track(socket.socket())
    with pytest.raises(ValueError, match=_match(UNCONNECTED)):
        watcher.start_tls(sock, server_context(), server_side=True)
    assert watcher.stats()["watched"] == 0 and sock.fileno() != -1


def test_start_tls_twice(watcher, net):
    client, server = net.pair()
    watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST)
    with pytest.raises(ValueError, match=_match("start_tls() on a connection already in TLS")):
        watcher.start_tls(client, client_context(), server_side=False, server_hostname=HOST)
    assert watcher.stats()["submitted"] == 1
    watcher.free(client)
    collect(watcher, 1)


def test_check_hostname_needs_server_hostname(watcher, net):
    client, server = net.pair()
    with pytest.raises(ValueError, match=_match("check_hostname requires server_hostname")):
        watcher.start_tls(client, client_context(), server_side=False)
    relaxed = client_context()
    relaxed.check_hostname = False  # then it may be left out (and verification still runs)
    p = Peer(lambda: _serve_one(server))
    watcher.start_tls(client, relaxed, server_side=False, ctx="tls")
    res = collect(watcher, 1)[0]
    assert res.error is None and res.tls.server_hostname is None
    watcher.free(client)
    p.finish()


def _serve_one(sock):
    tls = wrap_peer(sock, server_context(), server_side=True)
    try:
        assert tls.recv(1) == b""
    finally:
        tls.close()


def test_the_context_is_never_modified(watcher, net):
    ctx = client_context()
    before = (ctx.check_hostname, ctx.verify_mode, ctx.options, ctx.minimum_version,
              ctx.maximum_version)
    ours, peer, res = handshake_with_peer(watcher, net, lambda tls: tls.recv(1),
                                          client_ctx=ctx)
    assert res.error is None
    assert (ctx.check_hostname, ctx.verify_mode, ctx.options, ctx.minimum_version,
            ctx.maximum_version) == before
    watcher.free(ours)
    peer.finish()


def test_start_tls_from_another_thread_while_waiting(watcher, net):
    client, server = net.pair()
    p = Peer(lambda: _serve_one(server))

    def later():
        time.sleep(0.1)  # the test thread is blocked in wait_io() by then
        try:
            watcher.start_tls(client, client_context(), server_side=False,
                              server_hostname=HOST, ctx="tls")
        except BaseException:
            watcher.close()  # wakes the waiter: the test fails now, not at a timeout
            raise

    starter = Peer(later)
    try:
        res = collect(watcher, 1)[0]
    finally:
        starter.thread.join(5)
    starter.finish()
    assert res.ctx == "tls" and res.error is None
    watcher.free(client)
    p.finish()
