"""The pure-Python engine's deadline heap: earliest deadline first.

Entries are never removed when their request finishes early; they are skipped
when they reach the top (lazy deletion), and the heap is rebuilt once stale
entries outnumber live ones, so a server that puts a long timeout on every
read does not grow the heap without bound.

A standing request's idle deadline moves at each of its results: the request's
`deadline` attribute is moved later and its entry is pushed down only when it
reaches the top (one heap operation per idle period, not per result). A move
earlier (or a pause: `deadline` None while back-pressure holds the request)
bumps the request's `gen` and pushes a new entry; entries of an older
generation are stale.
"""
import heapq
import itertools


class DeadlineHeap:
    __slots__ = ("_heap", "_order", "_live")

    def __init__(self):
        self._heap = []
        self._order = itertools.count()  # ties: first requested, first expired
        self._live = 0

    def __len__(self):
        return self._live

    def push(self, when, request):
        heapq.heappush(self._heap, (when, next(self._order), request, request.gen))
        self._live += 1

    def repush(self, request):
        """`request` (pushed before, still live) has a new, earlier
        `deadline` (its `gen` was bumped) or got one back after a pause."""
        heapq.heappush(self._heap, (request.deadline, next(self._order), request, request.gen))

    def forget(self, request):
        """`request` (which was pushed) finished before its deadline."""
        self._live -= 1
        heap = self._heap
        if len(heap) > 64 and len(heap) > 2 * self._live:
            self._heap = [entry for entry in heap
                          if not entry[2].finished and entry[3] == entry[2].gen]
            heapq.heapify(self._heap)

    def _top(self):
        """The live entry with the earliest deadline, or None."""
        heap = self._heap
        while heap:
            entry = heap[0]
            request = entry[2]
            if request.finished or entry[3] != request.gen or request.deadline is None:
                heapq.heappop(heap)
                continue
            if entry[0] != request.deadline:  # moved later since pushed
                heapq.heapreplace(heap, (request.deadline, next(self._order), request,
                                         entry[3]))
                continue
            return entry
        return None

    def earliest(self):
        """The earliest live deadline, or None."""
        entry = self._top()
        return None if entry is None else entry[0]

    def pop_expired(self, now):
        """The live request whose deadline is <= now and earliest, or None.

        The caller finishes it (and calls forget) before asking again.
        """
        entry = self._top()
        if entry is None or entry[0] > now:
            return None
        heapq.heappop(self._heap)
        return entry[2]

    def clear(self):
        self._heap = []
        self._live = 0
