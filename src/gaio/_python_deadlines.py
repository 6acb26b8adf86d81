"""The pure-Python engine's deadline heap: earliest deadline first.

Entries are never removed when their request finishes early; they are skipped
when they reach the top (lazy deletion), and the heap is rebuilt once stale
entries outnumber live ones, so a server that puts a long timeout on every
read does not grow the heap without bound.
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
        heapq.heappush(self._heap, (when, next(self._order), request))
        self._live += 1

    def forget(self, request):
        """`request` (which was pushed) finished before its deadline."""
        self._live -= 1
        heap = self._heap
        if len(heap) > 64 and len(heap) > 2 * self._live:
            self._heap = [entry for entry in heap if not entry[2].finished]
            heapq.heapify(self._heap)

    def earliest(self):
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap and heap[0][2].finished:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_expired(self, now):
        """The live request whose deadline is <= now and earliest, or None.

        The caller finishes it (and calls forget) before asking again.
        """
        heap = self._heap
        while heap:
            when, _, request = heap[0]
            if request.finished:
                heapq.heappop(heap)
                continue
            if when > now:
                return None
            heapq.heappop(heap)
            return request
        return None

    def clear(self):
        self._heap = []
        self._live = 0
