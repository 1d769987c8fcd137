"""Red team of applying a plan (the write path): the applier, the targets' writes, retries.

How applying a plan could hurt an administrator, and where each is tried here:
- a link to the wrong account: a create's 2xx answer describes another resource than the
  one asked for (a proxy or a cache answering with another body, a server bug), and
  orgsync records that id as the newcomer's account, invitation or owned group; then it
  adds that other account to the newcomer's groups (extra access), reconciles a
  hand-made group as its own (members removed), and later removes or revokes the other
  person when the newcomer leaves (lost access);
- a change journaled done that the server did not make: a 200 to a suspension, a role
  lowering or a group member removal that the server ignored (or answered with the old
  role, another user's body, an invitation made with a lower role), so the person keeps
  the access while every run "does" it again;
- a group the IdP team must not join adopted by a create's conflict look-up: a
  namesake made since the plan holding the owner role, or one of several namesakes (the
  planner adopts neither);
- duplicates after a lost answer: the server made the user, group or invitation but the
  answer never arrived (a 502 from a proxy after processing), and the retry made a
  second one (duplicate accounts, duplicate invitation e-mails);
- a wrong journal after a lost answer to a removal: the retry's 404 recorded as a
  failure (the run fails forever) or the link kept to an account that is gone;
- lost owner access when the organization changed between plan and apply (an owner
  demoted by hand, an owner raise of the same plan refused): the plan's lowering of the
  other owner must not leave the organization without one;
- a partial apply claiming success: half the calls refused, and the run must exit 1,
  the journal say which were done, and the next run do only the rest, without duplicates;
- a stalled daemon: a `Retry-After` of hours (a broken or hostile server) taken at its
  word by the client-side rate limiter holds every later call of every thread, an
  apply's included, for those hours; a negative one must not make the client hammer.

Each attempt runs over loopback against a real server: the OpenAI and Keycard emulators
(`orgsync.testing`), scim2-server (PyPI), with `ScimProxy` in front to lose, refuse or
rewrite one answer. Operations go through the real `Applier`; the engine runs in-process
on a file source and a SQLite state database where links and the journal matter.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orgsync.applier import Applier, ApplyReport, ApplySettings, Outcome
from orgsync.config import parse_config
from orgsync.core.errors import TransientError
from orgsync.core.plan import (
    AddGroupMember,
    CreateGroup,
    CreateUser,
    Invite,
    Operation,
    Plan,
    RemoveGroupMember,
    RemoveMember,
    SetRole,
    SuspendMember,
)
from orgsync.core.ports import OperationStatus, Target
from orgsync.engine import Engine
from orgsync.http.ratelimit import TokenBucket
from orgsync.results import RunOptions, TargetResult
from orgsync.retrying import RetrySettings
from orgsync.targets.http import ApiClient
from orgsync.targets.keycard import KeycardTarget
from orgsync.targets.openai import OpenAITarget
from orgsync.targets.scim import ScimTarget
from orgsync.testing._server import BackgroundServer
from orgsync.testing.faults import Faults
from orgsync.testing.keycard.emulator import KeycardEmulator
from orgsync.testing.keycard.state import KeycardState
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import KEY_ENV as OPENAI_KEY_ENV
from tests.cli.harness import directory as openai_directory
from tests.targets.cli import SCIM_TOKEN_ENV
from tests.targets.cli import directory as scim_directory
from tests.targets.scim_servers import TOKEN, Scim2Server, ScimProxy, Tamper

FAST = RetrySettings(max_attempts=4, max_delay=5, base=0.01, cap=0.05)
OPENAI_KEY = "sk-admin-apply-redteam-0123456789abcdef"
KEYCARD_ID = "sa_apply_redteam"
KEYCARD_SECRET = "apply-redteam-secret-0123456789abcdef"  # a loopback emulator's secret
KEYCARD_SECRET_ENV = "ORGSYNC_TEST_APPLY_REDTEAM_SECRET"


class MemoryJournal:
    """The applier's journal, kept in memory."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, OperationStatus, str | None, str | None]] = []

    def started(self, seq: int, operation: Operation) -> None:
        del seq, operation

    def finished(
        self,
        seq: int,
        operation: Operation,
        status: OperationStatus,
        *,
        detail: str | None = None,
        object_id: str | None = None,
    ) -> None:
        self.rows.append((operation.op, status, detail, object_id))


def apply(target: Target, operations: Sequence[Operation]) -> ApplyReport:
    plan = Plan.build(target="t", generated_at=datetime.now(UTC), operations=list(operations))
    prepare = getattr(target, "prepare", None)
    if prepare is not None:
        prepare(plan.operations)
    return Applier(target, MemoryJournal(), ApplySettings(retry=FAST)).apply(plan)


def by_op(report: ApplyReport) -> dict[str, Outcome]:
    return {o.operation.op: o for o in report.outcomes}


def new_group_with(group: str, source_id: str, email: str, user_id: str) -> list[Operation]:
    """A plan creating `group` with one member, who depends on the creation."""
    return [
        CreateGroup(group=group, source_group_id=source_id, reason="t"),
        AddGroupMember(
            group=group, source_group_id=source_id, email=email, user_id=user_id, reason="t"
        ),
    ]


def answer_with(method: str, path_end: str, body: Callable[[], bytes]) -> Tamper:
    """A `ScimProxy.tamper` answering the first 2xx `method` on a path ending `path_end`
    with `body()` instead of the server's own answer (the change itself happened)."""
    used: list[bool] = []

    def tamper(
        m: str, path: str, query: str, status: int, content: bytes
    ) -> tuple[int, bytes] | None:
        del query, content
        if m == method and path.endswith(path_end) and 200 <= status < 300 and not used:
            used.append(True)
            return status, body()
        return None

    return tamper


# --------------------------------------------------------------------------- SCIM


