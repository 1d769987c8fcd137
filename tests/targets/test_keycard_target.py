"""Contract tests of `KeycardTarget` against the Keycard emulator over loopback HTTP.

Every call the target makes is recorded by an httpx event hook and each error and list
answer it received is checked against the spec subset, so the client and the emulator are
both held to Keycard's own shapes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from structlog.testing import capture_logs

from orgsync.core.errors import AuthError, RequestRejected, TargetError, TransientError
from orgsync.core.model import InviteStatus
from orgsync.core.plan import (
    CreateGroup,
    Invite,
    RemoveMember,
    RevokeInvite,
    SetRole,
    SuspendMember,
    UpdateUser,
)
from orgsync.retrying import RetrySettings
from orgsync.targets.keycard import KeycardTarget
from orgsync.testing.faults import Faults
from orgsync.testing.keycard.emulator import KeycardEmulator
from tests.targets.keycard_contract import check_error, check_page

CLIENT_ID = "sa_target"
SECRET = "target-secret-0123456789abcdef"
FAST = RetrySettings(max_attempts=4, max_delay=5, base=0.01, cap=0.05)


class Recorder(httpx.HTTPTransport):
    """The real network, with every response kept for the contract checks."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        self.responses.append(response)
        return response

    def check_contract(self) -> None:
        for response in self.responses:
            if response.status_code >= 400:
                check_error(response)
            elif response.request.method == "GET" and response.request.url.path.endswith(
                ("/users", "/invitations")
            ):
                check_page(response)


@pytest.fixture
def emulator() -> Iterator[KeycardEmulator]:
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET) as running:
        running.state.add_user("admin@example.com", "org_admin")
        yield running


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    transport = Recorder()
    yield transport
    transport.check_contract()


def connect(
    emulator: KeycardEmulator,
    transport: httpx.BaseTransport | None = None,
    *,
    secret: str = SECRET,
    organization: str | None = None,
) -> KeycardTarget:
    return KeycardTarget.connect(
        emulator.base_url,
        organization_id=organization or emulator.state.organization_id,
        client_id=CLIENT_ID,
        client_secret=secret,
        system="keycard-test",
        retry=FAST,
        timeout=5,
        transport=transport,
    )


def test_read_walks_every_page_and_maps_users_invitations_roles(
    emulator: KeycardEmulator, recorder: Recorder
) -> None:
    state = emulator.state
    for i in range(230):  # three pages of 100
        state.add_user(f"user{i}@example.com", "org_viewer" if i % 2 else "org_member")
    disabled = state.add_user("gone@example.com", status="disabled")
    no_email = state.add_user(None)
    pending = state.add_invitation("new@example.com", "org_viewer")
    expired = state.add_invitation("late@example.com", expires_at=state.clock() - 60)
    revoked = state.add_invitation("revoked@example.com", status="revoked")
    target = connect(emulator, recorder, organization=state.label)  # the label works too
    snapshot = target.read()
    target.close()
    assert len(snapshot.members) == 233
    by_id = {m.id: m for m in snapshot.members}
    assert by_id[disabled].active is False
    assert by_id[no_email].email is None
    assert sum(1 for m in snapshot.members if m.active) == 232
    invites = {i.id: i for i in snapshot.invites}
    assert set(invites) == {pending, expired}  # revoked means gone
    assert revoked not in invites
    assert invites[pending].status is InviteStatus.PENDING
    expires = invites[pending].expires_at
    assert expires is not None and expires.tzinfo is not None
    assert invites[expired].status is InviteStatus.EXPIRED
    assert snapshot.roles.order == ("org_viewer", "org_member", "org_admin")
    assert snapshot.roles.privileged == {"org_admin"}
    assert snapshot.roles.can_invite_as("org_viewer")
    assert snapshot.key_owner_id is None
    user_pages = [r for r in recorder.responses if r.request.url.path.endswith("/users")]
    assert len(user_pages) == 3
    assert target.capabilities.groups is False and target.capabilities.suspend is True


