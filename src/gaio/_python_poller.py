"""The pure-Python engine's readiness source: what the selector watches and
what it reports, the twin of the native engines' epoll.c/kqueue.c registration.

`selectors` keeps a SelectorKey namedtuple per descriptor (80 bytes, and a
new one at each modify that changes the data): the largest item of an idle
connection after the connection itself (issue 16). Where select.epoll exists
the engine uses it directly and keeps only descriptor -> data; elsewhere
(kqueue, poll, select) it goes through selectors.DefaultSelector.

Either way select() returns [(data, fd, events)], events in selectors'
EVENT_READ/EVENT_WRITE bits, not narrowed to what was registered: the core
masks them with what the descriptor is registered for when it handles the
event (an earlier event of the same batch may have changed that: Redis ae's
stale-event defence). An error or hang-up reports both bits, as in selectors.
"""
import math
import select
import selectors

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
_EPOLLIN = getattr(select, "EPOLLIN", 0)
_EPOLLOUT = getattr(select, "EPOLLOUT", 0)
_TO_EPOLL = (0, _EPOLLIN, _EPOLLOUT, _EPOLLIN | _EPOLLOUT)  # by EVENT_* bits
_GONE = object()


class _EpollPoller:
    """select.epoll and a dict: descriptor -> data."""

    def __init__(self):
        self._epoll = select.epoll()
        self._data = {}
        self.fileno = self._epoll.fileno

    def register(self, fd, events, data):
        if fd in self._data:
            raise KeyError("%d is already registered" % fd)
        self._epoll.register(fd, _TO_EPOLL[events])
        self._data[fd] = data

    def modify(self, fd, events, data):
        self._epoll.modify(fd, _TO_EPOLL[events])
        self._data[fd] = data

    def unregister(self, fd):
        del self._data[fd]  # KeyError when not registered, as selectors
        try:
            self._epoll.unregister(fd)
        except OSError:  # closed meanwhile: the kernel forgot it already
            pass

    def select(self, timeout):
        # selectors.EpollSelector's timeout: epoll_wait() counts whole
        # milliseconds, rounded up to wait *at least* `timeout`
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        else:
            timeout = math.ceil(timeout * 1e3) * 1e-3
        data = self._data
        try:
            fd_events = self._epoll.poll(timeout, len(data) or 1)
        except InterruptedError:
            return []
        ready = []
        get = data.get
        for fd, event in fd_events:
            owner = get(fd, _GONE)
            if owner is _GONE:
                continue  # unregistered by another thread meanwhile
            # selectors' reading: anything but EPOLLIN (EPOLLOUT, EPOLLERR,
            # EPOLLHUP) is writable, anything but EPOLLOUT readable
            ready.append((owner, fd, (EVENT_WRITE if event & ~_EPOLLIN else 0)
                          | (EVENT_READ if event & ~_EPOLLOUT else 0)))
        return ready

    def close(self):
        self._epoll.close()
        self._data.clear()


class _SelectorsPoller:
    """selectors.DefaultSelector behind the same calls."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        fileno = getattr(self._selector, "fileno", None)
        if fileno is not None:  # select() and poll() have no descriptor
            self.fileno = fileno
        self.register = self._selector.register
        self.modify = self._selector.modify
        self.unregister = self._selector.unregister
        self.close = self._selector.close

    def select(self, timeout):
        return [(key.data, key.fd, events) for key, events in self._selector.select(timeout)]


Poller = _EpollPoller if hasattr(select, "epoll") else _SelectorsPoller
