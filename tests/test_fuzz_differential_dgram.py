"""Differential fuzz of datagram sockets (0.3, R24-R27): python is the oracle.

The sibling of test_fuzz_differential_v02.py for datagrams. A hypothesis
state machine drives the same random call sequence against two *lanes*,
one watcher of the python engine and one of a native engine, each with its
own datagram sockets and their scripted far ends (the *peers*):

  - an AF_UNIX SOCK_DGRAM socketpair and a connected loopback UDP pair;
  - an unconnected UDP socket with two bound peers, and an unconnected
    AF_UNIX socket bound to a path with two bound peers and one unbound
    sender (its datagrams carry address None, R25);
  - sockets made by connect() on a fresh datagram socket (UDP or AF_UNIX),
    with writes and reads queued behind the connect;
  - one-shot reads into caller buffers smaller and larger than the
    datagrams and into the internal buffer (bufsize 512, datagrams up to
    twice that: truncation both ways), standing reads, writes plain,
    vectored, quiet, empty and too long (EMSGSIZE), with address= on the
    unconnected sockets (and where it is wrong), deadlines and idle limits,
    free(), and peers that send datagrams of random sizes;
  - a connected UDP socket's peer that closes (R27): a write to it draws
    an ICMP error, ConnectionRefusedError to a pending read (a standing
    read keeps standing), else to the first pending write, else dropped.
    It closes only with no datagram unread: the kernel reports the error
    before datagrams queued earlier, so which comes first would be when
    an engine tried the write.

Nothing is ever dropped: AF_UNIX datagrams never are, and a peer never
leaves more than a few datagrams unread on a UDP socket, so every outcome
is deterministic once a lane is *settled*: its peers drained, every write
done, every request with a deadline completed, and no read pending on a
socket with a datagram unread. The lanes must then agree on

  - what raised, step by step;
  - per request, every result in order (results of different requests
    interleave in completion order, not compared): op, error class, size,
    `truncated`, the bytes, and on unconnected sockets the sender mapped to
    the lane's own name for it (a standing read has one result per
    datagram, R26);
  - per peer, the datagrams it received, in order;
  - stats(): datagrams_read, datagrams_written, submitted, pending, watched.

Each lane is also held to the SPEC on its own: each read result is the
next datagram its socket was sent (R24: one datagram, cut to the buffer,
`truncated` exactly when it did not fit, a zero-length one a success), its
sender where the socket is unconnected and None where connected (R25); a
peer receives the lane's successful writes to it in request order, each
one datagram (vectored items gathered); the 4 x bufsize bound per batch.
Only how results are split into batches is left to timing.

GAIO_FUZZ_EXAMPLES=2000 runs a long campaign (GAIO_FUZZ_SHRINK=1 shrinks a
failure); by default 25 examples of up to 30 steps per native engine (about
two seconds each), and the `slow` variant runs 100.
"""
import os
import socket
import tempfile
import time

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

import gaio
from conftest import pattern
from test_fuzz_differential import (HUGE, SETTLE_LIMIT, WAIT_SLACK, error_class, fuzz_settings,
                                    read_bytes, timing_kwargs, watched_wait_io)

EXAMPLES = int(os.environ.get("GAIO_FUZZ_EXAMPLES", "0")) or (
    5 if os.environ.get("GAIO_SANITIZED") else 25)
STEPS = 30
BUFSIZE = 512
MAX_CONNS = 6
UNREAD_LIMIT = 5           # datagrams a socket may hold unread (AF_UNIX queues 10)
TOO_LONG = 70_000          # more than a UDP datagram holds: EMSGSIZE
STATS = {}                 # what the native lanes' results were, to print

