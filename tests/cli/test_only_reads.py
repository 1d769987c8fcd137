"""Reading only the named people never changes a targeted plan: for each kind of person
(joiner, leaver, role change, renamed email, pending or expired invitation, owner,
unmanaged member), the plan made from `read_people` is the plan made from a full read
of the same organization. Real engine, real state database, the OpenAI emulator over
loopback; the full read is forced by hiding `read_people` from the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import load_config
from orgsync.core.plan import Plan
from orgsync.core.ports import ReadsPeople, Target
from orgsync.engine import Engine
from orgsync.factories import build_target
from orgsync.interrupt import ReadInterrupt
from orgsync.results import RunOptions
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, openai_target

ENV = {KEY_ENV: API_KEY}


class FullReadOnly:
    """The real target with `read_people` hidden: the engine then reads everything."""

    def __init__(self, inner: Target) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "read_people":
            raise AttributeError(name)
        return getattr(self._inner, name)


def full_read_factory(config: Any, environ: Any, *, interrupt: ReadInterrupt) -> Target:
    target = FullReadOnly(build_target(config, environ, interrupt=interrupt))
    assert not isinstance(target, ReadsPeople)
    return target  # type: ignore[return-value]


def person(i: int, email: str | None = None) -> dict[str, Any]:
    return {"id": f"p{i}", "email": email or f"person{i}@example.com", "name": f"P{i}"}


def world(folder: Path, url: str, people: list[dict[str, Any]], owners: list[str]) -> Path:
    users = [p["id"] for p in people if p.get("active", True)]
    document = {
        "people": people,
        "groups": [
            {"id": "g-users", "name": "openai-users", "members": users},
            {"id": "g-owners", "name": "openai-owners", "members": owners},
        ],
    }
    (folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")
    config = folder / "orgsync.toml"
    config.write_text(
        f"""
[source]
type = "file"
path = "{folder / "directory.json"}"
{openai_target("openai-test", url)}
[safety]
max_removals = 100
max_removal_ratio = 1.0
[state]
path = "{folder / "state.db"}"
""",
        encoding="utf-8",
    )
    return config


def plan_of(config: Path, factory: Any, **only: frozenset[str]) -> Plan:
    engine = Engine(
        load_config(config), environ=ENV, **({"target_factory": factory} if factory else {})
    )
    try:
        (result,) = engine.run(RunOptions(dry_run=True, **only))
    finally:
        engine.close()
    assert result.plan is not None, result.error
    return result.plan


@pytest.fixture
def organization(tmp_path: Path, emulator: OpenAIEmulator) -> Path:
    """After a first full sync: p0..p9 members (p0 and p1 owners), everyone linked; then
    the directory changes in every way a targeted run must get right."""
    state = emulator.state
    url = emulator.start()
    people = [person(i) for i in range(10)]
    config = world(tmp_path, url, people, owners=["p0", "p1"])
    for i in range(10):
        state.add_user(f"person{i}@example.com", "owner" if i < 2 else "reader")
    state.add_user("stranger@example.com", "reader")  # not orgsync's
    engine = Engine(load_config(config), environ=ENV)
    try:
        (first,) = engine.run(RunOptions(dry_run=False))
    finally:
        engine.close()
    assert first.exit_code == 0, first.error

    state.add_invite("joiner-wrong-role@example.com", "owner")
    state.add_invite("joiner-expired@example.com", "reader", status="expired")
    state.add_invite("person9@example.com", "reader", status="expired")
    state.add_invite("person5@example.com", "reader")  # a member's leftover invitation
    state.add_invite("person3@example.com", "reader")  # a leaver's leftover invitation
    changed = [
        person(0),  # an owner who stays
        {**person(1), "active": False},  # an owner who leaves
        person(2),  # becomes an owner
        {**person(3), "active": False},  # leaves
        person(4, "person4.renamed@example.com"),  # email changed, same source id
        *(person(i) for i in range(5, 10)),
        person(10, "joiner-wrong-role@example.com"),
        person(11, "joiner-expired@example.com"),
        person(12, "brand-new@example.com"),
    ]
    return world(tmp_path, url, changed, owners=["p0", "p2"])


SUBJECTS = [
    {"only_emails": frozenset({"brand-new@example.com"})},
    {"only_emails": frozenset({"Joiner-Wrong-Role@example.com"})},
    {"only_emails": frozenset({"joiner-expired@example.com"})},
    {"only_emails": frozenset({"person3@example.com"})},
    {"only_source_ids": frozenset({"p3"})},
    {"only_emails": frozenset({"person2@example.com"})},
    {"only_source_ids": frozenset({"p4"})},
    {"only_emails": frozenset({"person4.renamed@example.com"})},
    {"only_emails": frozenset({"person1@example.com"})},  # an owner: the whole org is read
    {"only_emails": frozenset({"stranger@example.com"})},
    {"only_emails": frozenset({"person9@example.com"})},
    {"only_emails": frozenset({"person5@example.com"})},
    {"only_emails": frozenset({"nobody@example.com"}), "only_source_ids": frozenset({"p404"})},
    {
        "only_emails": frozenset({"person3@example.com", "brand-new@example.com"}),
        "only_source_ids": frozenset({"p4", "p11"}),
    },
]


@pytest.mark.parametrize(
    "only",
    SUBJECTS,
    ids=lambda o: ",".join(sorted(o.get("only_emails", set()) | o.get("only_source_ids", set()))),
)
def test_a_targeted_plan_from_the_named_people_is_the_plan_from_everyone(
    organization: Path, only: dict[str, frozenset[str]]
) -> None:
    narrow = plan_of(organization, None, **only)
    full = plan_of(organization, full_read_factory, **only)
    assert narrow.to_json()["operations"] == full.to_json()["operations"]
    assert narrow.checksum == full.checksum
    assert narrow.waiting == full.waiting


def test_a_joiner_s_old_invitation_is_replaced_not_doubled(organization: Path) -> None:
    """The invitations are part of what `read_people` reads: a joiner's pending invitation
    with the wrong role, or an expired one, is replaced, never sent a second time."""
    for email in ("joiner-wrong-role@example.com", "joiner-expired@example.com"):
        narrow = plan_of(organization, None, only_emails=frozenset({email}))
        (invite,) = narrow.operations
        assert invite.op == "invite"
        assert getattr(invite, "replaces_invite_id", None) is not None
