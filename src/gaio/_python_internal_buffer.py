"""The pure-Python engine's internal buffer: where reads without a buffer land.

One anonymous mapping (the arena) is shared by every connection. Within one batch of
results, reads are packed one after another into it and each result gets a
read-only memoryview of exactly its bytes. At the next wait_io() every view
handed out is released, so touching it raises ValueError, and the arena is
reused from the start.

A view cannot be released while something exported a buffer from it (numpy,
ctypes, ...): memoryview.release() then raises BufferError. Reusing the arena
would show that exporter another connection's bytes, so the arena is left to
whoever holds it and a fresh one is allocated when next needed.
"""
import mmap
import socket

# The arena is 4 * bufsize (the most one batch may hand out, R4), capped at
# 4 MiB or one bufsize, whichever is larger; it is allocated on first use, so
# a watcher that never reads without a buffer costs nothing. The C engines'
# budget is GAIO_IBUF_CHUNKS chunks of bufsize (src/native/core.h).
ARENA_MULTIPLE = 4
_MSG_PEEK = socket.MSG_PEEK
_MSG_TRUNC = socket.MSG_TRUNC
_MAX_ARENA = 1 << 22


class InternalBuffer:
    __slots__ = ("read_size", "capacity", "arena", "_whole", "_used", "_handed_out",
                 "abandoned")

    def __init__(self, bufsize):
        self.read_size = bufsize  # the most one read takes, as gaio's swap buffer
        self.capacity = min(ARENA_MULTIPLE * bufsize, max(bufsize, _MAX_ARENA))
        self.arena = None
        self._whole = None
        self._used = 0
        self._handed_out = []
        self.abandoned = 0  # arenas left to exporters of a view (stats)

    def _new_arena(self):
        # An anonymous mapping, not a bytearray: bytearray(n) writes n zeros,
        # so every page of it counts in the process's memory from the start,
        # while a mapping's pages count once a read reaches them (a server
        # whose batches carry a few small messages touches a page or two of
        # 4 * bufsize; issue 16).
        try:
            self.arena = mmap.mmap(-1, self.capacity)
        except OSError:  # ENOMEM, as bytearray() would have said
            raise MemoryError("no memory for the internal buffer") from None
        self._whole = memoryview(self.arena)

    def is_full(self):
        return self._used >= self.capacity

    def recv(self, sock):
        """recv into the free part of the arena.

        Returns (size, view): view is a read-only memoryview of the bytes read,
        handed out until release_batch(), or None when size is 0 (EOF).
        Raises what sock.recv_into raises (BlockingIOError: nothing to read).
        """
        if self.arena is None:
            self._new_arena()
        start = self._used
        room = min(self.read_size, self.capacity - start)
        with self._whole[start:start + room] as window:
            size = sock.recv_into(window)
        if size == 0:
            return 0, None
        self._used = start + size
        view = self._whole[start:start + size].toreadonly()
        self._handed_out.append(view)
        return size, view

    def fill(self, read):
        """recv()'s twin for bytes that come from elsewhere: `read(room,
        window)` stores up to `room` bytes in `window` and returns how many
        (SSLObject.read: a TLS session's plaintext, R29).

        Returns (size, view) as recv() does; raises what `read` raises.
        """
        if self.arena is None:
            self._new_arena()
        start = self._used
        room = min(self.read_size, self.capacity - start)
        with self._whole[start:start + room] as window:
            size = read(room, window)
        if size == 0:
            return 0, None
        self._used = start + size
        view = self._whole[start:start + size].toreadonly()
        self._handed_out.append(view)
        return size, view

    def recv_datagram(self, sock):
        """recvmsg_into the free part of the arena: one datagram, cut at
        read_size (R24).

        Returns (size, view, address, truncated), or None when a datagram of
        up to read_size bytes might not fit in what is left: it waits, whole,
        for the next batch (a peek tells whether the next one fits).
        Raises what sock.recvmsg_into raises (BlockingIOError: none there).
        """
        if self.arena is None:
            self._new_arena()
        start = self._used
        room = min(self.read_size, self.capacity - start)
        if room < self.read_size:
            with self._whole[start:start + room] as window:
                _, _, flags, _ = sock.recvmsg_into([window], 0, _MSG_PEEK)
            if flags & _MSG_TRUNC:
                return None
        with self._whole[start:start + room] as window:
            size, _, flags, address = sock.recvmsg_into([window])
        self._used = start + size
        view = self._whole[start:start + size].toreadonly()
        self._handed_out.append(view)
        return size, view, address, bool(flags & _MSG_TRUNC)

    def release_batch(self):
        """Revoke every view handed out since the last call; reuse the arena."""
        handed_out = self._handed_out
        if not handed_out:
            self._used = 0
            return
        self._handed_out = []
        exported = False
        for view in handed_out:
            try:
                view.release()
            except BufferError:
                exported = True
        if exported:
            self.abandoned += 1
            self._whole = None  # the arena stays alive as long as the exporter does
            self.arena = None
        self._used = 0

    def views_out(self):
        return len(self._handed_out)

    def drop(self):
        """Forget the arena (the watcher closes). Views handed out stay valid
        until their holders drop them: nothing will write to it again."""
        self._handed_out = []
        self._used = 0
        self._whole = None
        self.arena = None
