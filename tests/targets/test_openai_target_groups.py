"""OpenAITarget's groups against the OpenAI Admin API emulator, over loopback HTTP.

Every exchange is recorded at the transport and validated against the vendored OpenAPI
subset (the `harness` fixture checks them all at teardown). Covered: reading groups, their
members past the 1000-a-page boundary and their roles with one list call per group and
list; the role catalog; every group operation; SCIM-managed groups refused; 409s and lost
responses answered by `find_existing`; and that orgsync never touches a member's own role
list, where roles inherited from groups show up.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from orgsync.core.errors import (
    ConflictError,
    NotFoundError,
    RequestRejected,
    TargetError,
    TransientError,
)
from orgsync.core.model import TargetGroup
from orgsync.core.plan import (
    AddGroupMember,
    AdoptGroup,
    AssignGroupRole,
    CreateGroup,
    DeleteGroup,
    GroupOperation,
    RemoveGroupMember,
    RenameGroup,
    UnassignGroupRole,
)
from orgsync.retrying import RetrySettings
from orgsync.targets.http import ApiClient
from orgsync.targets.openai import OpenAITarget
from orgsync.testing.openai.emulator import Faults, OpenAIEmulator
from tests.openapi_contract import check_exchange
from tests.targets.test_openai_target import API_KEY, FAST_RETRY, Harness

V1 = "/v1/organization"


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as emu:
        yield emu


@pytest.fixture
def harness(emulator: OpenAIEmulator) -> Iterator[Harness]:
    rig = Harness(emulator)
    yield rig
    rig.target.close()
    if rig.transport.responses:
        rig.check_all()


def exchanges(harness: Harness) -> list[httpx.Response]:
    return harness.transport.responses


def paths(harness: Harness, method: str | None = None) -> list[str]:
    return [
        r.request.url.path
        for r in exchanges(harness)
        if method is None or r.request.method == method
    ]


def common(group: str, group_id: str | None, source: str = "src-1") -> dict[str, Any]:
    return {"group": group, "group_id": group_id, "source_group_id": source, "reason": "test"}


def by_name(groups: tuple[TargetGroup, ...]) -> dict[str, TargetGroup]:
    return {g.name: g for g in groups}


# --------------------------------------------------------------------------- reading


class TestRead:
    def test_capabilities_include_groups(self, harness: Harness) -> None:
        assert harness.target.capabilities.groups is True

    def test_members_past_1000_follow_next_with_one_list_per_group(self, harness: Harness) -> None:
        state = harness.emulator.state
        users = [state.add_user(f"m{i:04}@example.com") for i in range(2345)]
        big = state.add_group("big")
        for uid in users:
            state.add_group_member(big, uid)
        small = state.add_group("small")
        state.add_group_member(small, users[0])
        empty = state.add_group("empty")
        manager = state.add_role("API Group Manager", ["api.groups.write"])
        state.assign_group_role(small, manager)

        snapshot = harness.target.read()
        groups = by_name(snapshot.groups)
        assert groups["big"] == TargetGroup(big, "big", frozenset(users), frozenset(), False)
        assert groups["small"].member_ids == {users[0]}
        assert groups["small"].role_ids == {manager}
        assert groups["empty"] == TargetGroup(empty, "empty")

        # Three pages for the big group, each after the previous page's `next`.
        big_pages = [
            r for r in exchanges(harness) if r.request.url.path == f"{V1}/groups/{big}/users"
        ]
        assert [len(r.json()["data"]) for r in big_pages] == [1000, 1000, 345]
        assert all(r.request.url.params["limit"] == "1000" for r in big_pages)
        assert "after" not in big_pages[0].request.url.params
        for previous, page in itertools.pairwise(big_pages):
            assert page.request.url.params["after"] == previous.json()["next"]

        # One users list and one roles list per small group; nothing per member.
        calls = Counter(paths(harness, "GET"))
        for gid in (small, empty):
            assert calls[f"{V1}/groups/{gid}/users"] == 1
        for gid in (big, small, empty):
            assert calls[f"{V1}/groups/{gid}/roles"] == 1
        assert calls[f"{V1}/groups"] == 1
        assert not [p for p in calls if p.count("/") > 5]  # no /groups/{g}/users/{u}
        assert not [p for p in calls if p.endswith("/roles") and "/users/" in p]

    def test_more_than_1000_groups_are_paged(self, harness: Harness) -> None:
        # The group list `read` follows is the one a create's lookup follows; the lookup
        # reads no members, which keeps 1001 groups quick to contract-check.
        state = harness.emulator.state
        ids = [state.add_group(f"g{i:04}") for i in range(1001)]
        assert harness.target.find_existing(CreateGroup(**common("g1000", None))) == ids[-1]
        # Then the found group's roles, once: a namesake holding roles is not adopted.
        *lists, roles = exchanges(harness)
        assert roles.request.url.path == f"{V1}/groups/{ids[-1]}/roles"
        assert [r.request.url.path for r in lists] == [f"{V1}/groups"] * 2
        assert [len(r.json()["data"]) for r in lists] == [1000, 1]
        assert lists[0].request.url.params["limit"] == "1000"
        assert lists[1].request.url.params["after"] == lists[0].json()["next"]

    def test_sequential_read_is_the_same_snapshot(self, emulator: OpenAIEmulator) -> None:
        state = emulator.state
        uid = state.add_user("a@example.com")
        for i in range(12):
            gid = state.add_group(f"g{i}", is_scim_managed=i % 3 == 0)
            state.add_group_member(gid, uid)
        parallel = Harness(emulator)
        one_by_one = OpenAITarget(parallel.client, api_key=API_KEY, read_concurrency=1)
        assert sorted(parallel.target.read().groups, key=lambda g: g.id) == sorted(
            one_by_one.read().groups, key=lambda g: g.id
        )
        parallel.target.close()
        parallel.check_all()

    @pytest.mark.parametrize("seed", [1, 2])
    def test_group_reads_converge_despite_injected_faults(
        self, seed: int, emulator: OpenAIEmulator
    ) -> None:
        state = emulator.state
        users = [state.add_user(f"u{i:03}@example.com") for i in range(150)]
        role = state.add_role("Auditor", ["api.audit.read"])
        for g in range(15):
            gid = state.add_group(f"team-{g}", is_scim_managed=g == 0)
            for uid in users[g * 10 : g * 10 + 30]:
                state.add_group_member(gid, uid)
            if g % 2:
                state.assign_group_role(gid, role)
        clean = Harness(emulator)
        expected = clean.target.read()
        clean.target.close()

        emulator.faults = Faults(error_rate=0.3, seed=seed, timeout_seconds=0.05)
        faulty = Harness(emulator)
        got = faulty.target.read()
        faulty.target.close()
        assert sorted(got.groups, key=lambda g: g.id) == sorted(expected.groups, key=lambda g: g.id)
        assert got.roles == expected.roles
        assert any(r.injected_fault and "/groups/" in r.path for r in emulator.requests)
        faulty.check_all()

    def test_scim_managed_groups_are_marked(self, harness: Harness) -> None:
        state = harness.emulator.state
        state.add_group("Sales", is_scim_managed=True)
        state.add_group("Ours")
        groups = by_name(harness.target.read().groups)
        assert groups["Sales"].is_scim_managed is True
        assert groups["Ours"].is_scim_managed is False

    def test_role_catalog_adds_organization_rbac_roles(self, harness: Harness) -> None:
        state = harness.emulator.state
        manager = state.add_role("API Group Manager", ["api.groups.read", "api.groups.write"])
        owner_permissions = next(r for r in state.roles() if r["name"] == "owner")["permissions"]
        super_admin = state.add_role("Super Admin", [*owner_permissions, "api.extra"])
        state.add_role("Project Helper", ["x"], resource_type="api.project")

        catalog = harness.target.read().roles
        assert dict(catalog.assignable) == {
            "owner": state.role_id("owner"),
            "reader": state.role_id("reader"),
            "API Group Manager": manager,
            "Super Admin": super_admin,
        }
        assert catalog.privileged == {"owner", "Super Admin"}
        # Member roles are unchanged: invitations still carry owner or reader.
        assert catalog.order == ("reader", "owner")
        assert catalog.invitable == {"owner", "reader"}


# --------------------------------------------------------------------------- writing


class TestGroupOperations:
    def test_every_operation_changes_the_emulated_organization(self, harness: Harness) -> None:
        state = harness.emulator.state
        ada = state.add_user("ada@example.com")
        bob = state.add_user("bob@example.com")
        manager = state.add_role("API Group Manager", ["api.groups.write"])
        target = harness.target

        gid = target.execute(CreateGroup(**common("team-ml", None)))
        assert gid is not None
        assert [(g["id"], g["name"]) for g in state.groups()] == [(gid, "team-ml")]
        posted = [r for r in exchanges(harness) if r.request.method == "POST"]
        assert json.loads(posted[-1].request.content) == {"name": "team-ml"}

        for user, email in ((ada, "ada@example.com"), (bob, "bob@example.com")):
            added = target.execute(
                AddGroupMember(**common("team-ml", gid), email=email, user_id=user)
            )
            assert added is None
        target.execute(
            AssignGroupRole(**common("team-ml", gid), role="API Group Manager", role_id=manager)
        )
        target.execute(RenameGroup(**common("team-machine-learning", gid), previous_name="team-ml"))
        (group,) = state.groups()
        assert (group["name"], set(group["members"]), group["roles"]) == (
            "team-machine-learning",
            {ada, bob},
            [manager],
        )

        name = "team-machine-learning"
        target.execute(RemoveGroupMember(**common(name, gid), email="bob", user_id=bob))
        target.execute(
            UnassignGroupRole(**common(name, gid), role="API Group Manager", role_id=manager)
        )
        (group,) = state.groups()
        assert (group["members"], group["roles"]) == ([ada], [])
        assert target.execute(DeleteGroup(**common(name, gid))) is None
        assert state.groups() == []

        writes = [(r.request.method, r.request.url.path) for r in exchanges(harness)]
        assert writes == [
            ("POST", f"{V1}/groups"),
            ("POST", f"{V1}/groups/{gid}/users"),
            ("POST", f"{V1}/groups/{gid}/users"),
            ("POST", f"{V1}/groups/{gid}/roles"),
            ("POST", f"{V1}/groups/{gid}"),
            ("DELETE", f"{V1}/groups/{gid}/users/{bob}"),
            ("DELETE", f"{V1}/groups/{gid}/roles/{manager}"),
            ("DELETE", f"{V1}/groups/{gid}"),
        ]

    def test_adopt_makes_no_call_and_answers_the_group_id(self, harness: Harness) -> None:
        gid = harness.emulator.state.add_group("existing")
        assert harness.target.execute(AdoptGroup(**common("existing", gid))) == gid
        assert exchanges(harness) == []

    def test_an_operation_without_a_group_id_fails_without_a_call(self, harness: Harness) -> None:
        ops: list[GroupOperation] = [
            AdoptGroup(**common("g", None)),
            RenameGroup(**common("g", None), previous_name="f"),
            DeleteGroup(**common("g", None)),
            AddGroupMember(**common("g", None), email="a", user_id="user_1"),
        ]
        for op in ops:
            with pytest.raises(TargetError, match="has no group id"):
                harness.target.execute(op)
        member_to_be = AddGroupMember(**common("g", "group_1"), email="a", user_id=None)
        with pytest.raises(TargetError, match="no user id"):
            harness.target.execute(member_to_be)
        assert harness.target.find_existing(member_to_be) is None
        assert exchanges(harness) == []

    def test_scim_managed_group_changes_are_rejected_with_the_servers_message(
        self, harness: Harness
    ) -> None:
        state = harness.emulator.state
        gid = state.add_group("Sales", is_scim_managed=True)
        uid = state.add_user("a@example.com")
        before = state.groups()
        ops: list[GroupOperation] = [
            RenameGroup(**common("Sales 2", gid), previous_name="Sales"),
            AddGroupMember(**common("Sales", gid), email="a", user_id=uid),
            DeleteGroup(**common("Sales", gid)),
        ]
        for op in ops:
            with pytest.raises(RequestRejected, match="SCIM") as raised:
                harness.target.execute(op)
            assert raised.value.status == 400
        assert state.groups() == before

    def test_removals_of_what_is_gone_are_not_found(self, harness: Harness) -> None:
        state = harness.emulator.state
        gid = state.add_group("team")
        uid = state.add_user("a@example.com")
        ops: list[GroupOperation] = [
            RemoveGroupMember(**common("team", gid), email="a", user_id=uid),
            UnassignGroupRole(**common("team", gid), role="owner", role_id=state.role_id("owner")),
            DeleteGroup(**common("gone", "group_gone")),
        ]
        for op in ops:
            with pytest.raises(NotFoundError):
                harness.target.execute(op)


class TestConflictsAndLostResponses:
    def test_a_taken_name_conflicts_and_the_group_is_found(self, harness: Harness) -> None:
        state = harness.emulator.state
        gid = state.add_group("team-ml")
        op = CreateGroup(**common("team-ml", None))
        with pytest.raises(ConflictError):
            harness.target.execute(op)
        assert harness.target.find_existing(op) == gid

    def test_find_group_prefers_the_exact_name_then_a_unique_case_variant(
        self, harness: Harness
    ) -> None:
        state = harness.emulator.state
        folded = state.add_group("Team-ML")
        assert harness.target.find_existing(CreateGroup(**common("team-ml", None))) == folded
        assert harness.target.find_existing(CreateGroup(**common("other", None))) is None

    def test_a_scim_managed_namesake_is_never_adopted(self, harness: Harness) -> None:
        harness.emulator.state.add_group("Sales", is_scim_managed=True)
        op = CreateGroup(**common("Sales", None))
        with pytest.raises(ConflictError):
            harness.target.execute(op)
        assert harness.target.find_existing(op) is None

    def test_existing_membership_and_assignment_are_found(self, harness: Harness) -> None:
        state = harness.emulator.state
        gid = state.add_group("team")
        uid = state.add_user("a@example.com")
        role = state.role_id("reader")
        add = AddGroupMember(**common("team", gid), email="a", user_id=uid)
        assign = AssignGroupRole(**common("team", gid), role="reader", role_id=role)
        assert harness.target.find_existing(add) is None
        assert harness.target.find_existing(assign) is None
        harness.target.execute(add)
        harness.target.execute(assign)
        for op in (add, assign):
            with pytest.raises(ConflictError):
                harness.target.execute(op)
            assert harness.target.find_existing(op) == gid
        gone = AddGroupMember(**common("team", "group_gone"), email="a", user_id=uid)
        assert harness.target.find_existing(gone) is None

    @pytest.mark.parametrize("kind", ["reset", "500"])
    def test_a_lost_create_response_is_not_resent_and_is_found(
        self, emulator: OpenAIEmulator, kind: str
    ) -> None:
        emulator.allow_duplicate_group_names = True  # a resend would make a second group
        uid = emulator.state.add_user("a@example.com")
        gid = emulator.state.add_group("existing")
        emulator.faults = Faults(error_rate=1.0, kinds=(kind,), phases=("after",))
        rig = Harness(emulator)
        create = CreateGroup(**common("team-ml", None))
        add = AddGroupMember(**common("existing", gid), email="a", user_id=uid)
        for op in (create, add):
            with pytest.raises(TransientError):
                rig.target.execute(op)
        assert [r.method for r in emulator.writes()] == ["POST", "POST"]
        emulator.faults = Faults()
        created = [g for g in emulator.state.groups() if g["name"] == "team-ml"]
        assert len(created) == 1
        assert rig.target.find_existing(create) == created[0]["id"]
        assert rig.target.find_existing(add) == gid
        rig.target.close()
        rig.check_all()

    def test_idempotent_group_writes_are_retried_through_faults(
        self, emulator: OpenAIEmulator
    ) -> None:
        state = emulator.state
        gid = state.add_group("team")
        emulator.faults = Faults(error_rate=1.0, kinds=("500",), phases=("before",), seed=3)
        rig = Harness(emulator)
        with pytest.raises(TransientError):
            rig.target.execute(RenameGroup(**common("renamed", gid), previous_name="team"))
        assert [r.method for r in emulator.writes()] == ["POST"] * FAST_RETRY.max_attempts
        emulator.faults = Faults(error_rate=0.5, kinds=("500", "reset"), seed=5)
        rig.target.execute(RenameGroup(**common("renamed", gid), previous_name="team"))
        assert state.groups()[0]["name"] == "renamed"
        rig.target.close()
        rig.check_all()


# --------------------------------------------------------------------------- inherited roles


def test_roles_inherited_through_groups_stay_with_the_group(
    emulator: OpenAIEmulator,
) -> None:
    """A member's own role list shows roles they inherit from a group; orgsync reads and
    changes the group only, and never calls a member's role endpoints."""
    state = emulator.state
    ada = state.add_user("ada@example.com")
    manager = state.add_role("API Group Manager", ["api.groups.write"])
    auditor = state.add_role("Auditor", ["api.audit.read"])
    gid = state.add_group("team")
    state.add_group_member(gid, ada)
    state.assign_group_role(gid, manager)
    state.assign_user_role(ada, auditor)  # a direct assignment orgsync does not manage
    inherited = {r["name"]: r["assignment_sources"] for r in state.user_role_list(ada)}
    assert inherited["API Group Manager"] == [{"principal_id": gid, "principal_type": "group"}]

    rig = Harness(emulator)
    snapshot = rig.target.read()
    (group,) = snapshot.groups
    assert group.role_ids == {manager}
    assert ada in group.member_ids
    rig.target.execute(
        UnassignGroupRole(**common("team", gid), role="API Group Manager", role_id=manager)
    )
    rig.target.execute(RemoveGroupMember(**common("team", gid), email="ada", user_id=ada))
    rig.target.execute(DeleteGroup(**common("team", gid)))
    rig.target.read()
    rig.target.close()
    rig.check_all()

    touched = [
        (r.request.method, r.request.url.path)
        for r in rig.transport.responses
        if r.request.url.path.startswith(f"{V1}/users/{ada}")
    ]
    assert touched == []
    assert not [r for r in emulator.requests if "/roles" in r.path and "/users/" in r.path]
    # The direct assignment outlives the group, untouched.
    assert [r["name"] for r in state.user_role_list(ada)] == ["reader", "Auditor"]