@pytest.fixture
def scim(scim2: Scim2Server) -> Iterator[tuple[ScimProxy, httpx.Client]]:
    """A fresh scim2-server tenant behind a proxy, and a direct client to it."""
    upstream = scim2.tenant()
    proxy = ScimProxy(upstream)
    direct = httpx.Client(base_url=upstream, headers={"Authorization": f"Bearer {TOKEN}"})
    yield proxy, direct
    direct.close()
    proxy.stop()


def scim_target(proxy: ScimProxy, dialect: str = "strict") -> ScimTarget:
    return ScimTarget.connect(
        proxy.url, token=TOKEN, system="scim-redteam", retry=FAST, dialect=dialect, timeout=10
    )


def scim_post(direct: httpx.Client, resource: str, body: dict[str, Any]) -> dict[str, Any]:
    schema = "User" if resource == "Users" else "Group"
    response = direct.post(
        f"/{resource}",
        json={"schemas": [f"urn:ietf:params:scim:schemas:core:2.0:{schema}"], **body},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def ignoring_patches(direct: httpx.Client, resource: str, undo: dict[str, Any]) -> Tamper:
    """A server that answers a PATCH of `resource` and ignores it: the change is put back
    with `undo` (one PatchOp operation) and the answer is what the server then holds
    (scim2-server answers 204; others, SCIMMY, 200 with the resource)."""

    def tamper(
        method: str, path: str, query: str, status: int, content: bytes
    ) -> tuple[int, bytes] | None:
        del query, content
        if method == "PATCH" and path.endswith(resource) and status in (200, 204):
            direct.patch(
                resource,
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [undo],
                },
            ).raise_for_status()
            return 200, direct.get(resource).content
        return None

    return tamper


def scim_list(direct: httpx.Client, resource: str) -> list[dict[str, Any]]:
    listed = direct.get(f"/{resource}", params={"count": 100}).json()
    return list(listed.get("Resources") or [])


def test_a_created_user_answer_naming_another_user_is_not_linked(
    scim: tuple[ScimProxy, httpx.Client],
) -> None:
    """Harm: POST /Users answers 201 with another user's body (a caching proxy, a server
    bug). Trusted, the newcomer would be linked to that account, and the membership
    planned for the newcomer in the same plan would give the other person the group."""
    proxy, direct = scim
    other = scim_post(direct, "Users", {"userName": "other@example.test"})
    team = scim_post(direct, "Groups", {"displayName": "team-secret"})
    proxy.tamper = answer_with("POST", "/Users", lambda: json.dumps(other).encode())
    target = scim_target(proxy)
    report = apply(
        target,
        [
            CreateUser(email="new@example.test", name="New", source_id="s-new", reason="t"),
            AddGroupMember(
                group="team-secret",
                group_id=team["id"],
                email="new@example.test",
                user_id=None,
                reason="t",
            ),
        ],
    )
    target.close()
    created = by_op(report)["create_user"]
    assert created.status is OperationStatus.FAILED, created
    assert created.object_id is None
    assert "other@example.test" in str(created.detail)
    membership = by_op(report)["add_group_member"]
    assert membership.status is OperationStatus.SKIPPED, membership
    members = direct.get(f"/Groups/{team['id']}").json().get("members") or []
    assert other["id"] not in [m["value"] for m in members]  # no extra access


def test_a_created_group_answer_naming_another_group_is_not_owned(
    scim: tuple[ScimProxy, httpx.Client],
) -> None:
    """Harm: POST /Groups answers with a hand-made group's body. Owned, that group would
    be renamed to the IdP's name and its members reconciled (hand-added ones removed),
    and the plan's new members added to it."""
    proxy, direct = scim
    person = scim_post(direct, "Users", {"userName": "member@example.test"})
    hand_made = scim_post(direct, "Groups", {"displayName": "hand-made"})
    proxy.tamper = answer_with("POST", "/Groups", lambda: json.dumps(hand_made).encode())
    target = scim_target(proxy)
    report = apply(
        target,
        new_group_with("team-x", "t-x", "member@example.test", person["id"]),
    )
    target.close()
    created = by_op(report)["create_group"]
    assert created.status is OperationStatus.FAILED, created
    assert created.object_id is None
    assert "hand-made" in str(created.detail)
    assert by_op(report)["add_group_member"].status is OperationStatus.SKIPPED
    assert not direct.get(f"/Groups/{hand_made['id']}").json().get("members")


def test_lost_create_answers_are_found_again_not_duplicated(
    scim: tuple[ScimProxy, httpx.Client],
) -> None:
    """Harm: the server created the user and the group but a proxy answered 502 (the
    answer lost); a blind retry would make a second account (scim2-server keeps
    userNames unique, many servers do not: a second group of that name is made)."""
    proxy, direct = scim
    lost: list[str] = []

    def lose(method: str, path: str, body: bytes) -> bool:
        del body
        if method == "POST" and path not in lost:
            lost.append(path)
            return True
        return False

    proxy.lose = lose
    target = scim_target(proxy)
    report = apply(
        target,
        [
            CreateUser(email="lost@example.test", name="Lost", source_id="s-lost", reason="t"),
            CreateGroup(group="team-lost", source_group_id="t-lost", reason="t"),
        ],
    )
    target.close()
    assert len(lost) == 2
    users = [u for u in scim_list(direct, "Users") if u["userName"] == "lost@example.test"]
    groups = [g for g in scim_list(direct, "Groups") if g["displayName"] == "team-lost"]
    assert len(users) == 1 and len(groups) == 1
    outcomes = by_op(report)
    assert outcomes["create_user"].status is OperationStatus.DONE
    assert outcomes["create_user"].object_id == users[0]["id"]
    assert outcomes["create_group"].object_id == groups[0]["id"]
    assert proxy.count("POST", "/Users") == 1  # never sent twice


