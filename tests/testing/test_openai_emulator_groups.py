"""Contract tests of the emulator's groups, group users, group roles and user role lists.

Every response goes through `check_exchange` against the spec subset in tests/data/ (the
`Api` helper enforces it at teardown). Rules the spec leaves open (SCIM-managed groups
refused with 400, unique names with 409, inherited roles not unassignable from the user)
are pinned as `orgsync.testing.openai.groups` and `openai_user_roles` document them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orgsync.testing.openai.emulator import Faults, OpenAIEmulator
from tests.openapi_contract import openai_admin_api
from tests.testing.test_openai_emulator import KEY, Api, error_of

GROUPS = "/organization/groups"


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture
def api(emu: OpenAIEmulator) -> Iterator[Api]:
    openai_admin_api()
    client = Api(emu.start())
    yield client
    client.close()


def follow(api: Api, url: str, **params: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """Every item of an opaque-cursor list, following `next`; also the page sizes."""
    items: list[dict[str, Any]] = []
    sizes: list[int] = []
    query: dict[str, Any] = dict(params)
    while True:
        body = api.get(url, params=query).json()
        assert body["object"] == "list"
        items += body["data"]
        sizes.append(len(body["data"]))
        if not body["has_more"]:
            assert body["next"] is None
            return items, sizes
        assert body["next"]
        query = {**params, "after": body["next"]}


def members(emu: OpenAIEmulator, count: int) -> list[str]:
    return [emu.state.add_user(f"m{i:04}@example.test", name=f"M {i}") for i in range(count)]


# -- groups ---------------------------------------------------------------------------


def test_group_create_get_rename_delete(emu: OpenAIEmulator, api: Api) -> None:
    created = api.post(GROUPS, json={"name": "Support Team"})
    assert created.status_code == 200
    group = created.json()
    assert group["name"] == "Support Team"
    assert group["group_type"] == "group"
    assert group["is_scim_managed"] is False
    assert group["id"].startswith("group_")
    gid = group["id"]
    assert api.get(f"{GROUPS}/{gid}").json() == group

    renamed = api.post(f"{GROUPS}/{gid}", json={"name": "Escalations"}).json()
    assert renamed == {
        **{k: group[k] for k in ("id", "created_at")},
        "name": "Escalations",
        "is_scim_managed": False,
    }
    assert [g["name"] for g in emu.state.groups()] == ["Escalations"]

    deleted = api.delete(f"{GROUPS}/{gid}").json()
    assert deleted == {"object": "group.deleted", "id": gid, "deleted": True}
    assert emu.state.groups() == []
    for method in ("GET", "DELETE"):
        gone = api.call(method, f"{GROUPS}/{gid}")
        assert gone.status_code == 404
        assert error_of(gone)["param"] == "group_id"
    assert api.post(f"{GROUPS}/{gid}", json={"name": "x"}).status_code == 404


def test_group_names_are_unique_case_insensitively(emu: OpenAIEmulator, api: Api) -> None:
    gid = api.post(GROUPS, json={"name": "Team-ML"}).json()["id"]
    other = api.post(GROUPS, json={"name": "Other"}).json()["id"]
    taken = api.post(GROUPS, json={"name": " team-ml "})
    assert taken.status_code == 409
    assert error_of(taken)["code"] == "group_name_taken"
    clash = api.post(f"{GROUPS}/{other}", json={"name": "TEAM-ML"})
    assert clash.status_code == 409
    # Its own name in another case is no clash.
    assert api.post(f"{GROUPS}/{gid}", json={"name": "team-ml"}).status_code == 200
    assert sorted(g["name"] for g in emu.state.groups()) == ["Other", "team-ml"]
    with pytest.raises(ValueError, match="already exists"):
        emu.state.add_group("TEAM-ML")


def test_duplicate_group_names_allowed_when_configured() -> None:
    with OpenAIEmulator(api_key=KEY, allow_duplicate_group_names=True) as emu:
        api = Api(emu.base_url)
        try:
            first = api.post(GROUPS, json={"name": "twin"}).json()["id"]
            second = api.post(GROUPS, json={"name": "twin"}).json()["id"]
        finally:
            api.close()
        assert first != second
        assert [g["name"] for g in emu.state.groups()] == ["twin", "twin"]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x" * 256}, {"name": 7}])
def test_group_name_outside_the_spec_is_400(api: Api, body: dict[str, Any]) -> None:
    response = api.call_invalid("POST", GROUPS, json=body)
    assert response.status_code == 400
    assert error_of(response)["param"] == "name"


def test_blank_group_name_is_400(emu: OpenAIEmulator, api: Api) -> None:
    # Valid for the spec (one character), refused by the emulator: a name must show.
    response = api.post(GROUPS, json={"name": "   "})
    assert response.status_code == 400
    assert emu.state.groups() == []
    assert api.post(GROUPS, json={"name": "x" * 255}).status_code == 200


def test_groups_paginate_with_opaque_next(emu: OpenAIEmulator, api: Api) -> None:
    ids = [emu.state.add_group(f"g{i:04}") for i in range(2100)]
    everything, sizes = follow(api, GROUPS, limit=1000)
    assert sizes == [1000, 1000, 100]
    assert [g["id"] for g in everything] == ids  # creation order, ascending

    default = api.get(GROUPS).json()
    assert len(default["data"]) == 100
    assert default["has_more"] is True
    assert default["next"] not in ids  # a cursor, not a group id

    desc, _ = follow(api, GROUPS, limit=700, order="desc")
    assert [g["id"] for g in desc] == ids[::-1]

    empty = api.get(GROUPS, params={"limit": 0}).json()
    assert (empty["data"], empty["has_more"]) == ([], True)
    assert (
        api.get(GROUPS, params={"after": empty["next"], "limit": 1}).json()["data"][0]["id"]
        == ids[0]
    )

    # The cursor survives the deletion of the group it stopped at.
    page = api.get(GROUPS, params={"limit": 10}).json()
    assert api.delete(f"{GROUPS}/{ids[9]}").status_code == 200
    after = api.get(GROUPS, params={"limit": 2, "after": page["next"]}).json()
    assert [g["id"] for g in after["data"]] == ids[10:12]


@pytest.mark.parametrize("after", ["not-a-cursor", "group_abc"])
def test_group_cursor_must_be_a_next_value(emu: OpenAIEmulator, api: Api, after: str) -> None:
    emu.state.add_group("a")
    response = api.get(GROUPS, params={"after": after})
    assert response.status_code == 400
    assert error_of(response)["param"] == "after"


@pytest.mark.parametrize("url", [GROUPS, f"{GROUPS}/group_x/users", f"{GROUPS}/group_x/roles"])
@pytest.mark.parametrize("limit", [-1, 1001])
def test_list_limits_are_0_to_1000(api: Api, url: str, limit: int) -> None:
    response = api.call_invalid("GET", url, params={"limit": limit})
    assert response.status_code == 400
    assert error_of(response)["param"] == "limit"


# -- group users ----------------------------------------------------------------------


def test_group_users_add_get_list_remove(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("team")
    ada = emu.state.add_user("ada@example.test", name="Ada")
    bob = emu.state.add_user("bob@example.test", name="Bob", is_service_account=True)

    added = api.post(f"{GROUPS}/{gid}/users", json={"user_id": ada}).json()
    assert added == {"object": "group.user", "user_id": ada, "group_id": gid}
    api.post(f"{GROUPS}/{gid}/users", json={"user_id": bob})
    assert emu.state.groups()[0]["members"] == [ada, bob]

    member = api.get(f"{GROUPS}/{gid}/users/{bob}").json()
    assert member == {
        "id": bob,
        "name": "Bob",
        "email": "bob@example.test",
        "picture": None,
        "is_service_account": True,
        "user_type": "user",
    }
    listed = api.get(f"{GROUPS}/{gid}/users").json()
    # The spec's default order is desc: the newest member first.
    assert listed["data"] == [
        {"id": bob, "name": "Bob", "email": "bob@example.test"},
        {"id": ada, "name": "Ada", "email": "ada@example.test"},
    ]
    ascending = api.get(f"{GROUPS}/{gid}/users", params={"order": "asc"}).json()
    assert [u["id"] for u in ascending["data"]] == [ada, bob]

    again = api.post(f"{GROUPS}/{gid}/users", json={"user_id": ada})
    assert again.status_code == 409
    assert error_of(again)["code"] == "user_already_in_group"

    removed = api.delete(f"{GROUPS}/{gid}/users/{ada}").json()
    assert removed == {"object": "group.user.deleted", "deleted": True}
    assert emu.state.groups()[0]["members"] == [bob]
    for method in ("GET", "DELETE"):
        assert api.call(method, f"{GROUPS}/{gid}/users/{ada}").status_code == 404


def test_group_users_404s(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("team")
    unknown_user = api.post(f"{GROUPS}/{gid}/users", json={"user_id": "user_nobody"})
    assert unknown_user.status_code == 404
    assert error_of(unknown_user)["param"] == "user_id"
    assert api.post(f"{GROUPS}/group_nope/users", json={"user_id": "x"}).status_code == 404
    assert api.get(f"{GROUPS}/group_nope/users").status_code == 404
    missing = api.call_invalid("POST", f"{GROUPS}/{gid}/users", json={})
    assert missing.status_code == 400
    assert error_of(missing)["param"] == "user_id"


def test_group_users_page_past_1000_in_desc_order(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("big")
    ids = members(emu, 2345)
    for uid in ids:
        emu.state.add_group_member(gid, uid)
    listed, sizes = follow(api, f"{GROUPS}/{gid}/users", limit=1000)
    assert sizes == [1000, 1000, 345]
    assert [u["id"] for u in listed] == ids[::-1]
    default = api.get(f"{GROUPS}/{gid}/users").json()
    assert len(default["data"]) == 100
    assert default["data"][0]["id"] == ids[-1]
    # A user id is not a cursor, whatever the parameter's description says.
    by_id = api.get(f"{GROUPS}/{gid}/users", params={"after": ids[-1]})
    assert by_id.status_code == 400


def test_member_leaving_the_organization_leaves_its_groups(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("team")
    uid = emu.state.add_user("gone@example.test")
    emu.state.add_group_member(gid, uid)
    assert api.delete(f"/organization/users/{uid}").status_code == 200
    assert emu.state.groups()[0]["members"] == []
    assert api.get(f"{GROUPS}/{gid}/users").json()["data"] == []


# -- group roles and the catalog ------------------------------------------------------


def test_catalog_lists_predefined_and_custom_roles(emu: OpenAIEmulator, api: Api) -> None:
    custom = emu.state.add_role("API Group Manager", ["api.groups.read", "api.groups.write"])
    project = emu.state.add_role("Project Helper", ["x"], resource_type="api.project")
    roles = api.get("/organization/roles").json()["data"]
    by_name = {r["name"]: r for r in roles}
    assert by_name["owner"]["predefined_role"] is True
    assert by_name["reader"]["predefined_role"] is True
    assert by_name["API Group Manager"]["predefined_role"] is False
    assert by_name["Project Helper"]["resource_type"] == "api.project"
    assert emu.state.role_id("API Group Manager") == custom
    assert emu.state.role_id("Project Helper", resource_type="api.project") == project
    assert emu.state.role_id("owner") == by_name["owner"]["id"]
    with pytest.raises(KeyError):
        emu.state.role_id("Project Helper")


def test_group_roles_assign_get_list_unassign(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("admins")
    custom = emu.state.add_role("API Group Manager", ["api.groups.read"], description="d")
    owner = emu.state.role_id("owner")

    assigned = api.post(f"{GROUPS}/{gid}/roles", json={"role_id": custom}).json()
    assert assigned["object"] == "group.role"
    assert assigned["group"]["object"] == "group"
    assert assigned["group"]["scim_managed"] is False  # the spec's naming here
    assert assigned["role"]["id"] == custom
    api.post(f"{GROUPS}/{gid}/roles", json={"role_id": owner})
    assert emu.state.groups()[0]["roles"] == [custom, owner]

    listed = api.get(f"{GROUPS}/{gid}/roles").json()
    assert [r["id"] for r in listed["data"]] == [custom, owner]
    assert all(r["assignment_sources"] is None for r in listed["data"])
    one = api.get(f"{GROUPS}/{gid}/roles/{custom}").json()
    assert (one["name"], one["description"], one["predefined_role"]) == (
        "API Group Manager",
        "d",
        False,
    )

    again = api.post(f"{GROUPS}/{gid}/roles", json={"role_id": custom})
    assert again.status_code == 409
    assert error_of(again)["code"] == "role_already_assigned"

    gone = api.delete(f"{GROUPS}/{gid}/roles/{custom}").json()
    assert gone == {"object": "group.role.deleted", "deleted": True}
    assert emu.state.groups()[0]["roles"] == [owner]
    for method in ("GET", "DELETE"):
        assert api.call(method, f"{GROUPS}/{gid}/roles/{custom}").status_code == 404


def test_group_roles_refused(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("team")
    project = emu.state.add_role("Project Helper", ["x"], resource_type="api.project")
    unknown = api.post(f"{GROUPS}/{gid}/roles", json={"role_id": "role_nope"})
    assert unknown.status_code == 404
    assert error_of(unknown)["param"] == "role_id"
    wrong_kind = api.post(f"{GROUPS}/{gid}/roles", json={"role_id": project})
    assert wrong_kind.status_code == 400
    assert emu.state.groups()[0]["roles"] == []


def test_group_roles_paginate(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("many-roles")
    ids = [emu.state.add_role(f"r{i:02}", ["p"]) for i in range(25)]
    for rid in ids:
        emu.state.assign_group_role(gid, rid)
    listed, sizes = follow(api, f"{GROUPS}/{gid}/roles", limit=10)
    assert sizes == [10, 10, 5]
    assert [r["id"] for r in listed] == ids


def test_deleting_a_group_drops_its_members_and_roles(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("team")
    uid = emu.state.add_user("m@example.test")
    emu.state.add_group_member(gid, uid)
    emu.state.assign_group_role(gid, emu.state.role_id("owner"))
    assert api.delete(f"{GROUPS}/{gid}").status_code == 200
    roles = api.get(f"/organization/users/{uid}/roles").json()["data"]
    assert [r["name"] for r in roles] == ["reader"]


# -- SCIM-managed groups --------------------------------------------------------------


def test_scim_managed_group_is_read_only(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("Sales", is_scim_managed=True)
    inside = emu.state.add_user("in@example.test")
    outside = emu.state.add_user("out@example.test")
    owner = emu.state.role_id("owner")
    reader = emu.state.role_id("reader")
    emu.state.add_group_member(gid, inside)  # seeding stands for the IdP pushing it
    emu.state.assign_group_role(gid, reader)
    before = emu.state.groups()

    attempts = [
        ("POST", f"{GROUPS}/{gid}", {"name": "Renamed"}),
        ("DELETE", f"{GROUPS}/{gid}", None),
        ("POST", f"{GROUPS}/{gid}/users", {"user_id": outside}),
        ("DELETE", f"{GROUPS}/{gid}/users/{inside}", None),
        ("POST", f"{GROUPS}/{gid}/roles", {"role_id": owner}),
        ("DELETE", f"{GROUPS}/{gid}/roles/{reader}", None),
    ]
    for method, url, body in attempts:
        response = api.call(method, url, json=body)
        assert response.status_code == 400, (method, url)
        err = error_of(response)
        assert (err["type"], err["code"]) == ("invalid_request_error", "group_scim_managed")
        assert "SCIM" in err["message"]
    assert emu.state.groups() == before

    listed = api.get(GROUPS).json()["data"]
    assert listed[0]["is_scim_managed"] is True
    assert [u["id"] for u in api.get(f"{GROUPS}/{gid}/users").json()["data"]] == [inside]
    assert api.get(f"{GROUPS}/{gid}/roles/{reader}").status_code == 200


# -- user role lists ------------------------------------------------------------------


def test_user_roles_show_direct_and_inherited_roles(emu: OpenAIEmulator, api: Api) -> None:
    uid = emu.state.add_user("ada@example.test")
    manager = emu.state.add_role("API Group Manager", ["api.groups.write"])
    auditor = emu.state.add_role("Auditor", ["api.audit.read"])
    g1 = emu.state.add_group("one")
    g2 = emu.state.add_group("two")
    for gid in (g1, g2):
        emu.state.add_group_member(gid, uid)
        emu.state.assign_group_role(gid, manager)
    emu.state.assign_user_role(uid, auditor)
    emu.state.assign_user_role(uid, manager)  # also direct

    roles = api.get(f"/organization/users/{uid}/roles").json()["data"]
    by_name = {r["name"]: r for r in roles}
    assert [r["name"] for r in roles] == ["reader", "API Group Manager", "Auditor"]
    assert by_name["reader"]["assignment_sources"] is None  # the organization role
    assert by_name["Auditor"]["assignment_sources"] is None
    assert by_name["API Group Manager"]["assignment_sources"] == [
        {"principal_id": g1, "principal_type": "group"},
        {"principal_id": g2, "principal_type": "group"},
        {"principal_id": uid, "principal_type": "user"},
    ]
    assert emu.state.user_role_list(uid) == roles
    one = api.get(f"/organization/users/{uid}/roles/{manager}").json()
    assert one == by_name["API Group Manager"]

    paged, sizes = follow(api, f"/organization/users/{uid}/roles", limit=2)
    assert (paged, sizes) == (roles, [2, 1])


def test_user_roles_inherited_cannot_be_unassigned_from_the_user(
    emu: OpenAIEmulator, api: Api
) -> None:
    uid = emu.state.add_user("ada@example.test")
    manager = emu.state.add_role("API Group Manager", ["api.groups.write"])
    gid = emu.state.add_group("team")
    emu.state.add_group_member(gid, uid)
    emu.state.assign_group_role(gid, manager)
    url = f"/organization/users/{uid}/roles"

    inherited = api.delete(f"{url}/{manager}")
    assert inherited.status_code == 400
    assert error_of(inherited)["code"] == "role_inherited"
    base = api.delete(f"{url}/{emu.state.role_id('reader')}")
    assert base.status_code == 400

    direct = api.post(url, json={"role_id": manager}).json()
    assert direct["object"] == "user.role"
    assert (direct["user"]["id"], direct["role"]["id"]) == (uid, manager)
    assert api.post(url, json={"role_id": manager}).status_code == 409
    assert api.post(url, json={"role_id": emu.state.role_id("owner")}).status_code == 400

    # Dropping the direct assignment leaves the inherited one.
    assert api.delete(f"{url}/{manager}").json() == {"object": "user.role.deleted", "deleted": True}
    still = api.get(f"{url}/{manager}").json()
    assert still["assignment_sources"] == [{"principal_id": gid, "principal_type": "group"}]
    assert api.delete(f"{url}/role_nope").status_code == 404
    assert api.get("/organization/users/user_nope/roles").status_code == 404


# -- seeding --------------------------------------------------------------------------


def test_seeding_refuses_what_the_api_would(emu: OpenAIEmulator) -> None:
    gid = emu.state.add_group("team")
    uid = emu.state.add_user("a@example.test")
    project = emu.state.add_role("P", ["x"], resource_type="api.project")
    with pytest.raises(KeyError):
        emu.state.add_group_member("group_nope", uid)
    with pytest.raises(KeyError):
        emu.state.add_group_member(gid, "user_nope")
    emu.state.add_group_member(gid, uid)
    with pytest.raises(ValueError, match="already in group"):
        emu.state.add_group_member(gid, uid)
    with pytest.raises(ValueError, match="not an organization role"):
        emu.state.assign_group_role(gid, project)
    with pytest.raises(ValueError, match="1 to 255"):
        emu.state.add_group("")
    group = emu.state.groups()[0]
    assert set(group) == {
        "id",
        "name",
        "created_at",
        "is_scim_managed",
        "group_type",
        "members",
        "roles",
    }


# -- rate limit -----------------------------------------------------------------------


def test_group_endpoints_declare_429_with_retry_after(emu: OpenAIEmulator, api: Api) -> None:
    gid = emu.state.add_group("team")
    uid = emu.state.add_user("a@example.test")
    emu.faults = Faults(error_rate=1.0, kinds=("429",))
    for method, url, body in [
        ("GET", GROUPS, None),
        ("POST", GROUPS, {"name": "new"}),
        ("POST", f"{GROUPS}/{gid}/users", {"user_id": uid}),
        ("GET", f"{GROUPS}/{gid}/roles", None),
        ("GET", f"/organization/users/{uid}/roles", None),
    ]:
        response = api.call(method, url, json=body)  # validated as the declared 429
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
    assert [g["name"] for g in emu.state.groups()] == ["team"]
    assert emu.state.groups()[0]["members"] == []