TIMINGS = st.sampled_from([
    None, None, None, ("timeout", 0.0), ("timeout", -1.0), ("timeout", 0.02),
    ("timeout", HUGE), ("deadline", -1.0), ("deadline", 0.015), ("deadline", HUGE),
])
# a standing request's timeout is an idle limit: <= 0 is a ValueError
STANDING_TIMINGS = st.sampled_from([
    None, None, ("timeout", 0.02), ("timeout", HUGE), ("deadline", 0.03), ("timeout", 0.0),
])
READ_BUFFERS = st.sampled_from([None, None, 1, 100, 512, 2000])
SEND_SIZES = st.one_of(st.sampled_from([0, 1, BUFSIZE, BUFSIZE + 1, 2 * BUFSIZE]),
                       st.integers(0, 2 * BUFSIZE))
WRITE_SHAPES = st.sampled_from(["bytes", "bytearray", "memoryview", "list", "tuple",
                                "list-with-empty", "empty", "empty-list", "all-empty-items"])
WRITE_SIZES = st.sampled_from([1, 100, BUFSIZE, 2 * BUFSIZE, 4000, TOO_LONG])
SENDERS = st.sampled_from(["p0", "p1", "anon"])
# which peer a write on an unconnected socket goes to; None: no address=
# (ValueError there), and on a connected socket an address= is a ValueError
TARGETS = st.sampled_from([0, 0, 1, None])


def read_datagram(res, buf):
    """The bytes of a READ result, its buffer checked as R4 and R24 say: a
    zero-length datagram read into the internal buffer is an empty view."""
    if buf is None and res.size == 0 and res.error is None:
        assert res.is_swap_buffer and len(res.buffer) == 0, res
        return b""
    return read_bytes(res, buf)


class Sock:
    """One datagram socket of a lane and its peers.

    peers: name -> socket; the ones the watcher's socket writes to and
    receives from. `connected` names the one peer of a connected socket."""

    def __init__(self, index, sock, peers, connected, names):
        self.index = index
        self.sock = sock
        self.peers = peers
        for p in peers.values():
            p.setblocking(False)
        self.connected = connected     # the peer's name, or None (unconnected)
        self.names = names             # address as recvfrom gives it -> peer name
        self.address = {n: p.getsockname() for n, p in peers.items() if n != "anon"}
        self.queue = []                # (datagram, sender name) sent, not yet read
        self.received = {n: [] for n in peers}   # name -> datagrams it received
        self.writes = []               # write requests, in request order
        self.freed = False
        self.delegated = False
        self.connect = None            # its pending connect request
        self.remake = None             # makes a socket like it (after free)
        self.peer_gone = False         # its one UDP peer closed: writes echo ICMP errors
        self.echoing = False           # a write reached the closed peer this step

    def drain(self):
        for name, p in self.peers.items():
            while p.fileno() != -1:
                try:
                    data = p.recv(1 << 17)
                except BlockingIOError:
                    break
                self.received[name].append(data)

    def close(self):
        for p in self.peers.values():
            p.close()
        self.sock.close()


class Request:
    def __init__(self, lane, seq, conn, kind, *, buf=None, data=b"", target=None, due=None,
                 quiet=False):
        self.seq = seq
        self.order = lane.order
        lane.order += 1
        self.conn = conn
        self.kind = kind               # read | standing | write | connect
        self.buf = buf
        self.data = data               # a write's datagram (its items gathered)
        self.target = target           # the peer name a write goes to
        self.due = due
        self.quiet = quiet
        self.behind_connect = conn.connect is not None
        self.ok = False                # a write that sent its datagram


