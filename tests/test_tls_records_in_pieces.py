"""Ciphertext that comes in pieces of every size, on every engine: records
split anywhere (inside a header, between a header and its body, inside a
body, several records in one piece) are all decrypted, in order, without a
byte lost or repeated, whether a standing read or one-shot reads wait; then
the peer's close_notify ends the reads with EOFError, or a stream that stops
inside a record ends them with ssl.SSLEOFError (R30).

The reads skip SSLObject.read when it could only raise SSLWantReadError
(_python_tls._tls_nothing_to_read, tls_session.c's gaio__tls_nothing_to_read),
judging by the record framing how much of the BIO's bytes belong to the
record being received: these are the cases that judgement must get right.
"""
import socket
import ssl
import time

import pytest

from conftest import collect
from tls_support import Peer, bio_client, server_context

pytestmark = pytest.mark.usefixtures("tls_engine")

MESSAGES = [b"a", b"bc" * 40, b"x" * 3000, b"", b"last one"]
# piece sizes the peer cycles through: inside a header, across a header and
# its body, several records at once
PIECES = [1, 2, 3, 5, 7, 11, 64, 700, 4096]


def _send_in_pieces(sock, stream, start=0):
    at, i = 0, start
    while at < len(stream):
        n = PIECES[i % len(PIECES)]
        sock.sendall(stream[at:at + n])
        at += n
        i += 1
        time.sleep(0.002)  # apart, as separate arrivals
    return i


def _piecewise_client(sock, messages, end):
    """A TLS client over memory BIOs on blocking `sock`: the handshake, then
    each message's record in pieces of PIECES' sizes, waiting for gaio's
    b"!" once it read the whole message (so a read that waited for bytes
    already there would stall here), then the end: `close_notify`, or
    `truncate` (the first half of one more record and no more)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    obj, incoming, outgoing = bio_client(sock)
    piece = 0
    for m in messages:
        if not m:
            continue
        obj.write(m)
        piece = _send_in_pieces(sock, outgoing.read(), piece)
        while True:  # the ack (session tickets may come first)
            try:
                assert obj.read(1) == b"!"
                break
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                assert data
                incoming.write(data)
    if end == "close_notify":
        try:
            obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        _send_in_pieces(sock, outgoing.read(), piece)
    else:
        obj.write(b"never whole")
        record = outgoing.read()
        _send_in_pieces(sock, record[:len(record) // 2], piece)
        sock.shutdown(socket.SHUT_WR)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


@pytest.mark.parametrize("end", ["close_notify", "truncate"])
@pytest.mark.parametrize("reads", ["standing", "one-shot", "small"])
def test_records_in_pieces_are_all_read(watcher, net, reads, end):
    """small: one-shot reads of 7 bytes, so the SSLObject keeps plaintext
    between them (SSLObject.pending)."""
    ours, theirs = net.pair()
    watcher.start_tls(ours, server_context(), server_side=True, ctx="tls")
    p = Peer(_piecewise_client, theirs, MESSAGES, end)
    assert collect(watcher, 1, timeout=10)[0].error is None
    messages = [m for m in MESSAGES if m]
    got = bytearray()
    error = None
    deadline = time.monotonic() + 20
    if reads == "standing":
        watcher.read(ours, repeat=True, ctx="r")
    while error is None and time.monotonic() < deadline:
        if reads == "one-shot":
            watcher.read(ours, ctx="r")
        elif reads == "small":
            watcher.read(ours, bytearray(7), ctx="r")
        for res in collect(watcher, 1, timeout=10):
            if res.ctx != "r":
                continue  # an ack went
            if res.error is not None:
                error = res.error
                continue
            got += res.buffer[:res.size]
            if messages and len(got) >= len(messages[0]):
                assert bytes(got[:len(messages[0])]) == messages[0]
                del got[:len(messages[0])]
                messages.pop(0)
                watcher.write(ours, b"!", ctx="ack")
    assert not messages and not got, (messages, bytes(got))
    if end == "close_notify":
        assert type(error) is EOFError, error
    else:
        assert isinstance(error, ssl.SSLEOFError), error
    watcher.free(ours)
    p.finish()
