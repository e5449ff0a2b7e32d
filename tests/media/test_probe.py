"""The call probe times a reply against the inbound media frame that caused it — never against
a sampled mark or start, whose "reply" is the echo of a later frame."""

from __future__ import annotations

from engine.media.probe import SAMPLE_EVERY, CallProbe
from engine.media.protocol import mark_message, media_message
from engine.metrics import FRAME_ROUND_TRIP

SID = "MZ" + "0" * 32
MEDIA_IN = (
    '{"event":"media","sequenceNumber":"2","streamSid":"' + SID + '","media":{"track":'
    '"inbound","chunk":"1","timestamp":"0","payload":"' + "/" * 216 + '"}}'
)
MARK_IN = mark_message(SID, "m")


class Socket:
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages

    async def receive(self) -> str | bytes:
        return self.messages.pop(0)

    async def send_many(self, messages: list[str]) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def timed_round_trips() -> float:
    (family,) = FRAME_ROUND_TRIP.collect()
    return next(s.value for s in family.samples if s.name.endswith("_count"))


async def test_only_a_sampled_media_frame_is_timed_against_the_reply() -> None:
    inbound = [MEDIA_IN] * (SAMPLE_EVERY - 1) + [MARK_IN] + [MEDIA_IN] * SAMPLE_EVERY
    socket = CallProbe(timed=True, round_trip=True).socket(Socket(inbound))
    reply = [media_message(SID, b"\xff" * 160)]
    before = timed_round_trips()
    for _ in range(SAMPLE_EVERY):  # the sampled message is a mark
        await socket.receive()
    await socket.send_many(reply)
    assert timed_round_trips() == before
    for _ in range(SAMPLE_EVERY):  # the sampled message is a media frame
        await socket.receive()
    await socket.send_many(reply)
    assert timed_round_trips() == before + 1
