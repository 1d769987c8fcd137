"""Red team of the target connectors' reads, and of what a plan built on a wrong read does.

How a wrong read of the organization could hurt an administrator:
- extra invitations or accounts (duplicate e-mails, duplicate users on a SCIM server that
  does not enforce unique userNames) when people who are there are read as absent: a
  200 with an empty or short list (a backend hiccup), a total that under-reports, an
  offset page skipped;
- lost access when people who are gone are read as present, or present ones twice;
- a wrong role change when a member's role is one orgsync cannot rank (a renamed or new
  role) and a demotion passes as a "raise" past the removal gate and the last-owner rule;
- a leaked key when a compromised target redirects to another host;
- a daemon that dies (not a failed run) on a huge or deeply nested body.

Each attempt runs over loopback: the vendor emulators (`orgsync.testing`) or a real SCIM
server, behind `ScimProxy`, whose `tamper` hook rewrites the real server's answer into
the lie. The engine runs in-process on a real file source and SQLite state database.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.types import Receive, Scope, Send

from orgsync.config import Config, parse_config
from orgsync.core.errors import TargetError, TransientError
from orgsync.core.model import EmailKey, Memory, SourceId, TargetSnapshot
from orgsync.core.plan import CreateUser
from orgsync.core.safety import SafetyLimits, check_target_read
from orgsync.engine import Engine
from orgsync.http import lean
from orgsync.results import RunOptions, TargetResult
from orgsync.testing._server import BackgroundServer
from orgsync.testing.keycard.emulator import KeycardEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, directory, holdings, pending_invites_per_email
from tests.coremodels import desired_for, group, invite, member, org, person, snapshot
from tests.targets.cli import KEYCARD_SECRET_ENV, SCIM_TOKEN_ENV
from tests.targets.cli import directory as scim_directory
from tests.targets.scim_servers import TOKEN, Scim2Server, ScimProxy, Tamper, start_scimmy
from tests.targets.test_scim_e2e import Org
from tests.targets.test_scim_target import Server

PEOPLE = 30


def one(results: list[TargetResult]) -> TargetResult:
    (result,) = results
    return result


def write(folder: Path, document: dict[str, Any]) -> None:
    (folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")


def openai_config(folder: Path, url: str, **safety: Any) -> Config:
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [
            {
                "name": "t",
                "type": "openai",
                "base_url": url,
                "api_key_env": KEY_ENV,
                "allow_plaintext": True,
                "default_role": "reader",
                "scope_groups": ["openai-*"],
                "roles": [{"group": "openai-owners", "role": "owner"}],
                "max_attempts": 2,
            }
        ],
        "safety": {"max_removals": 10, **safety},
        "state": {"path": "state.db"},
    }
    return parse_config(document, origin="test", base_dir=folder)


class OpenAIOrg:
    """An OpenAI emulator whose PEOPLE people joined (orgsync invited them, they accepted,
    orgsync linked their member ids), reached through a proxy that can lie."""

    def __init__(self, folder: Path) -> None:
        self.emulator = OpenAIEmulator(api_key=API_KEY)
        self.proxy = ScimProxy(self.emulator.start())
        self.document = directory(PEOPLE)
        write(folder, self.document)
        self.engine = Engine(openai_config(folder, self.proxy.url), environ={KEY_ENV: API_KEY})
        assert one(self.engine.run(RunOptions(dry_run=False))).status == "ok"
        for pending in self.emulator.state.invites():
            if pending["status"] == "pending":
                self.emulator.state.accept_invite(str(pending["id"]))
        assert one(self.engine.run(RunOptions(dry_run=False))).status == "ok"
        self.before = holdings(self.emulator)
        assert len(self.before) == PEOPLE
        self.setup_invites = self.proxy.count("POST", "/invites")

    def invites_sent(self) -> int:
        """Invitations asked for since the organization was set up."""
        return self.proxy.count("POST", "/invites") - self.setup_invites

    def close(self) -> None:
        self.engine.close()
        self.proxy.stop()
        self.emulator.stop()

    def sync(self, **options: Any) -> TargetResult:
        return self.run(dry_run=False, **options)

    def run(self, **options: Any) -> TargetResult:
        return one(self.engine.run(RunOptions(**{"dry_run": False, **options})))

    def unchanged(self) -> None:
        assert holdings(self.emulator) == self.before
        assert all(n == 0 for n in pending_invites_per_email(self.emulator).values())


@pytest.fixture
def openai_org(tmp_path: Path) -> Iterator[OpenAIOrg]:
    org = OpenAIOrg(tmp_path)
    yield org
    org.close()


def _empty_users(
    method: str, path: str, query: str, status: int, body: bytes
) -> tuple[int, bytes] | None:
    if method == "GET" and path.endswith("/organization/users") and status == 200:
        page = json.loads(body)
        return 200, json.dumps(
            {**page, "data": [], "has_more": False, "first_id": None, "last_id": None}
        ).encode()
    return None


def test_an_empty_users_list_from_a_hiccup_invites_nobody_again(openai_org: OpenAIOrg) -> None:
    """Harm: the users list answers 200 with no users (a backend hiccup) while the 30
    people orgsync linked are members; each would be read as gone and invited again."""
    openai_org.proxy.tamper = _empty_users
    for options in ({}, {"incremental": True}, {"dry_run": True}):
        result = openai_org.run(**options)
        assert result.status == "failed", result
        assert "the target's read lacks 30 of the 30 members orgsync linked" in str(result.error)
        assert "--allow-additions 30" in str(result.error)
    assert openai_org.invites_sent() == 0
    openai_org.unchanged()
    # The answer is whole again: nothing to do, nothing held.
    openai_org.proxy.tamper = None
    again = openai_org.sync()
    assert again.status == "ok" and again.plan is not None and not again.plan.operations


def test_members_removed_by_hand_are_invited_again_within_the_limits(
    openai_org: OpenAIOrg,
) -> None:
    """Not a wrong read: an administrator removed a few linked members on the target by
    hand; orgsync invites them again (within the removal limits the read is believed), and
    once invited they no longer count as vanished (their links keep the old member id)."""
    state = openai_org.emulator.state
    (gone,) = [u for u in state.users() if u["email"] == "person1@example.com"]
    state.api_delete_user(str(gone["id"]))
    result = openai_org.sync()
    assert result.status == "ok", result
    assert openai_org.invites_sent() == 1
    assert holdings(openai_org.emulator) == openai_org.before


def test_too_many_members_removed_by_hand_wait_for_allow_additions(openai_org: OpenAIOrg) -> None:
    """Beyond the limits a removal by hand looks like a truncated read: the run fails,
    naming the way out, and the operator lets one run through with --allow-additions."""
    state = openai_org.emulator.state
    for user in [u for u in state.users() if str(u["email"]).startswith("person1")]:
        state.api_delete_user(str(user["id"]))  # person1, person10..19: 11 > max_removals
    result = openai_org.sync()
    assert result.status == "failed", result
    assert "11 of the 30 members orgsync linked" in str(result.error)
    assert openai_org.sync(allow_additions=10).status == "failed"
    assert openai_org.invites_sent() == 0
    lifted = openai_org.sync(allow_additions=11)
    assert lifted.status == "ok", lifted
    assert holdings(openai_org.emulator) == openai_org.before
    after = openai_org.sync()
    assert after.status == "ok" and after.plan is not None and not after.plan.operations


# --------------------------------------------------------------------------- SCIM lists


SCIM_USERS = 12
SCIM_PAGE = 5


@pytest.fixture(params=["scim2-server", "scimmy"])
def scim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "scim2-server":
        scim2: Scim2Server = request.getfixturevalue("scim2")
        running = Server("scim2-server", scim2.tenant())
    else:
        scimmy = start_scimmy(tmp_path / "scimmy")
        running = Server("scimmy", scimmy.url, scimmy.stop)
    for i in range(SCIM_USERS):
        running.direct.post(
            "/Users",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": f"user{i}@example.com",
                "emails": [{"value": f"user{i}@example.com", "primary": True}],
                "active": True,
            },
        ).raise_for_status()
    yield running
    running.close()


def _users_list(rewrite: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]) -> Tamper:
    """A tamper rewriting the /Users list answers (not a filtered search) with `rewrite`
    (the body and the query asked)."""

    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        asked = dict(parse_qsl(query))
        if method != "GET" or not path.endswith("/Users") or status != 200 or "filter" in asked:
            return None
        return status, json.dumps(rewrite(json.loads(body), asked)).encode()

    return tamper


def _read_users(scim: Server) -> set[str]:
    target = scim.target(page=SCIM_PAGE)
    try:
        return {m.email or "" for m in target.read().members}
    finally:
        target.close()


ALL_USERS = {f"user{i}@example.com" for i in range(SCIM_USERS)}


def test_scim_a_total_that_counts_the_page_only_fails_the_read(scim: Server) -> None:
    """Harm: a server reporting each page's size as `totalResults` ended the walk after
    the first page: 7 of 12 users read as absent (created again, never suspended)."""
    scim.proxy.tamper = _users_list(lambda b, _: {**b, "totalResults": len(b["Resources"])})
    with pytest.raises(TargetError, match="goes on past its totalResults"):
        _read_users(scim)


def test_scim_a_total_below_what_a_page_lists_fails_the_read(scim: Server) -> None:
    scim.proxy.tamper = _users_list(lambda b, _: {**b, "totalResults": 3})
    with pytest.raises(TargetError, match="more than totalResults"):
        _read_users(scim)


def test_scim_a_list_without_total_fails_the_read(scim: Server) -> None:
    """Held: `totalResults` is REQUIRED (RFC 7644 §3.4.2); without it the first page
    could be taken for the whole list, and the answer is refused."""
    scim.proxy.tamper = _users_list(
        lambda b, _: {k: v for k, v in b.items() if k != "totalResults"}
    )
    with pytest.raises(TargetError, match="not a valid SCIM ListResponse"):
        _read_users(scim)


def test_scim_a_server_ignoring_start_index_fails_the_read(scim: Server) -> None:
    first = scim.direct.get("/Users", params={"startIndex": 1, "count": SCIM_PAGE}).json()
    scim.proxy.tamper = _users_list(lambda b, _: first)
    with pytest.raises(TransientError, match="listed twice"):
        _read_users(scim)


def test_scim_an_empty_page_before_the_total_fails_the_read(scim: Server) -> None:
    scim.proxy.tamper = _users_list(
        lambda b, asked: {**b, "Resources": []} if asked.get("startIndex") == "6" else b
    )
    with pytest.raises(TransientError, match="empty page after 5 of 12"):
        _read_users(scim)


def test_scim_a_duplicate_within_a_page_fails_the_read(scim: Server) -> None:
    scim.proxy.tamper = _users_list(
        lambda b, _: {**b, "Resources": [*b["Resources"], b["Resources"][0]]}
    )
    with pytest.raises(TargetError, match=r"listed twice|more than totalResults"):
        _read_users(scim)


def test_scim_pages_larger_or_smaller_than_asked_still_read_everyone(scim: Server) -> None:
    """Held: a server ignoring `count` (everything at once, `itemsPerPage` > asked) or
    capping it below what was asked (2 per page while more remain) is read whole."""
    everything = scim.direct.get("/Users", params={"startIndex": 1, "count": 100}).json()
    scim.proxy.tamper = _users_list(
        lambda b, asked: everything if asked["startIndex"] == "1" else b
    )
    assert _read_users(scim) == ALL_USERS
    scim.proxy.tamper = _users_list(
        lambda b, _: {**b, "Resources": b["Resources"][:2], "itemsPerPage": 2}
    )
    assert _read_users(scim) == ALL_USERS


def test_scim_a_filter_answered_with_strangers_adopts_nobody(scim: Server) -> None:
    """Harm: after a lost create, `userName eq` answered with another user (or the whole
    list) would adopt a stranger's account for the new person. Held: matched on the
    normalized address, never the first result."""
    stranger = scim.direct.get("/Users", params={"filter": 'userName eq "user3@example.com"'})
    body = stranger.content

    def answer(
        method: str, path: str, query: str, status: int, _: bytes
    ) -> tuple[int, bytes] | None:
        return (200, body) if method == "GET" and "filter" in query else None

    scim.proxy.tamper = answer
    target = scim.target(page=SCIM_PAGE)
    try:
        create = CreateUser(email="new@example.com", name="N", source_id="s-new", reason="t")
        assert target.find_existing(create) is None
        again = CreateUser(email="USER4@example.com", name="U", source_id="s-4", reason="t")
        found = target.find_existing(again)  # the filter lies; the walk finds user4
        assert found is not None
        assert scim.direct.get(f"/Users/{found}").json()["userName"] == "user4@example.com"
    finally:
        target.close()


# --------------------------------------------------------------------------- SCIM runs


SCIM_PEOPLE = 24
TEAMS = {"team-a": list(range(0, 12)), "team-b": list(range(6, 20))}


def scim_config(folder: Path, url: str) -> Config:
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
    return parse_config(document, origin="test", base_dir=folder)


class ScimOrg:
    """A real SCIM server orgsync synced SCIM_PEOPLE people and two teams into, reached
    through a proxy that can lie."""

    def __init__(self, folder: Path, scim: Server) -> None:
        self.scim = scim
        self.org = Org(scim.upstream)
        write(folder, scim_directory(SCIM_PEOPLE, teams=TEAMS))
        self.engine = Engine(scim_config(folder, scim.proxy.url), environ={SCIM_TOKEN_ENV: TOKEN})
        assert one(self.engine.run(RunOptions(dry_run=False))).status == "ok"
        self.users = self.org.users()
        self.groups = {name: g["id"] for name, g in self.org.groups().items()}
        assert len(self.users) == SCIM_PEOPLE and set(self.groups) == set(TEAMS)
        self.setup_posts = scim.proxy.count("POST")

    def close(self) -> None:
        self.engine.close()
        self.org.close()

    def sync(self, **options: Any) -> TargetResult:
        return one(self.engine.run(RunOptions(dry_run=False, **options)))

    def posts(self) -> int:
        return self.scim.proxy.count("POST") - self.setup_posts

    def unchanged(self) -> None:
        assert {n: u["id"] for n, u in self.org.users().items()} == {
            n: u["id"] for n, u in self.users.items()
        }
        assert {name: g["id"] for name, g in self.org.groups().items()} == self.groups


@pytest.fixture
def scim_org(tmp_path: Path, scim_server: Server) -> Iterator[ScimOrg]:
    org = ScimOrg(tmp_path, scim_server)
    yield org
    org.close()


@pytest.fixture(params=["scim2-server", "scimmy"])
def scim_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "scim2-server":
        scim2: Scim2Server = request.getfixturevalue("scim2")
        running = Server("scim2-server", scim2.tenant())
    else:
        scimmy = start_scimmy(tmp_path / "scimmy")
        running = Server("scimmy", scimmy.url, scimmy.stop)
    yield running
    running.close()


def _empty_list(resource: str) -> Tamper:
    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        if method != "GET" or not path.endswith(resource) or status != 200 or "filter" in query:
            return None
        listed = json.loads(body)
        return 200, json.dumps({**listed, "Resources": [], "totalResults": 0}).encode()

    return tamper


def test_scim_an_empty_users_list_creates_nobody_again(scim_org: ScimOrg) -> None:
    """Harm: /Users answers 200 with no users; every linked person would be created
    again (a second account where userName is not unique, a 409 per person elsewhere)."""
    scim_org.scim.proxy.tamper = _empty_list("/Users")
    # A whole read also backs a SCIM target's incremental passes and named runs.
    for options in ({}, {"incremental": True}, {"only_emails": frozenset({"person1@example.com"})}):
        result = scim_org.sync(**options)
        assert result.status == "failed", (options, result)
        assert "lacks 24 of the 24 members orgsync linked" in str(result.error)
    assert scim_org.posts() == 0
    scim_org.scim.proxy.tamper = None
    scim_org.unchanged()
    again = scim_org.sync()
    assert again.status == "ok" and again.plan is not None and not again.plan.operations


def test_scim_an_empty_groups_list_creates_no_second_group(scim_org: ScimOrg) -> None:
    """Harm: /Groups answers 200 with no groups; each mirrored group would be created
    again (a duplicate group) and the ones orgsync owns disowned for good."""
    scim_org.scim.proxy.tamper = _empty_list("/Groups")
    result = scim_org.sync()
    assert result.status == "failed", result
    assert "lacks all 2 groups orgsync owns" in str(result.error)
    assert scim_org.posts() == 0
    scim_org.scim.proxy.tamper = None
    again = scim_org.sync()
    assert again.status == "ok" and again.plan is not None and not again.plan.operations
    scim_org.unchanged()


def test_scim_a_group_deleted_by_hand_is_created_again(scim_org: ScimOrg) -> None:
    """Not a wrong read: one of two owned groups deleted on the server is recreated."""
    scim_org.org.http.delete(f"/Groups/{scim_org.groups['team-a']}").raise_for_status()
    result = scim_org.sync()
    assert result.status == "ok", result
    assert set(scim_org.org.groups()) == set(TEAMS)


# --------------------------------------------------------------------------- roles


KEYCARD_ID = "sa_read_redteam"
KEYCARD_SECRET = "read-redteam-secret-0123456789"


class KeycardOrg:
    """A Keycard emulator whose 4 people joined and were linked (person0 an admin),
    reached through a proxy that can lie."""

    def __init__(self, folder: Path) -> None:
        self.emulator = KeycardEmulator(client_id=KEYCARD_ID, client_secret=KEYCARD_SECRET)
        self.emulator.state.add_user("root@example.com", "org_admin")
        self.proxy = ScimProxy(self.emulator.start())
        write(folder, scim_directory(4))
        config = {
            "source": {"type": "file", "path": "directory.json"},
            "targets": [
                {
                    "name": "k",
                    "type": "keycard",
                    "base_url": self.proxy.url,
                    "client_id": KEYCARD_ID,
                    "client_secret_env": KEYCARD_SECRET_ENV,
                    "organization_id": self.emulator.state.organization_id,
                    "allow_plaintext": True,
                    "scope_groups": ["scim-*"],
                    "default_role": "org_member",
                    "on_removal": "suspend",
                    "max_attempts": 2,
                    "roles": [{"group": "scim-admins", "role": "org_admin"}],
                }
            ],
            "safety": {"max_removals": 10},
            "state": {"path": "state.db"},
        }
        self.engine = Engine(
            parse_config(config, origin="test", base_dir=folder),
            environ={KEYCARD_SECRET_ENV: KEYCARD_SECRET},
        )
        assert self.sync().status == "ok"
        for invitation in self.emulator.state.invitations():
            if invitation["status"] == "pending":
                self.emulator.state.accept_invitation(str(invitation["id"]))
        assert self.sync().status == "ok"
        self.roles = self.held_roles()
        assert self.roles["person0@example.com"] == "org_admin"

    def held_roles(self) -> dict[str, str]:
        return {str(u["email"]): str(u["role"]) for u in self.emulator.state.users()}

    def sync(self, **options: Any) -> TargetResult:
        return one(self.engine.run(RunOptions(dry_run=False, **options)))

    def close(self) -> None:
        self.engine.close()
        self.proxy.stop()
        self.emulator.stop()


@pytest.fixture
def keycard_org(tmp_path: Path) -> Iterator[KeycardOrg]:
    org = KeycardOrg(tmp_path)
    yield org
    org.close()


def _role_renamed(email: str, role: str) -> Tamper:
    """The users list answering `role` for `email` (a role the vendor added or renamed)."""

    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        if method != "GET" or not path.endswith("/users") or status != 200:
            return None
        listed = json.loads(body)
        for user in listed["items"]:
            if user.get("email") == email:
                user["role"] = role
        return status, json.dumps(listed).encode()

    return tamper


@pytest.mark.parametrize("role", ["org_owner", "ORG_ADMIN", "admin"])
def test_keycard_a_member_s_unknown_role_is_left_as_it_is(
    keycard_org: KeycardOrg, role: str
) -> None:
    """Harm: a member listed under a role orgsync cannot rank (the vendor added an owner
    role, renamed one, changed case) ranked below every role, so setting the role the
    rules want was planned as a *raise*: a demotion that passed the removal gate and the
    last-owner rule. Now the member is left as they are, with a warning."""
    keycard_org.proxy.tamper = _role_renamed("person1@example.com", role)
    result = keycard_org.sync()
    assert result.status == "ok", result
    assert result.plan is not None and not result.plan.operations
    assert any("person1@example.com" in w and repr(role) in w for w in result.plan.warnings)
    assert keycard_org.held_roles() == keycard_org.roles
    assert keycard_org.proxy.count("PATCH") == 0


# --------------------------------------------------------------------------- hostile bodies


DEEP = b"[" * 200_000 + b"]" * 200_000
HOSTILE_BODIES = {
    "html": b"<html><body>Bad gateway</body></html>",
    "deep": DEEP,
    "deep-object": b'{"Resources":' * 100_000 + b"1" + b"}" * 100_000,
    "truncated": b'{"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalRe',
}


def _body_on(resource: str, body: bytes) -> Tamper:
    def tamper(
        method: str, path: str, query: str, status: int, _: bytes
    ) -> tuple[int, bytes] | None:
        return (200, body) if method == "GET" and path.endswith(resource) else None

    return tamper


@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
def test_scim_a_hostile_body_fails_the_run_cleanly(scim_org: ScimOrg, kind: str) -> None:
    """Harm: a compromised server answering a body that is not JSON, or JSON nested
    deeper than Python's recursion limit, raised out of the run (ValueError,
    RecursionError) instead of failing it: a daemon worker's run dies without a result,
    and nothing says which target answered what."""
    scim_org.scim.proxy.tamper = _body_on("/Users", HOSTILE_BODIES[kind])
    result = scim_org.sync()
    assert result.status == "failed", result
    assert "GET /Users" in str(result.error)
    assert scim_org.posts() == 0


@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
def test_openai_a_hostile_body_fails_the_run_cleanly(openai_org: OpenAIOrg, kind: str) -> None:
    """Held: the OpenAI lists are parsed by pydantic's parser, whose depth limit is an
    error like any body that is not JSON (transient: retried, then the run fails)."""
    openai_org.proxy.tamper = _body_on("/organization/users", HOSTILE_BODIES[kind])
    result = openai_org.sync()
    assert result.status == "failed", result
    assert "GET /organization/users" in str(result.error)
    assert openai_org.invites_sent() == 0


@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
@pytest.mark.parametrize("resource", ["/users", "/service-account-token"])
def test_keycard_a_hostile_body_fails_the_run_cleanly(
    keycard_org: KeycardOrg, kind: str, resource: str
) -> None:
    """Harm: the token endpoint's answer was parsed by the standard library, so JSON
    nested too deeply raised RecursionError out of the run."""
    keycard_org.engine.close()  # a fresh engine: its token is fetched again
    keycard_org.engine = Engine(keycard_org.engine.config, environ=keycard_org.engine.environ)

    def tamper(
        method: str, path: str, query: str, status: int, _: bytes
    ) -> tuple[int, bytes] | None:
        return (200, HOSTILE_BODIES[kind]) if path.endswith(resource) else None

    keycard_org.proxy.tamper = tamper
    result = keycard_org.sync()
    assert result.status == "failed", result
    assert resource in str(result.error)
    assert keycard_org.held_roles() == keycard_org.roles


# --------------------------------------------------------------------------- redirects


class Elsewhere:
    """Two loopback servers: `redirector` answers every request with `status` and a
    Location on `recorder`, which records the headers of whatever reaches it."""

    def __init__(self, status: int) -> None:
        self.seen: list[dict[str, str]] = []

        async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
            self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async def redirector(scope: Scope, receive: Receive, send: Send) -> None:
            location = f"http://127.0.0.1:{self._recorder.port}{scope['path']}"
            headers = [(b"location", location.encode()), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})

        self._recorder = BackgroundServer(recorder, name="elsewhere")
        self._recorder.start()
        self._redirector = BackgroundServer(redirector, name="redirector")
        self.url = f"http://127.0.0.1:{self._redirector.start()}/v1"

    def stop(self) -> None:
        self._redirector.stop()
        self._recorder.stop()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("kind", ["openai", "scim", "keycard"])
def test_a_redirect_to_another_host_is_not_followed(tmp_path: Path, status: int, kind: str) -> None:
    """Harm: a compromised target (or a DNS name taken over) redirecting to a host of
    the attacker's: following it would send the bearer token, the SCIM token or the
    Keycard client secret (to the token endpoint) there. Held: nothing is followed; the
    run fails naming the redirect."""
    elsewhere = Elsewhere(status)
    try:
        write(tmp_path, scim_directory(3))
        if kind == "openai":
            config = openai_config(tmp_path, elsewhere.url)
        elif kind == "scim":
            config = scim_config(tmp_path, elsewhere.url)
        else:
            document = {
                "source": {"type": "file", "path": "directory.json"},
                "targets": [
                    {
                        "name": "k",
                        "type": "keycard",
                        "base_url": elsewhere.url,
                        "client_id": KEYCARD_ID,
                        "client_secret_env": KEYCARD_SECRET_ENV,
                        "organization_id": "org",
                        "allow_plaintext": True,
                        "scope_groups": ["scim-*"],
                        "default_role": "org_member",
                        "max_attempts": 2,
                    }
                ],
                "state": {"path": "state.db"},
            }
            config = parse_config(document, origin="test", base_dir=tmp_path)
        environ = {KEY_ENV: API_KEY, SCIM_TOKEN_ENV: TOKEN, KEYCARD_SECRET_ENV: KEYCARD_SECRET}
        engine = Engine(config, environ=environ)
        try:
            result = one(engine.run(RunOptions(dry_run=True)))
        finally:
            engine.close()
        assert result.status == "failed", result
        assert str(status) in str(result.error)
        assert elsewhere.seen == []
    finally:
        elsewhere.stop()


# --------------------------------------------------------------------------- odd OpenAI reads


def _users_rewritten(rewrite: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Tamper:
    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        if method != "GET" or not path.endswith("/organization/users") or status != 200:
            return None
        page = json.loads(body)
        return status, json.dumps({**page, "data": rewrite(page["data"])}).encode()

    return tamper


def _person(users: list[dict[str, Any]], n: int) -> dict[str, Any]:
    return next(u for u in users if u["email"] == f"person{n}@example.com")


def _twin(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """person3 listed a second time under another id and another case of the address."""
    twin = {**_person(users, 3), "id": "user-twin", "email": "PERSON3@Example.com"}
    return [*users, twin]


def _repeated(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*users, *users[:5]]


def _null_email(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**u, "email": None} if u["email"] == "person4@example.com" else u for u in users]


def _no_role(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in u.items() if k != "role"} if u["email"] == "person0@example.com" else u
        for u in users
    ]


@pytest.mark.parametrize("lie", [_twin, _repeated, _null_email, _no_role])
def test_openai_odd_members_change_nobody(
    openai_org: OpenAIOrg, lie: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    """Odd but possible reads: one person listed twice (another id, the address in
    another case), a page listing members it already listed, a linked member without
    an address, a member without a role (person0, an owner). None may cost access,
    invite anyone, or change a role: each is a person orgsync already placed."""
    openai_org.proxy.tamper = _users_rewritten(lie)
    result = openai_org.sync()
    assert result.status == "ok", result
    assert result.plan is not None
    assert not result.plan.operations, result.plan.operations
    openai_org.unchanged()
    assert openai_org.proxy.count("DELETE") == 0
    assert openai_org.proxy.count("POST", "/users/") == 0


def test_openai_a_pending_invitation_beside_the_member_revokes_nothing_of_theirs(
    openai_org: OpenAIOrg,
) -> None:
    """A pending invitation for an address whose member exists (a race: invited, then
    joined another way; the address in another case). The member keeps their access."""
    state = openai_org.emulator.state
    state.add_invite("PERSON5@Example.COM", "reader")
    result = openai_org.sync()
    assert result.status == "ok", result
    assert openai_org.invites_sent() == 0
    assert openai_org.proxy.count("DELETE", "/users/") == 0
    assert "person5@example.com" in {str(u["email"]) for u in state.users()}


# --------------------------------------------------------------------------- huge bodies


class Flood:
    """A loopback server (in this process: the test measures the peak of its memory)
    answering every request with a body of `size` bytes: sent as is with a
    Content-Length, chunked without one, or as gzip that inflates to `size`."""

    def __init__(self, size: int, how: str) -> None:
        self.size, self.how = size, how
        # Compressed here, before the test measures memory.
        bomb = gzip.compress(b"[" + b" " * (size - 2) + b"]", compresslevel=9)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            headers = [(b"content-type", b"application/json")]
            if self.how == "gzip":
                body = bomb
                headers += [
                    (b"content-encoding", b"gzip"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            if self.how == "length":
                headers.append((b"content-length", str(self.size).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            block = b" " * (1024 * 1024)
            sent = 0
            while sent < self.size:
                piece = block[: self.size - sent]
                sent += len(piece)
                try:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                except OSError:
                    return  # the client hung up: it refused the body
            await send({"type": "http.response.body", "body": b""})

        self._server = BackgroundServer(app, name="flood")
        self.url = f"http://127.0.0.1:{self._server.start()}/v1"

    def stop(self) -> None:
        self._server.stop()


@pytest.mark.parametrize("how", ["length", "chunked", "gzip"])
@pytest.mark.parametrize("kind", ["openai", "scim"])
def test_a_huge_body_is_refused_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, kind: str
) -> None:
    """Harm: a hostile or broken target answering an endless body (or a small gzip that
    inflates a thousandfold) held all of it in memory: the daemon, and every target's
    sync with it, dies of it. Now a body over `MAX_BODY` (as sent or decoded) fails the
    run, not retried, after reading at most that much. OpenAI goes the lean way, SCIM
    through httpx. The limit is lowered to 4 MiB here; the server offers 64 MiB."""
    monkeypatch.setattr(lean, "MAX_BODY", 4 * 1024 * 1024, raising=False)
    flood = Flood(64 * 1024 * 1024, how)
    try:
        write(tmp_path, scim_directory(3))
        config = (
            openai_config(tmp_path, flood.url)
            if kind == "openai"
            else scim_config(tmp_path, flood.url)
        )
        engine = Engine(config, environ={KEY_ENV: API_KEY, SCIM_TOKEN_ENV: TOKEN})
        tracemalloc.start()
        try:
            result = one(engine.run(RunOptions(dry_run=True)))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            engine.close()
        assert result.status == "failed", result
        assert "exceeds 4194304 bytes" in str(result.error)
        assert peak < 32 * 1024 * 1024, f"held {peak} bytes at the peak"
    finally:
        flood.stop()


# --------------------------------------------------------------------------- cursor lies


def _keycard_users_paged(lie: str) -> Tamper:
    """The Keycard users list claiming a next page: `empty` (a next page with no items
    after it), `repeat` (the same cursor again), `no-cursor` (a next page, no cursor)."""

    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        if method != "GET" or not path.endswith("/users") or status != 200:
            return None
        page = json.loads(body)
        after = dict(parse_qsl(query)).get("after")
        info = {"has_next_page": True, "end_cursor": "c1"}
        if lie == "no-cursor":
            info["end_cursor"] = None
        elif lie == "empty" and after is not None:
            page["items"] = []
            info["end_cursor"] = f"c{len(after) + 1}"
        return status, json.dumps({**page, "page_info": info}).encode()

    return tamper


@pytest.mark.parametrize("lie", ["empty", "repeat", "no-cursor"])
def test_keycard_a_cursor_that_lies_fails_the_read(keycard_org: KeycardOrg, lie: str) -> None:
    """Held: a users list whose cursor repeats, is missing, or leads to empty pages
    forever is refused rather than followed or taken as the whole list."""
    keycard_org.proxy.tamper = _keycard_users_paged(lie)
    result = keycard_org.sync()
    assert result.status == "failed", result
    assert "/users" in str(result.error)
    assert keycard_org.held_roles() == keycard_org.roles


def test_scim_a_zero_based_start_index_fails_the_read(scim: Server) -> None:
    """A server counting `startIndex` from 0 skips the first user of the first page:
    the walk comes one short of the total and is refused (an empty page after 11 of
    12, or on SCIMMY, which answers a startIndex past the end with the last page, a
    user listed twice)."""
    scim.proxy.tamper = _users_list(
        lambda b, asked: scim.direct.get(
            "/Users", params={"startIndex": int(asked["startIndex"]) + 1, "count": SCIM_PAGE}
        ).json()
    )
    with pytest.raises(TransientError, match=r"empty page after 11 of 12|listed twice"):
        _read_users(scim)


# --------------------------------------------------------------------------- races


def test_openai_a_member_deleted_before_their_role_change_fails_that_one_call(
    openai_org: OpenAIOrg, tmp_path: Path
) -> None:
    """A user removed by hand between the read and the role change: the POST answers
    404; that one operation fails with the server's message, nobody else is touched,
    and the next run (which no longer reads them) plans nothing for them."""
    document = json.loads((tmp_path / "directory.json").read_text())
    document["groups"][1]["members"].append("p5")  # person5 becomes an owner
    write(tmp_path, document)
    state = openai_org.emulator.state
    (victim,) = [u for u in state.users() if u["email"] == "person5@example.com"]

    def vanish(method: str, path: str) -> None:
        if method == "POST" and path.endswith(f"/users/{victim['id']}"):
            state.api_delete_user(str(victim["id"]))

    openai_org.proxy.before = vanish
    result = openai_org.sync()
    assert result.status == "failed", result
    assert "404" in str(result.error) and "set_role" in str(result.error)
    openai_org.proxy.before = None
    assert len(holdings(openai_org.emulator)) == PEOPLE - 1
    again = openai_org.sync()
    assert again.status == "ok", again
    assert openai_org.invites_sent() == 1  # person5 is invited back, as an owner


def test_openai_an_invitation_accepted_before_it_is_renewed_invites_nobody_twice(
    openai_org: OpenAIOrg, tmp_path: Path
) -> None:
    """A joiner's pending invitation has the wrong role, so it is replaced (delete, then
    create); the joiner accepts it in between the read and the delete. The delete is
    refused (an accepted invitation), no second invitation is sent, and the next run
    sets the member's role."""
    document = json.loads((tmp_path / "directory.json").read_text())
    document["people"].append({"id": "p99", "email": "joiner@example.com", "name": "J"})
    document["groups"][0]["members"].append("p99")
    document["groups"][1]["members"].append("p99")  # wanted as an owner
    write(tmp_path, document)
    state = openai_org.emulator.state
    invite_id = state.add_invite("joiner@example.com", "reader")

    def accept(method: str, path: str) -> None:
        if method == "DELETE" and path.endswith(f"/invites/{invite_id}"):
            state.accept_invite(invite_id)

    openai_org.proxy.before = accept
    result = openai_org.sync()
    openai_org.proxy.before = None
    assert result.status == "failed", result
    assert openai_org.invites_sent() == 0
    again = openai_org.sync()
    assert again.status == "ok", again
    assert holdings(openai_org.emulator)["joiner@example.com"] == "owner"
    assert pending_invites_per_email(openai_org.emulator).get("joiner@example.com", 0) == 0