def test_a_lost_answer_to_a_removal_is_done_on_the_retry(
    scim: tuple[ScimProxy, httpx.Client],
) -> None:
    """Harm: the DELETE happened but its answer was lost; the retry's 404 must read as
    done (the link then goes), not as a failure repeated on every run."""
    proxy, direct = scim
    gone = scim_post(direct, "Users", {"userName": "leaver@example.test"})
    lost: list[bool] = []

    def lose(method: str, path: str, body: bytes) -> bool:
        del path, body
        if method == "DELETE" and not lost:
            lost.append(True)
            return True
        return False

    proxy.lose = lose
    target = scim_target(proxy)
    report = apply(
        target, [RemoveMember(email="leaver@example.test", user_id=gone["id"], reason="t")]
    )
    target.close()
    (outcome,) = report.outcomes
    assert lost and outcome.status is OperationStatus.DONE, outcome
    assert outcome.detail == "already gone (404)"
    assert direct.get(f"/Users/{gone['id']}").status_code == 404


@pytest.mark.parametrize("dialect", ["auto", "strict"])
def test_a_suspension_the_server_answers_but_ignores_is_not_journaled_done(
    scim: tuple[ScimProxy, httpx.Client], dialect: str
) -> None:
    """Harm: the server answers 200 to the PATCH setting `active` false and ignores it
    (some servers drop an attribute they do not take in that form). Journaled done, the
    leaver keeps access, and every run suspends them again, "done" each time. With
    learned forms the next form is tried (a PUT of the whole user here); with the
    forms fixed by a dialect, the operation fails."""
    proxy, direct = scim
    leaver = scim_post(direct, "Users", {"userName": "leaver@example.test", "active": True})

    proxy.tamper = ignoring_patches(
        direct, f"/Users/{leaver['id']}", {"op": "replace", "path": "active", "value": True}
    )
    target = scim_target(proxy, dialect)
    report = apply(
        target, [SuspendMember(email="leaver@example.test", user_id=leaver["id"], reason="t")]
    )
    target.close()
    (outcome,) = report.outcomes
    active = direct.get(f"/Users/{leaver['id']}").json()["active"]
    if dialect == "auto":
        assert outcome.status is OperationStatus.DONE, outcome
        assert active is False
        assert proxy.count("PUT", "/Users") == 1
    else:
        assert outcome.status is OperationStatus.FAILED, outcome
        assert "did not make the change" in str(outcome.detail)
        assert active is True


def test_a_create_meeting_several_namesakes_adopts_none(
    scim: tuple[ScimProxy, httpx.Client],
) -> None:
    """Harm: two groups named "team-dup" appeared since the plan (the read skipped them, or
    they were made by hand; scim2-server keeps names unique no more than most servers).
    The planner adopts none of several namesakes; the create's look-up took the first by
    id, made it orgsync's and put the IdP team in it."""
    proxy, direct = scim
    person = scim_post(direct, "Users", {"userName": "dup-member@example.test"})
    first = scim_post(direct, "Groups", {"displayName": "team-dup"})
    second = scim_post(direct, "Groups", {"displayName": "team-dup"})
    target = scim_target(proxy)
    report = apply(
        target,
        new_group_with("team-dup", "t-dup", "dup-member@example.test", person["id"]),
    )
    target.close()
    created = by_op(report)["create_group"]
    assert created.status is OperationStatus.FAILED, created
    assert by_op(report)["add_group_member"].status is OperationStatus.SKIPPED
    for group in (first, second):
        assert not direct.get(f"/Groups/{group['id']}").json().get("members")
    assert len([g for g in scim_list(direct, "Groups") if g["displayName"] == "team-dup"]) == 2


@pytest.mark.parametrize("dialect", ["auto", "strict"])
def test_a_member_removal_the_server_answers_but_ignores_is_not_journaled_done(
    scim: tuple[ScimProxy, httpx.Client], dialect: str
) -> None:
    """Harm: the server answers 200 to the PATCH removing a leaver from a group, with the
    group still holding them (a removal form it does not take, silently). Journaled
    done, the leaver keeps the group's access and every run removes them again."""
    proxy, direct = scim
    leaver = scim_post(direct, "Users", {"userName": "group-leaver@example.test"})
    team = scim_post(
        direct, "Groups", {"displayName": "team-keep", "members": [{"value": leaver["id"]}]}
    )

    proxy.tamper = ignoring_patches(
        direct,
        f"/Groups/{team['id']}",
        {"op": "add", "path": "members", "value": [{"value": leaver["id"]}]},
    )
    target = scim_target(proxy, dialect)
    target.read()  # as a sync does: the ids read tell users from groups
    removal = RemoveGroupMember(
        group="team-keep",
        group_id=team["id"],
        email="group-leaver@example.test",
        user_id=leaver["id"],
        reason="t",
    )
    (outcome,) = apply(target, [removal]).outcomes
    target.close()
    members = [m["value"] for m in direct.get(f"/Groups/{team['id']}").json().get("members") or []]
    if dialect == "auto":
        assert outcome.status is OperationStatus.DONE, outcome
        assert members == []
        assert proxy.count("PUT", "/Groups") == 1
    else:
        assert outcome.status is OperationStatus.FAILED, outcome
        assert members == [leaver["id"]]


def scim_engine(folder: Path, url: str) -> Engine:
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [
            {
                "name": "s",
                "type": "scim",
                "base_url": url,
                "api_key_env": SCIM_TOKEN_ENV,
                "allow_plaintext": True,
                "scope_groups": ["scim-*"],
                "on_removal": "suspend",
                "max_attempts": 2,
                "groups": [{"source": "team-*", "name": "{source}"}],
            }
        ],
        "safety": {"max_removals": 10},
        "state": {"path": "state.db"},
    }
    config = parse_config(document, origin="test", base_dir=folder)
    return Engine(config, environ={SCIM_TOKEN_ENV: TOKEN})


