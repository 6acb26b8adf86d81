"""Back-pressure (R21) in the pure-Python engine: the whole rule, as
src/native/backpressure.c keeps it for the native engines.

A standing read is answerable for
- the unwritten bytes of every write made from one of its own results' views,
  whichever connection the write goes to (the write names the read: `answer`,
  a list parallel to the items for a vectored write), and
- the unwritten bytes of every other write queued on its own connection
  (plain data, copies, sendfile), whenever it was queued: when it becomes its
  connection's head read it becomes `conn.standing` and takes on what is
  queued there; from then on every such write queued, written or ended on the
  connection changes its count.
It is `held` (reads nothing: its connection stops watching readability, so TCP
slows the peer; its idle limit is paused) while `owed` exceeds write_high, and
goes on when `owed` falls to write_high // 4 or less. A view's bytes count for
the view's read only, never for the destination's read: a proxy that writes
each side's views to the other side is held back by the slow side only.

`BackPressure` is a mixin of the engine's `_Core`: every change to `owed` is
made here. Plain 0.1 writes (`_Request`) are always "other writes"; the
engine's write loop pays `conn.standing` for their bytes itself (one
attribute test per send) and `_bp_plain_ended` for what they leave unwritten.
"""
import time

# A held read goes on at write_high // WRITE_LOW_DIVISOR or less; the C
# engines' is GAIO_WRITE_LOW_DIVISOR in src/native/backpressure.h.
WRITE_LOW_DIVISOR = 4

_monotonic = time.monotonic


class BackPressure:
    """Mixin of _Core. Expects write_high, write_low, view_owner (a dict,
    None when back-pressure is off), fresh and deadlines."""

    # ------------------------------------------------------------ views

    def _bp_note_view(self, view, standing):
        """`view` is a result of standing read `standing` (this batch's)."""
        if self.view_owner is not None:
            self.view_owner[id(view)] = standing

    def _bp_origin(self, obj):
        """The standing read whose result view `obj` is, or None."""
        owner = self.view_owner
        return owner.get(id(obj)) if owner else None

    # ------------------------------------------------------------ counting

    def _bp_adopt(self, conn):
        """The head of conn's reads is a standing read that does not count
        yet: it answers for the writes queued on conn from now on, and for
        those queued already."""
        if self.write_high is None or conn.dgram:
            return  # R27: write_high never holds a datagram socket's standing read
        standing = conn.reads[0]
        conn.standing = standing
        owed = 0
        for write in conn.writes:
            owed += _own_bytes_left(write)
        self._owe(standing, owed)

    def _bp_queued(self, req, conn):
        """Write `req` (a _Special: vectored, quiet, sendfile, or made from a
        view) was queued on conn."""
        if self.write_high is not None:
            self._settle(req, conn.standing, None, self._owe)

    def _bp_written(self, req, size):
        """`size` more bytes of _Special write `req` went out (call before
        its vector cursor moves)."""
        if self.write_high is not None:
            self._settle(req, req.conn.standing, size, self._pay)

    def _bp_ended(self, req):
        """_Special write `req` ends: what it did not write never will be."""
        if self.write_high is not None:
            self._settle(req, req.conn.standing, None, self._pay)

    def _bp_plain_ended(self, req):
        """Plain write `req` (a _Request) ends with bytes unwritten."""
        standing = req.conn.standing
        if standing is not None:
            self._pay(standing, req.view.nbytes - req.size)

    def _settle(self, req, own, limit, apply):
        """Apply (owe or pay) the first `limit` unwritten bytes of write
        `req` (None: all of them) to the standing reads that answer for them;
        `own` answers for those no view names."""
        items = req.items
        if items is None:
            left = req.total - req.size
            size = left if limit is None else min(limit, left)
            target = req.answer if req.answer is not None else own
            if target is not None and size:
                apply(target, size)
            return
        origins = req.answer
        offset = req.offset
        for index in range(req.index, len(items)):
            part = items[index].nbytes - offset
            offset = 0
            if limit is not None:
                if limit <= 0:
                    return
                part = min(part, limit)
                limit -= part
            target = origins[index] if origins is not None else None
            if target is None:
                target = own
            if target is not None and part:
                apply(target, part)

    # ------------------------------------------------------------ hold / release

    def _owe(self, standing, size):
        standing.owed += size
        if standing.owed > self.write_high and not standing.held and not standing.finished:
            self._hold(standing)

    def _pay(self, standing, size):
        standing.owed -= size
        if standing.held and standing.owed <= self.write_low:
            self._release(standing)

    def _hold(self, req):
        """Back-pressure holds standing read `req` (under the lock, any thread)."""
        req.held = True
        if req.idle is not None and req.deadline is not None:
            req.deadline = None  # the idle limit does not run while held
            req.gen += 1

    def _release(self, req):
        """Back-pressure lets standing read `req` read again."""
        req.held = False
        if req.finished:
            return
        conn = req.conn
        if conn.reads and conn.reads[0] is req:
            conn.stalled = False
        if req.idle is not None and req.deadline is None:
            req.gen += 1
            req.deadline = _monotonic() + req.idle
            self.deadlines.repush(req)
        self.fresh.append(req)


def _own_bytes_left(write):
    """The unwritten bytes of queued write `write` that no view names."""
    if write.finished:
        return 0
    if not write.special:
        return write.view.nbytes - write.size
    items = write.items
    if items is None:
        return 0 if write.answer is not None else write.total - write.size
    origins = write.answer
    left = 0
    offset = write.offset
    for index in range(write.index, len(items)):
        if origins is None or origins[index] is None:
            left += items[index].nbytes - offset
        offset = 0
    return left
