"""Property-based fuzzing of engine.control.calls.CallStatusBoard.post: the sans-IO reader of
``POST /twilio/status`` form fields. Any fields give an update or ``None``, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.control.calls import CallStatusBoard

pytestmark = pytest.mark.fuzz

TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
ODD_NUMBERS = st.sampled_from(
    ["", "0", "7", "-1", " 7", "+7", "7.5", "1_0", "²", "١٢", "１", "9" * 19, "9" * 5000]
)
FIELDS = st.lists(
    st.dictionaries(
        st.sampled_from(["CallSid", "CallStatus", "SequenceNumber", "CallDuration", "Direction"])
        | TEXT,
        TEXT | ODD_NUMBERS | st.sampled_from(["CA1", "CA2", "ringing", "completed", "busy"]),
        max_size=6,
    ),
    min_size=1,
    max_size=6,
)


@given(FIELDS)
@example([{"CallSid": "CA1", "CallStatus": "completed", "CallDuration": "²"}]).via(
    "fuzzing: ValueError from int('²') answered the status callback with HTTP 500"
)
@example([{"CallSid": "CA1", "CallStatus": "completed", "CallDuration": "9" * 5000}]).via(
    "fuzzing: int() refuses more than 4300 digits"
)
def test_status_board_takes_any_fields(callbacks: list[dict[str, str]]) -> None:
    board = CallStatusBoard(capacity=3)
    for fields in callbacks:
        previous = board.latest(fields.get("CallSid", ""))
        update = board.post(fields)
        if update is None:
            assert board.latest(fields.get("CallSid", "")) == previous
            continue
        assert update.call_sid == fields["CallSid"] and update.status == fields["CallStatus"]
        assert board.latest(update.call_sid) == update
        duration = fields.get("CallDuration")
        if update.duration is not None:
            assert duration is not None and int(duration) == update.duration
            assert duration.isascii() and duration.isdigit()
        if previous is not None:
            assert update.sequence > previous.sequence
