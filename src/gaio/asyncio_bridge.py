"""Drive a gaio Watcher from a running asyncio event loop.

    bridge = gaio.asyncio_bridge.attach(watcher, on_result)

The loop watches the watcher's descriptor (`Watcher.fileno()`, R23) with
`add_reader()`; when it is readable the bridge calls `wait_io(0)` once and
passes each result to `on_result(res)`, on the loop's thread, while the
result's internal-buffer view is valid. A timer set from `next_timeout()`
makes deadlines end on time. An idle watcher costs the loop nothing: no
wake-up until a socket of the watcher has something to do or a deadline
comes. Requests may be made from any coroutine or callback of the loop
(they are non-blocking); the results come back through `on_result`.

One `wait_io(0)` per wake-up keeps the loop fair: a batch is bounded (4 x
the watcher's bufsize of internal-buffer bytes, R4), then other callbacks
and tasks run before the next one. After a batch with results the bridge
looks again on the loop's next turn, until a wait finds nothing.

The bridge registers a duplicate of the watcher's descriptor, so that a
watcher closed behind its back can never make the loop confuse the number
with a later socket's. It detaches (`remove_reader`, timer cancelled,
duplicate closed) on `close()`, at the end of a `with` block, when the
watcher turns out closed at a wake-up, and when `asyncio.run()` ends (it
keeps a small task that the loop's shutdown cancels). It never closes the
watcher: that stays the caller's.

Named `asyncio_bridge`, not `asyncio` (which would read as the standard
library's module in `from gaio import asyncio`) nor `aio` (Linux AIO).
"""
import asyncio
import io
import os
import weakref

from ._errors import WatcherClosedError

__all__ = ["Bridge", "attach"]

# A deadline that next_timeout() says has passed is fetched by wait_io(0);
# should the engine deliver it a moment later, this keeps the timer from
# spinning the loop meanwhile.
_MIN_TIMER = 0.001


class Bridge:
    """A watcher attached to an asyncio loop; made by `attach()`.

    Attributes: `watcher`, `loop`, `closed` (detached), `polling` (True when
    the engine offers no pollable descriptor and the bridge polls instead),
    `wakeups` (how many times the loop called it: readiness and timers).
    """

    def __init__(self, watcher, on_result, *, loop=None, poll_interval=0.01):
        if not callable(on_result):
            raise TypeError("on_result must be callable")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be positive")
        self.watcher = watcher
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.closed = False
        self.wakeups = 0
        self._on_result = on_result
        self._poll_interval = poll_interval
        self._timer = None
        self._timer_at = None
        self._again = False
        try:
            fd = watcher.fileno()
        except io.UnsupportedOperation:  # kqueue on libkqueue: nothing to poll
            self._fd = None
        else:
            self._fd = os.dup(fd)
        # A loop closed without asyncio.run()'s shutdown never cancels the
        # keeper task: the duplicate is then closed when the bridge is collected.
        self._close_fd = None if self._fd is None else weakref.finalize(self, os.close, self._fd)
        self.polling = self._fd is None
        try:
            if self._fd is not None:
                self.loop.add_reader(self._fd, self._wake)
            self._keeper = self.loop.create_task(self._keep())
        except BaseException:
            self._detach()
            raise
        # Work the watcher may already have (requests made before attach).
        self.loop.call_soon(self._wake)

    async def _keep(self):
        # Cancelled by asyncio.run()'s shutdown (or by close()): detach then.
        try:
            await self.loop.create_future()
        finally:
            self._detach()

    def _wake(self):
        if self.closed:
            return
        self.wakeups += 1
        try:
            results = self.watcher.wait_io(0)
        except WatcherClosedError:
            self.close()
            return
        on_result = self._on_result
        for res in results:
            try:
                on_result(res)
            except Exception as exc:  # as asyncio does for a callback: report, go on
                self.loop.call_exception_handler({
                    "message": "gaio.asyncio_bridge: on_result raised",
                    "exception": exc, "bridge": self, "result": res})
        if self.closed:
            return
        if results and not self._again:
            # Busy: look again on the loop's next turn, after the callbacks and
            # tasks ready now, until a wait finds nothing (one more batch without
            # another trip through the selector).
            self._again = True
            self.loop.call_soon(self._wake_again)
        self._set_timer()

    def _wake_again(self):
        self._again = False
        self._wake()

    def _set_timer(self):
        try:
            left = self.watcher.next_timeout()
        except WatcherClosedError:  # closed by on_result
            self.close()
            return
        if self.polling:
            left = self._poll_interval if left is None else min(left, self._poll_interval)
        if left is None:
            at = None
        else:
            at = self.loop.time() + max(left, _MIN_TIMER)
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = None if at is None else self.loop.call_at(at, self._on_timer)

    def _on_timer(self):
        self._timer = self._timer_at = None
        self._wake()

    def _detach(self):
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._fd is not None:
            if not self.loop.is_closed():
                self.loop.remove_reader(self._fd)
            self._close_fd()
            self._fd = None

    def close(self):
        """Detach from the loop (idempotent). The watcher stays open."""
        if self.closed:
            return
        self._detach()
        keeper = getattr(self, "_keeper", None)
        if keeper is not None and not keeper.done() and not self.loop.is_closed():
            keeper.cancel()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else ("polling" if self.polling else "attached")
        return "<gaio.asyncio_bridge.Bridge %s engine=%s>" % (
            state, getattr(self.watcher, "engine", "?"))


def attach(watcher, on_result, *, loop=None, poll_interval=0.01):
    """Drive `watcher` from the running asyncio loop (or `loop`); a `Bridge`.

    `on_result(res)` is called on the loop's thread for every result, in
    completion order; an internal-buffer view in `res` is valid until it
    returns (take `bytes(res.buffer)` to keep the bytes). An exception it
    raises goes to the loop's exception handler, and the next result follows.

    When the engine has no pollable descriptor (the kqueue engine built on
    libkqueue raises io.UnsupportedOperation from fileno()), the bridge polls
    with wait_io(0) every `poll_interval` seconds instead (`bridge.polling`).
    """
    return Bridge(watcher, on_result, loop=loop, poll_interval=poll_interval)
