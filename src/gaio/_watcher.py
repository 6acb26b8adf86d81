"""The Watcher front: one interface, an engine chosen by probing.

`Watcher(...)` returns the engine's own watcher object: a native
`gaio._native.Watcher` (engines "uring", "epoll", "kqueue") or a
`gaio._python_watcher.PythonWatcher`. No Python layer sits between the caller
and a native engine's methods; both kinds are instances of `Watcher`.
"""
import abc
import os
import sys

from ._errors import EngineUnavailableError
from ._python_args import (
    DEFAULT_BUFSIZE,
    DEFAULT_WRITE_HIGH,
    check_batch_wait,
    check_bufsize,
    check_write_high,
    signature_checked,
)
from ._python_watcher import PythonWatcher

try:
    from . import _native
    _NATIVE_MISSING = None
except ImportError as exc:  # built without a compiler, or on an unsupported OS
    _native = None
    _NATIVE_MISSING = ("the extension module gaio._native is not installed "
                       "(no C compiler at install time?)"
                       if isinstance(exc, ModuleNotFoundError) else str(exc))

# The order of preference for engine="auto", fastest first (R13): written
# here only; the native type runs the engine it is named, and everything else
# (tests, benchmarks) reads this.
NATIVE_ENGINES = ("uring", "epoll", "kqueue")
ENGINES = NATIVE_ENGINES + ("python",)
# On Linux, kqueue is libkqueue's emulation over epoll (a test build, see
# setup.py's GAIO_LIBKQUEUE): it runs only when asked for by name.
_AUTO_ENGINES = tuple(e for e in NATIVE_ENGINES
                      if not (e == "kqueue" and sys.platform.startswith("linux")))
def _requested_engine(engine):
    """The engine name asked for: the argument, else $GAIO_ENGINE, else "auto"."""
    if not isinstance(engine, str):
        raise TypeError("engine must be a str, not %s" % type(engine).__name__)
    source = "engine"
    if engine == "auto":
        engine = os.environ.get("GAIO_ENGINE", "").strip() or "auto"
        source = "GAIO_ENGINE"
    if engine != "auto" and engine not in ENGINES:
        raise ValueError("unknown %s %r: choose one of %s or 'auto'"
                         % (source, engine, ", ".join(repr(e) for e in ENGINES)))
    return engine


def _native_watcher(bufsize, name, write_high=DEFAULT_WRITE_HIGH, batch_wait=0.0):
    if _native is None:
        raise EngineUnavailableError(
            "engine %r needs gaio's native core, which is not built here: %s"
            % (name, _NATIVE_MISSING))
    return _native.Watcher(bufsize, engine=name, write_high=write_high, batch_wait=batch_wait)


def available_engines():
    """Probe every engine: {name: None if it runs here, else the reason it cannot}.

    A process out of descriptors or memory cannot tell: the OSError
    (EMFILE, ENFILE, ENOMEM, ENOBUFS) is raised, no engine is reported
    unavailable for it.
    """
    report = {}
    for name in ENGINES:
        try:
            w = Watcher(DEFAULT_BUFSIZE, engine=name)
        except EngineUnavailableError as exc:
            report[name] = str(exc)
        else:
            w.close()
            report[name] = None
    return report


