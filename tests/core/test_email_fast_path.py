"""The email fast path accepts only what email-validator accepts, and declines the rest.

`email_problem` skips email-validator for plain ASCII addresses: were the fast path to let
through one address email-validator refuses, orgsync would invite an address the rest of
the pipeline (and the vendor) may reject. Each generated address is put to both.
"""

from __future__ import annotations

import re

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from orgsync.core import model
from orgsync.core.model import email_problem, plainly_valid


def slow_problem(address: str) -> str | None:
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        return str(error)
    return None


# 150 examples: drawing from the regular expression is nearly all of this test's time
# (about 0.1 s an example; 400 took 44 s), and random drawing seldom reaches the limits
# where the two could disagree, which the parametrized cases below put to both instead.
@settings(max_examples=150, deadline=None)
@given(st.from_regex(model._PLAIN, fullmatch=True))
def test_what_the_fast_path_accepts_email_validator_accepts(address: str) -> None:
    if plainly_valid(address):
        assert slow_problem(address) is None, address


_LABEL = "b" * 63


@pytest.mark.parametrize(
    "address",
    [
        f"{'a' * 64}@example.com",  # the longest local part
        f"a@{_LABEL}.example.com",  # the longest label
        f"a@{_LABEL}.{_LABEL}.{_LABEL}.{'c' * 57}",  # 251 characters
        f"a@{_LABEL}.{_LABEL}.{_LABEL}.{'c' * 61}",  # 255: one too many
        f"a@example.{'c' * 63}",  # the longest top-level label
        "a@example.co",
        "a@example.c",
        "a@1.example.com",
        "a@ab-cd.example.com",
        "a-@example.com",
        "%@example.com",
        "a+b@example.com",
        "a@b.test",
        "a@example.com.",
        "a.b.c@x.y.example.com",
    ],
)
def test_addresses_at_the_limits_get_the_same_verdict_either_way(address: str) -> None:
    if plainly_valid(address):
        assert slow_problem(address) is None, address
    assert (email_problem(address) is None) == (slow_problem(address) is None)


@settings(max_examples=300, deadline=None)
@given(st.emails() | st.text(max_size=40).map(lambda t: f"{t}@example.com"))
def test_any_address_gets_the_same_verdict_either_way(address: str) -> None:
    if plainly_valid(address):
        assert slow_problem(address) is None, address
    assert (email_problem(address) is None) == (slow_problem(address.strip()) is None)


@pytest.mark.parametrize(
    "address",
    [
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a@b.local",
        "a@host.localhost",
        "a@x.onion",
        "a@in-addr.arpa",
        "a@nothing.invalid",
        "a@ab--cd.example.com",
        "a@xn--bcher-kva.example",
        "a@-lead.example.com",
        "a@trail-.example.com",
        "a@example.123",
        "a@example",
        f"{'a' * 65}@example.com",
        f"a@{'b' * 64}.example.com",
        f"a@{'b.' * 126}com",
        "ünïcode@example.com",
        '"quoted"@example.com',
        "a b@example.com",
    ],
)
def test_tricky_addresses_are_left_to_email_validator(address: str) -> None:
    assert not plainly_valid(address)
    assert (email_problem(address) is None) == (slow_problem(address) is None)


def test_common_addresses_take_the_fast_path() -> None:
    for address in ("ada@example.com", "A.Lovelace+ml@Sub.Example.ORG", "p_1%x@a-b.co.uk"):
        assert plainly_valid(address), address
        assert slow_problem(address) is None
    assert re.fullmatch(model._PLAIN, "a@b.test") and plainly_valid("a@b.test")


def test_the_special_use_domains_are_email_validators() -> None:
    # The fast path keeps its own copy (importing email-validator costs start-up time): an
    # upgrade that adds a special-use domain must not let its addresses through unchecked.
    import email_validator

    assert set(model._SPECIAL_USE) == set(email_validator.SPECIAL_USE_DOMAIN_NAMES) - {"test"}
