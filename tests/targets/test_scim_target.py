"""Contract tests of `ScimTarget` against two real SCIM servers the team did not write.

scim2-server (PyPI, strict RFC 7644) and SCIMMY with scimmy-routers (npm, looser) run as
child processes on loopback; a recording proxy (`ScimProxy`) sits in front of each, so the
tests see exactly which requests the target sent, and can lose or refuse one.
Operations go through the real `Applier` (as the engine runs them), with the plan handed
to the target first (`prepare`), as the engine does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgsync.applier import Applier, ApplyReport, ApplySettings
from orgsync.core.errors import AuthError, ConflictError, NotFoundError
from orgsync.core.plan import (
    AddGroupMember,
    CreateGroup,
    CreateUser,
    DeleteGroup,
    Operation,
    Plan,
    RemoveGroupMember,
    RemoveMember,
    RenameGroup,
    SuspendMember,
    UpdateUser,
)
from orgsync.core.ports import OperationStatus
from orgsync.retrying import RetrySettings
from orgsync.targets.scim import ScimTarget
from tests.targets.scim_servers import TOKEN, Scim2Server, ScimProxy, start_scimmy

FAST = RetrySettings(max_attempts=4, max_delay=5, base=0.01, cap=0.05)
SERVERS = ["scim2-server", "scimmy"]


class Journal:
    """The applier's journal, kept in memory."""

    def __init__(self) -> None:
        self.finished_ops: list[tuple[Operation, OperationStatus, str | None]] = []

    def started(self, seq: int, operation: Operation) -> None:
        pass

    def finished(
        self,
        seq: int,
        operation: Operation,
        status: OperationStatus,
        *,
        detail: str | None = None,
        object_id: str | None = None,
    ) -> None:
        self.finished_ops.append((operation, status, detail))