class Watcher(metaclass=abc.ABCMeta):
    """Owns delegated sockets, performs read/write requests, returns completions.

    Watcher(bufsize=65536, *, engine="auto", write_high=262144, batch_wait=None)

    bufsize  size of the internal buffer that reads without a buffer land in
             (an int from 1 to 2**30); one batch of results never hands out
             more than 4 * bufsize internal-buffer bytes.
    engine   "auto" (default: $GAIO_ENGINE if set, else the fastest engine
             that runs here: uring, epoll/kqueue, python) or one engine name.
             A named engine that cannot run raises EngineUnavailableError;
             a process out of descriptors or memory gets the OSError (EMFILE,
             ...) from every engine, and auto does not move on for it.
    write_high  back-pressure (R21): a standing read (read(conn, repeat=True))
             stops taking bytes from the kernel while the bytes it is
             answerable for that are accepted but not yet written exceed
             write_high, and resumes at write_high // 4 or less. A positive
             int, or None for no limit. It is answerable for every write made
             from one of its results' views (wherever it goes) and for every
             other write queued on its own connection.
    batch_wait  None (default) or seconds from 0 to 1: a wait_io() that had
             to sleep, once it has a result, gathers until batch_wait after
             the start of its sleep (one sleep, then one look), never past its
             own timeout. Fewer wake-ups and less CPU per message for at most
             that much latency; nothing is added when results were ready at
             once or came after the window.

    A watcher starts no thread of its own: every engine runs on the
    caller's threads, inside wait_io() and (native engines) inside a request
    made while no thread waits, which tries its send/recv at once.
    """

    @signature_checked("Watcher")
    def __new__(cls, bufsize=DEFAULT_BUFSIZE, *, engine="auto",
                write_high=DEFAULT_WRITE_HIGH, batch_wait=None):
        if cls is not Watcher:  # a concrete engine class built directly
            return super().__new__(cls)
        check_bufsize(bufsize)
        check_write_high(write_high)
        batch_wait = check_batch_wait(batch_wait)
        name = _requested_engine(engine)
        if name == "python":
            return _python_watcher(bufsize, write_high, batch_wait)
        if name != "auto":
            return _native_watcher(bufsize, name, write_high, batch_wait)
        if _native is not None:
            for candidate in _AUTO_ENGINES:
                try:
                    return _native.Watcher(bufsize, engine=candidate, write_high=write_high,
                                           batch_wait=batch_wait)
                except EngineUnavailableError:
                    continue
        return _python_watcher(bufsize, write_high, batch_wait)

    # The interface every engine implements; the docstrings are the API reference.

    engine: str
    bufsize: int

    @abc.abstractmethod
    def read(self, conn, buf=None, *, ctx=None, timeout=None, deadline=None, repeat=False):
        """Request a read on `conn`; returns at once.

        Completes when at least one byte was read into `buf` (any writable
        contiguous buffer), at end of stream (size 0, error EOFError), on a
        socket error, or at the deadline. Without `buf` the bytes land in the
        watcher's internal buffer and the result's buffer is a read-only
        memoryview valid until the next wait_io().
        `timeout` is seconds from now, `deadline` a time.monotonic() value.
        The first request on a socket delegates it: the watcher takes its
        descriptor over (socket.detach()), leaving the caller's object closed.

        repeat=True (no buffer) makes a standing read: it stays pending and
        delivers one internal-buffer result per arrival of bytes, until EOF
        (EOFError, size 0), another error, free() (ConnClosedError), its
        deadline or close() (no result) ends it. `timeout` is then an idle
        limit (> 0), counted again from each result. Back-pressure (see
        write_high) may hold it: still pending, reading nothing, its idle
        limit paused. Later reads on the connection queue behind it.

        On a datagram socket a read completes with exactly
        one datagram: `truncated` says it was longer than `buf` (or than
        bufsize), `address` its sender on an unconnected socket; an empty
        datagram is a result of size 0 with no error. A standing read
        delivers one result per datagram, and a socket error (an ICMP
        refusal) as one result, and goes on standing.
        """

    @abc.abstractmethod
    def read_full(self, conn, buf, *, ctx=None, timeout=None, deadline=None):
        """Request a read that completes when len(buf) bytes were read, or with
        error set and size = bytes read so far."""

    @abc.abstractmethod
    def write(self, conn, data, *, ctx=None, timeout=None, deadline=None, quiet=False,
              address=None):
        """Request a write of every byte of `data` (a bytes-like object, or a
        list or tuple of them: a vectored write, sent with sendmsg; its
        result's buffer is the list or tuple given).

        The watcher keeps `data` alive until completion; do not change a
        mutable buffer before then. A result's internal-buffer view may be
        written back directly: the watcher copies it at the request.
        quiet=True: a write that succeeds delivers no result (it counts in
        stats()["quiet_done"]); one that fails delivers its result.

        On a datagram socket a write sends exactly one datagram, which may
        be empty (a vectored write's items gathered), or fails whole with
        size 0. `address` is where it goes: required on
        an unconnected datagram socket, a numeric address as for connect()
        (a host name is a ValueError: no DNS lookup blocks), e.g. a read
        result's `address`; a ValueError on a connected datagram socket and
        on a stream socket.
        """

    @abc.abstractmethod
    def accept(self, listener, *, ctx=None, timeout=None, deadline=None, repeat=False):
        """Request the next connection on a listening stream socket.

        Completes with op Op.ACCEPT, conn the listener, size 0 and
        `accepted` the new socket.socket: it belongs to the caller and is
        not delegated. Pending accepts complete in request order;
        ECONNABORTED is skipped; a resource error (EMFILE, ENFILE, ENOBUFS,
        ENOMEM) completes it with that OSError and accepted=None.
        repeat=True makes a standing accept: one result per connection until
        an error, free(), its deadline or close() ends it (`timeout` is an
        idle limit); its resource errors are reported (at most one per 10 ms)
        without ending it, and it tries again 10 ms later or as soon as the
        watcher closes a descriptor.
        """

    @abc.abstractmethod
    def connect(self, sock, address, *, ctx=None, timeout=None, deadline=None):
        """Connect an unconnected stream socket to a numeric `address` (an IP
        address tuple, or an AF_UNIX path; a host name is a ValueError: no
        DNS lookup blocks). Completes with op Op.CONNECT, size 0 and error
        None, the OSError of the failure or DeadlineExceededError.

        Reads and writes requested before it completes start when it
        succeeds; if it fails, each completes after it, in request order,
        with an error of the same class. The socket stays delegated.
        A datagram socket takes its peer at once: it counts
        as connected from this call on.
        """

    @abc.abstractmethod
    def sendfile(self, conn, file, offset=0, count=None, *, ctx=None, timeout=None,
                 deadline=None, quiet=False):
        """Send `count` bytes (None: up to the end of the file as it is now)
        of a regular file (a file object with fileno(), or a descriptor)
        from `offset`, without copying through Python.

        Queues with conn's writes. Completes with op Op.SENDFILE and size the
        bytes sent; never closes the file nor moves its position. A count
        past the end of the file completes with EOFError and the bytes sent;
        nothing left with count=None completes at once with size 0.
        quiet=True as for write().
        """

    @abc.abstractmethod
    def start_tls(self, conn, context, *, server_side, server_hostname=None, ctx=None,
                  timeout=None, deadline=None):
        """Begin a TLS session on `conn`, a connected stream socket (or one on
        which connect() was requested: the handshake waits for it), configured
        by `context`, a standard ssl.SSLContext (certificates, verification,
        ALPN, SNI callback), which gaio never modifies.

        It queues with conn's writes: the handshake starts once every write
        requested before it has completed (those go out in plaintext). From
        this call on no read takes bytes from the socket until the handshake
        is done; reads pending now or requested later receive only decrypted
        bytes. It completes, once the handshake is done and its last flight
        handed to the kernel, with op Op.TLS, size 0, buffer None and `tls`
        the session's ssl.SSLObject, for inspection only (version(),
        cipher(), selected_alpn_protocol(), getpeercert()); or with `error`
        (ssl.SSLError and its subclasses, such as SSLCertVerificationError
        and SSLEOFError, DeadlineExceededError, ConnClosedError, a reset's
        OSError) and tls None, after which every request on conn completes
        with the same error class until it is freed.

        Then read, read_full, standing reads, write (vectored, quiet) and
        sendfile carry plaintext; sizes and stats count plaintext bytes.
        Reads end with EOFError at the peer's close_notify, with
        ssl.SSLEOFError when the stream ends without it. free(conn) sends
        close_notify when it can go at once; close() sends nothing.

        server_side is required. A client (server_side=False) whose context
        checks host names needs server_hostname (ValueError otherwise); a
        server takes none. A listener, an unconnected socket or a connection
        already in TLS is a ValueError; a context that is not an SSLContext
        a TypeError.
        """

    @abc.abstractmethod
    def fileno(self):
        """A descriptor readable whenever wait_io(0) has work to do, and not
        while there is nothing to do: drive the watcher from another event
        loop (asyncio's add_reader) by calling wait_io(0) when it is
        readable, and by the time next_timeout() says."""

    @abc.abstractmethod
    def next_timeout(self):
        """Seconds until the earliest deadline of a pending request (0 once it
        has passed), or None when none has one; wait_io() must be called by
        then for the deadline to be delivered."""

    @abc.abstractmethod
    def free(self, conn, /):
        """Close `conn`'s descriptor now; its pending requests complete with
        ConnClosedError. Unknown or already freed sockets are ignored."""

    @abc.abstractmethod
    def wait_io(self, timeout=None):
        """Block (without the GIL) until at least one result is ready and
        return every result ready by then, in completion order; [] when
        `timeout` seconds pass first. Releases the previous batch's
        internal-buffer views. One thread at a time may wait."""

    @abc.abstractmethod
    def close(self):
        """Close every delegated descriptor and drop pending requests.
        Idempotent; later calls (but close and stats) raise WatcherClosedError."""

    @abc.abstractmethod
    def stats(self):
        """Counters: submitted, completed, bytes_read, bytes_written, watched,
        pending, timeouts, accepted, quiet_done, datagrams_read,
        datagrams_written, datagram_recv_calls, datagram_send_calls,
        tls_handshakes (and engine-specific extras)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _python_watcher(bufsize, write_high=DEFAULT_WRITE_HIGH, batch_wait=0.0):
    return PythonWatcher(bufsize, write_high=write_high, batch_wait=batch_wait)


def _register_engine_types():
    """Every engine's own type is a Watcher (and its result an OpResult) by
    registration, not inheritance: Watcher(...) returns that object as is."""
    PythonWatcher.__doc__ = Watcher.__doc__
    Watcher.register(PythonWatcher)
    if _native is not None:
        from ._result import OpResult
        Watcher.register(_native.Watcher)
        OpResult.register(_native.OpResult)


_register_engine_types()
