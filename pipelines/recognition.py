"""Speech recognition for the agents' calls: in worker processes, behind the same streaming
interface.

PocketSphinx holds the GIL while it decodes, so a :class:`~pipelines.stt.Recognizer` in a worker
thread still stalls the server's event loop — and with it every call's audio, playout pacing and
barge-in — for tens of milliseconds at a time (up to ~150 ms while one caller speaks). So the
agents decode in a small pool of worker processes instead (:class:`RecognizerPool`, in
:mod:`pipelines.recognizer_pool`: the processes, their pipes, and what happens when one dies).
This module is what the agents use of it:

- :class:`RemoteRecognizer` is one call's session in the pool. It offers the synchronous
  :class:`~pipelines.stt.SpeechRecognizer` methods of a :class:`~pipelines.stt.Recognizer`, so
  agents call it from ``trio.to_thread.run_sync`` under their capacity limiter exactly as
  before; the thread waits for the worker with the GIL released, so the event loop runs on.
  A session has at most one request in flight. If its worker dies, every request fails with
  :class:`~pipelines.stt.RecognizerError` — the call apologizes and hangs up — and the pool
  starts a replacement for new sessions.
- :func:`make_recognizer` is the agents' default recognizer factory: remote in the process-wide
  :func:`default_pool` (:func:`configured_processes` workers), or in-process when
  :data:`PROCESSES_ENV` is ``0`` (for debugging). :func:`preload` starts the pool ahead of the
  first call; :func:`shutdown` stops it, as happens at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.media.frames import PCM
from pipelines.recognizer_pool import RecognizerPool
from pipelines.stt import ClosesOnExit, Recognizer, RecognizerError, SpeechRecognizer
from pipelines.stt import preload as preload_decoders

__all__ = [
    "PROCESSES_ENV",
    "RecognizerPool",
    "RemoteRecognizer",
    "configured_processes",
    "default_pool",
    "make_recognizer",
    "preload",
    "shutdown",
]

log = logging.getLogger(__name__)

PROCESSES_ENV = "VOICE_ENGINE_STT_PROCESSES"
"""Number of recognizer worker processes; ``0`` decodes in worker threads of the server process."""
MAX_PROCESSES = 8
"""The most worker processes :func:`configured_processes` chooses unless told."""


def configured_processes() -> int:
    """How many recognizer worker processes to run: :data:`PROCESSES_ENV`, or a default.

    The default is one per CPU this process may use, minus one (at least 1, at most
    :data:`MAX_PROCESSES`): the server process itself — event loop, media, speech synthesis in
    threads — needs a core, and a worker is single-threaded (it decodes its sessions' requests
    one after another, ~0.2 s of CPU per second of speech, i.e. ~4 callers speaking at once per
    worker). On 1–2 CPUs that is one worker, which still takes decoding (and its GIL) off the
    event loop; the OS shares the cores. With ``serve --workers N`` every server process has its
    own pool, so set the variable to divide the cores among them.
    """
    value = os.environ.get(PROCESSES_ENV, "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            count = -1
        if count < 0:
            raise ConfigError(f"{PROCESSES_ENV} must be a whole number ≥ 0, not {value!r}")
        return count
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, MAX_PROCESSES))


class RemoteRecognizer(ClosesOnExit):
    """A :class:`~pipelines.stt.SpeechRecognizer` whose decoder lives in a worker process of
    ``pool`` (default: :func:`default_pool`); same methods and semantics as
    :class:`~pipelines.stt.Recognizer`, errors as :class:`~pipelines.stt.RecognizerError`.

    Not thread-safe: one thread at a time. All methods block; never call them on the event loop.
    """

    def __init__(self, pool: RecognizerPool | None = None, *, seed: int = 0) -> None:
        """Open a session (blocks until the worker has set up a decoder for it)."""
        self._pool = pool if pool is not None else default_pool()
        self._worker, self._session = self._pool.open(seed)
        self._closed = False

    @property
    def pid(self) -> int:
        """The process id of the worker that decodes for this recognizer."""
        return self._worker.pid

    def begin(self) -> None:
        """Start a turn (discarding one still open)."""
        self._request("begin")

    def feed(self, pcm: PCM) -> str | None:
        """Decode the next 8 kHz int16 samples; return the partial hypothesis if it changed."""
        result: str | None = self._request("feed", np.asarray(pcm, dtype=np.int16).tobytes())
        return result

    def finish(self) -> str:
        """End the turn and return its final transcript (lower case, may be empty)."""
        result: str = self._request("finish")
        return result

    @property
    def partial(self) -> str:
        """The latest partial hypothesis of the open turn ("" if none)."""
        result: str = self._request("partial")
        return result

    def close(self) -> None:
        """Close the session in the worker (idempotent; never raises for a dead worker)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._worker.request(self._session, "close")
        except RecognizerError:
            pass
        finally:
            self._pool.release(self._worker)

    def _request(self, op: str, payload: Any = None) -> Any:
        if self._closed:
            raise RecognizerError("the recognizer is closed")
        return self._worker.request(self._session, op, payload)


# -- the process-wide pool ------------------------------------------------------------------------

_DEFAULT: RecognizerPool | None = None
_DEFAULT_LOCK = threading.Lock()
_DEFAULT_DECODERS = 1
_registered = False


def default_pool() -> RecognizerPool:
    """The process-wide pool (:func:`configured_processes` workers), started on first use.

    Raises :class:`~pipelines.stt.RecognizerError` if recognition is configured in-process.
    """
    global _DEFAULT, _registered
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            processes = configured_processes()
            if processes == 0:
                raise RecognizerError(f"{PROCESSES_ENV}=0: recognition runs in-process")
            _DEFAULT = RecognizerPool(processes, decoders=_DEFAULT_DECODERS)
            if not _registered:
                _registered = True
                atexit.register(shutdown)
            log.info("speech recognition: %d worker processes %s", processes, _DEFAULT.pids)
        return _DEFAULT


def make_recognizer() -> SpeechRecognizer:
    """A recognizer for one call: in a worker process of the :func:`default_pool`, or in this
    process if :data:`PROCESSES_ENV` is ``0``. Blocks: call it from a worker thread."""
    if configured_processes() == 0:
        return Recognizer()
    return RemoteRecognizer(default_pool())


def preload(decoders: int = 1, *, wait: bool = True) -> float:
    """Get recognition ready for the first calls; return the seconds it took.

    Starts the :func:`default_pool`, each worker loading ``decoders`` decoders, and with ``wait``
    blocks until they are loaded (call it at start-up, off the event loop). Without ``wait`` it
    only starts the processes (a few milliseconds), so it may run on the event loop. In-process
    (:data:`PROCESSES_ENV` = ``0``) it builds the decoders here, and only with ``wait``.
    """
    global _DEFAULT_DECODERS
    started = time.perf_counter()
    if configured_processes() == 0:
        return preload_decoders(decoders) if wait else 0.0
    with _DEFAULT_LOCK:
        _DEFAULT_DECODERS = max(_DEFAULT_DECODERS, decoders)
    pool = default_pool()
    if wait:
        pool.wait_ready()
    return time.perf_counter() - started


def shutdown() -> None:
    """Stop the process-wide pool, if it was started (at interpreter exit, or in tests); the
    next use starts a new one."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        pool, _DEFAULT = _DEFAULT, None
    if pool is not None:
        pool.close()