class Server:
    """One SCIM server under test: its base URL, a proxy in front, and direct access."""

    def __init__(self, kind: str, upstream: str, stop: Any = None) -> None:
        self.kind = kind
        self.upstream = upstream
        self.proxy = ScimProxy(upstream)
        self._stop = stop
        self.direct = httpx.Client(
            base_url=upstream, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def target(
        self, *, dialect: str = "strict", max_patch: int = 100, page: int = 200
    ) -> ScimTarget:
        return ScimTarget.connect(
            self.proxy.url,
            token=TOKEN,
            system=f"scim-{self.kind}",
            retry=FAST,
            dialect=dialect,
            max_patch_operations=max_patch,
            timeout=10,
            page_size=page,
        )

    def group(self, group_id: str) -> dict[str, Any]:
        response = self.direct.get(f"/Groups/{group_id}")
        response.raise_for_status()
        return dict(response.json())

    def member_values(self, group_id: str) -> list[str]:
        return [m["value"] for m in self.group(group_id).get("members") or []]

    def close(self) -> None:
        self.direct.close()
        self.proxy.stop()
        if self._stop is not None:
            self._stop()


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "scim2-server":
        scim2: Scim2Server = request.getfixturevalue("scim2")
        running = Server("scim2-server", scim2.tenant())
    else:
        scimmy = start_scimmy(tmp_path / "scimmy")
        running = Server("scimmy", scimmy.url, scimmy.stop)
    yield running
    running.close()


def apply(target: ScimTarget, operations: Sequence[Operation], *, workers: int = 4) -> ApplyReport:
    plan = Plan.build(target="scim", generated_at=datetime.now(UTC), operations=list(operations))
    target.prepare(plan.operations)
    settings = ApplySettings(max_concurrency=workers, retry=FAST)
    return Applier(target, Journal(), settings).apply(plan)


def done(report: ApplyReport) -> bool:
    return all(o.status is OperationStatus.DONE for o in report.outcomes)


def create_users(target: ScimTarget, count: int, prefix: str = "user") -> dict[str, str]:
    """email -> id of `count` new users."""
    ops = [
        CreateUser(
            email=f"{prefix}{i}@example.test",
            name=f"Given{i} Family{i}",
            source_id=f"src-{prefix}{i}",
            reason="test",
        )
        for i in range(count)
    ]
    report = apply(target, ops)
    assert done(report), [o.detail for o in report.failed]
    return {o.operation.subject: str(o.object_id) for o in report.outcomes}


def test_discovery_reads_the_service_provider_config(server: Server) -> None:
    target = server.target()
    features = target.features
    assert features.patch is True
    assert features.filter is True
    # scim2-server has ETags and /Bulk; SCIMMY, as our glue configures it, neither.
    assert features.etag is (server.kind == "scim2-server")
    assert features.bulk is (server.kind == "scim2-server")
    assert server.proxy.count("GET", "/ServiceProviderConfig") == 1
    target.read()
    assert server.proxy.count("GET", "/ServiceProviderConfig") == 1  # discovered once
    target.close()


def test_users_created_suspended_reenabled_deleted(server: Server) -> None:
    target = server.target()
    ids = create_users(target, 2)
    ada = ids["user0@example.test"]
    created = server.direct.get(f"/Users/{ada}").json()
    assert created["userName"] == "user0@example.test"
    assert created["externalId"] == "src-user0"
    assert created["active"] is True
    assert created["emails"] == [{"value": "user0@example.test", "type": "work", "primary": True}]
    assert created["name"]["givenName"] == "Given0"
    assert created["name"]["familyName"] == "Family0"
    snapshot = target.read()
    members = {m.id: m for m in snapshot.members}
    assert members[ada].email == "user0@example.test"
    assert members[ada].active is True
    assert members[ada].role is None
    assert snapshot.invites == () and snapshot.roles.order == ()
    assert done(apply(target, [SuspendMember(email="user0@example.test", user_id=ada, reason="t")]))
    assert server.direct.get(f"/Users/{ada}").json()["active"] is False
    assert not {m.id: m for m in target.read().members}[ada].active
    report = apply(target, [UpdateUser(email="user0@example.test", user_id=ada, reason="back")])
    assert done(report)
    assert server.direct.get(f"/Users/{ada}").json()["active"] is True
    patches = [json.loads(b) for m, _, b in server.proxy.bodies if m == "PATCH"]
    assert [p["Operations"] for p in patches] == [
        [{"op": "replace", "path": "active", "value": False}],
        [{"op": "replace", "path": "active", "value": True}],
    ]
    assert done(apply(target, [RemoveMember(email="user0@example.test", user_id=ada, reason="t")]))
    assert server.direct.get(f"/Users/{ada}").status_code == 404
    with pytest.raises(NotFoundError):
        target.execute(RemoveMember(email="user0@example.test", user_id=ada, reason="t"))
    # The applier counts a 404 on a removal as done.
    report = apply(target, [RemoveMember(email="user0@example.test", user_id=ada, reason="t")])
    assert report.outcomes[0].status is OperationStatus.DONE
    assert report.outcomes[0].detail == "already gone (404)"
    target.close()


def test_an_idp_email_change_renames_the_user_in_place(server: Server) -> None:
    target = server.target()
    ada = create_users(target, 1)["user0@example.test"]
    rename = UpdateUser(
        email="ada.lovelace@example.test",
        user_id=ada,
        previous_email="user0@example.test",
        source_id="src-user0",
        reason="email changed in the IdP",
    )
    assert done(apply(target, [rename]))
    renamed = server.direct.get(f"/Users/{ada}").json()
    assert renamed["userName"] == "ada.lovelace@example.test"
    assert [e["value"] for e in renamed["emails"]] == ["ada.lovelace@example.test"]
    assert {m.id: m.email for m in target.read().members}[ada] == "ada.lovelace@example.test"
    target.close()


def test_a_409_on_create_adopts_the_user_found_by_username(server: Server) -> None:
    existing = server.direct.post(
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "Ada@Example.test",  # same person, other case
        },
    )
    assert existing.status_code == 201
    target = server.target()
    op = CreateUser(email="ada@example.test", name="Ada", source_id="s-ada", reason="t")
    with pytest.raises(ConflictError):
        target.execute(op)
    assert target.find_existing(op) == existing.json()["id"]
    report = apply(target, [op])
    assert report.outcomes[0].status is OperationStatus.DONE
    assert report.outcomes[0].object_id == existing.json()["id"]
    assert report.outcomes[0].detail == "already existed (409): adopted"
    target.close()


