"""The python engine's TLS receive (_python_tls._tls_recv) makes at most two
recv calls per record: its header, then its body with the next header if
that came too. A recv that brought less than it asked for emptied the
socket, so no third call in the same pump looks for the next record and
finds nothing.

Specific to the python engine on purpose: the native engines read
ciphertext through their own internal requests (core_tls.c), which no
Python wrapper can count. The recv calls are counted by a subclass of the
socket type the engine makes for a delegated socket.
"""
import _socket
import types

import gaio
import gaio._python_conns as python_conns
from conftest import collect
from tls_support import gaio_pair

ROUNDS = 50


class CountingSocket(_socket.socket):
    calls = 0

    def recv(self, *args):
        CountingSocket.calls += 1
        return super().recv(*args)


def test_two_recv_calls_per_record_at_most(monkeypatch, net):
    monkeypatch.setattr(python_conns, "_socket", types.SimpleNamespace(socket=CountingSocket))
    with gaio.Watcher(engine="python") as w:
        client, server, _ = gaio_pair(w, net)
        # a server's usual read: standing, so the session looks for the next
        # record as soon as one was delivered
        w.read(server, ctx="r", repeat=True)
        CountingSocket.calls = 0
        for i in range(ROUNDS):
            w.write(client, b"ping %03d" % i, ctx="w")
            got = {r.ctx: r for r in collect(w, 2)}
            assert bytes(got["r"].buffer) == b"ping %03d" % i
        # one record a round (a short write is one record); a pump that
        # comes for another reason may look once and find nothing. Before:
        # three a record (151 here)
        assert CountingSocket.calls <= 2 * ROUNDS + 3, CountingSocket.calls
        w.free(server)
        w.free(client)
