"""Property-based fuzzing of engine.control.token: stream tokens.

Whatever ``start.customParameters`` and call SID arrive, :meth:`StreamTokens.verify` raises
nothing but :class:`~engine.errors.TokenError`; a token issued for any call SID and parameters
verifies, and any change to it, the call, the parameters or the clock past expiry is refused.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.control.token import TOKEN_PARAMETER, StreamTokens
from engine.errors import TokenError

pytestmark = pytest.mark.fuzz

SECRET = "auth-token-0123456789abcdef"
NOW = 1_700_000_000.0
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)
"""Any ``str``, lone surrogates included (JSON's ``\\ud800`` escapes decode to those)."""
PARAMETERS = st.dictionaries(ANY_TEXT.filter(lambda k: k != TOKEN_PARAMETER), ANY_TEXT, max_size=4)
TOKEN_CHARS = string.ascii_letters + string.digits + "-_."


def tokens(clock: float = NOW) -> StreamTokens:
    return StreamTokens(SECRET, ttl=120, clock=lambda: clock)


_REAL = tokens().issue("CA" + "1" * 32, {"pipeline": "echo"})


def _spliced(token: str) -> st.SearchStrategy[str]:
    """``token`` with one edit: a character replaced, inserted or removed, or a part swapped."""
    return st.one_of(
        st.builds(
            lambda i, c: token[:i] + c + token[i + 1 :],
            st.integers(0, len(token) - 1),
            st.sampled_from(TOKEN_CHARS) | st.characters(),
        ),
        st.builds(
            lambda i, c: token[:i] + c + token[i:],
            st.integers(0, len(token)),
            st.sampled_from(TOKEN_CHARS) | st.characters(),
        ),
        st.integers(0, len(token) - 1).map(lambda i: token[:i] + token[i + 1 :]),
        st.builds(
            lambda i, part: ".".join(part if n == i else p for n, p in enumerate(token.split("."))),
            st.integers(0, 3),
            ANY_TEXT | st.text(TOKEN_CHARS, max_size=50),
        ),
    )


GARBAGE_TOKENS = st.one_of(
    ANY_TEXT,
    st.text(TOKEN_CHARS, max_size=80),
    st.builds(
        lambda v, e, t, m: f"{v}.{e}.{t}.{m}",
        st.sampled_from(["v1", "v2", "v", "V1", "v1 "]) | ANY_TEXT,
        st.integers(-5, 10**13).map(str) | ANY_TEXT,
        st.text(TOKEN_CHARS, min_size=7, max_size=9),
        st.text(TOKEN_CHARS, min_size=42, max_size=44),
    ),
    _spliced(_REAL),
)


@given(
    parameters=PARAMETERS,
    token=st.none() | GARBAGE_TOKENS,
    call_sid=ANY_TEXT | st.just("CA" + "1" * 32),
    now=st.floats(allow_nan=True, allow_infinity=True) | st.just(NOW),
)
def test_verify_raises_only_token_error(
    parameters: dict[str, str], token: str | None, call_sid: str, now: float
) -> None:
    custom = {**parameters, TOKEN_PARAMETER: token} if token is not None else parameters
    with pytest.raises(TokenError):
        tokens(now).verify(custom, call_sid)


@given(call_sid=ANY_TEXT.filter(bool), parameters=PARAMETERS, age=st.floats(0, 119.9))
def test_tokens_for_any_call_verify(call_sid: str, parameters: dict[str, str], age: float) -> None:
    custom = tokens().parameters_with_token(call_sid, parameters)
    assert tokens(NOW + age).verify(custom, call_sid) == parameters


@given(
    call_sid=ANY_TEXT.filter(bool),
    parameters=PARAMETERS,
    data=st.data(),
)
def test_any_change_to_a_token_is_refused(
    call_sid: str, parameters: dict[str, str], data: st.DataObject
) -> None:
    custom = tokens().parameters_with_token(call_sid, parameters)
    token = custom[TOKEN_PARAMETER]
    change = data.draw(st.sampled_from(["token", "call", "add", "alter", "drop", "expired"]))
    checked_call, clock = call_sid, NOW
    if change == "token":
        custom[TOKEN_PARAMETER] = data.draw(_spliced(token).filter(lambda t: t != token))
    elif change == "call":
        checked_call = data.draw(ANY_TEXT.filter(lambda c: c != call_sid))
    elif change == "add":
        custom[data.draw(ANY_TEXT.filter(lambda k: k not in custom))] = data.draw(ANY_TEXT)
    elif change in ("alter", "drop"):
        names = sorted(parameters)
        if not names:
            return
        name = data.draw(st.sampled_from(names))
        if change == "drop":
            del custom[name]
        else:
            custom[name] = data.draw(ANY_TEXT.filter(lambda v: v != parameters[name]))
    else:
        clock = NOW + data.draw(st.floats(121, 1e12))
    with pytest.raises(TokenError):
        tokens(clock).verify(custom, checked_call)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda e: "0" + e, id="leading-zero"),  # found by fuzzing: it verified
        pytest.param(lambda e: "00" + e, id="two-leading-zeros"),
        pytest.param(lambda e: e + "0", id="trailing-zero"),
        pytest.param(lambda e: "0", id="zero"),
    ],
)
def test_another_spelling_of_the_expiry_is_refused(edit: Callable[[str], str]) -> None:
    custom = tokens().parameters_with_token("CA1", {"pipeline": "echo"})
    version, expiry, tag, mac = custom[TOKEN_PARAMETER].split(".")
    custom[TOKEN_PARAMETER] = ".".join([version, edit(expiry), tag, mac])
    with pytest.raises(TokenError):
        tokens().verify(custom, "CA1")