def test_after_a_wrong_create_answer_the_next_sync_links_the_right_account(
    tmp_path: Path, scim: tuple[ScimProxy, httpx.Client]
) -> None:
    """The sync whose POST /Users answer named a stranger fails (exit 1) without giving the
    stranger the team; the next sync finds the account the server did make (no second
    one), links it, and puts it in the team; the stranger is never touched."""
    proxy, direct = scim
    stranger = scim_post(direct, "Users", {"userName": "stranger@example.com"})
    (tmp_path / "directory.json").write_text(
        json.dumps(scim_directory(3, teams={"team-a": [0, 1, 2]})), encoding="utf-8"
    )
    proxy.tamper = answer_with("POST", "/Users", lambda: json.dumps(stranger).encode())
    engine = scim_engine(tmp_path, proxy.url)
    try:
        first = sync(engine)
        assert first.status == "failed" and first.exit_code == 1, first
        proxy.tamper = None
        second = sync(engine)
        assert second.status == "ok", second
        third = sync(engine)
        assert third.status == "ok" and third.plan is not None and not third.plan.operations
    finally:
        engine.close()
    users = {u["userName"]: u["id"] for u in scim_list(direct, "Users")}
    assert sorted(users) == sorted(
        ["stranger@example.com", *(f"person{i}@example.com" for i in range(3))]
    )
    (team,) = [g for g in scim_list(direct, "Groups") if g["displayName"] == "team-a"]
    assert sorted(m["value"] for m in team.get("members") or []) == sorted(
        users[f"person{i}@example.com"] for i in range(3)
    )
    with sqlite3.connect(tmp_path / "state.db") as db:
        linked = dict(db.execute("SELECT email_key, member_id FROM links").fetchall())
    assert stranger["id"] not in linked.values()
    assert linked == {f"person{i}@example.com": users[f"person{i}@example.com"] for i in range(3)}


# --------------------------------------------------------------------------- OpenAI


@pytest.fixture(scope="module")
def openai() -> Iterator[tuple[OpenAIEmulator, ScimProxy]]:
    emulator = OpenAIEmulator(api_key=OPENAI_KEY)
    proxy = ScimProxy(emulator.start())
    yield emulator, proxy
    proxy.stop()
    emulator.stop()


def openai_target(proxy: ScimProxy) -> OpenAITarget:
    client = ApiClient(
        proxy.url, bearer_token=OPENAI_KEY, system="openai-redteam", timeout=5, retry=FAST
    )
    return OpenAITarget(client, api_key=OPENAI_KEY)


def test_an_invitation_answer_naming_another_email_is_not_recorded(
    openai: tuple[OpenAIEmulator, ScimProxy],
) -> None:
    """Harm: POST /invites answers with another person's invitation; recorded as the
    newcomer's, that invitation is the one revoked when the newcomer leaves."""
    emulator, proxy = openai
    other = emulator.state.add_invite("someone-else@example.com", "reader")
    other_body = json.dumps(emulator.state.api_get_invite(other)).encode()
    proxy.tamper = answer_with("POST", "/invites", lambda: other_body)
    target = openai_target(proxy)
    report = apply(
        target,
        [Invite(email="newcomer@example.com", role="reader", source_id="s-n", reason="t")],
    )
    target.close()
    proxy.tamper = None
    (outcome,) = report.outcomes
    assert outcome.status is OperationStatus.FAILED, outcome
    assert outcome.object_id is None
    assert "someone-else@example.com" in str(outcome.detail)


def test_a_created_group_answer_naming_another_group_is_not_owned_on_openai(
    openai: tuple[OpenAIEmulator, ScimProxy],
) -> None:
    emulator, proxy = openai
    hand_made = emulator.state.add_group("hand-made-openai")
    body = json.dumps(
        {"object": "group", "id": hand_made, "name": "hand-made-openai", "created_at": 1,
         "is_scim_managed": False}
    ).encode()  # fmt: skip
    proxy.tamper = answer_with("POST", "/groups", lambda: body)
    target = openai_target(proxy)
    report = apply(target, [CreateGroup(group="team-y", source_group_id="t-y", reason="t")])
    target.close()
    proxy.tamper = None
    (outcome,) = report.outcomes
    assert outcome.status is OperationStatus.FAILED, outcome
    assert outcome.object_id is None and "hand-made-openai" in str(outcome.detail)


def test_a_privileged_namesake_made_before_apply_is_not_adopted_on_a_conflict(
    openai: tuple[OpenAIEmulator, ScimProxy],
) -> None:
    """Harm: the plan creates group "team-z" for an IdP team; before it is applied someone
    makes a "team-z" holding the owner role. The create's 409 must not adopt it (the
    planner refuses to adopt a namesake holding roles its rule does not give): the
    team's members would be added to it and become owners."""
    emulator, proxy = openai
    state = emulator.state
    member = state.add_user("team-member@example.com", "reader")
    namesake = state.add_group("team-z")
    state.assign_group_role(namesake, state.role_id("owner"))
    target = openai_target(proxy)
    report = apply(
        target,
        new_group_with("team-z", "t-z", "team-member@example.com", member),
    )
    target.close()
    created = by_op(report)["create_group"]
    assert created.status is OperationStatus.FAILED, created
    assert created.object_id is None
    assert by_op(report)["add_group_member"].status is OperationStatus.SKIPPED
    (group,) = [g for g in state.groups() if g["id"] == namesake]
    assert member not in group["members"]