def test_groups_created_renamed_deleted(server: Server) -> None:
    target = server.target()
    report = apply(target, [CreateGroup(group="team-ml", source_group_id="g1", reason="t")])
    group_id = str(report.outcomes[0].object_id)
    assert server.group(group_id)["displayName"] == "team-ml"
    assert server.group(group_id)["externalId"] == "g1"
    assert target.find_existing(CreateGroup(group="team-ml", reason="t")) == group_id
    rename = RenameGroup(
        group="team-ai",
        previous_name="team-ml",
        group_id=group_id,
        source_group_id="g1",
        reason="t",
    )
    assert done(apply(target, [rename]))
    assert server.group(group_id)["displayName"] == "team-ai"
    assert [g.name for g in target.read().groups] == ["team-ai"]
    assert done(apply(target, [DeleteGroup(group="team-ai", group_id=group_id, reason="t")]))
    assert server.direct.get(f"/Groups/{group_id}").status_code == 404
    assert target.read().groups == ()
    target.close()


def test_member_changes_share_requests_up_to_the_cap(server: Server) -> None:
    check_member_chunks(server, "strict")


def test_member_changes_by_value_arrays_on_a_loose_server(tmp_path: Path) -> None:
    """The Entra/AWS removal shape, against SCIMMY (scim2-server refuses it, see below)."""
    scimmy = start_scimmy(tmp_path / "scimmy")
    running = Server("scimmy", scimmy.url, scimmy.stop)
    try:
        check_member_chunks(running, "azure")
    finally:
        running.close()


def check_member_chunks(server: Server, dialect: str) -> None:
    target = server.target(dialect=dialect, max_patch=5)
    ids = create_users(target, 12)
    new_users = [
        CreateUser(email=f"new{i}@example.test", name="New", source_id=f"n{i}", reason="t")
        for i in range(2)
    ]
    group = CreateGroup(group="team", source_group_id="g-team", reason="t")
    # Users and the group created in the same plan: the applier fills their ids in.
    adds = [
        AddGroupMember(
            group="team", source_group_id="g-team", email=email, user_id=user_id, reason="t"
        )
        for email, user_id in ids.items()
    ] + [
        AddGroupMember(
            group="team", source_group_id="g-team", email=u.email, user_id=None, reason="t"
        )
        for u in new_users
    ]
    report = apply(target, [group, *new_users, *adds])
    assert done(report), [o.detail for o in report.failed]
    group_id = next(str(o.object_id) for o in report.outcomes if o.operation.op == "create_group")
    assert server.proxy.count("PATCH") == math.ceil(14 / 5)
    members = server.member_values(group_id)
    assert len(members) == len(set(members)) == 14
    snapshot = target.read()
    (team,) = snapshot.groups
    assert team.member_ids == frozenset(members)

    removals = [
        RemoveGroupMember(
            group="team",
            group_id=group_id,
            source_group_id="g-team",
            email=email,
            user_id=user_id,
            reason="t",
        )
        for email, user_id in list(ids.items())[:11]
    ]
    assert done(apply(target, removals))
    assert server.proxy.count("PATCH") == 3 + math.ceil(11 / 5)
    assert len(server.member_values(group_id)) == 3
    last = json.loads([b for m, _, b in server.proxy.bodies if m == "PATCH"][-1])
    if dialect == "strict":
        assert all(op["path"].startswith("members[value eq ") for op in last["Operations"])
        assert all("value" not in op for op in last["Operations"])
    else:
        (op,) = last["Operations"]
        assert op["path"] == "members" and op["op"] == "remove" and len(op["value"]) == 1
    target.close()


def test_without_prepare_each_change_is_its_own_request(server: Server) -> None:
    target = server.target(max_patch=50)
    ids = create_users(target, 3)
    group_id = str(target.execute(CreateGroup(group="solo", reason="t")))
    for email, user_id in ids.items():
        target.execute(
            AddGroupMember(
                group="solo", group_id=group_id, email=email, user_id=user_id, reason="t"
            )
        )
    assert server.proxy.count("PATCH") == 3
    assert sorted(server.member_values(group_id)) == sorted(ids.values())
    target.close()


