"""The pure-Python engine's batch of results, the twin of core_results.c: a
finished request leaves its queue and becomes an OpResult appended to the
batch (a quiet write that succeeded only counts), a standing read appends
one per arrival and stays, and wait_io() takes the batch.

`Results` is a mixin of the engine's `_Core`, under the core's lock.
"""
import os
import time

from ._python_conns import NO_WRITES
from ._result import DatagramResult, Op, OpResult

_monotonic = time.monotonic
# Enum member lookups cost more than a global on the hot path.
_OP_READ = Op.READ
_OP_WRITE = Op.WRITE
_OP_ACCEPT = Op.ACCEPT
_OP_SENDFILE = Op.SENDFILE
_OP_TLS = Op.TLS


def _result_builder():
    """A function building an OpResult straight through its slots.

    Same object as OpResult(...) gives, at less than half the cost of going
    through its __init__ (which sets each slot with object.__setattr__): two
    results per echoed message make this the engine's hottest allocation.
    """
    new = object.__new__
    set_op, set_conn, set_ctx, set_buffer, set_size, set_error, set_swap, set_accepted = (
        getattr(OpResult, name).__set__ for name in (
            "op", "conn", "ctx", "buffer", "size", "error", "is_swap_buffer", "accepted"))

    def build(op, conn, ctx, buffer, size, error, is_swap, accepted=None):
        res = new(OpResult)
        set_op(res, op)
        set_conn(res, conn)
        set_ctx(res, ctx)
        set_buffer(res, buffer)
        set_size(res, size)
        set_error(res, error)
        set_swap(res, is_swap)
        set_accepted(res, accepted)
        return res

    return build


new_result = _result_builder()


def _datagram_result_builder():
    """new_result's twin for a datagram read's result (R24, R25)."""
    new = object.__new__
    setters = [getattr(DatagramResult, name).__set__ for name in (
        "op", "conn", "ctx", "buffer", "size", "error", "is_swap_buffer", "address",
        "truncated")]

    def build(op, conn, ctx, buffer, size, error, is_swap, address, truncated):
        res = new(DatagramResult)
        for setter, value in zip(setters, (op, conn, ctx, buffer, size, error, is_swap,
                                           address, truncated)):
            setter(res, value)
        return res

    return build


new_datagram_result = _datagram_result_builder()


class Results:
    """Mixin of _Core: see the module docstring. Expects the core's fields."""

    def _finish(self, req, size, error, buffer, is_swap, accepted=None):
        """Turn `req` into a result (none for a quiet write that succeeded);
        it leaves its queue."""
        req.finished = True
        self.pending -= 1
        conn = req.conn
        op = req.op
        if op is _OP_READ:
            queue = conn.reads
        elif op is _OP_WRITE:
            queue = conn.writes
        elif op is _OP_ACCEPT:
            queue = conn.reads
        else:
            queue = conn.writes if op is _OP_SENDFILE or op is _OP_TLS else ()
        if queue and queue[0] is req:
            del queue[0]
        elif req in queue:
            queue.remove(req)
        if not queue and queue is conn.writes:
            conn.writes = NO_WRITES  # an idle connection keeps no write queue
        if not req.special:
            if req.deadline is not None:
                self.deadlines.forget(req)
            if op is _OP_WRITE and error is not None and conn.standing is not None:
                self._bp_plain_ended(req)
            self.results.append(new_result(op, req.owner, req.ctx, buffer, size, error,
                                           is_swap))
        else:
            if req.timed:
                self.deadlines.forget(req)
            self._finish_special(req)
            if req.quiet and error is None:
                self.quiet_done += 1
            elif op is _OP_TLS:
                self._tls_finished(req, error)  # its result, and the session's fate
            else:
                self.results.append(new_result(op, req.owner, req.ctx, buffer, size, error,
                                               is_swap, accepted))
        if op is _OP_READ and queue:
            head = queue[0]
            if head.repeat and head.op is _OP_READ and conn.standing is not head:
                self._bp_adopt(conn)  # R21: the new head read answers from now on
        # the result holds these now; a lingering request must not keep them
        # (a standing read has no buffer or view of its own to clear)
        req.owner = req.ctx = None
        if req.view is not None:
            req.view.release()
            req.view = None
        if req.buffer is not None:
            req.buffer = None

    def _finish_datagram_read(self, req, size, buffer, is_swap, address, truncated):
        """_finish for a one-shot read of a datagram socket that got its
        datagram: the same steps, and a result that says `address` and
        `truncated` (R24, R25). A datagram socket's reads never answer for
        writes (R27), so no head read is adopted."""
        req.finished = True
        self.pending -= 1
        reads = req.conn.reads
        if reads and reads[0] is req:
            del reads[0]
        elif req in reads:
            reads.remove(req)
        if not req.special:
            if req.deadline is not None:
                self.deadlines.forget(req)
        else:
            if req.timed:
                self.deadlines.forget(req)
            self._finish_special(req)
        self.results.append(new_datagram_result(_OP_READ, req.owner, req.ctx, buffer, size,
                                                None, is_swap, address, truncated))
        req.owner = req.ctx = None
        if req.view is not None:
            req.view.release()
            req.view = None
        if req.buffer is not None:
            req.buffer = None

    def _finish_special(self, req):
        """The 0.2 part of _finish: what a finished special request lets go."""
        if req.op is _OP_WRITE or req.op is _OP_SENDFILE:
            self._bp_ended(req)
            req.answer = None
        if req.items is not None:
            for view in req.items:
                view.release()
            req.items = None
        if req.fd >= 0:
            os.close(req.fd)
            req.fd = -1
            self.files.discard(req)
            self.fd_closed = True
        conn = req.conn
        if req.repeat and conn.standing is req:
            conn.standing = None
        if conn.stalled and (req.op is _OP_READ or req.op is _OP_ACCEPT):
            conn.stalled = False

    def _deliver_standing(self, req, size, out):
        """A result of standing read `req`; the request stays at its head."""
        self.results.append(new_result(_OP_READ, req.owner, req.ctx, out, size,
                                       None, True))
        self._bp_note_view(out, req)
        if req.idle is not None:
            req.deadline = _monotonic() + req.idle  # the heap catches up lazily

    def _take_results(self):
        """The batch, handed out: the core starts a new one."""
        results, self.results = self.results, []
        self.completed += len(results)
        return results
