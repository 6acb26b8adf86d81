"""R30: how a TLS connection ends. The peer's close_notify ends reads with
EOFError; a stream that ends without it ends them with ssl.SSLEOFError
(truncation is never a clean end). A record that fails to decrypt ends every
pending request with ssl.SSLError, and later ones complete with its class.
free() sends close_notify if no record is half sent and the socket takes it
at once, and never waits; close() and the release of a dropped connection
send nothing.
Written from the SPEC's words (docs/SPEC.md, "Rules - TLS").
"""
import gc
import socket
import ssl
import time

import pytest

import gaio
from conftest import collect, pattern, reset
from tls_support import (
    bio_client,
    Peer,
    gaio_pair,
    handshake_with_peer,
    server_context,
)

# the native engines' cases are strict expected failures (conftest.py)
pytestmark = pytest.mark.usefixtures("tls_engine")

VERSIONS = [pytest.param(False, id="tls-default"), pytest.param(True, id="tls1.2")]


def _reads_end(w, conn, n=2):
    """Request n reads (one into a buffer) and return their errors."""
    w.read(conn, ctx=0)
    for i in range(1, n):
        w.read(conn, bytearray(8), ctx=i)
    got = sorted(collect(w, n), key=lambda r: r.ctx)
    assert all(r.size == 0 for r in got)
    return [r.error for r in got]


# ---------------------------------------------------------------- clean and not

@pytest.mark.parametrize("tls12", VERSIONS)
def test_close_notify_from_the_peer_is_eof(watcher, net, tls12):
    def peer(tls):
        tls.sendall(b"bye")
        tls.unwrap()  # close_notify; returns once ours came (free() below)

    ours, p, res = handshake_with_peer(watcher, net, peer, server_ctx=server_context(tls12=tls12))
    assert res.tls.version() == ("TLSv1.2" if tls12 else "TLSv1.3")
    watcher.read(ours, bytearray(3))
    assert bytes(collect(watcher, 1)[0].buffer) == b"bye"
    errors = _reads_end(watcher, ours, 3)
    assert all(type(e) is EOFError for e in errors), errors
    watcher.free(ours)
    p.finish()


@pytest.mark.parametrize("tls12", VERSIONS)
def test_a_stream_ending_without_close_notify_is_truncation(watcher, net, tls12):
    def peer(tls):
        tls.sendall(b"part")
        tls.shutdown(socket.SHUT_RDWR)  # the TCP stream ends, no close_notify

    ours, p, res = handshake_with_peer(watcher, net, peer, server_ctx=server_context(tls12=tls12))
    watcher.read(ours, bytearray(4))
    assert bytes(collect(watcher, 1)[0].buffer) == b"part"
    errors = _reads_end(watcher, ours, 3)
    assert all(type(e) is ssl.SSLEOFError for e in errors), errors
    p.finish()


def test_a_reset_ends_reads_with_its_oserror(watcher, net):
    ours, p, res = handshake_with_peer(watcher, net, reset)  # RST, no close_notify
    p.finish()
    errors = _reads_end(watcher, ours, 2)
    assert all(type(e) is ConnectionResetError for e in errors), errors


# ---------------------------------------------------------------- free, close, drop

def test_free_sends_close_notify(watcher, net):
    def peer(tls):
        data = tls.recv(10)
        return data, tls.recv(10)  # b"": a clean end (ragged ends raise here)

    ours, p, res = handshake_with_peer(watcher, net, peer)
    watcher.write(ours, b"last")
    collect(watcher, 1)
    watcher.free(ours)
    assert p.finish() == (b"last", b"")


def test_free_gaio_to_gaio_is_eof_at_the_other_end(watcher, net):
    client, server, _ = gaio_pair(watcher, net)
    watcher.write(client, b"hi", ctx="w")
    collect(watcher, 1)
    watcher.free(client)
    watcher.read(server, bytearray(2), ctx="data")
    watcher.read(server, ctx="end")
    got = {r.ctx: r for r in collect(watcher, 2)}
    assert got["data"].size == 2 and type(got["end"].error) is EOFError


def test_free_never_waits(watcher, net):
    client, server, _ = gaio_pair(watcher, net)
    watcher.write(client, pattern(64 << 20), ctx="stuck")  # the server reads nothing
    assert watcher.wait_io(0.2) == []
    start = time.monotonic()
    watcher.free(client)
    assert time.monotonic() - start < 0.5
    got = collect(watcher, 1)[0]
    assert isinstance(got.error, gaio.ConnClosedError) and got.size > 0
    # a record was half sent: no close_notify follows it, so the end is not
    # clean (a reset, when the freed end had unread bytes, or truncation)
    watcher.read(server, repeat=True, ctx="drain")
    end = time.monotonic() + 30
    last = None
    while last is None and time.monotonic() < end:
        for r in watcher.wait_io(0.1):
            if r.error is not None:
                last = r.error
    assert isinstance(last, (ssl.SSLError, ConnectionResetError)), last


def test_close_sends_nothing(engine, net):
    w = gaio.Watcher(engine=engine)
    try:
        ours, p, res = handshake_with_peer(w, net, lambda tls: tls.recv(10))
        assert res.error is None
    finally:
        w.close()
    with pytest.raises(ssl.SSLEOFError):
        p.finish()


def test_a_dropped_connection_sends_nothing(watcher, net):
    ours, p, res = handshake_with_peer(watcher, net, lambda tls: tls.recv(10))
    assert res.error is None
    net.forget()
    del ours, res
    gc.collect()
    watcher.wait_io(0.05)
    with pytest.raises(ssl.SSLEOFError):
        p.finish()
    assert watcher.stats()["watched"] == 0


# ---------------------------------------------------------------- broken records

def _bio_client(sock, then):
    """A TLS client over memory BIOs on blocking `sock`: the handshake, then
    then(obj, outgoing) returns ciphertext to send."""
    obj, _, outgoing = bio_client(sock)
    sock.sendall(then(obj, outgoing))
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _corrupt(obj, outgoing):
    obj.write(b"hello world" * 10)
    record = bytearray(outgoing.read())
    record[-1] ^= 1
    return bytes(record)


def test_a_record_that_fails_to_decrypt_ends_every_request(watcher, net):
    ours, theirs = net.pair()
    p = Peer(_bio_client, theirs, _corrupt)
    watcher.start_tls(ours, server_context(), server_side=True, ctx="tls")
    assert collect(watcher, 1)[0].error is None
    big = pattern(64 << 20)  # stays pending: the client reads slowly, if at all
    watcher.write(ours, big, ctx="write")
    watcher.read(ours, ctx="read")
    watcher.read(ours, repeat=True, ctx="standing")
    got = {r.ctx: r for r in collect(watcher, 3)}
    assert type(got["read"].error) is type(got["write"].error) is type(got["standing"].error)
    assert isinstance(got["read"].error, ssl.SSLError)
    watcher.write(ours, b"later", ctx="later")
    watcher.read(ours, ctx="later-read")
    later = collect(watcher, 2)
    assert all(type(r.error) is type(got["read"].error) for r in later)
    watcher.free(ours)
    p.finish()


def test_garbage_instead_of_a_record(watcher, net):
    ours, theirs = net.pair()
    p = Peer(_bio_client, theirs, lambda obj, out: b"\x17\x03\x03\x00\x05hello")
    watcher.start_tls(ours, server_context(), server_side=True, ctx="tls")
    assert collect(watcher, 1)[0].error is None
    watcher.read(ours, ctx="read")
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, ssl.SSLError) and res.size == 0
    watcher.free(ours)
    p.finish()