def test_a_lost_patch_response_is_checked_not_resent(server: Server) -> None:
    """SCIMMY duplicates a member added twice: the retry must read the group first."""
    target = server.target(max_patch=10)
    ids = create_users(target, 4)
    group_id = str(target.execute(CreateGroup(group="lossy", reason="t")))
    lost: list[str] = []

    def lose(method: str, path: str, body: bytes) -> bool:
        if method == "PATCH" and not lost:
            lost.append(path)
            return True
        return False

    server.proxy.lose = lose
    adds = [
        AddGroupMember(group="lossy", group_id=group_id, email=e, user_id=u, reason="t")
        for e, u in ids.items()
    ]
    assert done(apply(target, adds))
    assert lost
    assert server.proxy.count("PATCH") == 1  # the change happened; nothing was sent twice
    members = server.member_values(group_id)
    assert sorted(members) == sorted(ids.values())
    target.close()


def test_a_refused_chunk_is_split_so_one_bad_member_fails_alone(server: Server) -> None:
    target = server.target(max_patch=10)
    ids = create_users(target, 4)
    group_id = str(target.execute(CreateGroup(group="picky", reason="t")))
    bad = ids["user2@example.test"]
    server.proxy.refuse = lambda method, path, body: method == "PATCH" and bad.encode() in body
    adds = [
        AddGroupMember(group="picky", group_id=group_id, email=e, user_id=u, reason="t")
        for e, u in ids.items()
    ]
    report = apply(target, adds)
    failed = [o.operation.subject for o in report.failed]
    assert [o.operation for o in report.failed] == [a for a in adds if a.user_id == bad], failed
    assert "refused by the test proxy" in str(report.failed[0].detail)
    assert sorted(server.member_values(group_id)) == sorted(u for u in ids.values() if u != bad)
    # One chunk, then one request per member once split.
    assert server.proxy.count("PATCH") == 1 + 4
    target.close()


def test_auth_failure_names_the_server_message_not_the_token(server: Server) -> None:
    target = ScimTarget.connect(
        server.proxy.url, token="wrong-token-value-42", system="scim", retry=FAST, timeout=10
    )
    with pytest.raises(AuthError) as caught:
        target.read()
    assert caught.value.status == 401
    assert "wrong-token-value-42" not in str(caught.value)
    target.close()


def test_paging_reads_every_user_page_by_page(server: Server) -> None:
    target = server.target(page=7)
    ids = create_users(target, 30)
    gets_before = server.proxy.count("GET", "/Users")
    snapshot = target.read()
    assert {m.id for m in snapshot.members} == set(ids.values())
    assert server.proxy.count("GET", "/Users") - gets_before == math.ceil(30 / 7)
    target.close()


def test_value_array_removal_is_refused_by_a_strict_server(scim2: Scim2Server) -> None:
    """Why the dialect switch exists: scim2-server refuses the Entra/AWS removal shape."""
    running = Server("scim2-server", scim2.tenant())
    try:
        target = running.target(dialect="azure")
        ids = create_users(target, 2)
        group_id = str(target.execute(CreateGroup(group="g", reason="t")))
        for email, user_id in ids.items():
            target.execute(
                AddGroupMember(
                    group="g", group_id=group_id, email=email, user_id=user_id, reason="t"
                )
            )
        removals = [
            RemoveGroupMember(group="g", group_id=group_id, email=e, user_id=u, reason="t")
            for e, u in ids.items()
        ]
        report = apply(target, removals)
        assert len(report.failed) == 2
        assert "a remove operation carries no value" in str(report.failed[0].detail)
        assert "[invalidValue]" in str(report.failed[0].detail)
        assert len(running.member_values(group_id)) == 2
        target.close()
    finally:
        running.close()


def test_groups_listed_without_members_are_read_one_by_one(tmp_path: Path) -> None:
    """AWS-style: list pages carry no members; the `aws` dialect reads each group."""
    scimmy = start_scimmy(tmp_path / "scimmy", list_members=False)
    running = Server("scimmy", scimmy.url, scimmy.stop)
    try:
        target = running.target()
        ids = create_users(target, 3)
        group_ids = [str(target.execute(CreateGroup(group=f"g{i}", reason="t"))) for i in range(2)]
        for email, user_id in ids.items():
            target.execute(
                AddGroupMember(
                    group="g0", group_id=group_ids[0], email=email, user_id=user_id, reason="t"
                )
            )
        # Read as if the list were complete: the members are missing.
        assert all(g.member_ids == frozenset() for g in target.read().groups)
        target.close()
        aws = running.target(dialect="aws")
        gets = running.proxy.count("GET", "/Groups/")
        groups = {g.id: g for g in aws.read().groups}
        assert groups[group_ids[0]].member_ids == frozenset(ids.values())
        assert groups[group_ids[1]].member_ids == frozenset()
        assert running.proxy.count("GET", "/Groups/") - gets == 2
        # The aws dialect sends no `attributes` (servers of that kind refuse it).
        reads = [path for method, path, _ in running.proxy.bodies[-3:] if method == "GET"]
        assert reads and not any("attributes=" in path for path in reads)
        aws.close()
    finally:
        running.close()


