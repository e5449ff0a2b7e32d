"""The rule-based responder: what it says to what it heard."""

from __future__ import annotations

from datetime import datetime

import pytest

from pipelines.responder import REPEAT, Responder, RuleResponder, key_words

CLOCK = datetime(2024, 6, 4, 15, 5)  # a Tuesday afternoon


def reply(text: str, history: tuple[tuple[str, str], ...] = ()) -> str:
    return " ".join(RuleResponder(lambda: CLOCK).respond(text, history))


@pytest.mark.parametrize(
    ("heard", "expected", "not_expected"),
    [
        # greetings
        ("hello", ["Hello", "help you"], []),
        ("hi there", ["Hello"], []),
        ("good morning", ["Hello", "help you"], []),
        # bookings, with what and for how many when heard
        (
            "hello i would like to book a table for two people",
            ["Hello", "book a table for two people"],
            ["how many"],
        ),
        (
            "hello i would like to book a table or two people",
            ["book a table", "how many people"],
            [],
        ),
        ("i want to make a reservation", ["book", "how many people"], []),
        ("do you have any rooms available for next weekend", ["book a room"], []),
        ("can i make an appointment", ["appointment", "day and time"], ["people"]),
        ("a table for 4 please", ["table for four people"], []),
        # time and date, from the clock
        ("what time is it", ["3:05 in the afternoon"], ["Today"]),
        ("what is the date today", ["Tuesday, June 4", "3:05"], []),
        ("what day is it", ["Tuesday"], []),
        # weather
        ("what's the weather like today", ["weather"], []),
        ("is it going to rain", ["weather"], []),
        # thanks and goodbye
        ("thank you very much that was really helpful", ["welcome", "Goodbye"], []),
        ("okay bye", ["Goodbye"], ["welcome"]),
        # questions: the topic is acknowledged with its key words
        (
            "what time does the pharmacy close on sundays",
            ["pharmacy", "close", "question"],
            ["3:05"],
        ),
        ("can you send the invoice to my email address", ["invoice", "email", "question"], []),
        ("how much is the ticket", ["ticket", "question"], []),
        # statements: acknowledged, with a follow-up
        ("my account number is four five six seven", ["account", "number", "more"], []),
        # nothing understood
        ("", [REPEAT], []),
        ("uh um", [REPEAT], []),
        ("the a of", [REPEAT], []),
    ],
)
def test_rule_responder_replies(heard: str, expected: list[str], not_expected: list[str]) -> None:
    said = reply(heard)
    for words in expected:
        assert words in said, (heard, said)
    for words in not_expected:
        assert words not in said, (heard, said)


def test_replies_stream_as_sentences_and_are_deterministic() -> None:
    responder = RuleResponder(lambda: CLOCK)
    pieces = list(responder.respond("hello i would like to book a table", []))
    assert len(pieces) >= 2
    assert all(piece.rstrip()[-1] in ".?!" for piece in pieces)
    assert pieces == list(responder.respond("hello i would like to book a table", []))


def test_a_returning_greeting_is_shorter() -> None:
    first = reply("hello")
    later = reply("hello", (("hello", first),))
    assert "thanks for calling" in first and "thanks for calling" not in later


@pytest.mark.parametrize(
    ("hour", "minute", "spoken"),
    [
        (0, 0, "12 o'clock in the morning"),
        (9, 30, "9:30 in the morning"),
        (19, 45, "7:45 in the evening"),
    ],
)
def test_the_time_is_said_in_words_a_caller_expects(hour: int, minute: int, spoken: str) -> None:
    responder = RuleResponder(lambda: datetime(2024, 1, 1, hour, minute))
    assert spoken in " ".join(responder.respond("what time is it", []))


def test_key_words_skip_stop_words_and_repeats() -> None:
    assert key_words("what is the price of the price list for tickets") == [
        "price",
        "list",
        "tickets",
    ]
    assert key_words("is it") == []


def test_rule_responder_is_a_responder() -> None:
    responder: Responder = RuleResponder()
    assert list(responder.respond("hello", []))
