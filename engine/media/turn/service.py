"""The model off the event loop: batched requests, worker threads, a bound (trio).

One :class:`ScoringService` per process serves every call. A call awaits
:meth:`ScoringService.probability`; requests that wait at the same moment go to the model as one
batch (``max_batch`` at most), in one of ``threads`` dedicated worker threads — while every
thread is busy, new requests queue and leave together as the next batch. onnxruntime releases
the GIL while it computes, so the event loop keeps serving media meanwhile, and the workers run
at a lower CPU priority (``nice``, Linux) so that when cores are short the media loop comes
first and the model waits.

**The bound.** With ``max_wait_s`` set, a request the service could not answer within it is
refused at once with :class:`ServiceSaturated` rather than queued: the service keeps a running
mean of a window's inference time and, from the batches running and the requests queued ahead
(first come, first served), predicts when a new request would be answered. An idle service
takes every request, however slow its last runs were, so that its estimate can recover. A call
whose request is refused falls back to the VAD rule for that turn at once, instead of waiting
out a timeout on a request that cannot make it. A caller that gives up anyway (a timeout, a
cancelled call) leaves its request behind; the dispatcher drops abandoned requests before they
reach the model.

Use::

    async with open_scoring_service(SmartTurnModel(), threads=1, max_wait_s=0.8) as service:
        p = await service.probability(pcm)
"""

from __future__ import annotations

import heapq
import math
import os
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

import outcome
import trio

from engine.media.frames import PCM

__all__ = [
    "ScoringModel",
    "ScoringService",
    "ServiceSaturated",
    "ServiceStatistics",
    "default_threads",
    "open_scoring_service",
]

_SMOOTHING = 0.2
"""Weight of the newest run in the running mean of a window's inference time."""


class ServiceSaturated(Exception):
    """The service cannot answer within its ``max_wait_s`` now: the request was refused at once.

    An analyzer may raise it too (or a subclass): the turn then falls back to the VAD rule at
    once, counted as ``saturated`` rather than as a failure.
    """


class ScoringModel(Protocol):
    """A blocking, thread-safe scorer of windows (e.g. :class:`SmartTurnModel`)."""

    def probabilities(self, windows: Sequence[PCM]) -> list[float]:
        """P(turn complete) for each 8 kHz int16 window."""


def default_threads() -> int:
    """Worker threads for inference: one core is left to the media loop (at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, cores - 1)


@dataclass(frozen=True, slots=True)
class ServiceStatistics:
    """Counters of a :class:`ScoringService` since it started."""

    requests: int
    """Requests received (refused ones included)."""
    refused: int
    """Requests refused at once because they could not be answered within ``max_wait_s``."""
    batches: int
    """Model runs."""
    scored: int
    """Requests that went to the model (the sum of batch sizes)."""
    largest_batch: int
    abandoned: int
    """Requests whose caller gave up before they reached the model (not run)."""
    failures: int
    """Requests whose batch raised."""
    queued: int
    """Requests waiting now."""
    busy_threads: int
    """Batches running now."""
    window_ms: float | None
    """Running mean of one window's inference time (wall clock), once measured."""


class _Request:
    __slots__ = ("abandoned", "done", "error", "pcm", "result")

    def __init__(self, pcm: PCM) -> None:
        self.pcm = pcm
        self.done = trio.Event()
        self.result = math.nan
        self.error: BaseException | None = None
        self.abandoned = False


_Job = tuple[Callable[[Sequence[PCM]], list[float]], list[PCM], Callable[..., None]]


def _work(jobs: queue.SimpleQueue[_Job | None], token: trio.lowlevel.TrioToken, nice: int) -> None:
    """A worker thread: run batches until told to stop (``None``)."""
    if nice:  # on Linux a thread's own id sets that thread's priority alone
        with suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    while (job := jobs.get()) is not None:
        run, windows, deliver = job
        started = perf_counter()
        result = outcome.capture(run, windows)
        try:
            token.run_sync_soon(deliver, result, perf_counter() - started)
        except trio.RunFinishedError:
            return


