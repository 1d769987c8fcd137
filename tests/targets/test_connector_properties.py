"""The core's properties, over generated directories and organizations, on the real thing.

tests/core/test_planner_properties.py checks the planner against an in-memory
organization; here the same claims are checked end to end through the engine (in this
process) against the Keycard emulator and a real SCIM server (scim2-server, a fresh tenant
per example):
- convergence: after one sync, a second plan is empty;
- the desired state holds: every active person in scope is a member (or invited) with
  the highest role their groups give, and team groups hold exactly their people;
- ownership: members unknown to the source and never managed are left exactly as found;
- no duplicates: one pending invitation, one user, one group per name at most.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orgsync.config import load_config
from orgsync.core.model import normalize_email
from orgsync.engine import Engine
from orgsync.results import RunOptions
from orgsync.testing.keycard.emulator import KeycardEmulator, KeycardState
from tests.targets.cli import (
    KEYCARD_SECRET_ENV,
    SCIM_TOKEN_ENV,
    keycard_target,
    scim_target,
)
from tests.targets.scim_servers import TOKEN, Scim2Server

EMAILS = ["a@x.com", "A@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com", "f@x.com"]
SECRET = "property-secret-0123456789"
CLIENT_ID = "sa_property"
ROOT = "root@x.org"
PROPERTY_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Person:
    id: str
    email: str
    active: bool
    groups: frozenset[str]


@st.composite
def directories(draw: st.DrawFn) -> list[Person]:
    emails = draw(st.lists(st.sampled_from(EMAILS), max_size=6))
    return [
        Person(
            f"p{i}",
            email,
            draw(st.booleans()) or draw(st.booleans()),
            frozenset(
                draw(st.sets(st.sampled_from(["scim-users", "scim-admins", "team-a", "team-b"])))
            ),
        )
        for i, email in enumerate(emails)
    ]


def source_document(people: list[Person]) -> dict[str, Any]:
    names = ["scim-users", "scim-admins", "team-a", "team-b"]
    return {
        "people": [
            {"id": p.id, "email": p.email, "name": f"Person {p.id}", "active": p.active}
            for p in people
        ],
        "groups": [
            {"id": f"g-{name}", "name": name, "members": [p.id for p in people if name in p.groups]}
            for name in names
        ],
    }


def wanted_people(people: list[Person]) -> dict[str, Person]:
    """normalized email -> the one active, in-scope person (ambiguous emails excluded)."""
    by_key: dict[str, list[Person]] = {}
    for p in people:
        by_key.setdefault(normalize_email(p.email), []).append(p)
    wanted = {}
    for key, same in by_key.items():
        if len(same) == 1 and same[0].active and same[0].groups & {"scim-users", "scim-admins"}:
            wanted[key] = same[0]
    return wanted


def ambiguous(people: list[Person]) -> set[str]:
    keys = [normalize_email(p.email) for p in people]
    return {k for k in keys if keys.count(k) > 1}


def run(folder: Path, targets: str, people: list[Person], environ: dict[str, str]) -> Engine:
    (folder / "directory.json").write_text(json.dumps(source_document(people)))
    (folder / "orgsync.toml").write_text(
        '[source]\ntype = "file"\npath = "directory.json"\n'
        + targets
        + "\n[safety]\nmax_removals = 100\nmax_removal_ratio = 1.0\nmin_source_users = 0\n"
        + '\n[state]\npath = "state.db"\n'
    )
    return Engine(load_config(folder / "orgsync.toml"), environ=environ)


def sync_then_replan(engine: Engine) -> None:
    try:
        (applied,) = engine.run(RunOptions(dry_run=False))
        assert applied.exit_code == 0, (applied.error, applied.report)
        (again,) = engine.run(RunOptions(dry_run=True))
        assert again.plan is not None
        assert again.plan.operations == (), again.plan.to_json()
        assert again.exit_code == 0
    finally:
        engine.close()


# --------------------------------------------------------------------------- Keycard


@st.composite
def keycard_orgs(draw: st.DrawFn) -> list[tuple[str, str, str, str]]:
    """(kind, email, role, status) of users and invitations already there."""
    found, seen = [], set()
    for email in draw(st.lists(st.sampled_from([*EMAILS, "stranger@x.com"]), max_size=5)):
        if normalize_email(email) in seen:
            continue  # one user or invitation per person, as an organization would have
        seen.add(normalize_email(email))
        kind = draw(st.sampled_from(["user", "invitation", "expired"]))
        role = draw(st.sampled_from(["org_viewer", "org_member", "org_admin"]))
        status = draw(st.sampled_from(["active", "active", "disabled"]))
        found.append((kind, email, role, status))
    return found


def seed_keycard(state: KeycardState, found: list[tuple[str, str, str, str]]) -> None:
    state.add_user(ROOT, "org_admin")
    for kind, email, role, status in found:
        if kind == "user":
            state.add_user(email, role, status=status)
        elif kind == "invitation":
            state.add_invitation(email, role)
        else:
            state.add_invitation(email, role, expires_at=state.clock() - 60)


@given(people=directories(), found=keycard_orgs())
@PROPERTY_SETTINGS
def test_keycard_converges_to_the_rules_and_leaves_strangers_alone(
    people: list[Person], found: list[tuple[str, str, str, str]]
) -> None:
    state = KeycardState()
    seed_keycard(state, found)
    before = {u["id"]: dict(u) for u in state.users()}
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET, state=state) as emulator:
        target = keycard_target(emulator.base_url, state.organization_id, CLIENT_ID)
        with tempfile.TemporaryDirectory() as folder:
            engine = run(Path(folder), target, people, {KEYCARD_SECRET_ENV: SECRET})
            sync_then_replan(engine)
    wanted = wanted_people(people)
    users = state.users()
    pending = [i for i in state.invitations() if i["status"] == "pending"]
    # No duplicates.
    user_keys = [normalize_email(str(u["email"])) for u in users if u.get("email")]
    assert len(user_keys) == len(set(user_keys))
    pending_keys = [normalize_email(str(i["email"])) for i in pending]
    assert len(pending_keys) == len(set(pending_keys))
    # Everyone wanted holds the right role, as an active user or by invitation.
    for key, person in wanted.items():
        role = "org_admin" if "scim-admins" in person.groups else "org_member"
        user = next((u for u in users if normalize_email(str(u.get("email"))) == key), None)
        if user is not None:
            assert (user["status"], user["role"]) == ("active", role), user
        else:
            (invitation,) = [i for i in pending if normalize_email(str(i["email"])) == key]
            assert invitation["role"] == role
    # Known people who are not wanted (inactive, out of scope): disabled, not invited.
    unwanted = {normalize_email(p.email) for p in people} - set(wanted) - ambiguous(people)
    for user in users:
        if normalize_email(str(user.get("email"))) in unwanted:
            assert user["status"] == "disabled", user
    assert not {normalize_email(str(i["email"])) for i in pending} & unwanted
    # Strangers (unknown to the source, never managed) and ambiguous people: untouched.
    known = {normalize_email(p.email) for p in people}
    for user_id, user in before.items():
        key = normalize_email(str(user["email"]))
        if key not in known or key in ambiguous(people):
            now = next((u for u in users if u["id"] == user_id), None)
            assert now is not None and (now["role"], now["status"]) == (
                user["role"],
                user["status"],
            )


# --------------------------------------------------------------------------- SCIM


@st.composite
def scim_orgs(draw: st.DrawFn) -> list[tuple[str, bool]]:
    """(userName, active) of users already on the server."""
    emails = draw(st.lists(st.sampled_from([*EMAILS, "stranger@x.com"]), max_size=4))
    found, seen = [], set()
    for email in emails:
        if normalize_email(email) not in seen:  # userName is unique on the server
            seen.add(normalize_email(email))
            found.append((email, draw(st.booleans())))
    return found


@given(people=directories(), found=scim_orgs())
@PROPERTY_SETTINGS
def test_scim_converges_to_the_rules_and_leaves_strangers_alone(
    scim2: Scim2Server, people: list[Person], found: list[tuple[str, bool]]
) -> None:
    upstream = scim2.tenant()
    with httpx.Client(
        base_url=upstream, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as http:
        for email, active in found:
            http.post(
                "/Users",
                json={
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": email,
                    "active": active,
                },
            ).raise_for_status()
        before = {u["userName"]: u for u in http.get("/Users").json().get("Resources", [])}
        with tempfile.TemporaryDirectory() as folder:
            engine = run(Path(folder), scim_target(upstream), people, {SCIM_TOKEN_ENV: TOKEN})
            sync_then_replan(engine)
        users = {u["userName"]: u for u in http.get("/Users").json().get("Resources", [])}
        groups = {
            g["displayName"]: http.get(f"/Groups/{g['id']}").json()
            for g in http.get("/Groups").json().get("Resources", [])
        }
    wanted = wanted_people(people)
    by_key: dict[str, Any] = {normalize_email(name): user for name, user in users.items()}
    assert len(by_key) == len(users)
    for key in wanted:
        assert by_key[key].get("active") is not False
    unwanted = {normalize_email(p.email) for p in people} - set(wanted) - ambiguous(people)
    for key in unwanted & set(by_key):
        assert by_key[key].get("active") is False  # on_removal = "suspend"
    for team in ("team-a", "team-b"):
        expected = {key for key, p in wanted.items() if team in p.groups}
        if not expected and team not in groups:
            continue  # an empty team need not exist
        ids = [m["value"] for m in groups[team].get("members") or []]
        assert len(ids) == len(set(ids))
        id_to_key = {u["id"]: normalize_email(name) for name, u in users.items()}
        assert {id_to_key[i] for i in ids} == expected
    known = {normalize_email(p.email) for p in people}
    for name, user in before.items():
        key = normalize_email(name)
        if key not in known or key in ambiguous(people):
            assert name in users and users[name].get("active") == user.get("active")
