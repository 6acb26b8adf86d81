# Type information for gaio's public API: what SPEC.md "Public API" promises,
# written for type checkers. Stubs are never executed.
#
# Choices made here, and why:
# - Buffers are typed with `_Buffer`, a local Protocol with the one method of
#   PEP 688's buffer protocol. It is structurally the same as
#   collections.abc.Buffer (3.12+) and typing_extensions.Buffer, so a value of
#   either type, bytes, bytearray, memoryview, array.array, mmap and ctypes
#   arrays are all accepted, and the stub needs no import that a Python 3.10
#   user without typing_extensions might lack. numpy declares its arrays
#   buffers only when checking for Python >= 3.12; before that, pass
#   `arr.data` (a memoryview). A type cannot say "writable": a read-only
#   buffer given to read() is a TypeError at run time.
# - OpResult's fields are read-only properties (assigning one is a type error,
#   as it is an AttributeError at run time). `error` is narrower than the SPEC's
#   `BaseException | None`: every engine reports EOFError, an OSError subclass
#   (DeadlineExceededError and ConnClosedError are OSErrors too) or None.
# - `ctx` is Any: it is whatever the caller passed, returned unchanged.
#   `buffer` is `_Buffer | Any`: a buffer (the caller's, a read-only memoryview
#   of the internal buffer, or the watcher's bytes copy), or None when an
#   internal-buffer read ended with no bytes. The `| Any` keeps the usual
#   pattern (check `error`, then use `buffer`) free of None-checks, as
#   typeshed does for re.Match.group().
# - `engine=` is a str, not a Literal: names come from config files and
#   GAIO_ENGINE as often as from code; an unknown name is a ValueError.
# - free() takes conn positionally only: the native engines accept no keyword.
import abc
import enum
import socket
import ssl
from types import TracebackType
from typing import Any, Final, Literal, Protocol, TypeVar

__all__ = [
    "ConnClosedError",
    "DeadlineExceededError",
    "ENGINES",
    "EngineUnavailableError",
    "Op",
    "OpResult",
    "Watcher",
    "WatcherClosedError",
    "available_engines",
]
__version__: str

class _Buffer(Protocol):
    def __buffer__(self, flags: int, /) -> memoryview: ...

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

_EngineName = Literal["uring", "epoll", "kqueue", "python"]
_WatcherT = TypeVar("_WatcherT", bound=Watcher)

ENGINES: Final[tuple[Literal["uring"], Literal["epoll"], Literal["kqueue"], Literal["python"]]]

def available_engines() -> dict[str, str | None]:
    """Probe every engine: {name: None if it runs here, else the reason it cannot}."""

class WatcherClosedError(RuntimeError): ...
class DeadlineExceededError(TimeoutError): ...
class ConnClosedError(ConnectionError): ...
class EngineUnavailableError(RuntimeError): ...

class Op(enum.IntEnum):
    READ = 0
    WRITE = 1
    ACCEPT = 2
    CONNECT = 3
    SENDFILE = 4
    TLS = 5

class OpResult(metaclass=abc.ABCMeta):
    def __init__(
        self,
        op: Op,
        conn: socket.socket,
        ctx: object,
        buffer: _Buffer | None,
        size: int,
        error: EOFError | OSError | None,
        is_swap_buffer: bool,
        accepted: socket.socket | None = None,
    ) -> None: ...
    @property
    def op(self) -> Op: ...
    @property
    def conn(self) -> socket.socket:
        """The very socket object the request was made with."""
    @property
    def ctx(self) -> Any: ...
    @property
    def buffer(self) -> _Buffer | Any:
        """The caller's buffer; for a read without one, a read-only memoryview of
        exactly `size` bytes, valid until the next wait_io(); None when such a
        read ended with no bytes."""
    @property
    def size(self) -> int: ...
    @property
    def error(self) -> EOFError | OSError | None: ...
    @property
    def is_swap_buffer(self) -> bool: ...
    @property
    def accepted(self) -> socket.socket | None:
        """The new connection of an ACCEPT result (the caller's, not delegated);
        None otherwise."""
    @property
    def address(self) -> Any:
        """A datagram's sender (as socket.recvfrom gives it) on a read of an
        unconnected datagram socket; None otherwise."""
    @property
    def truncated(self) -> bool:
        """True when a datagram was longer than the buffer it landed in."""
    @property
    def tls(self) -> ssl.SSLObject | None:
        """The session (for inspection only) on the result of a start_tls()
        that succeeded; None otherwise."""

class Watcher(metaclass=abc.ABCMeta):
    # Watcher(...) returns the chosen engine's own watcher object (registered
    # as a Watcher), hence __new__. The methods are abstract at run time but
    # not here: a type checker would otherwise refuse `Watcher()`.
    def __new__(
        cls,
        bufsize: int = 65536,
        *,
        engine: str = "auto",
        write_high: int | None = 262144,
        batch_wait: float | None = None,
    ) -> Watcher: ...
    # Read-only attributes of every engine's watcher object.
    engine: Final[_EngineName]
    bufsize: Final[int]
    def read(
        self,
        conn: socket.socket,
        buf: _Buffer | None = None,
        *,
        ctx: object = None,
        timeout: float | None = None,
        deadline: float | None = None,
        repeat: bool = False,
    ) -> None: ...
    def read_full(
        self,
        conn: socket.socket,
        buf: _Buffer,
        *,
        ctx: object = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> None: ...
    def write(
        self,
        conn: socket.socket,
        data: _Buffer | list[_Buffer] | tuple[_Buffer, ...],
        *,
        ctx: object = None,
        timeout: float | None = None,
        deadline: float | None = None,
        quiet: bool = False,
        address: tuple[Any, ...] | str | bytes | None = None,
    ) -> None: ...
    def accept(
        self,
        listener: socket.socket,
        *,
        ctx: object = None,
        timeout: float | None = None,
        deadline: float | None = None,
        repeat: bool = False,
    ) -> None: ...
    def connect(
        self,
        sock: socket.socket,
        address: tuple[Any, ...] | str | bytes,
        *,
        ctx: object = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> None: ...
    def sendfile(
        self,
        conn: socket.socket,
        file: _HasFileno | int,
        offset: int = 0,
        count: int | None = None,
        *,
        ctx: object = None,
        timeout: float | None = None,
        deadline: float | None = None,
        quiet: bool = False,
    ) -> None: ...
    def start_tls(
        self,
        conn: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        ctx: object = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> None: ...
    def fileno(self) -> int: ...
    def next_timeout(self) -> float | None: ...
    def free(self, conn: socket.socket, /) -> None: ...
    def wait_io(self, timeout: float | None = None) -> list[OpResult]: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def __enter__(self: _WatcherT) -> _WatcherT: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...