def test_token_is_cached_and_sent_as_bearer(emulator: KeycardEmulator, recorder: Recorder) -> None:
    target = connect(emulator, recorder)
    for _ in range(3):
        target.read()
    target.close()
    assert emulator.token_grants == 1
    token_calls = [r for r in recorder.responses if r.request.url.path == "/service-account-token"]
    assert len(token_calls) == 1
    request = token_calls[0].request
    assert request.headers["authorization"].startswith("Basic ")
    assert request.content == b"grant_type=client_credentials"
    api_calls = [r for r in recorder.responses if r.request.url.path != "/service-account-token"]
    assert {r.request.headers["authorization"].split()[0] for r in api_calls} == {"Bearer"}


def test_token_refreshed_once_on_401_then_reused(
    emulator: KeycardEmulator, recorder: Recorder
) -> None:
    target = connect(emulator, recorder)
    target.read()
    emulator.expire_tokens()  # revoked server-side while the client still trusts it
    target.read()
    target.close()
    assert emulator.token_grants == 2
    refused = [r for r in recorder.responses if r.status_code == 401]
    assert len(refused) == 1  # one 401, one refresh, then the retried call succeeded


def test_a_token_the_api_keeps_refusing_is_renewed_once_then_an_auth_error() -> None:
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET, token_lifetime=0.0) as kc:
        recorder = Recorder()
        target = connect(kc, recorder)
        with pytest.raises(AuthError) as caught:
            target.read()
        target.close()
        assert caught.value.status == 401
        assert kc.token_grants == 2  # the first token and exactly one renewal
        assert [r.status_code for r in recorder.responses if r.status_code == 401] == [401, 401]


def test_token_renewed_before_expiry_without_a_401() -> None:
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET, token_lifetime=1.0) as kc:
        recorder = Recorder()
        target = connect(kc, recorder)
        target.read()
        time.sleep(1.1)
        target.read()
        target.close()
        assert kc.token_grants == 2
        assert not [r for r in recorder.responses if r.status_code == 401]


def test_wrong_secret_is_an_auth_error_without_the_secret(emulator: KeycardEmulator) -> None:
    target = connect(emulator, secret="wrong-secret-value")
    with capture_logs() as logs, pytest.raises(AuthError) as caught:
        target.read()
    target.close()
    assert caught.value.status == 401
    assert "invalid_client" in str(caught.value)
    assert "wrong-secret-value" not in str(caught.value)
    assert "wrong-secret-value" not in repr(target)
    assert all("wrong-secret-value" not in str(entry) for entry in logs)


def test_token_endpoint_faults_are_transient(emulator: KeycardEmulator) -> None:
    emulator.faults = Faults(error_rate=1.0, kinds=("500",))
    target = connect(emulator)
    with pytest.raises(TransientError):
        target.read()
    emulator.faults = Faults()
    assert target.read().members  # recovers on its own once the endpoint answers
    target.close()


def test_invite_revoke_and_replace(emulator: KeycardEmulator, recorder: Recorder) -> None:
    target = connect(emulator, recorder)
    op = Invite(email="ada@example.com", role="org_member", source_id="s1", reason="test")
    first = target.execute(op)
    assert first is not None
    assert target.find_existing(op) == first
    assert target.find_existing(replace(op, role="org_admin")) is None
    live = target.find_invite("ADA@example.com")
    assert live is not None and live.id == first
    # A second invitation for the same email is a 409 from the API.
    with pytest.raises(TargetError) as conflict:
        target.execute(op)
    assert conflict.value.status == 409
    replaced = target.execute(
        Invite(
            email="ada@example.com",
            role="org_admin",
            source_id="s1",
            replaces_invite_id=first,
            reason="wrong role",
        )
    )
    invitations = {i["id"]: i for i in emulator.state.invitations()}
    assert invitations[first]["status"] == "revoked"
    assert invitations[replaced]["role"] == "org_admin"
    assert invitations[replaced]["status"] == "pending"
    # Replacing an invitation that is gone already still invites.
    target.execute(RevokeInvite(email="ada@example.com", invite_id=replaced, reason="t"))
    renewed = target.execute(
        Invite(
            email="ada@example.com",
            role="org_viewer",
            source_id="s1",
            replaces_invite_id=first,
            reason="renew",
        )
    )
    assert renewed in {i["id"] for i in emulator.state.invitations()}
    target.execute(RevokeInvite(email="ada@example.com", invite_id=renewed, reason="gone"))
    assert target.find_invite("ada@example.com") is None
    target.close()


