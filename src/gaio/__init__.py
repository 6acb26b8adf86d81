"""gaio: proactor-style network I/O for Python.

A Watcher owns the sockets handed to it, performs read and write requests
itself with non-blocking I/O (io_uring, epoll, kqueue, or selectors in pure
Python), and hands back completions in batches from wait_io(). Reads without
a buffer land in one internal buffer shared by every connection.
"""
from ._errors import (
    ConnClosedError,
    DeadlineExceededError,
    EngineUnavailableError,
    WatcherClosedError,
)
from ._result import Op, OpResult
from ._watcher import ENGINES, Watcher, available_engines

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
__version__ = "0.1.0"