class Lane:
    """One engine's watcher, its datagram sockets and what happened."""

    def __init__(self, engine, tmpdir):
        self.engine = engine
        self.tmpdir = tempfile.mkdtemp(dir=tmpdir, prefix=engine)
        self.w = gaio.Watcher(BUFSIZE, engine=engine)
        self.conns = []
        self.pending = {}              # ctx -> Request
        self.outcomes = {}             # ctx -> list of result tuples
        self.events = []
        self.order = 0
        self.paths = 0
        self.hung = False
        self.counts = dict(submitted=0, datagrams_read=0, datagrams_written=0)
        self.retired = []              # freed sockets, replaced in conns
        for make in (self.add_pair, self.add_udp_pair, self.add_udp_unconnected,
                     self.add_unix_unconnected):
            make().remake = make

    def path(self):
        self.paths += 1
        return os.path.join(self.tmpdir, "s%d" % self.paths)

    def add(self, sock, peers, connected):
        names = {}
        for name, p in peers.items():
            names[p.getsockname() or None] = name
        c = Sock(len(self.conns), sock, peers, connected, names)
        self.conns.append(c)
        return c

    def add_pair(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return self.add(a, {"p0": b}, "p0")

    def add_udp_pair(self):
        a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        a.connect(b.getsockname())
        b.connect(a.getsockname())
        return self.add(a, {"p0": b}, "p0")

    def add_udp_unconnected(self):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        peers = {}
        for name in ("p0", "p1"):
            p = peers[name] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            p.bind(("127.0.0.1", 0))
        c = self.add(a, peers, None)
        c.own = a.getsockname()
        return c

    def add_unix_unconnected(self):
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.bind(self.path())
        peers = {}
        for name in ("p0", "p1"):
            p = peers[name] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            p.bind(self.path())
        peers["anon"] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        c = self.add(a, peers, None)
        c.own = a.getsockname()
        return c

    def add_connecting(self, family):
        """A fresh datagram socket whose peer is set by the watcher's connect()."""
        if family == "udp":
            a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
        else:
            a, b = (socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2))
            a.bind(self.path())
            b.bind(self.path())
        b.connect(a.getsockname())
        return self.add(a, {"p0": b}, "p0"), b.getsockname()

    def replace(self, c):
        """A freed socket gives its place to a fresh one of its kind, so
        that a run keeps sockets to work on."""
        self.retired.append(c)
        if c.remake is None:
            return
        new = c.remake()
        new.remake = c.remake
        self.conns.pop()
        new.index = c.index
        self.conns[c.index] = new

    def close(self):
        if self.w is not None:
            self.w.close()
            self.w = None
        for c in self.conns + self.retired:
            c.close()

    # ------------------------------------------------------------ waiting
    def wait(self, timeout):
        """wait_io(timeout) under a watchdog; checks and records the batch."""
        bound = (0 if timeout < 0 else timeout) + WAIT_SLACK
        batch = watched_wait_io(self, timeout, bound, hung=[])
        swapped = sum(r.size for r in batch if r.is_swap_buffer)
        assert swapped <= 4 * BUFSIZE, "%s: %d internal-buffer bytes in one batch" % (
            self.engine, swapped)
        for c in self.conns + self.retired:
            c.drain()
        for res in batch:
            self.check(res)
        return batch

    # ------------------------------------------------------------ results
    def record(self, req, outcome):
        """Per request (its ctx): how results of different requests
        interleave in a batch is completion order, left to timing."""
        if self.engine != "python":
            what = outcome[:2] + (outcome[3:4] == (True,), bool(outcome[5:6] and outcome[5]))
            what = (req.conn.connected is None,) + what if req.kind != "write" else outcome[:2]
            STATS[what] = STATS.get(what, 0) + 1
        self.outcomes.setdefault(req.ctx, []).append(outcome)

    def check(self, res):
        assert res.ctx in self.pending, "%s: unknown or duplicate result %r" % (self.engine, res)
        req = self.pending[res.ctx]
        c = req.conn
        assert res.conn is c.sock, (self.engine, res)
        assert getattr(res, "tls", None) is None and getattr(res, "accepted", None) is None
        if req.behind_connect:
            assert c.connect is None, "%s: %r before its connect's result" % (self.engine, res)
        if req.kind == "connect":
            assert res.op == gaio.Op.CONNECT and res.size == 0 and res.buffer is None
            del self.pending[res.ctx]
            c.connect = None
            self.record(req, ("connect", error_class(res.error)))
            return
        if req.kind == "write":
            return self.check_write(req, res)
        self.check_read(req, res)

    def check_write(self, req, res):
        assert res.op == gaio.Op.WRITE and not res.is_swap_buffer and not res.truncated
        assert res.address is None
        assert not (req.quiet and res.error is None), "%s: a quiet success delivered %r" % (
            self.engine, res)
        if res.error is None:
            assert res.size == len(req.data), (self.engine, res)
            self.counts["datagrams_written"] += 1
            req.ok = not req.conn.peer_gone
            req.conn.echoing = req.conn.peer_gone
        else:
            assert res.size == 0, "%s: a datagram write failed part way: %r" % (self.engine, res)
        del self.pending[res.ctx]
        self.record(req, ("write", error_class(res.error), res.size))

    def check_read(self, req, res):
        c = req.conn
        assert res.op == gaio.Op.READ
        data = read_datagram(res, req.buf)
        if res.error is not None:
            assert res.size == 0 and not res.truncated and res.address is None, (self.engine, res)
            assert not isinstance(res.error, EOFError), "%s: EOF on a datagram socket" % (
                self.engine)
            if isinstance(res.error, gaio.DeadlineExceededError):
                assert req.due is not None, "%s: a deadline ended %r" % (self.engine, res)
            refused = isinstance(res.error, ConnectionRefusedError)
            assert not refused or c.peer_gone, (self.engine, res)
            if not (refused and req.kind == "standing"):
                del self.pending[res.ctx]    # R27: a standing read keeps standing
            self.record(req, (req.kind, error_class(res.error)))
            return
        assert c.queue, "%s, socket %d: a datagram nobody sent: %r" % (self.engine, c.index, res)
        sent, sender = c.queue.pop(0)
        room = BUFSIZE if req.buf is None else len(req.buf)
        assert data == sent[:room] and res.truncated == (len(sent) > room), (
            "%s, socket %d: read %d bytes (truncated %r) of a datagram of %d into %d" % (
                self.engine, c.index, len(data), res.truncated, len(sent), room))
        if c.connected is not None:
            assert res.address is None, (self.engine, res)
            got = sender
        else:
            assert res.address in c.names, "%s: sender %r unknown" % (self.engine, res.address)
            got = c.names[res.address]
            assert got == sender, (self.engine, got, sender)
        self.counts["datagrams_read"] += 1
        if req.kind != "standing":
            del self.pending[res.ctx]
        self.record(req, (req.kind, None, res.size, res.truncated, data, got))

    def submitted(self, ctx, req):
        req.ctx = ctx
        self.pending[ctx] = req
        self.counts["submitted"] += 1
        req.conn.delegated = True
        if req.kind == "write":
            req.conn.writes.append(req)

    # ------------------------------------------------------------ settling
    def stalled(self):
        """None if settled, else why not."""
        if self.w is None:
            return None
        reads = sum(1 for r in self.pending.values() if r.kind != "write")
        if self.w.stats()["pending"] != reads:
            return "a write is pending"
        heads = set()
        for req in self.pending.values():
            if req.kind == "connect":
                return "a connect is pending"
            if req.conn.freed:
                return "a request on a freed socket is pending"
            if req.due is not None and req.kind != "write":
                return "a request with a deadline is pending"
            if req.kind != "write":
                heads.add(req.conn)
        for c in heads:
            if c.queue:
                return "a read on socket %d with a datagram unread is pending" % c.index
        return None

    def settled(self):
        """After stalled() said None: the writes and what the peers got."""
        # quiet writes not failed by now succeeded
        for ctx, req in list(self.pending.items()):
            if req.kind == "write":
                assert req.quiet, (self.engine, req)
                del self.pending[ctx]
                self.counts["datagrams_written"] += 1
                req.ok = not req.conn.peer_gone
                self.record(req, ("write", None, len(req.data), "quiet"))
        for c in self.conns + self.retired:
            c.drain()
            for name in c.peers:
                written = [r.data for r in c.writes if r.ok and r.target == name]
                assert c.received[name] == written, (
                    "%s, socket %d, peer %s: received %r, the lane wrote %r" % (
                        self.engine, c.index, name, [len(d) for d in c.received[name]],
                        [len(d) for d in written]))

    def summary(self):
        stats = self.w.stats()
        for key, value in self.counts.items():
            assert stats[key] == value, (self.engine, key, stats[key], value)
        # how many calls carried them is the engine's own (recvmmsg, sendmmsg):
        # never more than the datagrams, never none for some
        for calls, moved in (("datagram_recv_calls", "datagrams_read"),
                             ("datagram_send_calls", "datagrams_written")):
            assert (stats[moved] > 0) <= stats[calls] <= stats[moved], (
                self.engine, calls, stats[calls], stats[moved])
        return (self.outcomes, self.events, [c.received for c in self.conns + self.retired],
                {k: stats[k] for k in ("datagrams_read", "datagrams_written", "submitted",
                                       "pending", "watched")})


