"""R14: stats() counters: submitted (read/write requests accepted), completed
(results delivered, deadline and free included), bytes_read, bytes_written,
watched, pending, timeouts."""
import gaio
from conftest import STUCK, collect, recv_exactly

KEYS = ("submitted", "completed", "bytes_read", "bytes_written", "watched", "pending",
        "timeouts")


def _core(w):
    s = w.stats()
    return {k: s[k] for k in KEYS}


def test_stats_has_every_counter_as_an_int(watcher):
    s = watcher.stats()
    assert isinstance(s, dict)
    for key in KEYS:
        assert type(s[key]) is int, (key, s[key])
    assert _core(watcher) == dict.fromkeys(KEYS, 0)


# the counters later versions add (0.2: R16, R22; 0.3: datagrams and their
# system calls, TLS), under the same names on every engine
LATER_KEYS = ("accepted", "quiet_done", "datagrams_read", "datagrams_written",
              "datagram_recv_calls", "datagram_send_calls", "tls_handshakes")


def test_stats_has_the_later_counters_on_every_engine(watcher):
    s = watcher.stats()
    assert {k: s.get(k) for k in LATER_KEYS} == dict.fromkeys(LATER_KEYS, 0)


def test_counters_follow_a_session(watcher, net):
    (ca, sa), (cb, sb) = net.pairs(2)
    watcher.write(sa, b"x" * 100)
    s = _core(watcher)
    assert s["submitted"] == 1 and s["watched"] == 1
    collect(watcher, 1)
    s = _core(watcher)
    assert s["completed"] == 1 and s["bytes_written"] == 100 and s["pending"] == 0
    recv_exactly(ca, 100)

    watcher.read(sa, bytearray(64))
    watcher.read(sa)
    watcher.read(sb, bytearray(8))
    s = _core(watcher)
    assert s["submitted"] == 4 and s["pending"] == 3 and s["watched"] == 2
    ca.sendall(b"y" * 50)
    collect(watcher, 1)
    assert _core(watcher)["bytes_read"] == 50
    ca.sendall(b"z" * 7)
    collect(watcher, 1)
    s = _core(watcher)
    assert s["bytes_read"] == 57 and s["completed"] == 3 and s["pending"] == 1

    watcher.read(sa, bytearray(8), timeout=0.02)
    collect(watcher, 1)
    s = _core(watcher)
    assert s["timeouts"] == 1 and s["completed"] == 4 and s["submitted"] == 5

    watcher.free(sb)  # its pending read completes with ConnClosedError
    res = collect(watcher, 1)[0]
    assert isinstance(res.error, gaio.ConnClosedError)
    s = _core(watcher)
    assert s["submitted"] == 5, "free() is not a submitted request"
    assert s["completed"] == 5 and s["pending"] == 0 and s["watched"] == 1
    assert s["bytes_read"] == 57 and s["bytes_written"] == 100


def test_rejected_requests_are_not_counted(watcher, pair):
    client, server = pair()
    for bad in (lambda: watcher.read(server, b""), lambda: watcher.write(server, ""),
                lambda: watcher.read(None), lambda: watcher.read(server, timeout=float("nan"))):
        try:
            bad()
        except (TypeError, ValueError):
            pass
    assert _core(watcher) == dict.fromkeys(KEYS, 0)


def test_partial_transfers_are_counted(watcher, pair):
    client, server = pair()
    buf = bytearray(100)
    watcher.read_full(server, buf, timeout=0.2)
    client.sendall(b"p" * 30)
    res = collect(watcher, 1)[0]
    assert res.size == 30
    s = _core(watcher)
    assert s["bytes_read"] == 30 and s["timeouts"] == 1

    watcher.write(server, bytes(STUCK), timeout=0.2)
    res = collect(watcher, 1)[0]
    assert 0 < res.size < STUCK
    assert _core(watcher)["bytes_written"] == res.size


def test_many_requests_balance(watcher, net):
    pairs = net.pairs(20)
    for client, server in pairs:
        watcher.write(server, b"12345")
        watcher.read(server, bytearray(5))
        client.sendall(b"abcde")
    collect(watcher, 40)
    s = _core(watcher)
    assert s["submitted"] == s["completed"] == 40
    assert s["pending"] == 0 and s["watched"] == 20
    assert s["bytes_read"] == s["bytes_written"] == 100
