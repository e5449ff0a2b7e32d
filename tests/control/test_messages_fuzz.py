"""Property-based fuzzing of engine.control.messages.e164: any text in, a normalized E.164
number or :class:`~engine.errors.InvalidInput` out."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.control.messages import e164
from engine.errors import InvalidInput

pytestmark = pytest.mark.fuzz

NUMBERS = st.one_of(
    st.text(max_size=40),
    st.text("+0123456789 ()-.x#*", max_size=25),
    st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
    st.builds(
        lambda region, digits: f"+{phonenumbers.country_code_for_region(region)}{digits}",
        st.sampled_from(["US", "GB", "DE", "ES", "IN", "BR", "JP", "FR", "AU", "NG"]),
        st.text("0123456789", min_size=4, max_size=12),
    ),
    st.sampled_from(["+14155552671", "+442071838750", "+14155552671 ", "＋14155552671"]),
)


@given(NUMBERS)
def test_e164_normalizes_or_refuses(text: str) -> None:
    try:
        number = e164(text, "To")
    except InvalidInput as exc:
        assert exc.field == "To"
        return
    assert number == text.strip()
    parsed = phonenumbers.parse(number, None)
    assert phonenumbers.is_valid_number(parsed)
    assert number == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    assert number[0] == "+" and number[1:].isascii() and number[1:].isdigit()
