"""Arbitrary person and group records through the file source and the core: a bad
record is reported with its source id and never acted on, the rest still sync, and
whatever cannot be tied to one person refuses the whole read (nothing acted on)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orgsync.core.errors import SourceDataError
from orgsync.core.model import Memory, SourceId, email_problem, normalize_email
from orgsync.core.planner import RemovalPolicy
from orgsync.core.rules import MembershipRules
from orgsync.sources.file import parse_directory
from tests.coremodels import make_plan, member, org

GOOD = ["ada@example.com", "Bob@Example.com", "carol+x@example.org", "dé@exämple.com"]
BAD = ["new bie@@exa mple", "newbie@", "@example.com", "a@b", "x@corp.local", "", "  "]
junk = st.one_of(st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2))
emails = st.one_of(st.sampled_from(GOOD + BAD), st.text(max_size=20), junk)


@st.composite
def person_records(draw: st.DrawFn, index: int) -> dict[str, Any]:
    record: dict[str, Any] = {"id": f"p{index}"}
    if draw(st.booleans()) or draw(st.booleans()):
        record["email"] = draw(emails)
    if draw(st.booleans()):
        record["name"] = draw(st.one_of(st.text(max_size=8), junk))
    if draw(st.booleans()):
        record["active"] = draw(st.one_of(st.booleans(), junk))
    return record


@st.composite
def directories(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(min_value=0, max_value=8))
    people = [draw(person_records(i)) for i in range(size)]
    ids = [p["id"] for p in people]
    groups = [
        {"id": "g-all", "name": "all", "members": draw(st.lists(st.sampled_from(ids), unique=True))}
        if ids
        else {"id": "g-all", "name": "all", "members": []}
    ]
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # now and then, a broken group
        groups.append(
            draw(
                st.sampled_from(
                    [{"id": "g2"}, {"name": "x"}, {"id": "g3", "name": "y", "members": "p0"}]
                )
            )
        )
    return {"people": people, "groups": groups}


def usable(record: dict[str, Any]) -> bool:
    email = record.get("email")
    return (
        isinstance(email, str)
        and email_problem(email) is None
        and isinstance(record.get("name", ""), str)
        and isinstance(record.get("active", True), bool)
    )


@settings(max_examples=300, deadline=None)
@given(document=directories(), linked=st.data())
def test_bad_records_are_reported_and_never_acted_on(
    document: dict[str, Any], linked: st.DataObject
) -> None:
    if len(document["groups"]) > 1:
        # What cannot be tied to one person refuses the whole read, and is named.
        with pytest.raises(SourceDataError, match=r"directory\.json: groups\[1\]"):
            parse_directory(document, origin="directory.json")
        return
    snapshot = parse_directory(document, origin="directory.json")
    records = document["people"]
    bad = {r["id"] for r in records if not usable(r)}
    good = [r for r in records if usable(r)]

    # Every record, good or bad, already has a member in the organization, linked to it.
    members = [member(f"u-{r['id']}", f"{r['id']}@old.example.com") for r in records]
    memory = Memory(
        managed=frozenset(normalize_email(m.email or "") for m in members),
        links={SourceId(r["id"]): f"u-{r['id']}" for r in records},
    )
    plan = make_plan(
        snapshot,
        org(*members),
        rules=MembershipRules(default_role="reader"),
        memory=memory,
        policy=RemovalPolicy(remove_unmanaged=True),
    )
    for record_id in bad:
        assert any(f"source record {record_id!r} rejected" in w for w in plan.warnings), record_id
    operations = list(plan.operations) + [h.operation for h in plan.held]
    for op in operations:
        assert getattr(op, "source_id", None) not in bad, op
        assert getattr(op, "user_id", None) not in {f"u-{i}" for i in bad}, op
    # The rest still sync: every active good person is planned for (their email changed
    # from the old address, which an OpenAI-like target keeps and reports as waiting).
    planned = {w.email for w in plan.waiting} | {getattr(op, "email", "") for op in operations}
    # Good records sharing one address are in the source too: neither is acted on, and
    # the members linked to them are kept as they are (not removed as absent).
    counts = Counter(normalize_email(r["email"]) for r in good)
    shared = {r["id"] for r in good if counts[normalize_email(r["email"])] > 1}
    for op in operations:
        assert getattr(op, "user_id", None) not in {f"u-{i}" for i in shared}, op
    for record in good:
        if record["id"] in shared:
            continue
        if record.get("active", True) is True:
            assert (
                record["email"].strip() in planned or f"{record['id']}@old.example.com" in planned
            )
