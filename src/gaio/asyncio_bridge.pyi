# Type information for gaio.asyncio_bridge (see the module's docstring).
import asyncio
from collections.abc import Callable
from types import TracebackType

from gaio import OpResult, Watcher

__all__ = ["Bridge", "attach"]

class Bridge:
    watcher: Watcher
    loop: asyncio.AbstractEventLoop
    closed: bool
    polling: bool
    wakeups: int
    def __init__(
        self,
        watcher: Watcher,
        on_result: Callable[[OpResult], object],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        poll_interval: float = 0.01,
    ) -> None: ...
    def close(self) -> None:
        """Detach from the loop (idempotent). The watcher stays open."""
    def __enter__(self) -> Bridge: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...

def attach(
    watcher: Watcher,
    on_result: Callable[[OpResult], object],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    poll_interval: float = 0.01,
) -> Bridge:
    """Drive `watcher` from the running asyncio loop (or `loop`); a `Bridge`."""
