"""OpenAITarget against the OpenAI Admin API emulator, over loopback HTTP.

Every exchange the target makes is recorded at the transport and validated against the
vendored OpenAPI subset, so the target cannot drift from the spec unnoticed even where the
emulator is lenient. A last group of tests uses scripted responses for server misbehaviour
the emulator does not produce (contradictory pagination, unknown statuses).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from orgsync.core.errors import (
    ConflictError,
    NotFoundError,
    RequestRejected,
    TargetError,
    TransientError,
)
from orgsync.core.model import Capabilities, EmailKey, InviteStatus, TargetSnapshot
from orgsync.core.plan import Invite, RemoveMember, RevokeInvite, SetRole, SuspendMember
from orgsync.retrying import RetrySettings
from orgsync.targets.http import ApiClient
from orgsync.targets.openai import OpenAITarget, wire
from orgsync.testing.openai.emulator import Faults, OpenAIEmulator, redact_key
from tests.openapi_contract import check_exchange, check_response

API_KEY = "sk-admin-contract-0123456789abcdefXYZ"
FAST_RETRY = RetrySettings(max_attempts=8, max_delay=30.0, base=0.0, cap=0.0)


class RecordingTransport(httpx.BaseTransport):
    """The real network transport, keeping every response (read) for validation."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.responses: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        response.read()  # the client reuses the read body; we keep it for check_exchange
        response.request = request
        self.responses.append(response)
        return response

    def close(self) -> None:
        self._inner.close()


class Harness:
    """An emulator, a target wired to it, and the exchanges between them."""

    def __init__(self, emulator: OpenAIEmulator, *, api_key: str = API_KEY) -> None:
        self.emulator = emulator
        self.transport = RecordingTransport()
        self.statuses: list[int] = []
        self.client = ApiClient(
            emulator.base_url,
            bearer_token=emulator.api_key,
            system="openai-contract",
            timeout=5.0,
            retry=FAST_RETRY,
            user_agent="orgsync-contract-tests",
            transport=self.transport,
            on_response=lambda _system, status: self.statuses.append(status),
            sleep=lambda _seconds: None,
        )
        self.target = OpenAITarget(self.client, api_key=api_key)

    def with_projects(self, projects: list[tuple[str, str]]) -> OpenAITarget:
        return OpenAITarget(self.client, api_key=API_KEY, invite_projects=projects)

    def check_all(self) -> None:
        """Every request and response so far conforms to the spec."""
        assert self.transport.responses, "no exchange was recorded"
        for response in self.transport.responses:
            check_exchange(response)

    def requests(self, method: str, path: str) -> list[httpx.Request]:
        return [
            r.request
            for r in self.transport.responses
            if r.request.method == method and r.request.url.path == f"/v1{path}"
        ]


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


def invite_op(email: str, role: str = "reader", replaces: str | None = None) -> Invite:
    return Invite(
        email=email, role=role, source_id=f"src-{email}", reason="test", replaces_invite_id=replaces
    )