def test_a_demotion_the_server_answers_but_ignores_is_not_journaled_done(
    openai: tuple[OpenAIEmulator, ScimProxy],
) -> None:
    """Harm: POST /users/{id} answers 200 showing the member still an owner (the change
    ignored, or another member's body): journaled done, the owner keeps the role and
    every run "demotes" them again."""
    emulator, proxy = openai
    state = emulator.state
    owner = state.add_user("was-owner@example.com", "owner")
    before = json.dumps(state.api_get_user(owner)).encode()
    other = json.dumps(state.api_get_user(state.key_owner_id)).encode()
    target = openai_target(proxy)
    outcomes = []
    for body in (before, other):
        proxy.tamper = answer_with("POST", f"/users/{owner}", lambda body=body: body)
        demote = SetRole(
            email="was-owner@example.com",
            user_id=owner,
            role="reader",
            previous_role="owner",
            raise_=False,
            reason="t",
        )
        (outcome,) = apply(target, [demote]).outcomes
        outcomes.append(outcome)
    target.close()
    proxy.tamper = None
    assert [o.status for o in outcomes] == [OperationStatus.FAILED] * 2, outcomes
    assert "did not make the change (role is 'owner', not 'reader')" in str(outcomes[0].detail)
    assert "another resource" in str(outcomes[1].detail)


def test_a_refused_group_create_skips_what_needs_it_and_the_next_run_converges(
    tmp_path: Path,
) -> None:
    """Harm: the group create is refused (a 400 naming an unexpected reason); the
    memberships and the role assignment that need its id must be skipped and journaled
    so (not failed against another group, not claimed done), the run exit 1, and the
    next run make the group once, with its members and role."""
    with OpenAIEmulator(api_key=OPENAI_KEY) as emulator:
        proxy = ScimProxy(emulator.start())
        state = emulator.state
        role = state.add_role("ml-engineer", ["api.model.read"])
        document = openai_directory(2)
        for person in document["people"]:
            state.add_user(person["email"], "owner" if person["id"] == "p0" else "reader")
        document["groups"].append({"id": "t-ml", "name": "team-ml", "members": ["p0", "p1"]})
        (tmp_path / "directory.json").write_text(json.dumps(document), encoding="utf-8")
        config = parse_config(
            {
                "source": {"type": "file", "path": "directory.json"},
                "targets": [
                    {
                        "name": "o",
                        "type": "openai",
                        "base_url": proxy.url,
                        "api_key_env": OPENAI_KEY_ENV,
                        "allow_plaintext": True,
                        "default_role": "reader",
                        "scope_groups": ["openai-*"],
                        "roles": [{"group": "openai-owners", "role": "owner"}],
                        "groups": [{"source": "team-*", "roles": ["ml-engineer"]}],
                        "max_attempts": 2,
                    }
                ],
                "state": {"path": "state.db"},
            },
            origin="test",
            base_dir=tmp_path,
        )
        engine = Engine(config, environ={OPENAI_KEY_ENV: OPENAI_KEY})
        proxy.refuse = lambda method, path, body: method == "POST" and path.endswith("/groups")
        try:
            first = sync(engine)
            assert first.status == "failed" and first.exit_code == 1, first
            statuses = {kind: status for kind, _, status in journal_rows(tmp_path, first.run_id)}
            assert statuses == {
                "create_group": "failed",
                "add_group_member": "skipped",
                "assign_group_role": "skipped",
            }
            assert state.groups() == []
            proxy.refuse = None
            assert sync(engine).status == "ok"
            again = sync(engine)
            assert again.plan is not None and not again.plan.operations
            (group,) = state.groups()
            users = {u["email"]: u["id"] for u in state.users()}
            assert set(group["members"]) == {
                users["person0@example.com"],
                users["person1@example.com"],
            }
            assert group["roles"] == [role]
        finally:
            engine.close()
            proxy.stop()


# --------------------------------------------------------------------------- Keycard


@pytest.fixture(scope="module")
def keycard() -> Iterator[tuple[KeycardEmulator, ScimProxy]]:
    emulator = KeycardEmulator(client_id=KEYCARD_ID, client_secret=KEYCARD_SECRET)
    proxy = ScimProxy(emulator.start())
    yield emulator, proxy
    proxy.stop()
    emulator.stop()


@pytest.fixture
def fresh_keycard(
    keycard: tuple[KeycardEmulator, ScimProxy],
) -> Iterator[tuple[KeycardEmulator, ScimProxy]]:
    """The module's emulator with an empty organization, and a proxy that does nothing."""
    emulator, proxy = keycard
    emulator.state = KeycardState()
    yield emulator, proxy
    proxy.tamper = proxy.refuse = proxy.lose = proxy.before = None


def keycard_target(emulator: KeycardEmulator, proxy: ScimProxy) -> KeycardTarget:
    return KeycardTarget.connect(
        proxy.url,
        organization_id=emulator.state.organization_id,
        client_id=KEYCARD_ID,
        client_secret=KEYCARD_SECRET,
        system="keycard-redteam",
        retry=FAST,
        timeout=5,
    )


def test_a_keycard_invitation_answer_naming_another_email_is_not_recorded(
    fresh_keycard: tuple[KeycardEmulator, ScimProxy],
) -> None:
    emulator, proxy = fresh_keycard
    other = emulator.state.add_invitation("someone-else@example.com", "org_member")
    (listed,) = [i for i in emulator.state.invitations() if i["id"] == other]
    proxy.tamper = answer_with("POST", "/invitations", lambda: json.dumps(listed).encode())
    target = keycard_target(emulator, proxy)
    report = apply(
        target,
        [Invite(email="newcomer@example.com", role="org_member", source_id="s-n", reason="t")],
    )
    target.close()
    (outcome,) = report.outcomes
    assert outcome.status is OperationStatus.FAILED, outcome
    assert outcome.object_id is None and "someone-else@example.com" in str(outcome.detail)


