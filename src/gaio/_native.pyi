"""Type stub for gaio._native, the C core (engines "uring", "epoll", "kqueue").

Build it with `python setup.py build_ext --inplace`; gaio.Watcher(...) returns
a gaio._native.Watcher when a native engine is chosen. It starts no thread:
I/O happens inside wait_io(), in the caller's thread, without the GIL, and in a
request made while no thread waits, which tries its send/recv at once.
"""
import socket
import ssl
from typing import Any, Literal, Optional, Protocol, Union, final

from gaio._result import Op

_Buffer = Union[bytes, bytearray, memoryview]  # any contiguous buffer object
_Seconds = Union[int, float]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def _live_counts() -> dict[str, int]: ...  # test-only: request structs and kept chunks, every watcher

def _fail_allocations(after: int, count: int = 1, /) -> int:
    """Test-only: the after-th allocation of the native core from now fails, and the
    count - 1 after it (every watcher; Python objects are not concerned); after=0
    disarms. Returns how many failures the previous arming caused."""

@final
class OpResult:
    """The completion of one read or write request (immutable, no __dict__)."""
    @property
    def op(self) -> Op: ...
    @property
    def conn(self) -> socket.socket: ...
    @property
    def ctx(self) -> object: ...
    @property
    def buffer(self) -> object: ...
    @property
    def size(self) -> int: ...
    @property
    def error(self) -> Optional[BaseException]: ...
    @property
    def is_swap_buffer(self) -> bool: ...
    @property
    def accepted(self) -> Optional[socket.socket]: ...
    @property
    def address(self) -> object: ...  # a datagram's sender (unconnected socket), else None
    @property
    def truncated(self) -> bool: ...  # a datagram cut to fit its buffer
    @property
    def tls(self) -> Optional[ssl.SSLObject]: ...  # None: no TLS yet (issue 20)

@final
class Watcher:
    """Watcher(bufsize=65536, *, engine, write_high=262144, batch_wait=0.0): native engines only.

    Raises gaio.EngineUnavailableError (with the reason) when the engine
    cannot run here, ValueError for a name that is not a native engine.
    """
    def __init__(self, bufsize: int = ..., *,
                 engine: Literal["uring", "epoll", "kqueue"],
                 write_high: Optional[int] = ..., batch_wait: float = ...) -> None: ...
    @property
    def engine(self) -> str: ...
    @property
    def bufsize(self) -> int: ...
    def read(self, conn: socket.socket, buf: Optional[_Buffer] = None, *, ctx: object = None,
             timeout: Optional[_Seconds] = None, deadline: Optional[_Seconds] = None,
             repeat: bool = False) -> None: ...
    def read_full(self, conn: socket.socket, buf: _Buffer, *, ctx: object = None,
                  timeout: Optional[_Seconds] = None, deadline: Optional[_Seconds] = None) -> None: ...
    def write(self, conn: socket.socket,
              data: Union[_Buffer, list[_Buffer], tuple[_Buffer, ...]], *, ctx: object = None,
              timeout: Optional[_Seconds] = None, deadline: Optional[_Seconds] = None,
              quiet: bool = False,
              address: Union[tuple[object, ...], str, bytes, None] = None) -> None: ...
    def accept(self, listener: socket.socket, *, ctx: object = None,
               timeout: Optional[_Seconds] = None, deadline: Optional[_Seconds] = None,
               repeat: bool = False) -> None: ...
    def connect(self, sock: socket.socket, address: Union[tuple[Any, ...], str, bytes], *,
                ctx: object = None, timeout: Optional[_Seconds] = None,
                deadline: Optional[_Seconds] = None) -> None: ...
    def sendfile(self, conn: socket.socket, file: Union[_HasFileno, int], offset: int = 0,
                 count: Optional[int] = None, *, ctx: object = None,
                 timeout: Optional[_Seconds] = None, deadline: Optional[_Seconds] = None,
                 quiet: bool = False) -> None: ...
    def start_tls(self, conn: socket.socket, context: ssl.SSLContext, *, server_side: bool,
                  server_hostname: Optional[str] = None, ctx: object = None,
                  timeout: Optional[_Seconds] = None,
                  deadline: Optional[_Seconds] = None) -> None: ...
    def fileno(self) -> int: ...
    def next_timeout(self) -> Optional[float]: ...
    def free(self, conn: socket.socket, /) -> None: ...
    def wait_io(self, timeout: Optional[_Seconds] = None) -> list[OpResult]: ...
    def close(self, /) -> None: ...
    def stats(self, /) -> dict[str, int]: ...
    def _techniques(self, /) -> dict[str, Optional[str]]: ...  # test-only: {technique: None or why not}
    def __enter__(self) -> "Watcher": ...
    def __exit__(self, *exc_info: object) -> None: ...