# --------------------------------------------------------------------------- scripted server


def _scripted(script: Callable[[httpx.Request], httpx.Response]) -> OpenAITarget:
    client = ApiClient(
        "https://api.example.test/v1",
        bearer_token=API_KEY,
        system="scripted",
        retry=RetrySettings(max_attempts=2, base=0.0, cap=0.0),
        user_agent="t",
        transport=httpx.MockTransport(script),
        sleep=lambda _: None,
    )
    return OpenAITarget(client, api_key=API_KEY)


def _page(data: list[dict[str, object]], *, next_cursor: str | None = None) -> httpx.Response:
    body = {"object": "list", "data": data, "has_more": next_cursor is not None}
    return httpx.Response(200, json={**body, "next": next_cursor})


def _group(gid: str, name: str, group_type: str = "group") -> dict[str, object]:
    return {
        "id": gid,
        "name": name,
        "created_at": 1,
        "is_scim_managed": False,
        "group_type": group_type,
    }


def _assigned(rid: str, sources: list[dict[str, str]] | None) -> dict[str, object]:
    return {
        "id": rid,
        "name": rid,
        "permissions": [],
        "resource_type": "api.organization",
        "predefined_role": False,
        "description": None,
        "created_at": None,
        "updated_at": None,
        "created_by": None,
        "created_by_user_obj": None,
        "metadata": None,
        "assignment_sources": sources,
    }