def test_a_keycard_suspension_the_server_answers_but_ignores_is_not_journaled_done(
    fresh_keycard: tuple[KeycardEmulator, ScimProxy],
) -> None:
    emulator, proxy = fresh_keycard
    leaver = emulator.state.add_user("leaver@example.com", "org_member")
    (unchanged,) = [u for u in emulator.state.users() if u["id"] == leaver]
    proxy.tamper = answer_with("PATCH", f"/users/{leaver}", lambda: json.dumps(unchanged).encode())
    target = keycard_target(emulator, proxy)
    report = apply(target, [SuspendMember(email="leaver@example.com", user_id=leaver, reason="t")])
    target.close()
    (outcome,) = report.outcomes
    assert outcome.status is OperationStatus.FAILED, outcome
    assert "status is 'active', not 'disabled'" in str(outcome.detail)


def test_lost_answers_to_a_role_change_and_a_removal_end_done_once(
    fresh_keycard: tuple[KeycardEmulator, ScimProxy],
) -> None:
    """Harm: the role change and the removal happened but their answers were lost (502).
    The retries must end in the state asked for and be journaled done: the PATCH sent
    again sets the same role, the DELETE sent again finds the user gone (404)."""
    emulator, proxy = fresh_keycard
    state = emulator.state
    state.add_user("admin@example.com", "org_admin")
    raised = state.add_user("raised@example.com", "org_member")
    leaver = state.add_user("leaver@example.com", "org_member")
    lost: list[str] = []

    def lose(method: str, path: str, body: bytes) -> bool:
        del body
        if method in ("PATCH", "DELETE") and method not in lost:
            lost.append(method)
            return True
        return False

    proxy.lose = lose
    target = keycard_target(emulator, proxy)
    report = apply(
        target,
        [
            SetRole(
                email="raised@example.com",
                user_id=raised,
                role="org_admin",
                previous_role="org_member",
                raise_=True,
                reason="t",
            ),
            RemoveMember(email="leaver@example.com", user_id=leaver, reason="t"),
        ],
    )
    target.close()
    assert sorted(lost) == ["DELETE", "PATCH"]
    assert [o.status for o in report.outcomes] == [OperationStatus.DONE] * 2, report
    assert by_op(report)["remove_member"].detail == "already gone (404)"
    roles = {u["email"]: u["role"] for u in state.users()}
    assert roles == {"admin@example.com": "org_admin", "raised@example.com": "org_admin"}


def test_an_invitation_made_with_a_lower_role_fails_loudly(
    fresh_keycard: tuple[KeycardEmulator, ScimProxy],
) -> None:
    """Harm: the organization makes the admin invitation a member one (a policy lowering
    it). Journaled done, the next plan replaces the wrong-role invitation, and so on: a
    new e-mail on every run, each run "ok". The create fails, naming the roles."""
    emulator, proxy = fresh_keycard

    def lowered(
        method: str, path: str, query: str, status: int, content: bytes
    ) -> tuple[int, bytes] | None:
        del query
        if method == "POST" and path.endswith("/invitations") and status == 201:
            return status, json.dumps({**json.loads(content), "role": "org_member"}).encode()
        return None

    proxy.tamper = lowered
    target = keycard_target(emulator, proxy)
    report = apply(
        target,
        [Invite(email="boss@example.com", role="org_admin", source_id="s-b", reason="t")],
    )
    target.close()
    (outcome,) = report.outcomes
    assert outcome.status is OperationStatus.FAILED, outcome
    assert "role is 'org_member', not 'org_admin'" in str(outcome.detail)


def keycard_config(folder: Path, url: str, organization: str) -> Any:
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [
            {
                "name": "kc",
                "type": "keycard",
                "base_url": url,
                "client_id": KEYCARD_ID,
                "client_secret_env": KEYCARD_SECRET_ENV,
                "organization_id": organization,
                "allow_plaintext": True,
                "scope_groups": ["kc-*"],
                "default_role": "org_member",
                "on_removal": "remove",
                "roles": [{"group": "kc-admins", "role": "org_admin"}],
                "max_attempts": 2,
                "max_retry_delay": "2s",
            }
        ],
        "safety": {"max_removals": 10, "max_removal_ratio": 1.0},
        "state": {"path": "state.db"},
    }
    return parse_config(document, origin="test", base_dir=folder)


