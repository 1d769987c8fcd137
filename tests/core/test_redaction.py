"""Scrubbing: a secret leaves no trace in a message, in any form a server quotes it back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orgsync.core.redaction import AUTH_DETAIL_LIMIT, auth_failure_detail, scrub
from tests.leaks import ECHOES, echo, traces

KEY = "sk-admin-Ab+/c=d~EFGH0123456789ijklmnop"

tokens = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=",
    min_size=12,
    max_size=64,
)
prose = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


def test_each_echo_of_the_key_is_scrubbed() -> None:
    for how in ECHOES:
        quoted = echo(KEY, how)
        message = f'{{"error": {{"message": "Incorrect API key provided: {quoted}."}}}}'
        clean = scrub(message, [KEY])
        assert "[redacted]" in clean, how
        assert traces(KEY, clean) == [], (how, clean)
        assert "Incorrect API key provided:" in clean


def test_the_rest_of_the_message_survives() -> None:
    assert scrub("HTTP 401: invalid_api_key", [KEY]) == "HTTP 401: invalid_api_key"
    assert scrub("user ada@example.com not found", [KEY]) == "user ada@example.com not found"


def test_a_short_secret_is_scrubbed_when_exact() -> None:
    assert (
        scrub("bind failed for password hunter", ["hunter"])
        == "bind failed for password [redacted]"
    )


@settings(max_examples=300, deadline=None)
@given(secret=tokens, before=prose, after=prose, how=st.sampled_from(ECHOES))
def test_no_eight_characters_of_a_secret_survive(
    secret: str, before: str, after: str, how: str
) -> None:
    clean = scrub(f"{before} {echo(secret, how)} {after}", [secret])
    assert traces(secret, clean) == []


@settings(max_examples=200, deadline=None)
@given(text=prose)
def test_a_text_without_the_secret_is_unchanged(text: str) -> None:
    assert scrub(text, [KEY]) == text or "sk-admin" in text


def test_auth_failure_detail_is_one_capped_line_keeping_the_code() -> None:
    long = "refused\n" + "x" * 500 + " [invalid_api_key]"
    detail = auth_failure_detail(long)
    assert "\n" not in detail
    assert len(detail) <= AUTH_DETAIL_LIMIT
    assert detail.endswith("… [invalid_api_key]")
    assert auth_failure_detail("short one") == "short one"
