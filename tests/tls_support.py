"""What the TLS tests (test_r28_*, test_r29_*, test_r30_*) share: a
certificate authority made with trustme (a server certificate for
localhost/127.0.0.1, a client certificate for mutual TLS), contexts, and
peers made of Python's own ssl module, run in a thread.
"""
import ssl
import threading

import trustme

from conftest import collect, run_in_thread

HOST = "localhost"
PEER_TIMEOUT = 10.0


class _Authority:
    def __init__(self):
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert(HOST, "127.0.0.1")
        self.client = self.ca.issue_cert("client@example.com")
        self.stranger = trustme.CA()  # a CA nobody here trusts


_AUTHORITY = None
_AUTHORITY_LOCK = threading.Lock()


def authority():
    """The one test authority of the process: threads that ask at once get the
    same one (a second would sign certificates the first's contexts distrust)."""
    global _AUTHORITY
    with _AUTHORITY_LOCK:
        if _AUTHORITY is None:
            _AUTHORITY = _Authority()
        return _AUTHORITY


def server_context(alpn=None, client_cert=False, sni=None, cert=None, tls12=False):
    """A server's context: our server certificate (or `cert`); client_cert:
    the client must show one our CA signed."""
    auth = authority()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    (cert or auth.server).configure_cert(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        auth.ca.configure_trust(ctx)
    if sni is not None:
        ctx.sni_callback = sni
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(alpn=None, cert=False, trust=True):
    """A client's context: it trusts our CA (trust=False: a stranger's) and,
    with cert, shows our client certificate."""
    auth = authority()
    # create_default_context() would also load the system's CA store (tens of
    # ms a context, hundreds of contexts in the suite): ours is all it trusts.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    (auth.ca if trust else auth.stranger).configure_trust(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        auth.client.configure_cert(ctx)
    return ctx


def wrap_peer(sock, ctx, server_side):
    """A blocking SSLSocket over `sock`, handshake done, that tells a clean
    end (b'') from a truncated one (ssl.SSLEOFError)."""
    sock.settimeout(PEER_TIMEOUT)
    return ctx.wrap_socket(sock, server_side=server_side,
                           server_hostname=None if server_side else HOST,
                           suppress_ragged_eofs=False)


class Peer:
    """`fn(*args)` in a thread; finish() joins it and returns what it
    returned (or raises what it raised)."""

    def __init__(self, fn, *args):
        self.thread, self.box = run_in_thread(fn, *args)

    def finish(self, timeout=PEER_TIMEOUT + 5):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the TLS peer did not finish"
        if "error" in self.box:
            raise self.box["error"]
        return self.box.get("result")


def recv_all(tls, n):
    """Exactly n plaintext bytes from blocking SSLSocket `tls`."""
    out = bytearray()
    while len(out) < n:
        data = tls.recv(min(n - len(out), 1 << 20))
        assert data, "EOF after %d of %d bytes" % (len(out), n)
        out += data
    return bytes(out)


def gaio_pair(w, net, server_ctx=None, client_ctx=None, unix=False):
    """(client, server, {"client": result, "server": result}): both ends of
    a connection on watcher `w`, their handshakes done."""
    client, server = net.pair(unix=unix)
    w.start_tls(server, server_ctx or server_context(), server_side=True, ctx="server")
    w.start_tls(client, client_ctx or client_context(), server_side=False,
                server_hostname=HOST, ctx="client")
    results = {r.ctx: r for r in collect(w, 2)}
    assert results["server"].error is None, results
    assert results["client"].error is None, results
    return client, server, results


def bio_client(sock):
    """A TLS client over memory BIOs on blocking `sock`, handshaken (its last
    flight sent): (obj, incoming, outgoing), for tests that write records by hand."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing, server_hostname=HOST)
    sock.settimeout(10)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        if outgoing.pending:
            sock.sendall(outgoing.read())
        data = sock.recv(65536)
        assert data
        incoming.write(data)
    if outgoing.pending:
        sock.sendall(outgoing.read())
    return obj, incoming, outgoing


def handshake_with_peer(w, net, peer_fn, client=True, ctx=None, client_ctx=None,
                        server_ctx=None):
    """gaio's end (the client, or the server) of a pair on `w`, and a Peer
    running peer_fn(tls) over the other end once wrapped: (ours, peer, result)."""
    ours, theirs = net.pair()
    if client:
        peer_ctx = server_ctx or server_context()
        w.start_tls(ours, client_ctx or client_context(), server_side=False,
                    server_hostname=HOST, ctx=ctx)
    else:
        peer_ctx = client_ctx or client_context()
        w.start_tls(ours, server_ctx or server_context(), server_side=True, ctx=ctx)
    def run():
        tls = wrap_peer(theirs, peer_ctx, server_side=client)
        try:
            return peer_fn(tls)
        finally:
            tls.close()

    peer = Peer(run)
    res = collect(w, 1)[0]
    return ours, peer, res