class TestRead:
    @pytest.mark.parametrize("members", [99, 100, 101, 200, 201])
    def test_reads_every_member_across_page_boundaries(
        self, members: int, harness: Harness
    ) -> None:
        """Pages of 100 are followed with after=last_id exactly as long as has_more."""
        state = harness.emulator.state
        for i in range(members - 1):  # the key owner is already a member
            state.add_user(f"user{i:03}@example.com", "reader", name=f"User {i}")
        snapshot = harness.target.read()
        assert sorted(m.id for m in snapshot.members) == sorted(u["id"] for u in state.users())
        pages = harness.requests("GET", "/organization/users")
        assert len(pages) == (members + 99) // 100
        assert all(r.url.params["limit"] == "100" for r in pages)
        assert "after" not in pages[0].url.params
        ids = [u["id"] for u in state.users()]
        assert [r.url.params["after"] for r in pages[1:]] == [
            ids[100 * k - 1] for k in range(1, len(pages))
        ]
        harness.check_all()

    @pytest.mark.parametrize("invites", [100, 101, 200])
    def test_reads_every_invite_across_page_boundaries(
        self, invites: int, harness: Harness
    ) -> None:
        state = harness.emulator.state
        for i in range(invites):
            state.add_invite(f"invitee{i:03}@example.com", "reader")
        snapshot = harness.target.read()
        assert sorted(i.id for i in snapshot.invites) == sorted(i["id"] for i in state.invites())
        assert len(harness.requests("GET", "/organization/invites")) == (invites + 99) // 100
        harness.check_all()

    def test_maps_members_invites_and_roles(self, harness: Harness) -> None:
        """Flags, statuses, expiry (UTC from unix seconds) and the role catalog."""
        state = harness.emulator.state
        ada = state.add_user("Ada@Example.com", "owner", name="Ada")
        bot = state.add_user("bot@example.com", "reader", is_service_account=True)
        scim = state.add_user("scim@example.com", "reader", is_scim_managed=True)
        expiry = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
        pending = state.add_invite("new@example.com", "owner", expires_at=expiry)
        expired = state.add_invite("late@example.com", "reader", status="expired")
        accepted = state.add_invite("done@example.com", "reader", status="accepted")

        snapshot = harness.target.read()
        members = {m.id: m for m in snapshot.members}
        assert members[ada].email == "Ada@Example.com"
        assert members[ada].email_key == "ada@example.com"
        assert members[ada].role == "owner"
        assert members[ada].name == "Ada"
        assert members[bot].is_service_account
        assert not members[bot].is_scim_managed
        assert members[scim].is_scim_managed
        invites = {i.id: i for i in snapshot.invites}
        assert invites[pending].status is InviteStatus.PENDING
        assert invites[pending].role == "owner"
        assert invites[pending].expires_at == datetime(2099, 1, 1, tzinfo=UTC)
        assert invites[expired].status is InviteStatus.EXPIRED
        # Accepted invitations are history: the person is a member, counted once.
        assert accepted not in invites
        assert accepted in {i["id"] for i in harness.emulator.state.invites()}
        assert snapshot.roles.order == ("reader", "owner")
        assert snapshot.roles.privileged == frozenset({"owner"})
        assert snapshot.roles.can_invite_as("owner")
        assert not snapshot.roles.can_invite_as("admin")
        assert harness.requests("GET", "/organization/roles")[0].url.params["limit"] == "1000"
        harness.check_all()

    def test_reads_a_role_catalog_spanning_pages(self, harness: Harness) -> None:
        """The roles list follows the opaque next cursor (here 1000 custom roles + 2)."""
        for i in range(1000):
            harness.emulator.state.add_role(f"custom-{i}", ["api.groups.read"])
        harness.target.read()
        pages = harness.requests("GET", "/organization/roles")
        assert len(pages) == 2
        assert "after" in pages[1].url.params
        harness.check_all()

    def test_capabilities(self, harness: Harness) -> None:
        assert harness.target.capabilities == Capabilities(
            invites=True, create_users=False, suspend=False, roles=True, groups=True
        )


class TestKeyOwner:
    def test_the_key_owner_is_found_among_several_keys(self, harness: Harness) -> None:
        state = harness.emulator.state
        other = state.add_user("other-owner@example.com", "owner")
        state.add_admin_key(redact_key("sk-admin-someone-elses-key-999"), other)
        for i in range(120):  # more keys than one page
            state.add_admin_key(redact_key(f"sk-admin-filler-{i:04}-zzzz"), other)
        snapshot = harness.target.read()
        assert snapshot.key_owner_id == state.key_owner_id
        assert len(harness.requests("GET", "/organization/admin_api_keys")) == 2
        harness.check_all()

    def test_no_matching_key_leaves_the_owner_unknown_with_a_warning(
        self, emulator: OpenAIEmulator
    ) -> None:
        rig = Harness(emulator, api_key="sk-admin-not-the-key-in-use-000")
        with capture_logs() as logs:
            snapshot = rig.target.read()
        rig.target.close()
        assert snapshot.key_owner_id is None
        (warning,) = [e for e in logs if e["event"] == "openai.key_owner.unknown"]
        assert warning["log_level"] == "warning"
        assert warning["reason"] == "no admin key matches"
        assert "sk-admin-not-the-key" not in repr(logs)

    def test_ambiguous_redactions_leave_the_owner_unknown(self, harness: Harness) -> None:
        """Two keys that look alike but belong to different people: protect neither by guess."""
        state = harness.emulator.state
        other = state.add_user("twin@example.com", "owner")
        state.add_admin_key(redact_key(API_KEY), other)
        with capture_logs() as logs:
            assert harness.target.read().key_owner_id is None
        assert any(e.get("reason") == "several admin keys match" for e in logs)

    def test_the_key_never_reaches_logs(self, harness: Harness) -> None:
        with capture_logs() as logs:
            harness.target.read()
        assert API_KEY not in repr(logs)
        assert API_KEY not in repr(harness.target)


