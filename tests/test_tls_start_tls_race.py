"""Two start_tls() on one connection from two threads, the first not yet
drained when the second comes (the test thread waits in wait_io(), so the
native engines keep both in their incoming list): the second is a second
start_tls, ValueError at the call (R28, the 0.3 edge cases), never a
result of its own, and the first's handshake goes on unharmed.
"""
import threading

import pytest

import gaio
from conftest import collect
from tls_support import HOST, Peer, client_context, wrap_peer, server_context

pytestmark = pytest.mark.usefixtures("tls_engine")

ROUNDS = 12
AGAIN = "start_tls() on a connection already in TLS"


def _serve_one(sock, ctx):
    tls = wrap_peer(sock, ctx, server_side=True)
    try:
        tls.sendall(b"hi")
        assert tls.recv(1) == b""
    finally:
        tls.close()


def _race(watcher, client):
    """Two threads start_tls(client) at once: what each raised (None: nothing)."""
    gate = threading.Barrier(2)
    raised = [None, None]
    # made here, not by the racing threads: the test CA is made once
    contexts = [client_context(), client_context()]

    def start(k):
        gate.wait(5)
        try:
            watcher.start_tls(client, contexts[k], server_side=False,
                              server_hostname=HOST, ctx=("tls", k))
        except Exception as exc:  # the test thread checks which
            raised[k] = exc

    threads = [threading.Thread(target=start, args=(k,), daemon=True) for k in (0, 1)]
    for t in threads:
        t.start()
    return threads, raised


def test_the_second_of_two_racing_start_tls_is_a_value_error(watcher, net):
    for _ in range(ROUNDS):
        client, server = net.pair()
        peer = Peer(_serve_one, server, server_context())
        threads, raised = _race(watcher, client)
        watcher.read(client, ctx="read")
        results = collect(watcher, 2, timeout=10)  # the handshake and the read
        for t in threads:
            t.join(5)
            assert not t.is_alive()
        errors = [e for e in raised if e is not None]
        assert len(errors) == 1, raised
        assert type(errors[0]) is ValueError and str(errors[0]) == AGAIN
        winner = ("tls", raised.index(None))
        by_ctx = {r.ctx: r for r in results}
        assert sorted(by_ctx, key=str) == sorted(["read", winner], key=str), results
        assert by_ctx[winner].op == gaio.Op.TLS and by_ctx[winner].error is None
        assert bytes(by_ctx["read"].buffer) == b"hi"
        watcher.free(client)
        peer.finish()
    stats = watcher.stats()
    assert stats["tls_handshakes"] == ROUNDS
    assert stats["submitted"] == 2 * ROUNDS  # the refused ones queued nothing