def test_role_suspend_reenable_and_remove(emulator: KeycardEmulator, recorder: Recorder) -> None:
    user = emulator.state.add_user("bob@example.com", "org_viewer")
    target = connect(emulator, recorder)

    def current() -> dict[str, object]:
        return next(u for u in emulator.state.users() if u["id"] == user)

    target.execute(
        SetRole(
            email="bob@example.com",
            user_id=user,
            role="org_member",
            previous_role="org_viewer",
            raise_=True,
            reason="t",
        )
    )
    assert current()["role"] == "org_member"
    target.execute(SuspendMember(email="bob@example.com", user_id=user, reason="left"))
    assert current()["status"] == "disabled"
    assert next(m for m in target.read().members if m.id == user).active is False
    target.execute(UpdateUser(email="bob@example.com", user_id=user, active=True, reason="back"))
    assert current()["status"] == "active"
    patches = [r for r in recorder.responses if r.request.method == "PATCH"]
    assert [r.request.content for r in patches] == [
        b'{"role":"org_member"}',
        b'{"status":"disabled"}',
        b'{"status":"active"}',
    ]
    target.execute(RemoveMember(email="bob@example.com", user_id=user, reason="gone"))
    assert user not in {u["id"] for u in emulator.state.users()}
    with pytest.raises(TargetError) as missing:
        target.execute(RemoveMember(email="bob@example.com", user_id=user, reason="gone"))
    assert missing.value.status == 404
    target.close()


def test_refusals_carry_the_servers_message(emulator: KeycardEmulator, recorder: Recorder) -> None:
    admin = next(u["id"] for u in emulator.state.users())
    target = connect(emulator, recorder)
    with pytest.raises(RequestRejected) as refused:
        target.execute(SuspendMember(email="admin@example.com", user_id=admin, reason="t"))
    assert "at least one active org_admin" in str(refused.value)
    assert "[last_admin]" in str(refused.value)
    with pytest.raises(TargetError, match="not supported"):
        target.execute(CreateGroup(group="team", reason="t"))
    with pytest.raises(TargetError, match="not a Keycard organization role"):
        target.execute(Invite(email="x@example.com", role="owner", source_id="s", reason="t"))
    target.close()


def test_unknown_statuses_are_refused_not_guessed(emulator: KeycardEmulator) -> None:
    user = emulator.state.add_user("odd@example.com")
    emulator.state._users[user].status = "locked"  # a status this version does not know
    target = connect(emulator)
    with pytest.raises(TargetError, match="unknown status 'locked'"):
        target.read()
    target.close()


def test_inconsistent_pagination_is_refused(emulator: KeycardEmulator) -> None:
    """A server that says there is a next page but gives no cursor must not loop."""

    class NoCursor(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if request.url.path.endswith("/users"):
                body = response.read()
                page = json.loads(body)
                page["page_info"] = {"has_next_page": True, "has_previous_page": False}
                return httpx.Response(200, json=page)
            return response

    target = connect(emulator, NoCursor())
    with pytest.raises(TransientError, match="has_next_page without"):
        target.read()
    target.close()


def test_expiry_is_read_in_utc(emulator: KeycardEmulator) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    emulator.state.add_invitation("soon@example.com", expires_at=soon.timestamp())
    target = connect(emulator)
    (invite,) = target.read().invites
    target.close()
    assert invite.expires_at is not None
    assert abs((invite.expires_at - soon).total_seconds()) < 1
    assert invite.is_live(datetime.now(UTC))
