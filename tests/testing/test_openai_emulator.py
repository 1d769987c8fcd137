"""Contract tests of the OpenAI Admin API emulator, over real HTTP, against the vendor spec.

Every response a test receives goes through `check_exchange` (the `api` fixture enforces
it at teardown), so the emulator cannot drift from the spec subset in tests/data/ without a
failure here. The rules the spec does not state (409 on duplicate invites, last owner,
accepted invites) are pinned as research/target-apis.md §1.5 describes them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orgsync.testing.openai.emulator import Faults, OpenAIEmulator, redact_key
from orgsync.testing.openai.records import INVITE_TTL
from tests.openapi_contract import (
    ContractViolation,
    check_exchange,
    check_request,
    check_response,
    openai_admin_api,
)

KEY = "sk-admin-contract-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Api:
    """httpx client whose every response must be contract-checked before the test ends."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.received: list[httpx.Response] = []
        self.checked: set[int] = set()
        self.client = httpx.Client(
            base_url=base_url,
            headers=AUTH,
            timeout=timeout,
            event_hooks={"response": [self.received.append]},
        )

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send, then validate request and response against the spec."""
        response = self.client.request(method, url, **kwargs)
        check_exchange(response)
        self.checked.add(id(response))
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.call("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.call("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.call("DELETE", url, **kwargs)

    def call_invalid(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """For requests that break the spec on purpose: prove the request check fails,
        then validate the response alone."""
        response = self.client.request(method, url, **kwargs)
        with pytest.raises(ContractViolation):
            check_request(response.request)
        check_response(response)
        self.checked.add(id(response))
        return response

    def close(self) -> None:
        self.client.close()
        unchecked = [r for r in self.received if id(r) not in self.checked and _complete(r)]
        assert not unchecked, f"responses not contract-checked: {unchecked}"


def _complete(response: httpx.Response) -> bool:
    """Whether the body arrived; a reset leaves a response head without one."""
    try:
        response.content  # noqa: B018 - raises if the body was never read
    except httpx.ResponseNotRead:
        return False
    return True


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=KEY) as emulator:
        yield emulator


@pytest.fixture
def api(emu: OpenAIEmulator) -> Iterator[Api]:
    openai_admin_api()  # load the spec before timing-sensitive tests start their clocks
    client = Api(emu.start())
    yield client
    client.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    err: dict[str, Any] = body["error"]
    return err


def list_all_legacy(api: Api, url: str, limit: int) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        body = api.get(url, params=params).json()
        assert body["object"] == "list"
        pages.append(body["data"])
        if body["data"]:
            assert body["first_id"] == body["data"][0]["id"]
            assert body["last_id"] == body["data"][-1]["id"]
        if not body["has_more"]:
            return pages
        params = {"limit": limit, "after": body["last_id"]}


# -- users ----------------------------------------------------------------------------


def test_users_legacy_pagination_250_by_100(emu: OpenAIEmulator, api: Api) -> None:
    for i in range(249):  # plus the key owner: 250 members
        emu.state.add_user(f"user{i:03}@example.test", name=f"User {i}")
    pages = list_all_legacy(api, "/organization/users", 100)
    assert [len(p) for p in pages] == [100, 100, 50]
    ids = [u["id"] for page in pages for u in page]
    assert ids == sorted(ids)
    assert len(set(ids)) == 250
    assert set(ids) == {u["id"] for u in emu.state.users()}

    default = api.get("/organization/users").json()
    assert len(default["data"]) == 20
    assert default["has_more"] is True
    assert len(api.get("/organization/users", params={"limit": 1}).json()["data"]) == 1

    # The cursor is an id: it still works after that member is deleted between pages.
    first = api.get("/organization/users", params={"limit": 100}).json()
    cursor = first["last_id"]
    if cursor == emu.state.key_owner_id:
        cursor = first["data"][-2]["id"]
    assert api.delete(f"/organization/users/{cursor}").status_code == 200
    after = api.get("/organization/users", params={"limit": 100, "after": cursor}).json()
    assert after["data"][0]["id"] > cursor
    assert after["data"][0]["id"] == ids[ids.index(cursor) + 1]


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_users_limit_out_of_range_is_400(api: Api, limit: int) -> None:
    response = api.get("/organization/users", params={"limit": limit})
    assert response.status_code == 400
    err = error_of(response)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "limit"


def test_users_email_filter_accepts_both_spellings(emu: OpenAIEmulator, api: Api) -> None:
    a = emu.state.add_user("a@example.test")
    b = emu.state.add_user("B@Example.test")
    emu.state.add_user("c@example.test")
    plain = api.get("/organization/users", params={"emails": ["a@example.test"]}).json()
    assert [u["id"] for u in plain["data"]] == [a]
    both = api.get(
        "/organization/users",
        params=[("emails[]", "a@example.test"), ("emails[]", "b@example.test")],
    ).json()
    assert {u["id"] for u in both["data"]} == {a, b}
    assert api.get("/organization/users", params={"emails": "nobody@x.test"}).json()["data"] == []


def test_user_get_update_delete(emu: OpenAIEmulator, api: Api) -> None:
    uid = emu.state.add_user("ada@example.test", name="Ada", is_scim_managed=True)
    user = api.get(f"/organization/users/{uid}").json()
    assert user["object"] == "organization.user"
    assert (user["email"], user["role"], user["name"]) == ("ada@example.test", "reader", "Ada")
    assert user["is_scim_managed"] is True
    assert isinstance(user["added_at"], int)

    promoted = api.post(f"/organization/users/{uid}", json={"role": "owner"})
    assert promoted.json()["role"] == "owner"
    assert emu.state.user(uid)["role"] == "owner"

    bad = api.post(f"/organization/users/{uid}", json={"role": "admin"})
    assert bad.status_code == 400
    assert error_of(bad)["param"] == "role"

    reader_id = next(r["id"] for r in emu.state.roles() if r["name"] == "reader")
    demoted = api.post(f"/organization/users/{uid}", json={"role_id": reader_id})
    assert demoted.json()["role"] == "reader"

    deleted = api.delete(f"/organization/users/{uid}").json()
    assert deleted == {"object": "organization.user.deleted", "id": uid, "deleted": True}
    assert api.get(f"/organization/users/{uid}").status_code == 404


def test_last_owner_cannot_be_deleted_or_demoted(emu: OpenAIEmulator, api: Api) -> None:
    owner = emu.state.key_owner_id
    refused = api.delete(f"/organization/users/{owner}")
    assert refused.status_code == 400
    assert error_of(refused)["type"] == "invalid_request_error"
    demote = api.post(f"/organization/users/{owner}", json={"role": "reader"})
    assert demote.status_code == 400
    assert emu.state.user(owner)["role"] == "owner"

    emu.state.add_user("second-owner@example.test", "owner")
    assert api.delete(f"/organization/users/{owner}").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/organization/users/user_missing",
        "/organization/invites/invite-missing",
        "/organization/admin_api_keys/key_missing",
    ],
)
def test_unknown_id_is_404(api: Api, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert error_of(response)["type"] == "invalid_request_error"


def test_unknown_id_404_on_writes(api: Api) -> None:
    assert api.post("/organization/users/user_missing", json={"role": "owner"}).status_code == 404
    assert api.delete("/organization/users/user_missing").status_code == 404
    assert api.delete("/organization/invites/invite-missing").status_code == 404


# -- auth -----------------------------------------------------------------------------


def test_missing_bearer_is_401(api: Api) -> None:
    # The spec requires the bearer, so the request check must fail; the answer must
    # still be a spec-shaped 401.
    response = api.call_invalid("GET", "/organization/users", headers={"Authorization": ""})
    assert response.status_code == 401
    error_of(response)


def test_wrong_bearer_is_401_even_on_unknown_ids(emu: OpenAIEmulator, api: Api) -> None:
    wrong = {"Authorization": "Bearer sk-admin-wrong"}
    for path in ("/organization/users", "/organization/users/user_missing"):
        response = api.get(path, headers=wrong)
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_api_key"
    assert emu.writes() == []


# -- invites --------------------------------------------------------------------------


def test_invite_create_get_and_duplicates(emu: OpenAIEmulator, api: Api) -> None:
    projects = [{"id": "proj_abc", "role": "member"}]
    created = api.post(
        "/organization/invites",
        json={"email": "new@example.test", "role": "owner", "projects": projects},
    ).json()
    assert created["object"] == "organization.invite"
    assert (created["status"], created["role"], created["projects"]) == (
        "pending",
        "owner",
        projects,
    )
    assert created["expires_at"] == created["created_at"] + INVITE_TTL
    assert created["accepted_at"] is None
    assert api.get(f"/organization/invites/{created['id']}").json() == created

    again = api.post("/organization/invites", json={"email": "NEW@example.test", "role": "reader"})
    assert again.status_code == 409
    assert error_of(again)["param"] == "email"

    emu.state.add_user("member@example.test")
    member = api.post(
        "/organization/invites", json={"email": "member@example.test", "role": "reader"}
    )
    assert member.status_code == 409
    assert len(emu.state.invites()) == 1


def test_invite_duplicates_allowed_when_configured() -> None:
    with OpenAIEmulator(api_key=KEY, allow_duplicate_invites=True) as emu:
        api = Api(emu.start())
        try:
            body = {"email": "dup@example.test", "role": "reader"}
            ids = {api.post("/organization/invites", json=body).json()["id"] for _ in range(2)}
            assert len(ids) == 2
        finally:
            api.close()


def test_invite_body_validation(api: Api) -> None:
    bad_role = api.call_invalid("POST", "/organization/invites", json={"email": "x@example.test"})
    assert bad_role.status_code == 400
    assert error_of(bad_role)["param"] == "role"
    bad_email = api.post("/organization/invites", json={"email": "not-an-email", "role": "reader"})
    assert bad_email.status_code == 400
    assert error_of(bad_email)["param"] == "email"


def test_invite_statuses_accept_delete_rules(emu: OpenAIEmulator, api: Api) -> None:
    pending = api.post(
        "/organization/invites", json={"email": "p@example.test", "role": "reader"}
    ).json()["id"]
    accepted = emu.state.add_invite("acc@example.test")
    new_user = emu.state.accept_invite(accepted)
    expired = emu.state.add_invite("exp@example.test", expires_at=int(time.time()) - 60)
    also_expired = emu.state.add_invite("exp2@example.test", status="expired")

    listed = {i["id"]: i for i in api.get("/organization/invites").json()["data"]}
    assert {i: listed[i]["status"] for i in (pending, accepted, expired, also_expired)} == {
        pending: "pending",
        accepted: "accepted",
        expired: "expired",
        also_expired: "expired",
    }
    assert isinstance(listed[accepted]["accepted_at"], int)
    assert api.get(f"/organization/users/{new_user}").json()["email"] == "acc@example.test"

    # An expired invite does not block a new one for the same address.
    renewed = api.post(
        "/organization/invites", json={"email": "exp@example.test", "role": "reader"}
    )
    assert renewed.status_code == 200

    refused = api.delete(f"/organization/invites/{accepted}")
    assert refused.status_code == 400
    assert error_of(refused)["type"] == "invalid_request_error"
    for iid in (pending, expired):
        gone = api.delete(f"/organization/invites/{iid}").json()
        assert gone == {"object": "organization.invite.deleted", "id": iid, "deleted": True}
    remaining = {i["id"] for i in api.get("/organization/invites").json()["data"]}
    assert remaining == {accepted, also_expired, renewed.json()["id"]}


def test_invites_legacy_pagination(emu: OpenAIEmulator, api: Api) -> None:
    for i in range(105):
        emu.state.add_invite(
            f"inv{i}@example.test", status=("pending", "expired", "accepted")[i % 3]
        )
    pages = list_all_legacy(api, "/organization/invites", 100)
    assert [len(p) for p in pages] == [100, 5]
    assert len({i["id"] for p in pages for i in p}) == 105
    assert api.get("/organization/invites", params={"limit": 101}).status_code == 400


# -- roles (opaque cursor) ------------------------------------------------------------


def test_roles_cursor_pagination(emu: OpenAIEmulator, api: Api) -> None:
    for i in range(5):
        emu.state.add_role(f"custom-{i}", ["api.groups.read"], description=None)
    everything = api.get("/organization/roles").json()  # default limit 1000
    names = [r["name"] for r in everything["data"]]
    assert names[:2] == ["owner", "reader"]
    assert everything["has_more"] is False
    assert everything["next"] is None
    assert all(r["predefined_role"] for r in everything["data"][:2])

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = api.get("/organization/roles", params=params).json()
        seen += [r["name"] for r in page["data"]]
        if not page["has_more"]:
            assert page["next"] is None
            break
        assert page["next"] not in {r["id"] for r in everything["data"]}  # opaque
        params = {"limit": 2, "after": page["next"]}
    assert seen == names

    desc = api.get("/organization/roles", params={"order": "desc", "limit": 3}).json()
    assert [r["name"] for r in desc["data"]] == names[::-1][:3]
    rest = api.get("/organization/roles", params={"order": "desc", "after": desc["next"]}).json()
    assert [r["name"] for r in desc["data"] + rest["data"]] == names[::-1]

    empty = api.get("/organization/roles", params={"limit": 0}).json()
    assert (empty["data"], empty["has_more"]) == ([], True)
    assert api.get("/organization/roles", params={"after": empty["next"]}).json()["data"]
    assert len(api.get("/organization/roles", params={"limit": 1000}).json()["data"]) == 7

    bogus = api.get("/organization/roles", params={"after": "not-a-cursor"})
    assert bogus.status_code == 400
    assert error_of(bogus)["param"] == "after"


@pytest.mark.parametrize("limit", [-1, 1001])
def test_roles_limit_out_of_range_is_400(api: Api, limit: int) -> None:
    # The spec bounds this limit itself, so the request check fails too.
    response = api.call_invalid("GET", "/organization/roles", params={"limit": limit})
    assert response.status_code == 400
    assert error_of(response)["param"] == "limit"


# -- admin keys -----------------------------------------------------------------------


def test_admin_api_key_identifies_its_owner(emu: OpenAIEmulator, api: Api) -> None:
    body = api.get("/organization/admin_api_keys").json()
    assert len(body["data"]) == 1
    key = body["data"][0]
    prefix, _, suffix = key["redacted_value"].partition("...")
    assert (prefix, suffix) == (KEY[:8], KEY[-3:])
    assert key["redacted_value"] == redact_key(KEY)
    assert key["owner"]["id"] == emu.state.key_owner_id
    assert key["owner"]["role"] == "owner"
    assert key["owner"]["type"] == "user"
    assert isinstance(key["last_used_at"], int)
    fetched = api.get(f"/organization/admin_api_keys/{key['id']}").json()
    assert fetched["id"] == key["id"]
    assert fetched["owner"] == key["owner"]


# -- rate limit and faults ------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_and_no_side_effect(
    emu: OpenAIEmulator, api: Api
) -> None:
    emu.faults = Faults(rate_limit=2)  # burst of 2, then one request per 0.5 s
    statuses = [api.get("/organization/roles").status_code for _ in range(2)]
    assert statuses == [200, 200]
    limited = api.get("/organization/users")  # undeclared 429: ErrorResponse fallback
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert error_of(limited)["code"] == "rate_limit_exceeded"
    declared = api.get("/organization/roles")  # declared 429: TooManyRequests
    assert declared.status_code == 429
    write = api.post("/organization/invites", json={"email": "rl@example.test", "role": "reader"})
    assert write.status_code == 429
    assert emu.state.invites() == []
    assert [r.injected_fault for r in emu.writes()] == ["rate_limit"]
    assert emu.writes()[0].handled_status is None

    time.sleep(0.6)  # 2 tokens/s: one token back
    assert api.get("/organization/roles").status_code == 200


def _run_fault_sequence(emu: OpenAIEmulator, faults: Faults, n: int) -> list[str]:
    """Fresh fault sequence of n GETs; returns what the client observed for each."""
    emu.faults = faults
    emu.requests.clear()
    api = Api(emu.start(), timeout=3.0)
    seen: list[str] = []
    try:
        for _ in range(n):
            try:
                seen.append(str(api.get("/organization/roles").status_code))
            except httpx.TransportError as exc:
                seen.append(type(exc).__name__)
    finally:
        api.close()
    return seen


def test_fault_kinds_are_reproducible_by_seed(emu: OpenAIEmulator) -> None:
    faults = Faults(error_rate=0.5, seed=11, timeout_seconds=0.1)
    first = _run_fault_sequence(emu, faults, 30)
    first_log = [(r.injected_fault, r.fault_phase) for r in emu.requests]
    second = _run_fault_sequence(emu, Faults(error_rate=0.5, seed=11, timeout_seconds=0.1), 30)
    second_log = [(r.injected_fault, r.fault_phase) for r in emu.requests]
    assert first == second
    assert first_log == second_log

    kinds = {k for k, _ in first_log if k}
    assert kinds == {"500", "429", "reset", "timeout"}
    assert {"before", "after"} <= {p for _, p in first_log if p}
    assert {"200", "500", "429", "504", "RemoteProtocolError"} == set(first)

    other = _run_fault_sequence(emu, Faults(error_rate=0.5, seed=12, timeout_seconds=0.1), 30)
    assert other != first


def test_reset_surfaces_as_remote_protocol_error(emu: OpenAIEmulator, api: Api) -> None:
    emu.faults = Faults(error_rate=1.0, kinds=("reset",))
    with pytest.raises(httpx.RemoteProtocolError):
        api.client.get("/organization/users")
    emu.faults = Faults()
    assert api.get("/organization/users").status_code == 200  # the server survived
    assert emu.requests[0].status is None
    assert emu.requests[0].injected_fault == "reset"


def test_timeout_stalls_then_answers_504(emu: OpenAIEmulator, api: Api) -> None:
    emu.faults = Faults(error_rate=1.0, kinds=("timeout",), timeout_seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        api.client.get("/organization/users", timeout=0.15)
    started = time.monotonic()
    response = api.get("/organization/users")
    assert response.status_code == 504
    assert time.monotonic() - started >= 0.45
    assert error_of(response)["type"] == "server_error"


@pytest.mark.parametrize("kind", ["500", "reset", "timeout"])
def test_after_faults_apply_the_mutation(emu: OpenAIEmulator, api: Api, kind: str) -> None:
    emu.faults = Faults(error_rate=1.0, kinds=(kind,), phases=("after",), timeout_seconds=0.2)
    try:
        response = api.post(
            "/organization/invites", json={"email": "lost@example.test", "role": "reader"}
        )
        assert response.status_code == {"500": 500, "timeout": 504}[kind]
    except httpx.RemoteProtocolError:
        assert kind == "reset"
    emu.faults = Faults()
    # The client saw a failure, yet the invite exists: a blind retry would now get 409.
    assert [i["email"] for i in emu.state.invites()] == ["lost@example.test"]
    write = emu.writes()[0]
    assert (write.injected_fault, write.fault_phase, write.handled_status) == (kind, "after", 200)
    retry = api.post("/organization/invites", json={"email": "lost@example.test", "role": "reader"})
    assert retry.status_code == 409


@pytest.mark.parametrize("kind", ["500", "429", "reset", "timeout"])
def test_before_faults_have_no_side_effect(emu: OpenAIEmulator, api: Api, kind: str) -> None:
    emu.faults = Faults(error_rate=1.0, kinds=(kind,), phases=("before",), timeout_seconds=0.2)
    try:
        response = api.post(
            "/organization/invites", json={"email": "x@example.test", "role": "reader"}
        )
        assert response.status_code == {"500": 500, "429": 429, "timeout": 504}[kind]
    except httpx.RemoteProtocolError:
        assert kind == "reset"
    assert emu.state.invites() == []
    assert emu.writes()[0].fault_phase == "before"
    assert emu.writes()[0].handled_status is None


def test_latency_is_added(emu: OpenAIEmulator, api: Api) -> None:
    emu.faults = Faults(latency=0.2)
    started = time.monotonic()
    assert api.get("/organization/users").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_reads_record_zero_writes(emu: OpenAIEmulator, api: Api) -> None:
    api.get("/organization/users")
    api.get("/organization/invites")
    api.get("/organization/roles")
    assert emu.writes() == []
    assert [(r.method, r.path, r.status) for r in emu.requests] == [
        ("GET", "/v1/organization/users", 200),
        ("GET", "/v1/organization/invites", 200),
        ("GET", "/v1/organization/roles", 200),
    ]


def test_stop_is_prompt_while_a_request_stalls() -> None:
    emu = OpenAIEmulator(
        api_key=KEY, faults=Faults(error_rate=1.0, kinds=("timeout",), timeout_seconds=60)
    )
    base = emu.start()
    outcome: list[object] = []

    def stalled() -> None:
        try:
            outcome.append(
                httpx.get(f"{base}/organization/users", headers=AUTH, timeout=10).status_code
            )
        except httpx.TransportError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=stalled)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 3
    thread.join(5)
    assert outcome  # answered (504) or cut, but not left hanging
    assert emu.start() != ""  # restartable
    emu.stop()


# -- the contract check itself can fail ------------------------------------------------


def test_contract_check_rejects_malformed_responses(
    emu: OpenAIEmulator, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/v1/organization/users", headers=AUTH)
    good_user = {"object": "organization.user", "id": "user_a", "added_at": 1700000000}
    check_exchange(
        httpx.Response(
            200, request=request, json={"object": "list", "data": [good_user], "has_more": False}
        )
    )
    malformed = [
        # a member without the required added_at
        httpx.Response(
            200,
            request=request,
            json={
                "object": "list",
                "data": [{"object": "organization.user", "id": "u"}],
                "has_more": False,
            },
        ),
        # an error body not in the spec's ErrorResponse shape (undeclared status: fallback)
        httpx.Response(404, request=request, json={"error": "not found"}),
        # an error without the required type/param/code
        httpx.Response(400, request=request, json={"error": {"message": "bad"}}),
        # an undeclared success status
        httpx.Response(201, request=request, json={}),
        # a 429 whose Retry-After breaks the spec's integer >= 1
        httpx.Response(
            429,
            request=request,
            headers={"Retry-After": "0"},
            json={"error": {"message": "m", "type": "t", "param": None, "code": None}},
        ),
        # a plain-text error
        httpx.Response(500, request=request, text="Internal Server Error"),
    ]
    for response in malformed:
        with pytest.raises(ContractViolation):
            check_exchange(response)

    # End to end: an emulator that forgot a required field is caught over real HTTP.
    from orgsync.testing.openai import state as openai_state

    original = openai_state.OrgState._render_invite

    def without_status(self: openai_state.OrgState, inv: Any) -> dict[str, Any]:
        rendered = original(self, inv)
        del rendered["status"]
        return rendered

    monkeypatch.setattr(openai_state.OrgState, "_render_invite", without_status)
    response = api.client.post(
        "/organization/invites", json={"email": "z@example.test", "role": "reader"}
    )
    assert response.status_code == 200
    with pytest.raises(ContractViolation, match="status"):
        check_exchange(response)
    api.checked.add(id(response))
