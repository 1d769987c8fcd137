"""Contract tests of the Keycard emulator, over real HTTP.

Every error answer is checked against the spec subset's `Error` and every list against its
`PageInfo` (`tests/targets/keycard_contract.py`); object shapes follow the SDK models
(research/target-apis.md §2.2). The rules the SDKs leave open are pinned as the emulator
module documents them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest

from orgsync.testing.faults import Faults
from orgsync.testing.keycard.emulator import KeycardEmulator
from tests.targets.keycard_contract import check_error, check_page

CLIENT_ID = "sa_contract"
SECRET = "contract-secret-0123456789"


@pytest.fixture
def emulator() -> Iterator[KeycardEmulator]:
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET) as running:
        yield running


def token(base: str, *, basic: bool = True) -> str:
    if basic:
        response = httpx.post(
            f"{base}/service-account-token",
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, SECRET),
        )
    else:  # the Terraform provider sends the credentials as form fields
        response = httpx.post(
            f"{base}/service-account-token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] >= 1
    assert len(body["access_token"].split(".")) == 3  # JWT-shaped
    return str(body["access_token"])


def api(emulator: KeycardEmulator) -> httpx.Client:
    return httpx.Client(
        base_url=f"{emulator.base_url}/organizations/{emulator.state.organization_id}",
        headers={"Authorization": f"Bearer {token(emulator.base_url)}"},
    )


@pytest.mark.parametrize("basic", [True, False])
def test_token_endpoint_accepts_basic_or_form_client_auth(
    emulator: KeycardEmulator, basic: bool
) -> None:
    token(emulator.base_url, basic=basic)
    assert emulator.token_grants == 1


@pytest.mark.parametrize(
    ("data", "auth", "status", "code"),
    [
        ({"grant_type": "client_credentials"}, (CLIENT_ID, "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "password"}, (CLIENT_ID, SECRET), 400, "unsupported_grant_type"),
    ],
)
def test_token_endpoint_refusals_are_spec_errors(
    emulator: KeycardEmulator,
    data: dict[str, str],
    auth: tuple[str, str] | None,
    status: int,
    code: str,
) -> None:
    response = httpx.post(f"{emulator.base_url}/service-account-token", data=data, auth=auth)
    assert response.status_code == status
    assert check_error(response)["code"] == code
    assert emulator.token_grants == 0


def test_expired_missing_and_unknown_tokens_are_401(emulator: KeycardEmulator) -> None:
    org = f"{emulator.base_url}/organizations/{emulator.state.organization_id}/users"
    live = token(emulator.base_url)
    assert httpx.get(org, headers={"Authorization": f"Bearer {live}"}).status_code == 200
    emulator.expire_tokens()
    for headers in ({"Authorization": f"Bearer {live}"}, {}, {"Authorization": "Bearer nope"}):
        response = httpx.get(org, headers=headers)
        assert response.status_code == 401
        check_error(response)
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Checked before routing: a bad token on an unknown path is still a 401.
    assert httpx.get(f"{emulator.base_url}/nowhere").status_code == 401


def test_token_lifetime_is_enforced() -> None:
    # Long enough that a loaded machine still makes the first call within it (0.3 s was
    # not, once, in a 2-core run at load 10).
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET, token_lifetime=2.0) as kc:
        live = token(kc.base_url)
        url = f"{kc.base_url}/organizations/{kc.state.label}/roles"
        assert httpx.get(url, headers={"Authorization": f"Bearer {live}"}).status_code == 200

        time.sleep(2.1)
        response = httpx.get(url, headers={"Authorization": f"Bearer {live}"})
        assert response.status_code == 401
        assert "expired" in check_error(response)["message"]


def test_user_pages_follow_page_info_forwards_and_backwards(emulator: KeycardEmulator) -> None:
    ids = [emulator.state.add_user(f"u{i}@example.com") for i in range(7)]
    with api(emulator) as client:
        first = check_page(client.get("/users", params={"limit": 3}))
        assert [u["id"] for u in first["items"]] == ids[:3]
        assert first["page_info"]["has_next_page"] is True
        assert first["page_info"]["has_previous_page"] is False
        second = check_page(
            client.get("/users", params={"limit": 3, "after": first["page_info"]["end_cursor"]})
        )
        assert [u["id"] for u in second["items"]] == ids[3:6]
        assert second["page_info"]["has_previous_page"] is True
        back = check_page(
            client.get("/users", params={"limit": 3, "before": second["page_info"]["start_cursor"]})
        )
        assert [u["id"] for u in back["items"]] == ids[:3]
        # The cursor outlives the object it names.
        client.delete(f"/users/{ids[5]}").raise_for_status()
        last = check_page(
            client.get("/users", params={"limit": 3, "after": second["page_info"]["end_cursor"]})
        )
        assert [u["id"] for u in last["items"]] == [ids[6]]
        assert last["page_info"]["has_next_page"] is False
        empty = check_page(client.get("/users", params={"after": last["page_info"]["end_cursor"]}))
        assert empty["items"] == []
        assert empty["page_info"]["end_cursor"] is None
        for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"after": "garbage"}):
            check_error(client.get("/users", params=params))


def test_user_shapes_role_and_status_updates(emulator: KeycardEmulator) -> None:
    admin = emulator.state.add_user("admin@example.com", "org_admin")
    member = emulator.state.add_user("m@example.com", "org_member")
    no_email = emulator.state.add_user(None, "org_viewer")
    with api(emulator) as client:
        users = {u["id"]: u for u in check_page(client.get("/users"))["items"]}
        assert set(users[member]) == {
            "id", "created_at", "updated_at", "role", "status", "source", "email",
        }  # fmt: skip
        assert "email" not in users[no_email]  # optional in the SDK model
        updated = client.patch(f"/users/{member}", json={"role": "org_admin", "status": "disabled"})
        assert updated.status_code == 200
        assert (updated.json()["role"], updated.json()["status"]) == ("org_admin", "disabled")
        only_admins = check_page(client.get("/users", params={"role": "org_admin"}))["items"]
        assert {u["id"] for u in only_admins} == {admin, member}
        for body in ({"role": "owner"}, {"status": "suspended"}, {"email": "x@example.com"}):
            assert check_error(client.patch(f"/users/{member}", json=body))["status"] == 400
        # The last active org_admin stays.
        assert (
            check_error(client.patch(f"/users/{admin}", json={"status": "disabled"}))["code"]
            == "last_admin"
        )
        assert check_error(client.delete(f"/users/{admin}"))["code"] == "last_admin"
        assert client.delete(f"/users/{member}").status_code == 204
        assert check_error(client.delete(f"/users/{member}"))["status"] == 404
        assert check_error(client.get(f"/users/{member}"))["code"] == "not_found"


def test_invitations_create_list_revoke(emulator: KeycardEmulator) -> None:
    emulator.state.add_user("member@example.com")
    with api(emulator) as client:
        created = client.post(
            "/invitations", json={"email": "new@example.com", "role": "org_viewer"}
        )
        assert created.status_code == 201
        invitation = created.json()
        assert invitation["status"] == "pending"
        assert invitation["organization_id"] == emulator.state.organization_id
        assert {"expires_at", "created_by", "created_at", "updated_at"} <= set(invitation)
        # A second pending one for the same email (any case) and one for a member: 409.
        for email in ("NEW@example.com", "member@example.com"):
            response = client.post("/invitations", json={"email": email, "role": "org_member"})
            assert check_error(response)["status"] == 409
        # Without a role the SDK documents org_admin.
        default = client.post("/invitations", json={"email": "boss@example.com"})
        assert default.json()["role"] == "org_admin"
        for body in ({"role": "org_member"}, {"email": "x", "role": "org_member"},
                     {"email": "y@example.com", "role": "owner"}):  # fmt: skip
            assert check_error(client.post("/invitations", json=body))["status"] == 400
        assert client.delete(f"/invitations/{invitation['id']}").status_code == 204
        listed = check_page(client.get("/invitations"))["items"]
        revoked = next(i for i in listed if i["id"] == invitation["id"])
        assert revoked["status"] == "revoked"  # DELETE keeps the record, marked revoked
        assert check_error(client.delete(f"/invitations/{invitation['id']}"))["status"] == 404
        # Revoked frees the email for a new invitation.
        again = client.post("/invitations", json={"email": "new@example.com", "role": "org_member"})
        assert again.status_code == 201


def test_expired_and_accepted_invitations(emulator: KeycardEmulator) -> None:
    state = emulator.state
    expired = state.add_invitation("old@example.com", expires_at=state.clock() - 10)
    pending = state.add_invitation("joins@example.com", "org_viewer")
    user_id = state.accept_invitation(pending)
    with api(emulator) as client:
        statuses = {i["id"]: i["status"] for i in check_page(client.get("/invitations"))["items"]}
        assert statuses == {expired: "expired", pending: "accepted"}
        users = check_page(client.get("/users"))["items"]
        assert [(u["id"], u["email"], u["role"]) for u in users] == [
            (user_id, "joins@example.com", "org_viewer")
        ]
        assert check_error(client.delete(f"/invitations/{pending}"))["status"] == 400
        # An expired invitation no longer blocks a new one.
        fresh = client.post("/invitations", json={"email": "old@example.com", "role": "org_member"})
        assert fresh.status_code == 201


def test_roles_catalog_and_organization_label(emulator: KeycardEmulator) -> None:
    with api(emulator) as client:
        every = client.get("/roles").json()["items"]
        assert {r["name"] for r in every} == {
            "org_admin", "org_member", "org_viewer", "zone_manager", "zone_viewer",
        }  # fmt: skip
        assert all(set(r) == {"name", "label", "description", "scope"} for r in every)
        org = client.get("/roles", params={"scope": "organization"}).json()["items"]
        assert [r["name"] for r in org] == ["org_admin", "org_member", "org_viewer"]
        check_error(client.get("/roles", params={"scope": "tenant"}))
        headers = dict(client.headers)
    by_label = httpx.get(
        f"{emulator.base_url}/organizations/{emulator.state.label}/roles", headers=headers
    )
    assert by_label.status_code == 200
    unknown = httpx.get(f"{emulator.base_url}/organizations/nope/users", headers=headers)
    assert check_error(unknown)["code"] == "not_found"
    assert check_error(httpx.get(f"{emulator.base_url}/zones", headers=headers))["status"] == 404


def test_injected_faults_have_the_spec_error_shape(emulator: KeycardEmulator) -> None:
    with api(emulator) as client:
        emulator.faults = Faults(error_rate=1.0, kinds=("500", "429"), seed=4)
        seen = set()
        for _ in range(12):
            response = client.get("/users")
            seen.add(check_error(response)["status"])
        assert seen == {500, 429}
        emulator.faults = Faults()
        assert client.get("/users").status_code == 200
    assert all(r.injected_fault for r in emulator.requests if r.status in (500, 429))


def test_malformed_bodies_are_refused(emulator: KeycardEmulator) -> None:
    with api(emulator) as client:
        response = client.post(
            "/invitations", content=b"[1, 2]", headers={"Content-Type": "application/json"}
        )
        assert check_error(response)["code"] == "invalid_request"
    form = httpx.post(
        f"{emulator.base_url}/service-account-token",
        json={"grant_type": "client_credentials"},
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
        },
    )
    assert check_error(form)["status"] == 400