class TestScriptedServer:
    def _read(self, groups: dict[str, Callable[[str], httpx.Response]]) -> list[TargetGroup]:
        seen: list[httpx.Response] = []

        def script(request: httpx.Request) -> httpx.Response:
            path = request.url.path.removeprefix(V1)
            for suffix, answer in groups.items():
                if path == suffix:
                    response = answer(request.url.params.get("after", ""))
                    break
            else:
                response = _page([])  # legacy lists ignore the extra `next`
            response.request = request
            seen.append(response)
            return response

        target = _scripted(script)
        try:
            snapshot = target.read()
        finally:
            target.close()
            for response in seen:
                if response.request.url.path.startswith(f"{V1}/groups"):
                    check_exchange(response)
        return sorted(snapshot.groups, key=lambda g: g.id)

    def test_tenant_groups_count_as_managed_elsewhere(self) -> None:
        (ours, tenant) = self._read(
            {
                "/groups": lambda _: _page(
                    [_group("g1", "ours"), _group("g2", "tenant", "tenant_group")]
                )
            }
        )
        assert (ours.is_scim_managed, tenant.is_scim_managed) == (False, True)

    def test_only_the_groups_own_role_assignments_are_reported(self) -> None:
        (group,) = self._read(
            {
                "/groups": lambda _: _page([_group("g1", "team")]),
                "/groups/g1/roles": lambda _: _page(
                    [
                        _assigned("role_direct", None),
                        _assigned("role_own", [{"principal_id": "g1", "principal_type": "group"}]),
                        _assigned(
                            "role_elsewhere", [{"principal_id": "g9", "principal_type": "group"}]
                        ),
                    ]
                ),
            }
        )
        assert group.role_ids == {"role_direct", "role_own"}

    def test_a_repeated_group_users_cursor_is_refused(self) -> None:
        user = {"id": "user_1", "name": "A", "email": "a@x.test"}
        with pytest.raises(TransientError, match="repeats cursor"):
            self._read(
                {
                    "/groups": lambda _: _page([_group("g1", "team")]),
                    "/groups/g1/users": lambda _: _page([user], next_cursor="same"),
                }
            )

    def test_group_users_are_read_across_pages_each_once(self) -> None:
        def user(n: int) -> dict[str, object]:
            return {"object": "group.user", "id": f"user_{n}", "name": "", "email": f"{n}@x.test"}

        pages = {
            "": _page([user(1), user(2)], next_cursor="c1"),
            "c1": _page([user(2), user(3)]),
        }
        (group,) = self._read(
            {
                "/groups": lambda _: _page([_group("g1", "team")]),
                "/groups/g1/users": lambda after: pages[after],
            }
        )
        assert group.member_ids == {"user_1", "user_2", "user_3"}

    @pytest.mark.parametrize(
        ("page", "error", "message"),
        [
            (
                {"json": {"data": [{"name": "no id"}], "has_more": False}},
                TargetError,
                r"GET /organization/groups/g1/users: unexpected response shape \(data\.0\.id\)",
            ),
            (
                {"json": {"data": [{"id": "u"}], "has_more": True}},
                TransientError,
                "has_more without a next cursor",
            ),
            ({"content": b"<html>proxy</html>"}, TransientError, "not JSON"),
        ],
    )
    def test_a_bad_group_users_page_is_refused(
        self, page: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        # Not checked against the contract: these pages are the server breaking it.
        def script(request: httpx.Request) -> httpx.Response:
            path = request.url.path.removeprefix(V1)
            if path == "/groups":
                return _page([_group("g1", "team")])
            if path == "/groups/g1/users":
                return httpx.Response(200, **page)
            return _page([])

        target = _scripted(script)
        with pytest.raises(error, match=message):
            target.read()
        target.close()


def test_every_group_is_read_and_the_first_failure_in_order_is_raised() -> None:
    """Groups are read on several threads, as `ThreadPoolExecutor.map` read them: every
    group is asked for, the snapshot keeps the groups' order, and when groups fail the
    error raised is the first failing group's in that order, whichever failed first."""
    names = [f"g{n}" for n in range(12)]
    asked: list[str] = []
    lock = threading.Lock()

    def script(request: httpx.Request, failing: set[str]) -> httpx.Response:
        path = request.url.path.removeprefix(V1)
        if path == "/groups":
            return _page([_group(name, f"team-{name}") for name in names])
        group = path.split("/")[2] if path.startswith("/groups/") else ""
        if group and path.endswith("/users"):
            with lock:
                asked.append(group)
            if group in failing:
                time.sleep(0.05 if group == "g3" else 0.0)  # g9 fails first in time
                return httpx.Response(200, json={"data": [{"name": group}], "has_more": False})
            return _page([{"id": f"user_{group}", "name": "", "email": f"{group}@x.test"}])
        return _page([])

    target = _scripted(lambda request: script(request, set()))
    assert [g.id for g in target.read().groups] == names
    assert [g.member_ids for g in target.read().groups] == [{f"user_{n}"} for n in names]
    target.close()

    asked.clear()
    target = _scripted(lambda request: script(request, {"g3", "g9"}))
    with pytest.raises(TargetError, match="/organization/groups/g3/users"):
        target.read()
    target.close()
    assert sorted(asked) == sorted(names)
