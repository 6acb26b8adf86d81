"""TLS code the native core runs under its lock (the pass after a wait,
free()'s close_notify) runs Python code, so it holds the GIL all along: when
another thread held the core's lock as it began, it takes the GIL back before
any of that code runs. Without that, the SSLObject's calls let go of a GIL
another thread held, and that thread crashed (seen as a start_tls racing a
handshake's pass). R15: nothing crashes the interpreter; R30: free() sends
close_notify.
"""
import gaio
from tls_support import handshake_with_peer

HOLD = 0.2


def test_free_of_a_tls_connection_while_another_thread_holds_the_core_lock(native_engine, net):
    w = gaio.Watcher(engine=native_engine)
    try:
        def peer(tls):
            return tls.recv(10)  # b"": our close_notify, a clean end

        ours, p, res = handshake_with_peer(w, net, peer)
        assert res.error is None
        for _ in range(3):
            w.wait_io(0.01)  # nothing of the handshake left in flight
        w._debug_hold_lock(HOLD)
        w.free(ours)  # waits for the lock, then unwrap() and close_notify
        assert p.finish() == b""
    finally:
        w.close()
