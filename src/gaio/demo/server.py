"""The echo server of `python -m gaio demo`: one Watcher, two threads.

gaio has no accept operation, so connections come in through a plain accept
thread that hands each socket to the watcher with its first read request
(requests are thread-safe). We use a thread rather than polling the listener
between short wait_io() calls because a blocked accept() costs nothing while
no one connects and adds no latency to the I/O loop, and because it is the
shape of gaio's own examples (accept in one place, WaitIO in another).

The I/O thread echoes the way gaio's echo server does: a read into the
internal buffer, the view written straight back (the watcher copies it), and
the next read only once the write completed, so a slow client slows its own
connection down instead of growing the server's memory.
"""
import socket
import threading

from .._errors import WatcherClosedError
from .._result import Op

ACCEPT_POLL = 0.1  # how often the accept thread looks at the stop flag (s)
WAIT_POLL = 0.25   # how long one wait_io() may block before the stop flag is checked (s)
STOP_GRACE = 5.0   # how long stop() waits for the I/O thread before and after close() (s)


class EchoServer:
    def __init__(self, watcher, host="127.0.0.1"):
        self.watcher = watcher
        self.listener = socket.create_server((host, 0), backlog=4096)
        self.listener.settimeout(ACCEPT_POLL)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0         # connections handed to the watcher
        self.ended = 0            # connections freed after EOF or an error
        self.failure = None       # an unexpected exception that stopped a thread
        self._stop = threading.Event()
        # Daemon threads only so that an engine bug cannot keep the process
        # alive at exit; stop() joins both.
        self._threads = [
            threading.Thread(target=self._accept_loop, name="gaio-demo-accept", daemon=True),
            threading.Thread(target=self._io_loop, name="gaio-demo-io", daemon=True)]

    def start(self):
        for thread in self._threads:
            thread.start()

    def stop(self):
        """Stop both threads, join them, then close the listener and the watcher."""
        self._stop.set()
        accept_thread, io_thread = self._threads
        if accept_thread.is_alive():
            accept_thread.join()
        io_thread.join(STOP_GRACE)
        if io_thread.is_alive():
            # wait_io() overran its timeout; close() from another thread must wake it (R10).
            self.watcher.close()
            io_thread.join(STOP_GRACE)
        self.listener.close()
        self.watcher.close()
        if io_thread.is_alive() and self.failure is None:
            self.failure = RuntimeError("the I/O thread did not stop: wait_io() did not return")

    def _accept_loop(self):
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self.listener.accept()
                except socket.timeout:
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.watcher.read(conn)  # delegates conn: the watcher owns it from here
                self.accepted += 1
        except WatcherClosedError:
            pass
        except BaseException as exc:  # reported by the demo, never a silent thread death
            self.failure = exc

    def _io_loop(self):
        w = self.watcher
        try:
            while not self._stop.is_set():
                for res in w.wait_io(WAIT_POLL):
                    if res.error is not None:
                        # EOF, a reset, or a write failing after the peer left: each
                        # connection has one request pending at a time, so this
                        # happens once per connection.
                        w.free(res.conn)
                        self.ended += 1
                    elif res.op == Op.READ:  # echo the view back; the watcher copies it now
                        w.write(res.conn, res.buffer)
                    else:
                        w.read(res.conn)
        except WatcherClosedError:
            pass
        except BaseException as exc:
            self.failure = exc
