"""Bad records from the source: reported with their id, never acted on, and never read as
"this person left"; everybody else still syncs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orgsync.core.model import (
    Memory,
    RejectedRecord,
    SourceId,
    SourceSnapshot,
    email_problem,
    normalize_email,
    screen,
)
from orgsync.core.plan import Invite
from orgsync.core.planner import RemovalPolicy
from orgsync.core.rules import MembershipRules
from orgsync.sources.file import parse_directory
from tests.coremodels import (
    group,
    invite,
    make_plan,
    member,
    org,
    org_with_groups,
    person,
    target_group,
)

EVERYONE = MembershipRules(default_role="reader")


@pytest.mark.parametrize(
    "email",
    ["new bie@@exa mple", "newbie@", "@example.com", "a@b", "x@corp.local", "a@exa mple.com", ""],
)
def test_what_is_no_address(email: str) -> None:
    assert email_problem(email) is not None


@pytest.mark.parametrize(
    "email",
    ["ada@example.com", " Ada.Lovelace+x@Example.COM ", "ünï@exämple.com", "qa@example.test"],
)
def test_what_is_an_address(email: str) -> None:
    assert email_problem(email) is None


def test_the_issues_addresses_are_not_invited_and_are_reported_by_id() -> None:
    source = SourceSnapshot(
        people=(
            person("p1", "new bie@@exa mple"),
            person("p2", "newbie@"),
            person("p3", "ada@example.com"),
        )
    )
    plan = make_plan(source, org(), rules=EVERYONE)
    assert [(op.op, op.email) for op in plan.operations] == [("invite", "ada@example.com")]
    for pid, shown in (("p1", "new bie@@exa mple"), ("p2", "newbie@")):
        (warning,) = [w for w in plan.warnings if f"source record {pid!r} rejected" in w]
        assert repr(shown) in warning


def test_a_member_whose_email_went_bad_is_kept_whole() -> None:
    """Linked by source id: not removed, not demoted, not taken out of their groups."""
    source = SourceSnapshot(
        people=(person("p1", "ada@@example.com"), person("p2", "bob@example.com")),
        groups=(group("g", "team-ml", "p1", "p2"),),
    )
    observed = org_with_groups(
        target_group("tg", "team-ml", ("u1", "u2")),
        members=(member("u1", "ada@example.com", "owner"), member("u2", "bob@example.com")),
    )
    memory = Memory(
        managed=frozenset({normalize_email("ada@example.com")}),
        links={SourceId("p1"): "u1", SourceId("p2"): "u2"},
        linked_sources={normalize_email("ada@example.com"): SourceId("p1")},
        owned_groups={"tg": SourceId("g")},
    )
    plan = make_plan(source, observed, memory=memory, policy=RemovalPolicy(remove_unmanaged=True))
    touched = {getattr(op, "user_id", None) for op in plan.operations} | {
        getattr(h.operation, "user_id", None) for h in plan.held
    }
    assert "u1" not in touched, plan.operations
    assert any("ada@example.com" in w and "rejected source record" in w for w in plan.warnings)


def test_an_invitation_of_a_person_whose_email_went_bad_is_kept() -> None:
    source = SourceSnapshot(people=(person("p1", "ada@"),))
    memory = Memory(
        managed=frozenset({normalize_email("ada@example.com")}),
        linked_sources={normalize_email("ada@example.com"): SourceId("p1")},
    )
    plan = make_plan(
        source, org(invites=(invite("inv1", "ada@example.com"),)), rules=EVERYONE, memory=memory
    )
    assert plan.operations == ()
    assert any("invitation kept" in w for w in plan.warnings)


def test_without_the_record_the_same_member_would_go() -> None:
    """The control: what the rejection protects against."""
    memory = Memory(
        managed=frozenset({normalize_email("ada@example.com")}), links={SourceId("p1"): "u1"}
    )
    plan = make_plan(
        SourceSnapshot(people=(person("p2", "bob@example.com"),)),
        org(member("u1", "ada@example.com")),
        rules=EVERYONE,
        memory=memory,
    )
    assert [op.op for op in plan.operations if getattr(op, "user_id", None) == "u1"] == [
        "remove_member"
    ]


def test_a_file_record_without_email_is_rejected_not_fatal() -> None:
    snapshot = parse_directory(
        {
            "people": [
                {"id": "p1", "name": "No Mail"},
                {"id": "p2", "email": "b@example.com", "name": 3},
                {"id": "p3", "email": "c@example.com"},
            ],
            "groups": [{"id": "g", "name": "all", "members": ["p1", "p2", "p3"]}],
        },
        origin="directory.json",
    )
    assert [p.id for p in snapshot.people] == ["p3"]
    assert [(r.source_id, r.reason) for r in snapshot.rejected] == [
        ("p1", "people[0]: 'email' is missing or empty"),
        ("p2", "people[1]: 'name' must be a string"),
    ]
    plan = make_plan(
        snapshot, org(), rules=MembershipRules(scope_groups=("all",), default_role="reader")
    )
    assert [op.email for op in plan.operations if isinstance(op, Invite)] == ["c@example.com"]


def test_screen_keeps_the_sources_own_rejections() -> None:
    own = RejectedRecord(SourceId("x"), "neither mail nor an address-shaped UPN")
    people, rejected = screen(SourceSnapshot(people=(person("p", "bad"),), rejected=(own,)))
    assert people == ()
    assert [r.source_id for r in rejected] == ["x", "p"]


def test_normalization_lives_in_one_function() -> None:
    """No module normalizes emails on its own (emulators, which stand for other
    vendors' code, excepted)."""
    src = Path(__file__).resolve().parents[2] / "src" / "orgsync"
    found = [
        path.relative_to(src).as_posix()
        for path in src.rglob("*.py")
        if re.search(r"NFKC|unicodedata\.normalize", path.read_text(encoding="utf-8"))
    ]
    assert found == ["core/model.py"]


def test_the_email_validator_does_no_io_in_the_core() -> None:
    """email-validator's DNS half is never imported by the core, nor used."""
    probe = (
        "import sys, socket\n"
        "def refuse(*a, **k): raise AssertionError('network used')\n"
        "socket.getaddrinfo = refuse; socket.socket.connect = refuse\n"
        "import orgsync.core.model as m, orgsync.core.rules, orgsync.core.planner\n"
        "assert m.email_problem('ada@example.com') is None\n"
        "assert m.email_problem('ada@no-such-domain-really.example') is None\n"
        "assert m.email_problem('ada@@x') is not None\n"
        "loaded = [n for n in sys.modules if n == 'dns' or n.startswith(('dns.', "
        "'email_validator.deliverability'))]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