class TestInvite:
    def test_invite_sends_projects_explicitly_and_returns_the_id(self, harness: Harness) -> None:
        new_id = harness.target.execute(invite_op("Grace@Example.com", "reader"))
        invite = harness.emulator.state.invite(str(new_id))
        assert invite["email"] == "Grace@Example.com"
        assert invite["role"] == "reader"
        assert invite["status"] == "pending"
        (post,) = harness.requests("POST", "/organization/invites")
        assert post.read() == b'{"email":"Grace@Example.com","role":"reader","projects":[]}'
        harness.check_all()

    def test_configured_projects_go_with_the_invite(self, harness: Harness) -> None:
        target = harness.with_projects([("proj_a", "member"), ("proj_b", "owner")])
        new_id = target.execute(invite_op("hopper@example.com", "owner"))
        assert harness.emulator.state.invite(str(new_id))["projects"] == [
            {"id": "proj_a", "role": "member"},
            {"id": "proj_b", "role": "owner"},
        ]
        harness.check_all()

    def test_replace_deletes_the_old_invite_first(self, harness: Harness) -> None:
        state = harness.emulator.state
        old = state.add_invite("ada@example.com", "reader")
        new_id = harness.target.execute(invite_op("ada@example.com", "owner", replaces=old))
        assert [i["id"] for i in state.invites()] == [new_id]
        assert state.invite(str(new_id))["role"] == "owner"
        methods = [r.request.method for r in harness.transport.responses]
        assert methods == ["DELETE", "POST"]
        harness.check_all()

    def test_replace_of_an_invite_already_gone_still_invites(self, harness: Harness) -> None:
        """404 on the delete of the replaced invite means it is gone: go on."""
        new_id = harness.target.execute(
            invite_op("ada@example.com", "owner", replaces="invite-vanished")
        )
        assert harness.emulator.state.invite(str(new_id))["status"] == "pending"
        assert harness.statuses == [404, 200]
        harness.check_all()

    def test_renewing_an_expired_invite(self, harness: Harness) -> None:
        state = harness.emulator.state
        old = state.add_invite("late@example.com", "reader", status="expired")
        new_id = harness.target.execute(invite_op("late@example.com", "reader", replaces=old))
        assert [i["id"] for i in state.invites()] == [new_id]
        harness.check_all()

    def test_a_duplicate_invite_is_a_conflict_with_the_servers_message(
        self, harness: Harness
    ) -> None:
        harness.emulator.state.add_invite("ada@example.com", "reader")
        with pytest.raises(ConflictError) as raised:
            harness.target.execute(invite_op("ADA@example.com", "reader"))
        assert raised.value.status == 409
        assert "already has a pending invite" in raised.value.message
        assert len(harness.requests("POST", "/organization/invites")) == 1  # never retried
        harness.check_all()

    def test_inviting_a_member_is_a_conflict(self, harness: Harness) -> None:
        harness.emulator.state.add_user("ada@example.com", "reader")
        with pytest.raises(ConflictError, match="already a member"):
            harness.target.execute(invite_op("ada@example.com"))

    def test_an_invalid_role_is_rejected(self, harness: Harness) -> None:
        with pytest.raises(RequestRejected) as raised:
            harness.target.execute(invite_op("ada@example.com", "admin"))
        assert raised.value.status == 400
        assert "'role' must be one of" in raised.value.message
        # The request breaks the spec on purpose: only the answer is checked.
        (response,) = harness.transport.responses
        check_response(response)
        harness.transport.responses.clear()


