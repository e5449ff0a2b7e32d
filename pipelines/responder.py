"""What the voice agent says back: the :class:`Responder` interface and a rule-based one.

A responder turns the caller's transcript (and the conversation so far) into reply text, streamed
as pieces — whole sentences or clauses, each of which is synthesized and played as soon as it
arrives, so the caller hears the start of a reply before the end of it exists.

The interface is synchronous on purpose: :class:`~pipelines.local.LocalAgent` calls
:meth:`Responder.respond` and advances the iterator it returns in a worker thread, so a responder
may block (a local model, a blocking HTTP client) without holding up the call's event loop, and
a plain generator is all it takes to write one. When the caller barges in the agent stops
iterating and closes the iterator (``GeneratorExit`` at the current ``yield``).

:class:`RuleResponder` is the offline default: a handful of keyword rules, deterministic, with an
injectable clock for the time and date.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

__all__ = ["REPEAT", "Responder", "RuleResponder", "key_words"]

REPEAT = "Sorry, I didn't catch that. Could you say it again?"
"""The reply when nothing in the transcript was understood."""


class Responder(Protocol):
    """Makes the agent's replies."""

    def respond(self, text: str, history: Sequence[tuple[str, str]]) -> Iterator[str]:
        """Yield the reply to ``text`` piece by piece (sentences or clauses).

        ``history`` holds the earlier turns of the call as ``(heard, said)`` pairs, oldest
        first. Called, and iterated, in a worker thread; may block.
        """
        ...


_GREETINGS = frozenset({"hello", "hi", "hey", "hiya", "howdy", "greetings"})
_DAYPARTS = frozenset({"morning", "afternoon", "evening"})
_GOODBYES = frozenset({"bye", "goodbye", "farewell"})
_THANKS = frozenset({"thanks", "thank", "cheers"})
_BOOKING = frozenset(
    {
        "book",
        "booking",
        "reservation",
        "reserve",
        "reserved",
        "table",
        "room",
        "rooms",
        "appointment",
    }
)
_BOOKABLE = ("table", "room", "appointment", "ticket", "flight", "seat")
_WEATHER = frozenset(
    {"weather", "forecast", "rain", "raining", "sunny", "snow", "snowing", "temperature"}
)
_QUESTION_STARTS = frozenset(
    {
        "what",
        "when",
        "where",
        "who",
        "whom",
        "whose",
        "why",
        "which",
        "how",
        "can",
        "could",
        "would",
        "will",
        "shall",
        "should",
        "is",
        "are",
        "was",
        "were",
        "do",
        "does",
        "did",
        "have",
        "has",
        "may",
        "might",
    }
)
_NUMBERS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
_SPOKEN = {number: word for word, number in _NUMBERS.items()}
_STOP_TEXT = """
    a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't
    doing don't down during each few for from further get got had hadn't has hasn't have haven't
    having he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll
    i'm i've if in into is isn't it it's its itself just know let let's like me might more most
    much must mustn't my myself need no nor not now of off oh okay ok on once only or other ought
    our ours ourselves out over own please really right same say said shall shan't she she'd
    she'll she's should shouldn't so some such tell than that that's the their theirs them
    themselves then there there's these they they'd they'll they're they've this those through
    to too under until up us very want was wasn't we we'd we'll we're we've well were weren't
    what what's when when's where where's which while who who's whom why why's will with won't
    would wouldn't yeah yes you you'd you'll you're you've your yours yourself yourselves uh um
    hmm one two three four five six seven eight nine ten
"""
_STOP_WORDS = frozenset(_STOP_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def key_words(text: str, limit: int = 3) -> list[str]:
    """The first ``limit`` distinct content words of ``text`` (stop words left out)."""
    found: list[str] = []
    for word in _words(text):
        if word not in _STOP_WORDS and len(word) > 2 and word not in found:
            found.append(word)
            if len(found) == limit:
                break
    return found


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _party_size(words: Sequence[str]) -> int | None:
    for before, word in itertools.pairwise(words):
        if before == "for" and word in _NUMBERS:
            return _NUMBERS[word]
        if before == "for" and word.isdigit() and int(word) in _SPOKEN:
            return int(word)
    return None


class RuleResponder:
    """A small deterministic responder: greetings, bookings, time and date, weather, thanks and
    goodbye, questions (acknowledged by their key words); anything else it asks to repeat.

    ``clock`` gives the current local time (for "what time is it"); tests pass a fixed one.
    """

    def __init__(self, clock: Callable[[], datetime] = datetime.now) -> None:
        """Make a responder that reads the time from ``clock``."""
        self.clock = clock

    def respond(self, text: str, history: Sequence[tuple[str, str]]) -> Iterator[str]:
        """Yield the reply to ``text`` a sentence at a time."""
        yield from self.reply(text, history)

    def reply(self, text: str, history: Sequence[tuple[str, str]] = ()) -> list[str]:
        """The reply to ``text`` as a list of sentences (what :meth:`respond` yields)."""
        words = _words(text)
        present = set(words)
        if not words:
            return [REPEAT]
        if present & _GOODBYES:
            return ["Goodbye, and thank you for calling."]
        greeting = bool(present & _GREETINGS) or (
            bool(present & _DAYPARTS) and words[0] in _DAYPARTS | {"good"}
        )
        topic = self._topic(words, present)
        if present & _THANKS and topic is None:
            return ["You're welcome.", "Goodbye, and thank you for calling."]
        pieces: list[str] = []
        if greeting:
            pieces.append("Hello!" if history else "Hello, thanks for calling.")
        if topic is not None:
            pieces.extend(topic)
        elif greeting:
            pieces.append("How can I help you today?")
        else:
            topic_words = key_words(text)
            if not topic_words:
                return [REPEAT]
            if words[0] in _QUESTION_STARTS:
                pieces.append(f"Good question about {_join(topic_words)}.")
                pieces.append("Let me find that out for you.")
            else:
                pieces.append(f"I heard {_join(topic_words)}.")
                pieces.append("Could you tell me a little more?")
        return pieces

    def _topic(self, words: Sequence[str], present: set[str]) -> list[str] | None:
        if present & _BOOKING:
            thing = next((t for t in _BOOKABLE if t in present or t + "s" in present), None)
            if thing == "appointment":
                return ["I can book an appointment for you.", "What day and time would suit you?"]
            size = _party_size(words)
            what = f"a {thing}" if thing is not None else "that"
            if size is None:
                return [
                    f"I can book {what} for you.",
                    "For how many people, and what day and time?",
                ]
            people = "person" if size == 1 else "people"
            return [
                f"I can book {what} for {_SPOKEN[size]} {people}.",
                "What day and time would you like?",
            ]
        if present & _WEATHER:
            return [
                "I can't look up the weather forecast from here.",
                "I hope it's a nice day where you are.",
            ]
        asks_date = "date" in present or ("day" in present and bool(present & {"what", "which"}))
        asks_time = "clock" in present or (
            "time" in present and (bool(present & {"it", "now"}) or words[-1] == "time")
        )
        if asks_date or asks_time:
            now = self.clock()
            hour = now.hour % 12 or 12
            period = "in the morning" if now.hour < 12 else "in the afternoon"
            if now.hour >= 18:
                period = "in the evening"
            clock = f"{hour} o'clock" if now.minute == 0 else f"{hour}:{now.minute:02d}"
            pieces = [f"Today is {now:%A}, {now:%B} {now.day}."] if asks_date else []
            return [*pieces, f"It's {clock} {period}."]
        return None