def keycard_directory(folder: Path, people: Sequence[str], admins: Sequence[str]) -> None:
    document = {
        "people": [
            {"id": f"s-{name}", "email": f"{name}@example.com", "name": name.title()}
            for name in people
        ],
        "groups": [
            {"id": "g-users", "name": "kc-users", "members": [f"s-{n}" for n in people]},
            {"id": "g-admins", "name": "kc-admins", "members": [f"s-{n}" for n in admins]},
        ],
    }
    (folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")


def sync(engine: Engine) -> TargetResult:
    (result,) = engine.run(RunOptions(dry_run=False))
    return result


def journal_rows(folder: Path, run_id: str | None) -> list[tuple[str, str, str]]:
    with sqlite3.connect(folder / "state.db") as db:
        rows = db.execute(
            "SELECT kind, subject, status FROM operations WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ).fetchall()
    return [(str(k), str(s), str(st)) for k, s, st in rows]


def keycard_engine(folder: Path, emulator: KeycardEmulator, proxy: ScimProxy) -> Engine:
    config = keycard_config(folder, proxy.url, emulator.state.organization_id)
    return Engine(config, environ={KEYCARD_SECRET_ENV: KEYCARD_SECRET})


def pending_invitations(emulator: KeycardEmulator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for invitation in emulator.state.invitations():
        if invitation["status"] == "pending":
            counts[invitation["email"]] = counts.get(invitation["email"], 0) + 1
    return counts


def test_a_partial_apply_fails_honestly_and_the_next_run_does_only_the_rest(
    tmp_path: Path, fresh_keycard: tuple[KeycardEmulator, ScimProxy]
) -> None:
    """Harm: half of the invitations are refused (a 400 naming an unexpected reason); the
    run must exit 1, the journal say which were sent, and the next run invite only the
    others, once each."""
    emulator, proxy = fresh_keycard
    names = ["ana", "bo", "cy", "di"]
    keycard_directory(tmp_path, names, admins=["ana"])
    refused = {"bo@example.com", "di@example.com"}

    def refuse(method: str, path: str, body: bytes) -> bool:
        return (
            method == "POST"
            and path.endswith("/invitations")
            and json.loads(body)["email"] in refused
        )

    proxy.refuse = refuse
    engine = keycard_engine(tmp_path, emulator, proxy)
    try:
        first = sync(engine)
        assert first.status == "failed" and first.exit_code == 1, first
        rows = journal_rows(tmp_path, first.run_id)
        assert sorted(rows) == sorted(
            [
                ("invite", "ana@example.com", "done"),
                ("invite", "bo@example.com", "failed"),
                ("invite", "cy@example.com", "done"),
                ("invite", "di@example.com", "failed"),
            ]
        )
        assert pending_invitations(emulator) == {"ana@example.com": 1, "cy@example.com": 1}
        proxy.refuse = None
        second = sync(engine)
        assert second.status == "ok", second
        assert [r[1] for r in journal_rows(tmp_path, second.run_id)] == [
            "bo@example.com",
            "di@example.com",
        ]
        assert pending_invitations(emulator) == {f"{n}@example.com": 1 for n in names}
        third = sync(engine)
        assert third.status == "ok" and third.plan is not None and not third.plan.operations
    finally:
        engine.close()


def test_an_owner_demoted_by_hand_between_plan_and_apply_is_not_left_ownerless(
    tmp_path: Path, fresh_keycard: tuple[KeycardEmulator, ScimProxy]
) -> None:
    """Harm: the plan demotes admin ana (the IdP moved her out of kc-admins) because bo is
    an admin too; between plan and apply an administrator demotes bo by hand. Applying
    the stale decision would leave the organization without an admin."""
    emulator, proxy = fresh_keycard
    state = emulator.state
    ana = state.add_user("ana@example.com", "org_admin")
    bo = state.add_user("bo@example.com", "org_admin")
    keycard_directory(tmp_path, ["ana", "bo"], admins=["ana", "bo"])
    engine = keycard_engine(tmp_path, emulator, proxy)
    try:
        assert sync(engine).status == "ok"  # links both
        keycard_directory(tmp_path, ["ana", "bo"], admins=["bo"])

        def demote_bo_first(method: str, path: str) -> None:
            if method == "PATCH" and path.endswith(ana):
                state.api_update_user(bo, {"role": "org_member"})

        proxy.before = demote_bo_first
        stale = sync(engine)
        proxy.before = None
        assert stale.status == "failed", stale
        admins = [u for u in state.users() if u["role"] == "org_admin"]
        assert [u["email"] for u in admins] == ["ana@example.com"]
        # The source wins again: bo raised, then ana lowered (the planner counts a raise
        # planned before the lowering only, so this may take a run more).
        for _ in range(3):
            again = sync(engine)
            assert again.status == "ok", again
            if again.plan is not None and not again.plan.operations:
                break
        roles = {u["email"]: u["role"] for u in state.users()}
        assert roles == {"ana@example.com": "org_member", "bo@example.com": "org_admin"}
    finally:
        engine.close()


def test_a_refused_owner_raise_does_not_let_the_plan_drop_the_last_owner(
    tmp_path: Path, fresh_keycard: tuple[KeycardEmulator, ScimProxy]
) -> None:
    """Harm: the planner lets ana be demoted because the same plan raises bo to admin
    first; the raise is refused, so the demotion would leave nobody in charge."""
    emulator, proxy = fresh_keycard
    state = emulator.state
    state.add_user("ana@example.com", "org_admin")
    bo = state.add_user("bo@example.com", "org_member")
    keycard_directory(tmp_path, ["ana", "bo"], admins=["ana"])
    engine = keycard_engine(tmp_path, emulator, proxy)
    try:
        assert sync(engine).status == "ok"
        keycard_directory(tmp_path, ["ana", "bo"], admins=["bo"])
        proxy.refuse = lambda method, path, body: method == "PATCH" and path.endswith(bo)
        result = sync(engine)
        proxy.refuse = None
        assert result.status == "failed", result
        admins = [u["email"] for u in state.users() if u["role"] == "org_admin"]
        assert admins == ["ana@example.com"]
    finally:
        engine.close()


def test_an_invitation_accepted_between_plan_and_apply_still_ends_in_a_removal(
    tmp_path: Path, fresh_keycard: tuple[KeycardEmulator, ScimProxy]
) -> None:
    """Harm: a leaver's pending invitation is to be revoked, and they accept it just
    before the call. Journaled as revoked, the link would go and the new member would
    be someone orgsync does not manage: a leaver keeping access. The refusal fails the
    run instead, the link stays, and the next run removes the member."""
    emulator, proxy = fresh_keycard
    state = emulator.state
    state.add_user("ana@example.com", "org_admin")
    keycard_directory(tmp_path, ["ana", "leaver"], admins=["ana"])
    engine = keycard_engine(tmp_path, emulator, proxy)
    try:
        assert sync(engine).status == "ok"  # invites the leaver
        (invitation,) = [i for i in state.invitations() if i["email"] == "leaver@example.com"]
        keycard_directory(tmp_path, ["ana"], admins=["ana"])

        def accept_first(method: str, path: str) -> None:
            if method == "DELETE" and path.endswith(invitation["id"]):
                state.accept_invitation(invitation["id"])

        proxy.before = accept_first
        raced = sync(engine)
        proxy.before = None
        assert raced.status == "failed", raced
        assert "leaver@example.com" in [u["email"] for u in state.users()]
        after = sync(engine)
        assert after.status == "ok", after
        assert [u["email"] for u in state.users()] == ["ana@example.com"]
    finally:
        engine.close()


def test_a_renewal_whose_new_invitation_is_refused_is_invited_once_next_run(
    tmp_path: Path, fresh_keycard: tuple[KeycardEmulator, ScimProxy]
) -> None:
    """A renewal is one operation: revoke the expired invitation, then invite. The
    invitation refused after the revoke leaves the person with none (the run fails);
    the next run invites them once, never twice."""
    emulator, proxy = fresh_keycard
    state = emulator.state
    state.add_user("ana@example.com", "org_admin")
    state.add_invitation("late@example.com", "org_member", expires_at=state.clock() - 60)
    keycard_directory(tmp_path, ["ana", "late"], admins=["ana"])
    proxy.refuse = lambda method, path, body: method == "POST" and path.endswith("/invitations")
    engine = keycard_engine(tmp_path, emulator, proxy)
    try:
        refused = sync(engine)
        assert refused.status == "failed", refused
        assert refused.plan is not None
        (renewal,) = refused.plan.operations
        assert isinstance(renewal, Invite) and renewal.replaces_invite_id is not None
        assert pending_invitations(emulator) == {}
        proxy.refuse = None
        assert sync(engine).status == "ok"
        assert pending_invitations(emulator) == {"late@example.com": 1}
        again = sync(engine)
        assert again.plan is not None and not again.plan.operations
    finally:
        engine.close()


# --------------------------------------------------------------------------- Retry-After


def test_a_retry_after_of_a_day_is_capped_by_the_rate_limiter() -> None:
    """Unit: a refusal asking for a day holds callers off at most `max_pause`."""
    now = [0.0]
    waits: list[float] = []
    bucket = TokenBucket(10.0, clock=lambda: now[0], sleep=waits.append, max_pause=5.0)
    bucket.limited(retry_after=86_400.0)
    assert bucket.acquire() <= 5.0 + 1.0


class OneRefusal:
    """A loopback server answering its first request with `status` and `headers`, then
    200 to everything; it counts the requests it saw."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.seen = 0

        async def handle(request: Request) -> Response:
            del request
            self.seen += 1
            if self.seen == 1:
                return JSONResponse({"error": "slow down"}, status_code=status, headers=headers)
            return JSONResponse({"ok": True})

        self._server = BackgroundServer(
            Starlette(routes=[Route("/thing", handle, methods=["GET", "POST"])]), name="refusal"
        )
        self.url = f"http://127.0.0.1:{self._server.start()}"

    def stop(self) -> None:
        self._server.stop()


def test_a_retry_after_of_a_day_does_not_stall_every_later_call() -> None:
    """Harm: one 429 asking to wait a day. The retry gives that call up (the wait does
    not fit its budget), but the rate limiter held every later call of the run, and of
    the daemon, for the day (an apply's waits are not ended by a stop request)."""
    server = OneRefusal(429, {"Retry-After": "86400"})
    slept: list[float] = []
    client = ApiClient(
        server.url,
        system="refusal",
        bearer_token="t-0123456789",
        retry=RetrySettings(max_attempts=3, max_delay=2.0, base=0.01, cap=0.05),
        requests_per_second=50.0,
        sleep=slept.append,
    )
    try:
        with pytest.raises(TransientError):
            client.request("GET", "/thing", idempotent=True)
        assert client.request("GET", "/thing", idempotent=True).status_code == 200
    finally:
        client.close()
        server.stop()
    assert max(slept) <= 2.0 + 1.0, slept


def test_a_negative_retry_after_backs_off_instead_of_hammering() -> None:
    """A `Retry-After: -5` is no delay at all: the client backs off as without one, and
    the call succeeds on the next attempt."""
    server = OneRefusal(503, {"Retry-After": "-5"})
    slept: list[float] = []
    client = ApiClient(
        server.url,
        system="refusal",
        bearer_token="t-0123456789",
        retry=RetrySettings(max_attempts=3, max_delay=2.0, base=0.01, cap=0.05),
        sleep=slept.append,
    )
    try:
        assert client.request("GET", "/thing", idempotent=True).status_code == 200
    finally:
        client.close()
        server.stop()
    assert server.seen == 2 and len(slept) == 1 and 0.0 <= slept[0] <= 0.05


def test_a_target_asking_to_wait_hours_ends_the_apply_instead_of_hammering_it() -> None:
    """Harm: the target answers 429 with a Retry-After of hours (its quota is spent). Each
    later operation would send its call anyway, be refused and fail (hundreds of calls
    the server asked not to get), or, with a client-side rate limit, wait out the retry
    budget one after another (an apply of hours). The apply stops at the first such
    answer; what is left is skipped for the next run, and the run fails."""
    with OpenAIEmulator(api_key=OPENAI_KEY) as emulator:
        url = emulator.start()
        # One request, then the next token in 10000 s: a Retry-After of hours.
        emulator.faults = Faults(rate_limit=0.0001)
        client = ApiClient(
            url, bearer_token=OPENAI_KEY, system="openai-quota", timeout=5, retry=FAST
        )
        target = OpenAITarget(client, api_key=OPENAI_KEY)
        invites = [
            Invite(email=f"p{i}@example.com", role="reader", source_id=f"s{i}", reason="t")
            for i in range(6)
        ]
        plan = Plan.build(target="t", generated_at=datetime.now(UTC), operations=invites)
        settings = ApplySettings(max_concurrency=1, retry=FAST)
        report = Applier(target, MemoryJournal(), settings).apply(plan)
        target.close()
        sent = [r for r in emulator.requests if r.method == "POST"]
    statuses = [o.status for o in report.outcomes]
    assert statuses[:2] == [OperationStatus.DONE, OperationStatus.FAILED], report
    assert statuses[2:] == [OperationStatus.SKIPPED] * 4, report
    assert report.aborted is not None and "Retry-After" in report.aborted
    assert len(sent) == 2  # nothing more once the server asked to wait