class TestFindInvite:
    def test_matches_the_normalized_email_of_a_live_invite(self, harness: Harness) -> None:
        state = harness.emulator.state
        for i in range(150):  # the match is on the second page
            state.add_invite(f"filler{i:03}@example.com")
        wanted = state.add_invite("zed@example.com", "owner")
        found = harness.target.find_invite("  ZED@Example.COM ")
        assert found is not None
        assert found.id == wanted
        assert found.role == "owner"
        assert found.status is InviteStatus.PENDING
        harness.check_all()

    def test_expired_and_accepted_invites_are_not_live(self, harness: Harness) -> None:
        state = harness.emulator.state
        state.add_invite("late@example.com", status="expired")
        state.add_invite("done@example.com", status="accepted")
        assert harness.target.find_invite("late@example.com") is None
        assert harness.target.find_invite("done@example.com") is None
        assert harness.target.find_invite("nobody@example.com") is None

    def test_a_pending_invite_past_its_expiry_is_not_live(self, emulator: OpenAIEmulator) -> None:
        """Judged by our clock too, not only by the server's status."""
        emulator.state.add_invite(
            "soon@example.com", expires_at=int(datetime.now(UTC).timestamp()) + 60
        )
        rig = Harness(emulator)
        later = OpenAITarget(
            rig.client, api_key=API_KEY, clock=lambda: datetime.now(UTC) + timedelta(hours=1)
        )
        assert rig.target.find_invite("soon@example.com") is not None
        assert later.find_invite("soon@example.com") is None
        later.close()

    def test_find_existing_wants_the_same_role(self, harness: Harness) -> None:
        wanted = harness.emulator.state.add_invite("ada@example.com", "reader")
        assert harness.target.find_existing(invite_op("Ada@example.com", "reader")) == wanted
        assert harness.target.find_existing(invite_op("ada@example.com", "owner")) is None
        removal = RemoveMember(email="ada@example.com", user_id="user_x", reason="t")
        assert harness.target.find_existing(removal) is None


class TestChanges:
    def test_revoke_deletes_the_invite(self, harness: Harness) -> None:
        state = harness.emulator.state
        invite = state.add_invite("ada@example.com")
        op = RevokeInvite(email="ada@example.com", invite_id=invite, reason="t")
        assert harness.target.execute(op) is None
        assert state.invites() == []
        harness.check_all()

    def test_revoking_an_accepted_invite_is_rejected(self, harness: Harness) -> None:
        state = harness.emulator.state
        invite = state.add_invite("ada@example.com")
        state.accept_invite(invite)
        op = RevokeInvite(email="ada@example.com", invite_id=invite, reason="t")
        with pytest.raises(RequestRejected, match="already been accepted"):
            harness.target.execute(op)
        harness.check_all()

    def test_revoking_a_missing_invite_is_not_found(self, harness: Harness) -> None:
        op = RevokeInvite(email="ada@example.com", invite_id="invite-gone", reason="t")
        with pytest.raises(NotFoundError) as raised:
            harness.target.execute(op)
        assert raised.value.status == 404
        harness.check_all()

    def test_set_role(self, harness: Harness) -> None:
        state = harness.emulator.state
        ada = state.add_user("ada@example.com", "reader")
        op = SetRole(
            email="ada@example.com",
            user_id=ada,
            role="owner",
            previous_role="reader",
            raise_=True,
            reason="t",
        )
        assert harness.target.execute(op) is None
        assert state.user(ada)["role"] == "owner"
        (post,) = harness.requests("POST", f"/organization/users/{ada}")
        assert post.read() == b'{"role":"owner"}'
        harness.check_all()

    def test_demoting_the_last_owner_is_rejected(self, harness: Harness) -> None:
        owner = harness.emulator.state.key_owner_id
        op = SetRole(
            email="key-owner@example.com",
            user_id=owner,
            role="reader",
            previous_role="owner",
            raise_=False,
            reason="t",
        )
        with pytest.raises(RequestRejected, match="last owner"):
            harness.target.execute(op)

    def test_remove_member(self, harness: Harness) -> None:
        state = harness.emulator.state
        ada = state.add_user("ada@example.com", "reader")
        assert harness.target.execute(RemoveMember(email="a", user_id=ada, reason="t")) is None
        assert ada not in {u["id"] for u in state.users()}
        harness.check_all()

    def test_removing_a_missing_member_is_not_found(self, harness: Harness) -> None:
        with pytest.raises(NotFoundError):
            harness.target.execute(RemoveMember(email="a", user_id="user_gone", reason="t"))
        harness.check_all()

    def test_suspend_is_refused_without_a_call(self, harness: Harness) -> None:
        with pytest.raises(RequestRejected, match="cannot suspend"):
            harness.target.execute(SuspendMember(email="a", user_id="user_x", reason="t"))
        assert harness.transport.responses == []


