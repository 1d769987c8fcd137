"""Which identities `orgsync.store.identity.twin` takes for one organization under two
names (refused), and which it must not (every OpenAI organization shares one address;
an API that names no organization once cannot be compared): a false twin would stop a
target that is not one."""

from __future__ import annotations

from datetime import UTC, datetime

from orgsync.store.identity import Identity, OrganizationTwice, Recorded, twin

OPENAI = "openai https://api.openai.com/v1"
WHEN = datetime(2026, 11, 1, tzinfo=UTC)


def _recorded(organization: str | None, address: str = OPENAI) -> Recorded:
    return Recorded(Identity(organization, address), recorded_at=WHEN)


def test_the_same_organization_at_the_same_address_is_a_twin() -> None:
    refusal = twin("production", Identity("org-A", OPENAI), {"prod": _recorded("org-A")})
    assert isinstance(refusal, OrganizationTwice)
    message = str(refusal)
    assert "target production: it reaches organization org-A at openai" in message
    assert "remembers as target prod (recorded 2026-11-01 00:00 UTC)" in message
    assert "`orgsync state rename prod production`" in message
    assert "`orgsync state forget prod`" in message


def test_a_scim_tenant_at_the_same_url_is_a_twin() -> None:
    scim = "scim https://idp.example.com/scim/v2"
    assert twin("b", Identity(None, scim), {"a": _recorded(None, scim)}) is not None


def test_what_is_not_surely_one_organization_is_no_twin() -> None:
    seen = Identity("org-A", OPENAI)
    others = {
        "other-org": _recorded("org-B"),  # another OpenAI organization, same address
        "unnamed": _recorded(None),  # its API named no organization then
        "moved": _recorded("org-A", "openai https://eu.api.openai.com/v1"),
    }
    assert twin("production", seen, others) is None
    assert twin("prod", seen, {"prod": _recorded("org-A")}) is None, "its own row"
