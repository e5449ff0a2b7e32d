"""One readiness watch for every media socket of a process: :class:`Poller`.

trio's own ``wait_readable`` registers a socket with the event loop's epoll again on every
wait (one-shot), and walks its bookkeeping each time — on a media socket that is once per 20 ms
frame per call, a large share of the whole frame's cost. A media socket stays readable-watched
for its whole life instead: the poller keeps all of them in one edge-triggered epoll of its
own, registered once; its task waits on that epoll through trio (one registration per wake-up,
however many sockets became readable) and wakes each waiting reader directly.

Edge-triggered: a socket is reported when new data arrives. A reader that did not drain its
socket (its ``recv`` filled the buffer) says so with :meth:`Poller.mark_ready`, and its next
wait returns at once.
"""

from __future__ import annotations

import contextlib
import select

import trio

__all__ = ["Poller"]


class Poller:
    """Wakes the tasks waiting for their media sockets to become readable."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        self._ready: set[int] = set()
        self._watched: set[int] = set()

    def watch(self, fd: int) -> None:
        """Watch ``fd`` (a non-blocking socket) until :meth:`forget`."""
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
        self._watched.add(fd)
        self._ready.add(fd)  # data may have arrived before it was watched

    def forget(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it); a task waiting on it is woken."""
        if fd not in self._watched:
            return
        self._watched.discard(fd)
        self._ready.discard(fd)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)
        task = self._waiting.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task)

    def mark_ready(self, fd: int) -> None:
        """``fd`` may still hold data (its reader stopped before draining it)."""
        if fd in self._watched:
            self._ready.add(fd)

    async def wait_readable(self, fd: int) -> None:
        """Wait until ``fd`` has data (or is closed, or forgotten)."""
        if fd in self._ready:
            self._ready.discard(fd)
            # Still a checkpoint: a peer flooding its socket cannot keep this task running.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if fd not in self._watched:
            raise trio.ClosedResourceError("the socket is no longer watched")
        if fd in self._waiting:
            raise trio.BusyResourceError("another task is already waiting on this socket")
        self._waiting[fd] = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._waiting.pop(fd, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The poller's task: runs until cancelled, then closes its epoll."""
        epoll = self._epoll
        waiting, ready = self._waiting, self._ready
        reschedule = trio.lowlevel.reschedule
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0):
                    task = waiting.pop(fd, None)
                    if task is not None:
                        reschedule(task)
                    elif fd in self._watched:
                        ready.add(fd)
        finally:
            for task in self._waiting.values():
                reschedule(task)
            self._waiting.clear()
            epoll.close()
