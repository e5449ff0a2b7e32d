"""The STT agents' listener: pre-roll, batching, a work queue that cannot grow with lag, and
recognition in a worker process."""

from __future__ import annotations

import numpy as np
import trio

from conftest import spoken
from engine.media.codec import ulaw_decode
from engine.media.frames import Audio, SpeechStarted
from pipelines.listening import EndOfTurn, Feed, Listener
from pipelines.recognition import RecognizerPool, RemoteRecognizer
from pipelines.stt import Recognizer


def frame(ts: int) -> Audio:
    pcm = np.full(160, ts, dtype=np.int16)
    return Audio(b"\xff" * 160, pcm, ts)


async def test_queued_audio_merges_so_the_queue_stays_a_few_items_per_turn() -> None:
    listener = Listener(Recognizer, batch_ms=40, pre_roll_ms=100)
    for ts in range(0, 400, 20):  # silence before speech: only the pre-roll ring keeps it
        listener.on_audio(frame(ts))
    listener.on_speech_started(SpeechStarted(timestamp=300, detected_at=380))
    for ts in range(400, 2400, 20):  # 2 s of speech while recognition is busy elsewhere
        listener.on_audio(frame(ts))
    listener.on_end_of_turn()
    with trio.fail_after(1):
        items = await listener.next_work()
    assert [type(item) for item in items] == [Feed, EndOfTurn]
    feed = items[0]
    assert isinstance(feed, Feed) and feed.begin
    # The pre-roll from 100 ms before the onset, then every frame of the turn, in order.
    starts = feed.pcm[::160].tolist()
    assert starts == list(range(200, 2400, 20))


async def test_next_work_waits_for_work() -> None:
    listener = Listener(Recognizer, batch_ms=20, pre_roll_ms=0)
    with trio.move_on_after(0.05) as scope:
        await listener.next_work()
    assert scope.cancelled_caught


async def test_queued_work_is_recognized_in_a_worker_process() -> None:
    speech = ulaw_decode(spoken("Let me check my calendar and get back to you."))
    with RecognizerPool(1) as pool:
        listener = Listener(lambda: RemoteRecognizer(pool), batch_ms=160, pre_roll_ms=100)
        listener.on_speech_started(SpeechStarted(timestamp=0, detected_at=40))
        for i in range(0, len(speech) - 159, 160):
            listener.on_audio(Audio(b"", speech[i : i + 160], i // 8))
        listener.on_end_of_turn()
        with trio.fail_after(60):
            items = await listener.next_work()
            ((text, _),) = await trio.to_thread.run_sync(listener.recognize, items)
        assert "calendar" in text.split(), text
        assert isinstance(listener.recognizer, RemoteRecognizer)
        assert listener.recognizer.pid in pool.pids
        await listener.aclose()
        assert listener.recognizer is None
