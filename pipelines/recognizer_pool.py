"""A pool of speech-recognition worker processes, and the protocol the parent speaks to them.

:class:`RecognizerPool` starts ``processes`` workers (``spawn``: a fresh interpreter, never a
fork of a process running trio). Each loads its decoders once and then hosts many streaming
decoders, one per session (a call); the parent talks to it over one duplex pipe with requests
``(id, session, op, payload)`` — ``open`` / ``begin`` / ``feed`` (8 kHz int16 PCM bytes) /
``partial`` / ``finish`` / ``close`` — answered in order with ``(id, ok, value)``.

In the parent, a reader thread per worker routes each answer to the caller waiting for it (a
table of pending requests under a lock); callers wait on an event, with the GIL released. A
worker that dies (or does not answer within :data:`REQUEST_TIMEOUT`, and is killed) fails every
pending and later request of its sessions with :class:`~pipelines.stt.RecognizerError`, and the
pool starts a replacement for new sessions. Bounded: at most ``max_sessions`` sessions per worker
and, used through :class:`~pipelines.recognition.RemoteRecognizer`, one request in flight per
session, so neither pipe nor pending table can grow without bound.

This module is the processes and their pipes; :mod:`pipelines.recognition` is what the agents use
(a recognizer per call, the process-wide pool).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

import numpy as np

from pipelines.stt import ClosesOnExit, Recognizer, RecognizerError
from pipelines.stt import preload as preload_decoders

__all__ = [
    "MAX_SESSIONS_PER_WORKER",
    "REQUEST_TIMEOUT",
    "START_TIMEOUT",
    "RecognizerPool",
]

log = logging.getLogger(__name__)

MAX_SESSIONS_PER_WORKER = 32
"""Sessions (calls) one worker hosts at most; each holds a decoder (~90 MB) in the worker."""
REQUEST_TIMEOUT = 60.0
"""Seconds a request may take (including the worker's start-up) before its worker counts as hung
and is killed."""
START_TIMEOUT = 60.0

_READY = 0  # the request id of a worker's "ready" message


# -- the worker process ---------------------------------------------------------------------------


def _serve(conn: Connection, decoders: int) -> None:
    """A worker process's main: load decoders, then answer requests until the pipe closes."""
    # Ctrl-C or a SIGTERM to the whole process group (systemd does that) are for the server: it
    # drains its calls, which still need us, and then closes the pipe; if it dies, we read EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    preload_decoders(decoders)
    recognizers: dict[int, Recognizer] = {}
    conn.send((_READY, True, os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe, or died
            break
        if request is None:  # shut down
            break
        request_id, session, op, payload = request
        try:
            reply = (request_id, True, _handle(recognizers, session, op, payload))
        except Exception as exc:
            reply = (request_id, False, f"{op}: {type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:
            break
    for recognizer in recognizers.values():
        recognizer.close()


def _handle(recognizers: dict[int, Recognizer], session: int, op: str, payload: Any) -> Any:
    if op == "open":
        if session in recognizers:
            raise RecognizerError(f"session {session} is already open")
        recognizers[session] = Recognizer(seed=payload)
        return None
    if op == "close":
        recognizer = recognizers.pop(session, None)
        if recognizer is not None:
            recognizer.close()
        return None
    recognizer = recognizers.get(session)
    if recognizer is None:
        raise RecognizerError(f"no open session {session}")
    if op == "begin":
        recognizer.begin()
        return None
    if op == "feed":
        return recognizer.feed(np.frombuffer(payload, dtype=np.int16))
    if op == "partial":
        return recognizer.partial
    if op == "finish":
        return recognizer.finish()
    raise RecognizerError(f"unknown operation {op!r}")


# -- the parent's side ----------------------------------------------------------------------------


class _Pending:
    __slots__ = ("done", "ok", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


class _Worker:
    """One worker process, its pipe, its reader thread and its table of pending requests."""

    def __init__(self, context: BaseContext, decoders: int, pool: RecognizerPool) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(child_end, decoders), name="voice-engine-stt", daemon=True
        )
        started = time.monotonic()
        self.process.start()
        child_end.close()
        self.started = started
        self.pid: int = self.process.pid
        self.sessions = 0
        """Open sessions; guarded by the pool's lock."""
        self.ready = threading.Event()
        self.lost: str | None = None
        """Why the worker can no longer answer (None while it can); guarded by ``_lock``."""
        self._pool = pool
        self._conn = parent_end
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(_READY + 1)
        self._reader = threading.Thread(
            target=self._read, name=f"voice-engine-stt-{self.pid}", daemon=True
        )
        self._reader.start()

    def request(self, session: int, op: str, payload: Any = None) -> Any:
        """Send a request and wait (GIL released) for its answer."""
        pending = _Pending()
        with self._lock:
            if self.lost is not None:
                raise RecognizerError(self.lost)
            request_id = next(self._ids)
            self._pending[request_id] = pending
        try:
            with self._send_lock:
                self._conn.send((request_id, session, op, payload))
        except (OSError, ValueError) as exc:  # the pipe broke (maybe before the reader saw it)
            self._fail(f"recognizer worker process {self.pid} is gone ({exc})")
            raise RecognizerError(self.lost) from exc
        if not pending.done.wait(REQUEST_TIMEOUT):
            with self._lock:
                self._pending.pop(request_id, None)
            log.error("recognizer worker process %d hangs: killing it", self.pid)
            self.process.kill()
            raise RecognizerError(
                f"recognizer worker process {self.pid} did not answer within {REQUEST_TIMEOUT} s"
            )
        if not pending.ok:
            raise RecognizerError(str(pending.value))
        return pending.value

    def stop(self) -> None:
        """Ask the worker to exit (it closes its sessions)."""
        try:
            with self._send_lock:
                self._conn.send(None)
        except (OSError, ValueError):
            pass

    def join(self, timeout: float) -> None:
        """Wait for the process to exit, killing it after ``timeout``; then for the reader."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._reader.join(5)

    def _read(self) -> None:
        while True:
            try:
                request_id, ok, value = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a garbled message: the stream cannot be trusted any more
                log.exception("recognizer worker process %d: bad reply", self.pid)
                self.process.kill()
                break
            if request_id == _READY:
                log.info(
                    "recognizer worker process %d ready (%.2f s)",
                    self.pid,
                    time.monotonic() - self.started,
                )
                self.ready.set()
                continue
            with self._lock:
                pending = self._pending.pop(request_id, None)
            if pending is not None:
                pending.ok, pending.value = ok, value
                pending.done.set()
        self._fail(f"recognizer worker process {self.pid} died")
        with self._send_lock:  # not under a sender's feet: its fd could be reused by a new pipe
            self._conn.close()
        self.process.join(1)
        self._pool._lost(self)

    def _fail(self, reason: str) -> None:
        """The worker cannot answer any more: fail its pending requests and refuse new ones."""
        with self._lock:
            if self.lost is not None:
                return
            self.lost = reason
            pending_requests = list(self._pending.values())
            self._pending.clear()
        for pending in pending_requests:
            pending.ok, pending.value = False, reason
            pending.done.set()


class RecognizerPool(ClosesOnExit):
    """``processes`` recognizer worker processes, each loading ``decoders`` decoders at start-up
    and hosting up to ``max_sessions`` sessions. Thread-safe; :meth:`close` when done."""

    def __init__(
        self,
        processes: int,
        *,
        decoders: int = 1,
        max_sessions: int = MAX_SESSIONS_PER_WORKER,
        start_method: str = "spawn",
    ) -> None:
        """Start the worker processes (without waiting for them: see :meth:`wait_ready`)."""
        if processes < 1:
            raise ValueError("a recognizer pool needs at least one process")
        self._context = multiprocessing.get_context(start_method)
        self._decoders = decoders
        self._max_sessions = max_sessions
        self._lock = threading.Lock()
        self._closed = False
        self._session_ids = itertools.count(1)
        self._workers: list[_Worker] = []
        with self._lock:
            self._workers.extend(self._start() for _ in range(processes))

    @property
    def pids(self) -> list[int]:
        """The process ids of the current workers."""
        with self._lock:
            return [worker.pid for worker in self._workers]

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Block until every worker has loaded its decoders; return the seconds waited.

        Raises :class:`~pipelines.stt.RecognizerError` if one died or took longer than ``timeout``.
        """
        started = time.monotonic()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            remaining = max(0.0, started + timeout - time.monotonic())
            while not worker.ready.wait(min(remaining, 0.05)):
                if worker.lost is not None:
                    raise RecognizerError(worker.lost)
                remaining = started + timeout - time.monotonic()
                if remaining <= 0:
                    raise RecognizerError(f"recognizer worker process {worker.pid} is not ready")
        return time.monotonic() - started

    def open(self, seed: int = 0) -> tuple[_Worker, int]:
        """Open a session on the least busy worker (blocks: decoder set-up, maybe start-up)."""
        with self._lock:
            if self._closed:
                raise RecognizerError("the recognizer pool is closed")
            for i, worker in enumerate(self._workers):
                if worker.lost is not None:  # not replaced yet (it never started, or just died)
                    self._workers[i] = self._start()
            worker = min(self._workers, key=lambda worker: worker.sessions)
            if worker.sessions >= self._max_sessions:
                raise RecognizerError(
                    f"all {len(self._workers)} recognizer workers are full"
                    f" ({self._max_sessions} sessions each)"
                )
            worker.sessions += 1
            session = next(self._session_ids)
        try:
            worker.request(session, "open", seed)
        except BaseException:
            self.release(worker)
            raise
        return worker, session

    def release(self, worker: _Worker) -> None:
        """A session of ``worker`` closed."""
        with self._lock:
            worker.sessions -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker (killing those that take longer than ``timeout``); idempotent."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(timeout)

    def _start(self) -> _Worker:
        return _Worker(self._context, self._decoders, self)

    def _lost(self, worker: _Worker) -> None:
        """``worker`` died (called by its reader thread): start a replacement for new sessions."""
        with self._lock:
            if self._closed or worker not in self._workers:
                return
            code = worker.process.exitcode
            if not worker.ready.is_set():  # it never started: replaced on demand, not in a loop
                log.error("recognizer worker process %d did not start (code %s)", worker.pid, code)
                return
            log.error("recognizer worker process %d died (code %s); replacing it", worker.pid, code)
            self._workers[self._workers.index(worker)] = self._start()