class DifferentialDgramMachine(RuleBasedStateMachine):
    ENGINES = ("python", "epoll")
    TMPDIR = None

    def __init__(self):
        super().__init__()
        self.lanes = []
        self.seq = 0

    @initialize()
    def start(self):
        self.lanes = [Lane(e, self.TMPDIR) for e in self.ENGINES]

    def teardown(self):
        for lane in self.lanes:
            lane.close()

    def each(self, action):
        """Run `action(lane)` on every lane, settle, and compare the lanes."""
        self.seq += 1
        for lane in self.lanes:
            try:
                event = action(lane)
            except (ValueError, TypeError) as exc:
                event = ("raised", type(exc).__name__)
            lane.events.append((self.seq, event))
        # the lanes wait in turn, so that a deadline counts from the same
        # moment in both (a lane that waited only after the other settled
        # would meet its deadlines in its first batch, and how much a batch
        # holds is the engine's choice)
        end = time.monotonic() + SETTLE_LIMIT
        while True:
            stalled = [(lane, lane.stalled()) for lane in self.lanes]
            stalled = [(lane, why) for lane, why in stalled if why is not None]
            if not stalled:
                break
            for lane, why in stalled:
                assert time.monotonic() < end, "%s did not settle: %s" % (lane.engine, why)
                lane.wait(0.005)
        # a write to a closed UDP peer brings an ICMP error back (R27): let
        # every lane take it before comparing
        if any(c.echoing or c.peer_gone and any(r.conn is c and r.kind == "write" for r in
                                                lane.pending.values())
               for lane in self.lanes for c in lane.conns):
            for _ in range(3):
                for lane in self.lanes:
                    lane.wait(0.005)
            for lane in self.lanes:
                for c in lane.conns:
                    c.echoing = False
            assert not any(lane.stalled() for lane in self.lanes)
        for lane in self.lanes:
            lane.settled()
        oracle, native = (lane.summary() for lane in self.lanes)
        names = ("outcomes", "events", "received", "stats")
        for name, a, b in zip(names, oracle, native):
            assert a == b, "%s differs: python %r, %s %r" % (
                name, a, self.lanes[1].engine, b)

    @staticmethod
    def conn(lane, index):
        return lane.conns[index % len(lane.conns)]

    # ------------------------------------------------------------ rules
    @rule(index=st.integers(0, MAX_CONNS - 1), size=READ_BUFFERS, timing=TIMINGS,
          first=st.one_of(st.none(), st.tuples(SENDERS, SEND_SIZES)))
    def read(self, index, size, timing, first):
        """A read, perhaps of a datagram its peer sends first."""
        def read(lane):
            c = self.conn(lane, index)
            sent = first and self.send(lane, c, *first)
            kwargs, due = timing_kwargs(timing)
            buf = None if size is None else bytearray(size)
            req = Request(lane, self.seq, c, "read", buf=buf, due=due)
            lane.w.read(c.sock, buf, ctx=("r", self.seq), **kwargs)
            lane.submitted(("r", self.seq), req)
            return "read", sent
        self.each(read)

    # a standing read takes no buffer: one that has one is a ValueError
    @rule(index=st.integers(0, MAX_CONNS - 1), size=st.sampled_from([None, None, None, 100]),
          timing=STANDING_TIMINGS)
    def standing_read(self, index, size, timing):
        def standing(lane):
            c = self.conn(lane, index)
            kwargs, due = timing_kwargs(timing)
            buf = None if size is None else bytearray(size)
            req = Request(lane, self.seq, c, "standing", buf=buf, due=due)
            lane.w.read(c.sock, buf, ctx=("s", self.seq), repeat=True, **kwargs)
            lane.submitted(("s", self.seq), req)
            return "standing"
        self.each(standing)

    @rule(index=st.integers(0, MAX_CONNS - 1), shape=WRITE_SHAPES, size=WRITE_SIZES,
          to=TARGETS, quiet=st.booleans(), timing=TIMINGS)
    def write(self, index, shape, size, to, quiet, timing):
        self.each(lambda lane: self.make_write(lane, self.conn(lane, index), shape, size,
                                               to, quiet, timing))

    def make_write(self, lane, c, shape, size, to, quiet, timing, ctx=None):
        data = pattern(size, seed=self.seq & 0xffff)
        items = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data),
                 "list": [data[:7], data[7:]], "tuple": (data[:1], data[1:300], data[300:]),
                 "list-with-empty": [b"", data, b""], "empty": b"", "empty-list": [],
                 "all-empty-items": [b"", bytearray()]}[shape]
        if shape.startswith("empty") or shape == "all-empty-items":
            data = b""
        kwargs, due = timing_kwargs(timing)
        name = c.connected
        if to is not None:
            # a peer by its name (a connected socket has one): the address
            # is the lane's own; on a connected socket it is a ValueError
            name = "p%d" % to if c.connected is None else c.connected
            kwargs["address"] = c.address[name]
        ctx = ctx or ("w", self.seq)
        req = Request(lane, self.seq, c, "write", data=data, target=name, due=due,
                      quiet=quiet)
        lane.w.write(c.sock, items, ctx=ctx, quiet=quiet, **kwargs)
        lane.submitted(ctx, req)
        return "write"

    @rule(index=st.integers(0, MAX_CONNS - 1), sender=SENDERS,
          size=SEND_SIZES)
    def peer_send(self, index, sender, size):
        self.each(lambda lane: self.send(lane, self.conn(lane, index), sender, size))

    def send(self, lane, c, sender, size):
        if c.freed or c.peer_gone or len(c.queue) >= UNREAD_LIMIT:
            return "skipped"
        name = c.connected or sender
        if name not in c.peers:
            name = "p0"
        data = pattern(size, seed=1000 + len(c.queue) + self.seq)
        p = c.peers[name]
        if c.connected is not None:
            p.send(data)
        else:
            p.sendto(data, c.own)
        c.queue.append((data, name if c.connected is None else None))
        return "sent"

    @rule(index=st.integers(0, MAX_CONNS - 1),
          sends=st.lists(st.tuples(SENDERS, SEND_SIZES),
                         min_size=2, max_size=UNREAD_LIMIT))
    def peer_burst(self, index, sends):
        """Several datagrams at once: a standing read gets them in one batch."""
        def burst(lane):
            return tuple(self.send(lane, self.conn(lane, index), sender, size)
                         for sender, size in sends)
        self.each(burst)

    @rule(index=st.integers(0, MAX_CONNS - 1),
          then=st.sampled_from([None, "write", "read+write", "standing+write+write"]))
    def peer_close(self, index, then):
        """A connected UDP socket's peer goes: what the lane writes to it
        comes back as ConnectionRefusedError to a pending read, else the
        first pending write, else nowhere (R27)."""
        def close(lane):
            c = self.conn(lane, index)
            if c.connected is None or c.peer_gone or c.peers["p0"].family != socket.AF_INET:
                return "skipped"
            if c.queue:
                # the kernel reports a pending ICMP error before datagrams
                # queued earlier: whether a datagram came before the write
                # that drew the error is when an engine tried the write
                return "skipped"
            c.peers["p0"].close()
            c.peer_gone = True
            events = ["closed"]
            for i, kind in enumerate((then or "").split("+")):
                ctx = ("g", self.seq, i)
                try:
                    if kind == "write":
                        events.append(self.make_write(lane, c, "bytes", 10 + i, None, False,
                                                      None, ctx=ctx))
                    elif kind:
                        req = Request(lane, self.seq, c, kind, buf=None if kind == "standing"
                                      else bytearray(100))
                        lane.w.read(c.sock, req.buf, ctx=ctx, repeat=kind == "standing")
                        lane.submitted(ctx, req)
                        events.append(kind)
                except (ValueError, TypeError) as exc:
                    events.append(type(exc).__name__)
            return tuple(events)
        self.each(close)

    @rule(index=st.integers(0, MAX_CONNS - 1))
    def free(self, index):
        def free(lane):
            c = self.conn(lane, index)
            lane.w.free(c.sock)
            if not c.delegated:
                return "not delegated"
            c.freed = True
            assert c.sock.fileno() == -1
            lane.replace(c)
            return "freed"
        self.each(free)

    @precondition(lambda self: len(self.lanes[0].conns) < MAX_CONNS)
    @rule(family=st.sampled_from(["udp", "unix"]),
          follow=st.lists(st.sampled_from(["write", "read", "quiet", "address"]), max_size=3))
    def connect(self, family, follow):
        def connect(lane):
            c, address = lane.add_connecting(family)
            req = Request(lane, self.seq, c, "connect")
            lane.w.connect(c.sock, address, ctx=("c", self.seq))
            lane.submitted(("c", self.seq), req)
            c.connect = req
            events = ["connecting"]
            for i, kind in enumerate(follow):
                # queued behind the connect: it counts as connected already (R25)
                ctx = ("f", self.seq, i)
                try:
                    if kind == "read":
                        r = Request(lane, self.seq, c, "read", buf=bytearray(100))
                        lane.w.read(c.sock, r.buf, ctx=ctx)
                        lane.submitted(ctx, r)
                    else:
                        self.make_write(lane, c, "bytes", 100 + i, 0 if kind == "address"
                                        else None, kind == "quiet", None, ctx=ctx)
                    events.append(kind)
                except (ValueError, TypeError) as exc:
                    events.append(type(exc).__name__)
            return tuple(events)
        self.each(connect)

    @rule(timeout=st.sampled_from([0, 0.001, 0.01]))
    def wait(self, timeout):
        self.each(lambda lane: (lane.wait(timeout), "waited")[1])

    @invariant()
    def no_hang(self):
        assert not any(lane.hung for lane in self.lanes)


def run_machine(native, tmp_path, examples=EXAMPLES):
    STATS.clear()
    cls = type("DifferentialDgram_" + native, (DifferentialDgramMachine,), {
        "ENGINES": ("python", native), "TMPDIR": str(tmp_path)})
    run_state_machine_as_test(cls, settings=fuzz_settings(examples, STEPS))
    print("\n%s vs python, results by (unconnected, kind, error, truncated, sender):" % native)
    for what, n in sorted(STATS.items(), key=repr):
        print("  %5d %r" % (n, what))


FUZZ_TIMEOUT = pytest.mark.timeout(max(120, EXAMPLES * 2))


@FUZZ_TIMEOUT
def test_native_engine_agrees_with_the_oracle_on_datagrams(native_engine, tmp_path):
    run_machine(native_engine, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_native_engine_agrees_with_the_oracle_on_datagrams_longer(native_engine, tmp_path):
    run_machine(native_engine, tmp_path, examples=100)
