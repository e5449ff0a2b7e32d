"""Recognition in worker processes: same results as in-process, really elsewhere, and what happens
when a worker dies."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from conftest import spoken
from engine.errors import ConfigError
from engine.media.codec import ulaw_decode
from engine.media.frames import PCM
from pipelines.recognition import (
    PROCESSES_ENV,
    RecognizerPool,
    RemoteRecognizer,
    configured_processes,
    make_recognizer,
)
from pipelines.stt import Recognizer, RecognizerError, SpeechRecognizer

SENTENCE = "I would like to book a table for two people tomorrow evening, please."


@pytest.fixture(scope="module")
def pool() -> Iterator[RecognizerPool]:
    with RecognizerPool(1) as pool:
        pool.wait_ready()
        yield pool


def speech(text: str = SENTENCE) -> PCM:
    return ulaw_decode(spoken(text))


def recognize(recognizer: SpeechRecognizer, pcm: PCM, step: int = 1600) -> tuple[list[str], str]:
    """Feed ``pcm`` in ``step``-sample batches; return the partials and the final transcript."""
    recognizer.begin()
    partials: list[str] = []
    for i in range(0, len(pcm), step):
        partial = recognizer.feed(pcm[i : i + step])
        if partial is not None:
            partials.append(partial)
    return partials, recognizer.finish()


def alive(pid: int) -> bool:
    """Whether ``pid`` exists (a zombie counts: it was not reaped)."""
    return os.path.exists(f"/proc/{pid}")


def test_a_remote_recognizer_hears_exactly_what_an_in_process_one_hears(
    pool: RecognizerPool,
) -> None:
    pcm = speech()
    with Recognizer(seed=7) as local:
        expected = recognize(local, pcm)
        again = recognize(local, pcm)  # a second turn, with the cepstral mean adapted
    with RemoteRecognizer(pool, seed=7) as remote:
        heard = recognize(remote, pcm)
        heard_again = recognize(remote, pcm)
    # Decoders are pooled and keep their cepstral-mean estimate from earlier calls, so an
    # in-process decoder that served other tests may differ in a word or a partial from the
    # worker's fresh one: the same recognizer, not the same history.
    for (partials, final), (want_partials, want) in ((heard, expected), (heard_again, again)):
        assert len(partials) >= len(want_partials) // 2 > 0
        words, want_words = final.split(), want.split()
        shared = sum(min(words.count(w), want_words.count(w)) for w in set(want_words))
        assert shared >= 0.8 * len(want_words), (final, want)
    assert "people" in heard[1].split(), heard


def test_partials_flow_while_the_caller_speaks(pool: RecognizerPool) -> None:
    with RemoteRecognizer(pool) as remote:
        remote.begin()
        pcm = speech()
        partials = []
        for i in range(0, len(pcm), 1280):
            partial = remote.feed(pcm[i : i + 1280])
            if partial is not None:
                partials.append(partial)
                assert remote.partial == partial
        assert len(partials) >= 3, partials
        assert len(partials[-1].split()) > len(partials[0].split())
        assert remote.finish()
        assert remote.partial == ""


def test_decoding_happens_in_a_worker_process(pool: RecognizerPool) -> None:
    with RemoteRecognizer(pool) as remote:
        assert remote.pid in pool.pids
        assert remote.pid != os.getpid()
        assert remote.feed(speech("Thank you very much.")) is not None


def test_a_closed_remote_recognizer_refuses_work(pool: RecognizerPool) -> None:
    remote = RemoteRecognizer(pool)
    remote.close()
    remote.close()
    with pytest.raises(RecognizerError, match="closed"):
        remote.begin()


def test_a_full_pool_refuses_new_sessions() -> None:
    with RecognizerPool(1, max_sessions=1) as pool:
        first = RemoteRecognizer(pool)
        with pytest.raises(RecognizerError, match="full"):
            RemoteRecognizer(pool)
        first.close()
        RemoteRecognizer(pool).close()  # the session's place is free again


def test_a_dead_worker_fails_its_sessions_and_is_replaced() -> None:
    pcm = np.tile(speech(), 4)  # long enough that the kill lands while it is decoded
    with RecognizerPool(1) as pool:
        pool.wait_ready()
        remote = RemoteRecognizer(pool)
        other = RemoteRecognizer(pool)  # an idle session on the same worker
        victim = remote.pid
        remote.begin()
        outcome: list[BaseException | str | None] = []

        def feed() -> None:
            try:
                outcome.append(remote.feed(pcm))
            except RecognizerError as exc:
                outcome.append(exc)

        feeder = threading.Thread(target=feed)
        feeder.start()
        os.kill(victim, signal.SIGKILL)
        feeder.join(30)
        assert not feeder.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], RecognizerError), outcome
        with pytest.raises(RecognizerError, match=f"{victim}"):
            remote.finish()
        with pytest.raises(RecognizerError):
            other.feed(pcm[:1600])
        remote.close()  # closing a session of a dead worker does not raise
        other.close()
        fresh = RemoteRecognizer(pool)
        with fresh:
            assert fresh.pid != victim
            _, text = recognize(fresh, speech())
            assert "people" in text.split(), text
        assert not alive(victim)


def test_closing_the_pool_leaves_no_process_behind() -> None:
    pool = RecognizerPool(2)
    pids = pool.pids
    with RemoteRecognizer(pool) as remote:
        remote.feed(speech("Thank you very much."))
        assert remote.pid in pids
    pool.close()
    pool.close()
    assert not any(alive(pid) for pid in pids)
    assert not [p for p in multiprocessing.active_children() if p.pid in pids]
    with pytest.raises(RecognizerError, match="closed"):
        RemoteRecognizer(pool)


def test_the_number_of_processes_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    assert 1 <= configured_processes() < max(2, os.cpu_count() or 1)
    monkeypatch.setenv(PROCESSES_ENV, "3")
    assert configured_processes() == 3
    monkeypatch.setenv(PROCESSES_ENV, "-1")
    with pytest.raises(ConfigError):
        configured_processes()
    monkeypatch.setenv(PROCESSES_ENV, "0")  # in-process, for debugging
    recognizer = make_recognizer()
    try:
        assert isinstance(recognizer, Recognizer)
    finally:
        recognizer.close()
