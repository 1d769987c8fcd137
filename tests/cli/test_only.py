"""`orgsync sync --only EMAIL|SOURCE_ID ...` as an administrator runs it, against the
OpenAI emulator: the named people are reconciled, only they are read, and the safety gate
and the last-owner rule hold as in a full pass (issue 13, "targeted runs")."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.cli.harness import Rig, directory

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

PEOPLE = 150
"""More than a page of the users list (100 a page): a full read takes two requests."""

USERS = "/v1/organization/users"
INVITES = "/v1/organization/invites"


def without(document: dict[str, Any], *ids: str) -> dict[str, Any]:
    """`document` with the people `ids` gone from the directory (leavers)."""
    gone = set(ids)
    return {
        "people": [p for p in document["people"] if p["id"] not in gone],
        "groups": [
            {**g, "members": [m for m in g["members"] if m not in gone]} for g in document["groups"]
        ],
    }


def synced(rig: Rig, people: int = PEOPLE, *, owners: int = 1) -> dict[str, Any]:
    """An organization of `people` members, all linked by a first full sync."""
    document = directory(people, owners=owners)
    for i in range(people):
        rig.emulator.state.add_user(f"person{i}@example.com", "owner" if i < owners else "reader")
    rig.write(document)
    first = rig.orgsync("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    return document


def reads(rig: Rig, since: int) -> Counter[str]:
    """GET requests by path since request number `since`."""
    return Counter(r.path for r in rig.emulator.requests[since:] if r.method == "GET")


def writes(rig: Rig, since: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in rig.emulator.requests[since:] if r.method != "GET"]


def test_only_a_new_joiner_invites_them_alone_reading_only_them(rig: Rig) -> None:
    synced(rig)
    rig.write(directory(PEOPLE + 2))
    mark = len(rig.emulator.requests)

    result = rig.orgsync("sync", "--json", "--only", f"PERSON{PEOPLE}@Example.com")

    assert result.returncode == 0, result.stdout + result.stderr
    pending = rig.pending_invites_per_email()
    assert pending == {f"person{PEOPLE}@example.com": 1}, "the other new joiner was not named"
    assert writes(rig, mark) == [("POST", INVITES)]
    got = reads(rig, mark)
    assert got[USERS] == 1, got  # the `emails` filter: one page, not two
    assert not any("/groups" in path for path in got), got
    assert sum(got.values()) <= 5, got


def test_only_a_member_whose_role_changes_never_lists_the_invitations(rig: Rig) -> None:
    """A wanted member's invitations change nothing in a plan: the run reads the users
    list (filtered), the roles and the key owner, however many invitations there are."""
    synced(rig)
    for i in range(150):
        rig.emulator.state.add_invite(f"history{i}@example.com", "reader", status="accepted")
    promoted = directory(PEOPLE, owners=2)  # person1 joins openai-owners
    rig.write(promoted)
    mark = len(rig.emulator.requests)
    result = rig.orgsync("sync", "--only", "person1@example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    (person1,) = [u for u in rig.emulator.state.users() if u["email"] == "person1@example.com"]
    assert person1["role"] == "owner"
    assert writes(rig, mark) == [("POST", f"{USERS}/{person1['id']}")]
    got = reads(rig, mark)
    assert INVITES not in got, got
    assert sum(got.values()) == 3, got  # users (filtered), roles, admin keys


def test_only_by_source_id_finds_the_person(rig: Rig) -> None:
    synced(rig)
    rig.write(directory(PEOPLE + 1))
    result = rig.orgsync("sync", "--only", f"p{PEOPLE}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rig.pending_invites_per_email() == {f"person{PEOPLE}@example.com": 1}


def test_only_a_leaver_removes_them_and_nobody_else(rig: Rig) -> None:
    document = synced(rig)
    rig.write(without(document, "p7", "p8"))
    mark = len(rig.emulator.requests)

    dry = rig.orgsync("sync", "--dry-run", "--json", "--only", "person7@example.com")
    assert dry.returncode == 2, dry.stdout + dry.stderr
    assert writes(rig, mark) == []
    result = rig.orgsync("sync", "--only", "person7@example.com")

    assert result.returncode == 0, result.stdout + result.stderr
    emails = {u["email"] for u in rig.emulator.state.users()}
    assert "person7@example.com" not in emails
    assert "person8@example.com" in emails, "not named: left for the next full pass"
    assert len(emails) == PEOPLE  # 150 people + the key owner - person7
    assert [m for m, _ in writes(rig, mark)] == ["DELETE"]
    assert reads(rig, mark)[USERS] == 2  # one filtered read per run (dry run, then sync)

    runs = json.loads(rig.orgsync("runs", "--json").stdout)
    assert [r["trigger"] for r in runs[:2]] == ["cli:only", "cli:only"]

    full = rig.orgsync("sync")
    assert full.returncode == 0, full.stdout + full.stderr
    assert "person8@example.com" not in {u["email"] for u in rig.emulator.state.users()}


def test_only_measures_the_safety_gate_against_the_whole_organization(rig: Rig) -> None:
    """One removal out of 150 managed people is 0.7%: under a 5% ratio, applied. Measured
    against the slice (one person) it would be 100% and held."""
    rig.safety = "max_removal_ratio = 0.05\nmin_managed_for_ratio = 1"
    document = synced(rig)
    rig.write(without(document, "p9"))
    result = rig.orgsync("sync", "--only", "person9@example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "person9@example.com" not in {u["email"] for u in rig.emulator.state.users()}


def test_only_still_obeys_the_safety_gate(rig: Rig) -> None:
    rig.safety = "max_removals = 1"
    document = synced(rig)
    rig.write(without(document, "p3", "p4"))
    mark = len(rig.emulator.requests)
    result = rig.orgsync("sync", "--json", "--only", "person3@example.com", "p4")
    assert result.returncode == 3, result.stdout + result.stderr
    assert writes(rig, mark) == []
    assert "2 removals exceed safety.max_removals = 1" in result.stdout


def test_only_the_last_owner_as_a_leaver_is_never_removed(rig: Rig) -> None:
    document = synced(rig, 20)
    # The key's owner steps down: person0 is the organization's last owner.
    rig.emulator.state.api_update_user(rig.emulator.state.key_owner_id, {"role": "reader"})
    rig.write(without(document, "p0"))
    mark = len(rig.emulator.requests)
    result = rig.orgsync("sync", "--json", "--only", "person0@example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert writes(rig, mark) == []
    owners = [u["email"] for u in rig.emulator.state.users() if u["role"] == "owner"]
    assert owners == ["person0@example.com"]
    assert "the last owner" in result.stdout


def test_only_an_owner_who_is_not_the_last_leaves(rig: Rig) -> None:
    document = synced(rig, 20, owners=2)
    rig.write(without(document, "p0"))
    result = rig.orgsync("sync", "--only", "person0@example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "person0@example.com" not in {u["email"] for u in rig.emulator.state.users()}


def test_only_an_unknown_person_changes_nothing_and_says_so(rig: Rig) -> None:
    synced(rig, 5)
    mark = len(rig.emulator.requests)
    result = rig.orgsync("sync", "--only", "person1@example.com", "nobody@example.com", "p404")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "--only nobody@example.com p404: no such person" in result.stdout + result.stderr
    assert writes(rig, mark) == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--only"], "expected at least one argument"),
        (["--only", "  "], "an empty name names nobody"),
        (["--only", "ada@"], "is not an email address"),
        (["--only", "@example.com"], "is not an email address"),
        (["--only", "a b@example.com"], "is not an email address"),
        (["--only", "p1", "--plan", "plan.json"], "cannot be combined with --plan"),
        (["--dry-run", "--only", "p1", "--plan-out", "p.json"], "cannot be combined with"),
    ],
)
def test_only_usage_errors_exit_64_before_anything_is_read(
    rig: Rig, args: list[str], complaint: str
) -> None:
    rig.write(directory(3))
    result = rig.orgsync("sync", *args)
    assert result.returncode == 64, result.stdout + result.stderr
    assert complaint in result.stderr
    assert rig.emulator.requests == []