class ScoringService:
    """Batches concurrent requests onto a :class:`ScoringModel` (see the module docstring).

    Requests are served first come, first served (``newest_first=False``), which is what the
    ``max_wait_s`` bound predicts; ``newest_first=True`` serves the newest first, for use
    without a bound. On a CPU a batch costs about the sum of its windows (measured: 250 ms per
    8 s window at batch sizes 1–8 on this project's 2-core machine, idle), so batching saves
    hand-offs, not compute; hence ``max_batch=1`` by default — raise it where a batch is cheaper
    per window (a GPU, a CPU with int8 dot-product instructions).
    Build it with :func:`open_scoring_service`, which runs its dispatcher and worker threads.
    """

    def __init__(
        self,
        model: ScoringModel,
        *,
        threads: int = 1,
        max_batch: int = 1,
        newest_first: bool = False,
        max_wait_s: float | None = None,
        window_s: float | None = None,
        nice: int = 10,
    ) -> None:
        """``window_s`` is a first guess of one window's inference time (until measured);
        ``nice`` the worker threads' CPU niceness (0: the event loop's own)."""
        if threads < 1 or max_batch < 1:
            raise ValueError("threads and max_batch must be at least 1")
        self.model = model
        self.threads = threads
        self.max_batch = max_batch
        self.newest_first = newest_first
        self.max_wait_s = max_wait_s
        self.nice = nice
        self.limiter = trio.CapacityLimiter(threads)
        """At most this many batches run at once (one worker thread each)."""
        self._window_s = window_s
        self._running: dict[object, tuple[float, list[_Request]]] = {}  # token → (started, batch)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._queue: deque[_Request] = deque()
        self._wake = trio.Event()
        self._requests = 0
        self._refused = 0
        self._batches = 0
        self._scored = 0
        self._largest = 0
        self._abandoned = 0
        self._failures = 0

    async def probability(self, pcm: PCM) -> float:
        """P(turn complete) for ``pcm``; raises what the model raised, or
        :class:`ServiceSaturated` at once when it could not be answered within ``max_wait_s``.
        Cancel it to give up."""
        self._requests += 1
        if (
            self.max_wait_s is not None
            and (self._running or self._queue)  # idle: always try (and so measure again)
            and self.expected_wait() > self.max_wait_s
        ):
            self._refused += 1
            raise ServiceSaturated(f"no answer possible within {self.max_wait_s:.2f} s")
        request = _Request(pcm)
        self._queue.append(request)
        self._wake.set()
        try:
            await request.done.wait()
        finally:
            if not request.done.is_set():
                request.abandoned = True
        if request.error is not None:
            raise request.error
        return request.result

    def expected_wait(self) -> float:
        """Seconds until a request made now would be answered, as far as the service can tell
        (0 before the first inference has been timed, unless ``window_s`` was given)."""
        window = self._window_s
        if window is None:
            return 0.0
        now = trio.current_time()
        free = [max(now, at + window * len(batch)) for at, batch in self._running.values()]
        free += [now] * (self.threads - len(free))
        heapq.heapify(free)
        if not self.newest_first:
            for request in self._queue:  # each request ahead takes the first free thread
                if not request.abandoned:
                    heapq.heapreplace(free, free[0] + window)
        return free[0] + window - now

    def statistics(self) -> ServiceStatistics:
        """The counters so far."""
        window = self._window_s
        return ServiceStatistics(
            requests=self._requests,
            refused=self._refused,
            batches=self._batches,
            scored=self._scored,
            largest_batch=self._largest,
            abandoned=self._abandoned,
            failures=self._failures,
            queued=sum(not r.abandoned for r in self._queue),
            busy_threads=len(self._running),
            window_ms=None if window is None else round(window * 1000, 1),
        )

    def _take(self) -> list[_Request]:
        batch: list[_Request] = []
        while self._queue and len(batch) < self.max_batch:
            request = self._queue.pop() if self.newest_first else self._queue.popleft()
            if request.abandoned:
                self._abandoned += 1
            else:
                batch.append(request)
        return batch

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
            token = object()
            await self.limiter.acquire_on_behalf_of(token)  # requests gather meanwhile
            batch = self._take()
            if not batch:
                self.limiter.release_on_behalf_of(token)
                continue
            self._running[token] = (trio.current_time(), batch)
            nursery.start_soon(self._run, batch, token)

    async def _run(self, batch: list[_Request], token: object) -> None:
        try:
            self._batches += 1
            self._scored += len(batch)
            self._largest = max(self._largest, len(batch))
            finished = trio.Event()
            box: list[tuple[outcome.Outcome[list[float]], float]] = []

            def deliver(result: outcome.Outcome[list[float]], seconds: float) -> None:
                box.append((result, seconds))
                finished.set()

            self._jobs.put((self.model.probabilities, [r.pcm for r in batch], deliver))
            await finished.wait()  # cancelled (the service closing): the thread finishes alone
            result, seconds = box[0]
            self._note_time(seconds / len(batch))
            try:
                results = result.unwrap()
                if len(results) != len(batch):
                    raise RuntimeError("the model returned a wrong number of results")
            except Exception as error:
                self._failures += len(batch)
                for request in batch:
                    request.error = error
                    request.done.set()
                return
            for request, probability in zip(batch, results, strict=True):
                request.result = probability
                request.done.set()
        finally:
            self._running.pop(token, None)
            self.limiter.release_on_behalf_of(token)
            _refuse(batch)  # only if cancelled: the service is closing

    def _note_time(self, window_s: float) -> None:
        old = self._window_s
        self._window_s = window_s if old is None else old + _SMOOTHING * (window_s - old)

    def _start_workers(self) -> list[threading.Thread]:
        token = trio.lowlevel.current_trio_token()
        workers = [
            threading.Thread(
                target=_work,
                args=(self._jobs, token, self.nice),
                name=f"turn-scoring-{k}",
                daemon=True,
            )
            for k in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        return workers

    def _close(self, workers: list[threading.Thread]) -> None:
        """Stop the workers (each finishes its batch in flight, if any) and refuse every request
        still waiting, so that no caller waits for a service that is gone."""
        for _ in workers:
            self._jobs.put(None)
        _refuse(self._queue)
        self._queue.clear()


def _refuse(requests: Iterable[_Request]) -> None:
    """Answer the requests not answered yet with :class:`ServiceSaturated` (service closed)."""
    for request in requests:
        if not request.done.is_set():
            request.error = ServiceSaturated("the scoring service has closed")
            request.done.set()


@asynccontextmanager
async def open_scoring_service(
    model: ScoringModel,
    *,
    threads: int = 1,
    max_batch: int = 1,
    newest_first: bool = False,
    max_wait_s: float | None = None,
    window_s: float | None = None,
    nice: int = 10,
) -> AsyncIterator[ScoringService]:
    """Run a :class:`ScoringService` for the duration of the ``async with`` block."""
    service = ScoringService(
        model,
        threads=threads,
        max_batch=max_batch,
        newest_first=newest_first,
        max_wait_s=max_wait_s,
        window_s=window_s,
        nice=nice,
    )
    workers = service._start_workers()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service._dispatch, nursery)
            try:
                yield service
            finally:
                nursery.cancel_scope.cancel()
    finally:
        service._close(workers)