# --------------------------------------------------------------------------- targeted reads


def _filter_lie(state: Any, lie: str) -> Tamper:
    """The users list's `emails` filter answered wrongly: `ignored` (every member),
    `stranger` (another member), `nothing` (no member)."""

    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        if method != "GET" or not path.endswith("/organization/users") or "emails" not in query:
            return None
        everyone = state.api_list_users(limit=100, after=None, emails=[])
        if lie == "ignored":
            return 200, json.dumps(everyone).encode()
        data = [u for u in everyone["data"] if u["email"] == "person9@example.com"]
        page = {**everyone, "data": data if lie == "stranger" else [], "has_more": False}
        return 200, json.dumps(page).encode()

    return tamper


@pytest.mark.parametrize("lie", ["ignored", "stranger", "nothing"])
@pytest.mark.parametrize("incremental", [False, True])
def test_openai_a_lying_emails_filter_changes_only_the_named_person(
    openai_org: OpenAIOrg, tmp_path: Path, lie: str, incremental: bool
) -> None:
    """Harm: a targeted read (`sync --only`, a webhook, an incremental pass) asks the
    users list for the named people; a filter answered with everyone, a stranger or
    nobody would change someone not named, or invite the named person again. Held:
    the slice is matched on the normalized address and linked members are read by id."""
    document = json.loads((tmp_path / "directory.json").read_text())
    document["groups"][1]["members"] += ["p3", "p4"]  # both promoted to owner
    write(tmp_path, document)
    openai_org.proxy.tamper = _filter_lie(openai_org.emulator.state, lie)
    options: dict[str, Any] = (
        {"incremental": True}
        if incremental
        else {"only_emails": frozenset({"person3@example.com"})}
    )
    result = openai_org.sync(**options)
    assert result.status == "ok", result
    assert any("emails=" in p for m, p, _ in openai_org.proxy.bodies if m == "GET"), "not read"
    held = holdings(openai_org.emulator)
    assert held["person3@example.com"] == "owner"
    if not incremental:
        assert held["person4@example.com"] == "reader", "not named: the next pass's"
    assert openai_org.invites_sent() == 0
    assert openai_org.proxy.count("DELETE") == 0