class TestUnderFaults:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_reads_converge_despite_injected_faults(
        self, seed: int, emulator: OpenAIEmulator
    ) -> None:
        """500s, 429s, resets and stalls on 30% of requests: the read still comes back
        complete and identical to a clean read."""
        state = emulator.state
        for i in range(230):
            state.add_user(f"user{i:03}@example.com", "reader")
        for i in range(130):
            state.add_invite(f"invitee{i:03}@example.com", "owner")
        clean = Harness(emulator)
        expected = clean.target.read()
        clean.target.close()

        emulator.faults = Faults(error_rate=0.3, seed=seed, timeout_seconds=0.05)
        faulty = Harness(emulator)
        got = faulty.target.read()
        faulty.target.close()
        assert _comparable(got) == _comparable(expected)
        assert any(f.injected_fault for f in emulator.requests)
        assert 0 in faulty.statuses or any(s >= 500 or s == 429 for s in faulty.statuses)
        # Every complete response, injected errors included, conforms (resets leave none).
        faulty.check_all()

    def test_writes_under_faults_are_idempotent_where_retried(
        self, emulator: OpenAIEmulator
    ) -> None:
        """A DELETE whose response was lost is retried; its 404 then tells it is done."""
        state = emulator.state
        users = [state.add_user(f"u{i}@example.com") for i in range(20)]
        emulator.faults = Faults(error_rate=0.3, seed=11, kinds=("500", "reset"), phases=("after",))
        rig = Harness(emulator)
        outcomes = []
        for user in users:
            try:
                rig.target.execute(RemoveMember(email="x", user_id=user, reason="t"))
                outcomes.append("done")
            except NotFoundError:
                outcomes.append("already gone")
        rig.target.close()
        rig.check_all()
        assert "already gone" in outcomes
        assert {u["id"] for u in state.users()} == {state.key_owner_id}

    def test_a_lost_invite_response_is_not_retried_and_is_found_again(
        self, emulator: OpenAIEmulator
    ) -> None:
        """The invite is created but the connection dies: the client must not resend (that
        would be a duplicate); `find_existing` then finds the invite to adopt."""
        emulator.faults = Faults(error_rate=1.0, kinds=("reset",), phases=("after",))
        rig = Harness(emulator)
        op = invite_op("ada@example.com", "owner")
        with pytest.raises(TransientError):
            rig.target.execute(op)
        assert [r.method for r in emulator.writes()] == ["POST"]
        emulator.faults = Faults()
        (created,) = emulator.state.invites()
        assert rig.target.find_existing(op) == created["id"]
        rig.target.close()
        rig.check_all()


def _comparable(snapshot: TargetSnapshot) -> tuple[object, ...]:
    return (
        sorted(snapshot.members, key=lambda m: m.id),
        sorted(snapshot.invites, key=lambda i: i.id),
        snapshot.roles,
        snapshot.key_owner_id,
    )


# --------------------------------------------------------------------------- scripted server


Script = Callable[[httpx.Request], httpx.Response]


def _list(data: list[dict[str, object]], *, has_more: bool, **extra: object) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": data, "has_more": has_more, **extra})


def _user(uid: str) -> dict[str, object]:
    return {"object": "organization.user", "id": uid, "email": f"{uid}@x.test", "added_at": 1}


def _scripted(script: Script) -> OpenAITarget:
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