@pytest.fixture(params=SERVERS)
def server_without_patch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "scim2-server":
        scim2: Scim2Server = request.getfixturevalue("scim2_without_patch")
        running = Server("scim2-server", scim2.tenant())
    else:
        scimmy = start_scimmy(tmp_path / "scimmy", patch=False)
        running = Server("scimmy", scimmy.url, scimmy.stop)
    yield running
    running.close()


def test_without_patch_every_change_is_a_whole_resource_put(server_without_patch: Server) -> None:
    server = server_without_patch
    target = server.target(max_patch=4)
    assert target.features.patch is False
    ids = create_users(target, 6)
    group = CreateGroup(group="team", source_group_id="g", reason="t")
    report = apply(target, [group])
    group_id = str(report.outcomes[0].object_id)
    adds = [
        AddGroupMember(
            group="team", group_id=group_id, source_group_id="g", email=e, user_id=u, reason="t"
        )
        for e, u in ids.items()
    ]
    assert done(apply(target, adds))
    assert server.proxy.count("PUT") == math.ceil(6 / 4)  # one read-modify-write per chunk
    assert sorted(server.member_values(group_id)) == sorted(ids.values())
    first = next(iter(ids))
    removal = RemoveGroupMember(
        group="team",
        group_id=group_id,
        source_group_id="g",
        email=first,
        user_id=ids[first],
        reason="t",
    )
    rename = RenameGroup(group="crew", previous_name="team", group_id=group_id, reason="t")
    suspend = SuspendMember(email=first, user_id=ids[first], reason="t")
    assert done(apply(target, [removal, rename, suspend]))
    assert server.proxy.count("PATCH") == 0
    body = server.group(group_id)
    assert body["displayName"] == "crew"
    assert sorted(m["value"] for m in body["members"]) == sorted(list(ids.values())[1:])
    assert server.direct.get(f"/Users/{ids[first]}").json()["active"] is False
    # The PUT carried the user as the server had it: nothing orgsync does not manage lost.
    assert server.direct.get(f"/Users/{ids[first]}").json()["externalId"] == f"src-{first[:5]}"
    puts = [json.loads(b) for m, _, b in server.proxy.bodies if m == "PUT"]
    assert all("meta" not in put for put in puts)
    target.close()


def test_put_fallback_starts_over_when_the_etag_moved(scim2_without_patch: Scim2Server) -> None:
    """Someone changes the group between our read and our PUT: If-Match makes it a 412,
    and the second round keeps their change and ours."""
    running = Server("scim2-server", scim2_without_patch.tenant())
    try:
        target = running.target()
        assert target.features.etag is True
        ids = create_users(target, 2)
        (mine, theirs) = ids.values()
        group_id = str(target.execute(CreateGroup(group="contended", reason="t")))
        meddled: list[str] = []

        def meddle(method: str, path: str) -> None:
            if method == "PUT" and not meddled:
                meddled.append(path)
                current = running.group(group_id)
                current.pop("meta")
                current["members"] = [{"value": theirs}]
                running.direct.put(f"/Groups/{group_id}", json=current).raise_for_status()

        running.proxy.before = meddle
        target.execute(
            AddGroupMember(
                group="contended",
                group_id=group_id,
                email="user0@example.test",
                user_id=mine,
                reason="t",
            )
        )
        assert meddled
        assert sorted(running.member_values(group_id)) == sorted([mine, theirs])
        statuses = [r.status for r in running.proxy.requests if r.method == "PUT"]
        assert statuses == [412, 200]
        puts = [b for m, _, b in running.proxy.bodies if m == "PUT"]
        assert len(puts) == 2
        target.close()
    finally:
        running.close()