def _roles_renamed(names: dict[str, str]) -> Tamper:
    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        if method != "GET" or not path.endswith("/roles") or status != 200:
            return None
        listed = json.loads(body)
        for role in listed["items"]:
            role["name"] = names.get(role["name"], role["name"])
        return status, json.dumps(listed).encode()

    return tamper


def test_keycard_roles_listed_under_unknown_names_fail_the_run(keycard_org: KeycardOrg) -> None:
    """Held: the roles list naming none of the roles orgsync knows (renamed by the
    vendor) fails the run before planning; guessing their order could demote anyone."""
    keycard_org.proxy.tamper = _roles_renamed(
        {"org_admin": "admin", "org_member": "member", "org_viewer": "viewer"}
    )
    result = keycard_org.sync()
    assert result.status == "failed", result
    assert "no organization roles listed" in str(result.error)
    assert keycard_org.proxy.count("PATCH") == 0


def test_keycard_an_extra_unknown_role_changes_nobody(keycard_org: KeycardOrg) -> None:
    """Held: a role orgsync does not know listed (in place of org_viewer, and held by
    person2) is logged, its holder left alone, everyone else reconciled as before."""
    keycard_org.proxy.tamper = _roles_renamed({"org_viewer": "org_owner"})
    renamed = _role_renamed("person2@example.com", "org_owner")
    roles = keycard_org.proxy.tamper

    def both(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        return roles(method, path, query, status, body) or renamed(
            method, path, query, status, body
        )

    keycard_org.proxy.tamper = both
    result = keycard_org.sync()
    assert result.status == "ok", result
    assert result.plan is not None and not result.plan.operations
    assert keycard_org.held_roles() == keycard_org.roles


# --------------------------------------------------------------------------- the check itself


def _memory(*pairs: tuple[str, str, str]) -> Memory:
    """Links of (source id, email, member id)."""
    return Memory(
        managed=frozenset(EmailKey(e) for _, e, _ in pairs),
        links=MappingProxyType({SourceId(s): m for s, _, m in pairs}),
        linked_sources=MappingProxyType({EmailKey(e): SourceId(s) for s, e, _ in pairs}),
    )


FOUR = [(f"p{i}", f"p{i}@example.com", f"u{i}") for i in range(4)]
SOURCE = snapshot(
    *(person(f"p{i}", f"p{i}@example.com") for i in range(4)),
    groups=(group("g", "openai-users", "p0", "p1", "p2", "p3"),),
)


def _check(observed: TargetSnapshot, memory: Memory, **kwargs: Any) -> None:
    check_target_read(
        observed, memory, desired_for(SOURCE, observed), SafetyLimits(max_removals=1), **kwargs
    )


def test_the_check_fails_a_read_lacking_the_linked_members() -> None:
    with pytest.raises(TargetError, match="lacks 2 of the 4 members orgsync linked"):
        _check(org(member("u0", "p0@example.com"), member("u1", "p1@example.com")), _memory(*FOUR))


def test_the_check_believes_a_few_gone_and_the_invited_again() -> None:
    _check(org(*(member(f"u{i}", f"p{i}@example.com") for i in range(3))), _memory(*FOUR))
    again = (invite("i2", "P2@example.com"), invite("i3", "p3@example.com"))
    _check(
        org(member("u0", "p0@example.com"), member("u1", "p1@example.com"), invites=again),
        _memory(*FOUR),
    )


def test_the_check_ignores_the_stale_links_of_leavers() -> None:
    """Links are never pruned: leavers removed by hand must not add up to a refusal."""
    leavers = [(f"x{i}", f"x{i}@example.com", f"v{i}") for i in range(10)]
    _check(org(*(member(f"u{i}", f"p{i}@example.com") for i in range(4))), _memory(*FOUR, *leavers))


def test_the_check_fails_a_read_without_any_linked_member_and_lets_an_allowance_through() -> None:
    empty = org()
    with pytest.raises(TargetError, match="--allow-additions 4"):
        _check(empty, _memory(*FOUR))
    _check(empty, _memory(*FOUR), allowed=4)
    with pytest.raises(TargetError):
        _check(empty, _memory(*FOUR), allowed=3)
    _check(empty, _memory(*FOUR[:1]))  # one person: a removal by hand is as likely


def test_keycard_an_invitation_accepted_before_its_revocation_is_suspended_next(
    keycard_org: KeycardOrg, tmp_path: Path
) -> None:
    """A leaver's pending invitation is revoked; they accept it between the read and
    the DELETE. The revocation cannot undo the join: the next run, which reads them as
    a member, suspends them (on_removal = "suspend"), never leaving them in for good."""
    document = json.loads((tmp_path / "directory.json").read_text())
    joined = json.loads(json.dumps(document))
    joined["people"].append({"id": "p-late", "email": "late@example.com", "name": "L"})
    joined["groups"][0]["members"].append("p-late")
    write(tmp_path, joined)
    assert keycard_org.sync().status == "ok"  # invited
    state = keycard_org.emulator.state
    (invitation,) = [
        i
        for i in state.invitations()
        if i["email"] == "late@example.com" and i["status"] == "pending"
    ]
    write(tmp_path, document)  # and gone from the source again

    def accept(method: str, path: str) -> None:
        if method == "DELETE" and path.endswith(f"/invitations/{invitation['id']}"):
            state.accept_invitation(str(invitation["id"]))

    keycard_org.proxy.before = accept
    first = keycard_org.sync()
    keycard_org.proxy.before = None
    assert first.status == "failed" and "cannot be revoked" in str(first.error), first
    second = keycard_org.sync()
    assert second.status == "ok", second
    (user,) = [u for u in state.users() if u["email"] == "late@example.com"]
    assert user["status"] == "disabled"


def _without_group(name: str) -> Tamper:
    """The /Groups list leaving out the group `name` (a page shifted by a group deleted
    and another added during the walk, with the total unchanged)."""

    def tamper(
        method: str, path: str, query: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        if method != "GET" or not path.endswith("/Groups") or status != 200 or "filter" in query:
            return None
        listed = json.loads(body)
        kept = [g for g in listed["Resources"] if g.get("displayName") != name]
        gone = len(listed["Resources"]) - len(kept)
        total = listed["totalResults"] - gone
        return status, json.dumps({**listed, "Resources": kept, "totalResults": total}).encode()

    return tamper


def test_scim_a_group_the_read_skipped_is_not_created_twice(scim_org: ScimOrg) -> None:
    """Harm: one owned group missing from a read that is otherwise whole (within the
    limits, so believed) was created a second time under the same name, and the one
    orgsync owned disowned for good: its members (leavers too) kept it. Now a creation
    first looks the name up (one filtered GET); a group of that name, which the read
    did not list, is adopted as a 409 would be, never duplicated."""
    scim_org.scim.proxy.tamper = _without_group("team-a")
    result = scim_org.sync()
    assert result.status == "ok", result
    scim_org.scim.proxy.tamper = None
    names = [g["displayName"] for g in scim_org.org._all("/Groups")]
    assert sorted(names) == sorted(TEAMS), names
    again = scim_org.sync()
    assert again.status == "ok" and again.plan is not None and not again.plan.operations
    scim_org.unchanged()
