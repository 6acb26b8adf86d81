"""The exceptions gaio raises or reports in OpResult.error.

Socket errors are reported as the OSError subclass that matches errno
(ConnectionResetError, BrokenPipeError, ...), end of stream as EOFError.
"""


class WatcherClosedError(RuntimeError):
    """A call was made on a closed watcher, or close() ended a blocked wait_io()."""


class DeadlineExceededError(TimeoutError):
    """An operation was not finished by its deadline."""


class ConnClosedError(ConnectionError):
    """A pending operation was ended by free() of its connection."""


class EngineUnavailableError(RuntimeError):
    """An engine asked for by name cannot run here; the message says why."""
