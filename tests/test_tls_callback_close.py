"""An SNI callback (Python code the TLS record layer runs inside wait_io())
that calls close() or free() on its own watcher: a RuntimeError that says
so, raised in the callback, never a deadlock (the native pass holds the
core's lock that close() takes) nor a connection closed under the session.
The handshake then fails as for any callback's exception (R28), and the
watcher and its other connections go on.

Each case runs in a child process with a timeout: a deadlock (asynchronous
signals are held off during the native pass) fails the test instead of
hanging it.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from gaio._python_args import TLS_CALLBACK_CLOSE

pytestmark = pytest.mark.usefixtures("tls_engine")

TESTS = os.path.dirname(os.path.abspath(__file__))

CHILD = textwrap.dedent("""
    import json, ssl, sys
    sys.path.insert(0, sys.argv[3])
    import gaio
    from conftest import collect
    from tls_support import HOST, client_context, gaio_pair, server_context
    from test_tls_callback_close import FakeNet

    engine, call = sys.argv[1], sys.argv[2]
    w = gaio.Watcher(engine=engine)
    net = FakeNet()
    client, server = net.pair()
    raised = []

    def sni(obj, name, ctx):
        try:
            w.close() if call == "close" else w.free(server)
        except Exception as exc:
            raised.append([type(exc).__name__, str(exc)])
            raise

    sys.unraisablehook = lambda u: None  # CPython's report of the callback's exception
    w.start_tls(server, server_context(sni=sni), server_side=True, ctx="server")
    w.start_tls(client, client_context(), server_side=False, server_hostname=HOST, ctx="client")
    results = {r.ctx: r for r in collect(w, 2)}
    out = {"raised": raised,
           "server": type(results["server"].error).__name__,
           "server_is_ssl_error": isinstance(results["server"].error, ssl.SSLError)}
    w.free(client)
    w.free(server)
    # another connection on the same watcher: unharmed
    a, b, _ = gaio_pair(w, net)
    w.write(a, b"ping", ctx="w")
    w.read(b, ctx="r")
    got = {r.ctx: r for r in collect(w, 2)}
    out["after"] = bytes(got["r"].buffer).decode()
    out["watched"] = w.stats()["watched"]
    w.close()
    print(json.dumps(out))
""")


class FakeNet:
    """The `net` fixture's pair(), for the child: connected TCP sockets."""

    def __init__(self):
        import socket
        self.listener = socket.create_server(("127.0.0.1", 0))

    def pair(self, unix=False):
        import socket
        client = socket.create_connection(self.listener.getsockname())
        server, _ = self.listener.accept()
        return client, server


@pytest.mark.parametrize("call", ["close", "free"])
def test_close_or_free_from_an_sni_callback_raises_instead_of_deadlocking(engine, call):
    child = subprocess.run([sys.executable, "-c", CHILD, engine, call, TESTS],
                           capture_output=True, text=True, timeout=30, env=os.environ.copy())
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["raised"] == [["RuntimeError", TLS_CALLBACK_CLOSE]]
    assert out["server_is_ssl_error"], out
    assert out["after"] == "ping"
    assert out["watched"] == 2
