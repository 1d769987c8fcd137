"""`orgsync.store.identity.judge`: when a target's memory is about another organization.

Every case an administrator meets: a first run, an upgrade (no row), a rotated key (same
everything), a vendor's domain move, an API that stops or starts naming the
organization, another organization at the same URL (OpenAI), another SCIM base URL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orgsync.store.identity import Identity, OrganizationChanged, Recorded, address, judge

WHEN = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
OPENAI = address("openai", "https://api.openai.com/v1/")
MOVED = address("openai", "https://api.openai.example/v1")


def recorded(organization: str | None, where: str = OPENAI) -> Recorded:
    return Recorded(Identity(organization, where), WHEN)


def test_the_address_drops_credentials_query_and_trailing_slash() -> None:
    assert address("scim", "https://user:pw@Scim.example.com/v2/?token=x") == (
        "scim https://scim.example.com/v2"
    )
    assert OPENAI == "openai https://api.openai.com/v1"


def test_nothing_recorded_adopts_what_is_seen() -> None:
    seen = Identity("org-x", OPENAI)
    assert judge("prod", None, seen) == seen


def test_the_same_organization_changes_nothing() -> None:
    assert judge("prod", recorded("org-x"), Identity("org-x", OPENAI)) is None


def test_the_same_organization_at_a_new_address_is_updated() -> None:
    assert judge("prod", recorded("org-x"), Identity("org-x", MOVED)) == Identity("org-x", MOVED)


def test_another_organization_at_the_same_address_is_refused() -> None:
    with pytest.raises(OrganizationChanged) as refused:
        judge("prod", recorded("org-x"), Identity("org-y", OPENAI))
    message = str(refused.value)
    assert "target prod" in message
    assert "org-x" in message and "org-y" in message
    assert "2026-12-01 09:30 UTC" in message
    assert "orgsync state forget prod" in message
    assert "--identity-only" in message


def test_an_answer_without_the_organization_is_judged_by_address() -> None:
    assert judge("prod", recorded("org-x"), Identity(None, OPENAI)) is None
    with pytest.raises(OrganizationChanged):
        judge("prod", recorded("org-x"), Identity(None, MOVED))


def test_an_organization_named_for_the_first_time_is_added_at_the_same_address() -> None:
    assert judge("prod", recorded(None), Identity("org-x", OPENAI)) == Identity("org-x", OPENAI)
    with pytest.raises(OrganizationChanged):
        judge("prod", recorded(None), Identity("org-x", MOVED))


def test_a_scim_target_is_its_base_url() -> None:
    first = address("scim", "https://scim.example.com/t1/v2")
    other = address("scim", "https://scim.example.com/t2/v2")
    assert judge("scim", recorded(None, first), Identity(None, first)) is None
    with pytest.raises(OrganizationChanged) as refused:
        judge("scim", recorded(None, first), Identity(None, other))
    assert "its API names no organization" in str(refused.value)


def test_another_target_type_at_the_same_url_is_refused() -> None:
    with pytest.raises(OrganizationChanged):
        judge(
            "x",
            recorded(None, address("scim", "https://h/v2")),
            Identity(None, "keycard https://h/v2"),
        )