def _empty_lists(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/roles"):
        return _list([], has_more=False, next=None)
    return _list([], has_more=False)


class TestMisbehavingServer:
    def test_has_more_with_an_empty_page_is_refused(self) -> None:
        def script(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/users"):
                return _list([], has_more=True)
            return _empty_lists(request)

        target = _scripted(script)
        with pytest.raises(TransientError, match="has_more with an empty page"):
            target.read()
        target.close()

    def test_a_repeated_cursor_is_refused_instead_of_looping(self) -> None:
        calls: list[str | None] = []

        def script(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/users"):
                calls.append(request.url.params.get("after"))
                return _list([_user("user_a")], has_more=True, last_id="user_a")
            return _empty_lists(request)

        target = _scripted(script)
        with pytest.raises(TransientError, match="repeats cursor"):
            target.read()
        target.close()
        assert calls == [None, "user_a"]

    def test_roles_with_has_more_but_no_next_are_refused(self) -> None:
        def script(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/roles"):
                return _list([], has_more=True, next=None)
            return _empty_lists(request)

        target = _scripted(script)
        with pytest.raises(TransientError, match="without a next cursor"):
            target.read()
        target.close()

    def test_an_unknown_invite_status_fails_the_read(self) -> None:
        def script(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/invites"):
                invite: dict[str, object] = {
                    "id": "inv_1",
                    "email": "a@x.test",
                    "role": "reader",
                    "status": "revoked",
                }
                return _list([invite], has_more=False)
            return _empty_lists(request)

        target = _scripted(script)
        with pytest.raises(TargetError, match="unknown status 'revoked'"):
            target.read()
        target.close()

    def test_older_invited_at_and_missing_fields_are_tolerated(self) -> None:
        def script(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/invites"):
                invite = {
                    "id": "inv_1",
                    "email": "a@x.test",
                    "status": "pending",
                    "invited_at": 1700000000,
                    "expires_at": None,
                    "brand_new_field": {"x": 1},
                }
                return _list([invite], has_more=False)
            if request.url.path.endswith("/users"):
                user = {"id": "user_1", "added_at": 1, "email": None, "user": {"email": "n@x.test"}}
                return _list([user], has_more=False)
            return _empty_lists(request)

        target = _scripted(script)
        snapshot = target.read()
        target.close()
        (invite,) = snapshot.invites
        assert invite.role is None
        assert invite.expires_at is None
        assert invite.is_live(datetime.now(UTC))
        (member,) = snapshot.members
        assert member.email == "n@x.test"
        assert member.role is None

    @pytest.mark.parametrize(
        "user",
        [
            {"id": "u", "name": None, "email": "a@x.test", "role": "owner", "user": None},
            {"id": "u", "is_service_account": None, "is_scim_managed": True, "added_at": 3},
            {"id": "u", "name": "", "user": {"name": "Nested", "email": "n@x.test", "id": "x"}},
            {"id": "u", "email": "", "user": {"email": None}, "extra": {"deep": [1, None]}},
            {"id": "u", "is_service_account": "true", "is_scim_managed": 0},
            {"id": "u", "is_service_account": "maybe"},
            {"id": "u", "user": {"email": 5}},
            {"id": "u", "user": []},
            {"id": 5},
            {"name": "no id"},
            [],
        ],
    )
    def test_members_are_read_as_the_user_model_reads_them(self, user: object) -> None:
        """The users list is read into plain dictionaries (`wire.UserFields`), not a `User`
        model each: what one accepts, refuses and reads, the other does too."""
        body = json.dumps(user).encode()
        try:
            model = wire.User.model_validate_json(body)
        except ValidationError:
            with pytest.raises(ValidationError):
                wire.USER_FIELDS.validate_json(body)
            return
        fields = wire.USER_FIELDS.validate_json(body)
        for name in ("id", "name", "email", "role", "is_service_account", "is_scim_managed"):
            assert fields.get(name) == getattr(model, name), name
        nested = fields.get("user")
        assert (nested is None) == (model.user is None)
        if nested is not None and model.user is not None:
            assert nested.get("email") == model.user.email
            assert nested.get("name") == model.user.name

    def test_a_member_s_missing_fields_come_from_the_nested_user(self) -> None:
        def script(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/users"):
                users = [
                    {"id": "u1", "name": "", "email": None, "user": {"name": "N", "email": "n@x"}},
                    {"id": "u2", "name": "Top", "email": "t@x", "user": {"name": "N"}},
                    {"id": "u3", "is_service_account": None, "is_scim_managed": None},
                ]
                return _list(users, has_more=False)
            return _empty_lists(request)

        target = _scripted(script)
        members = {m.id: m for m in target.read().members}
        target.close()
        assert (members["u1"].name, members["u1"].email) == ("N", "n@x")
        assert (members["u2"].name, members["u2"].email) == ("Top", "t@x")
        assert (members["u3"].name, members["u3"].email, members["u3"].role) == ("", None, None)
        assert not members["u3"].is_service_account
        assert not members["u3"].is_scim_managed

    def test_a_key_that_may_not_list_admin_keys_reads_with_a_warning(self) -> None:
        def script(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/admin_api_keys"):
                body = {
                    "error": {"message": "Missing scope", "type": "x", "param": None, "code": None}
                }
                return httpx.Response(403, json=body)
            return _empty_lists(request)

        target = _scripted(script)
        with capture_logs() as logs:
            snapshot = target.read()
        target.close()
        assert snapshot.key_owner_id is None
        assert any(e["event"] == "openai.key_owner.unknown" for e in logs)

    def test_a_delete_that_reports_nothing_deleted_fails(self) -> None:
        def script(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"id": "user_1", "deleted": False})

        target = _scripted(script)
        with pytest.raises(TargetError, match="reports nothing deleted"):
            target.execute(RemoveMember(email="a", user_id="user_1", reason="t"))
        target.close()

    def test_ids_are_quoted_into_one_path_segment(self) -> None:
        seen: list[str] = []

        def script(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.raw_path.decode())
            return httpx.Response(200, json={"id": "x", "deleted": True})

        target = _scripted(script)
        target.execute(RemoveMember(email="a", user_id="../invites/inv_1", reason="t"))
        target.close()
        assert seen == ["/v1/organization/users/..%2Finvites%2Finv_1"]


class TestReadPeople:
    """`read_people`: the named people through the users list's `emails` filter (as the
    spec's repeated array parameter), validated against the spec like every exchange."""

    def test_reads_only_the_named_people_with_one_filtered_request(self, harness: Harness) -> None:
        state = harness.emulator.state
        for i in range(250):
            state.add_user(f"user{i:03}@example.com", "reader")
        state.add_invite("joiner@example.com", "reader")
        state.add_invite("other@example.com", "reader")
        asked = frozenset({EmailKey("user007@example.com"), EmailKey("user123@example.com")})

        snapshot = harness.target.read_people(asked, frozenset())

        assert sorted(m.email_key for m in snapshot.members) == sorted(asked)
        (users,) = harness.requests("GET", "/organization/users")
        assert sorted(users.url.params.get_list("emails")) == sorted(asked)
        assert snapshot.invites == ()  # read only when they can matter: read_invitations
        assert snapshot.groups == ()
        assert not harness.requests("GET", "/organization/invites")
        invitations = harness.target.read_invitations()
        assert {i.email_key for i in invitations} == {"joiner@example.com", "other@example.com"}
        assert snapshot.key_owner_id == state.key_owner_id
        assert "owner" in snapshot.roles.owner_roles
        harness.check_all()

    def test_a_linked_member_is_read_by_id_and_a_gone_one_is_absent(self, harness: Harness) -> None:
        state = harness.emulator.state
        renamed = state.add_user("new-name@example.com", "reader")
        snapshot = harness.target.read_people(
            frozenset({EmailKey("old-name@example.com")}), frozenset({renamed, "user-gone"})
        )
        assert [m.id for m in snapshot.members] == [renamed]
        assert len(harness.requests("GET", f"/organization/users/{renamed}")) == 1
        harness.check_all()

    def test_the_filter_matches_normalized_emails_and_asks_in_batches_of_100(
        self, harness: Harness
    ) -> None:
        state = harness.emulator.state
        state.add_user("Mixed.Case@Example.com", "reader")
        asked = frozenset(EmailKey(f"nobody{i:03}@example.com") for i in range(150)) | {
            EmailKey("mixed.case@example.com")
        }
        snapshot = harness.target.read_people(asked, frozenset())
        assert [m.email for m in snapshot.members] == ["Mixed.Case@Example.com"]
        batches = harness.requests("GET", "/organization/users")
        assert sorted(len(r.url.params.get_list("emails")) for r in batches) == [51, 100]
        harness.check_all()
