"""The SCIM source against two real SCIM servers: scim2-server (PyPI) and SCIMMY (npm).

Every read goes over loopback HTTP to a real server; failures are made by a proxy in front
of it (an error status, a reset, a rewritten page) or by killing the server between pages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from orgsync.core.errors import SourceError
from orgsync.core.model import RoleCatalog, SourceSnapshot, screen
from orgsync.core.rules import MembershipRules, desired_state
from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings
from orgsync.sources.scim import ScimSource
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.sources.cli import SOURCE_SECRET_ENV, holdings, orgsync, write_config
from tests.sources.conftest import SCIM_TOKEN
from tests.sources.directory import Directory, make_directory
from tests.sources.servers import (
    Fault,
    FaultProxy,
    Reset,
    Respond,
    Rewrite,
    ServerProcess,
    make_tls,
    start_scim2_server,
    start_scimmy,
)

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

SERVERS = ["scim2-server", "scimmy"]


def scim_source(
    url: str,
    *,
    page_size: int = 100,
    token: str = SCIM_TOKEN,
    max_attempts: int = 3,
    sleep: Callable[[float], None] = lambda _s: None,
    verify: bool | str = True,
) -> ScimSource:
    return ScimSource.connect(
        url,
        token=token,
        credential_key="source.token_env (IDP_TOKEN)",
        page_size=page_size,
        settings=HttpSettings(
            # scim2-server needed over 10 s for a 1000-resource page at load 10.
            timeout=30,
            verify=verify,
            retry=RetrySettings(max_attempts=max_attempts, max_delay=30),
        ),
        sleep=sleep,
    )


def _server(name: str, request: pytest.FixtureRequest) -> tuple[ServerProcess, Directory]:
    if name == "scim2-server":
        return request.getfixturevalue("scim2_server"), request.getfixturevalue("scim2_directory")
    return request.getfixturevalue("scimmy"), request.getfixturevalue("scimmy_directory")


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> tuple[ServerProcess, Directory]:
    return _server(request.param, request)


def check_snapshot(snapshot: SourceSnapshot, server: ServerProcess, directory: Directory) -> None:
    """The snapshot says exactly what the directory holds, in the server's ids."""
    ids = server.ids
    people = {p.id: p for p in snapshot.people}
    assert len(people) == len(snapshot.people) == len(directory.people)
    for person in directory.people:
        read = people[ids[person.key]]  # type: ignore[index]
        assert (read.email, read.name, read.active) == (
            person.email,
            person.display,
            person.active,
        )
        assert read.attributes["externalId"] == f"ext-{person.key}"
    groups = {g.name: g for g in snapshot.groups}
    assert len(groups) == len(snapshot.groups) == len(directory.groups)
    for team in directory.groups:
        read_group = groups[team.name]
        assert read_group.id == ids[team.key]
        # People as members, nested groups as subgroups (never mixed: ids may collide).
        read_members = [*read_group.members, *read_group.subgroups]
        assert set(read_members) == {ids[k] for k in team.members}
        assert len(read_members) == len(team.members)
        assert not set(read_group.subgroups) & {p.id for p in snapshot.people}


# --------------------------------------------------------------------------- complete reads


def test_a_complete_read_has_every_person_group_and_nested_membership(
    server: tuple[ServerProcess, Directory],
) -> None:
    process, directory = server
    source = scim_source(process.url, page_size=100)
    snapshot = source.read()
    check_snapshot(snapshot, process, directory)
    assert sum(not p.active for p in snapshot.people) == directory.inactive > 0
    groups = {g.name: g for g in snapshot.groups}
    ids = process.ids
    # nesting and the cycle come through as subgroups, for the core to flatten and break
    assert ids["cycle-b"] in groups["cycle-a"].subgroups
    assert ids["cycle-a"] in groups["cycle-b"].subgroups
    assert ids["team-ml"] in groups["openai-users"].subgroups
    rules = MembershipRules(scope_groups=("cycle-a",), default_role="reader")
    desired = desired_state(snapshot, rules, RoleCatalog(("reader", "owner")))
    assert set(desired.wanted) == {"user0@example.test", "user1@example.test"}, "cycle broken"
    people, group_count = len(directory.people), len(directory.groups)
    assert source.pages == math.ceil(people / 100) + math.ceil(group_count / 100)


def test_a_group_with_over_1000_members_and_a_server_capped_count_are_read_whole(
    scim2_server: ServerProcess, scim2_directory: Directory
) -> None:
    # scim2-server answers at most 1000 resources a page whatever `count` asks for: the
    # first page's length becomes the page size.
    source = scim_source(scim2_server.url, page_size=1500)
    snapshot = source.read()
    check_snapshot(snapshot, scim2_server, scim2_directory)
    assert source.pages == math.ceil(1500 / 1000) + 1
    big = next(g for g in snapshot.groups if g.name == "big")
    assert len(big.members) == 1100 == len(set(big.members))


@pytest.mark.parametrize(
    ("which", "page_size"),
    [
        *(("scim2-server", n) for n in (499, 500, 501)),  # 1500 people = 3 x 500
        *(("scimmy", n) for n in (299, 300, 301, 599, 600, 601)),  # 600 people
    ],
)
def test_page_boundaries(which: str, page_size: int, request: pytest.FixtureRequest) -> None:
    """Page sizes one below, at and one above a divisor of the number of people."""
    process, directory = _server(which, request)
    source = scim_source(process.url, page_size=page_size)
    check_snapshot(source.read(), process, directory)
    expected = math.ceil(len(directory.people) / page_size)
    expected += math.ceil(len(directory.groups) / page_size)
    assert source.pages == expected


# --------------------------------------------------------------------------- inconsistent pages


def on_request(number: int, fault: Any) -> Callable[[int, str], Any]:
    return lambda n, _path: fault if n == number else None


def _total_changed(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "totalResults": body["totalResults"] + 1}


def _short(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "Resources": body["Resources"][:-1]}


def _restart(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "startIndex": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_total_changed, "totalResults changed from 600 to 601"),
        (_short, "a short page (99 resources) before the end"),
        (_restart, "the server answered startIndex=1"),
    ],
)
def test_an_inconsistent_page_sequence_fails_the_read(
    scimmy: ServerProcess, change: Callable[[dict[str, Any]], dict[str, Any]], message: str
) -> None:
    with FaultProxy(scimmy.url, on_request(3, Rewrite(change))) as proxy:
        with pytest.raises(SourceError, match=re.escape(message)):
            scim_source(proxy.url).read()
        assert len(proxy.paths) == 3, "the read stops at the first inconsistent page"


def test_a_resource_seen_twice_fails_the_read(scimmy: ServerProcess) -> None:
    first: list[dict[str, Any]] = []

    def remember(body: dict[str, Any]) -> dict[str, Any]:
        first.extend(body["Resources"])
        return body

    def repeat(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "Resources": [first[0], *body["Resources"][1:]]}

    plan: dict[int, Fault] = {1: Rewrite(remember), 2: Rewrite(repeat)}
    with FaultProxy(scimmy.url, lambda n, _p: plan.get(n)) as proxy:
        with pytest.raises(SourceError, match="came twice"):
            scim_source(proxy.url).read()


# --------------------------------------------------------------------------- failures


def test_transient_errors_are_retried_honouring_retry_after(scimmy: ServerProcess) -> None:
    plan: dict[int, Fault] = {
        2: Respond(429, {"Retry-After": "2"}),
        4: Respond(503),
        5: Reset(),
    }
    slept: list[float] = []
    with FaultProxy(scimmy.url, lambda n, _p: plan.get(n)) as proxy:
        snapshot = scim_source(proxy.url, max_attempts=3, sleep=slept.append).read()
    assert len(snapshot.people) == 600
    assert slept[0] == 2.0, "the server's Retry-After is the wait"
    assert len(slept) == 3


@pytest.mark.parametrize("fault", [Respond(503), Reset()], ids=["503", "reset"])
def test_a_page_failing_for_good_fails_the_read(scimmy: ServerProcess, fault: Any) -> None:
    with FaultProxy(scimmy.url, lambda n, _p: fault if n >= 3 else None) as proxy:
        with pytest.raises(SourceError, match="gave up after retrying"):
            scim_source(proxy.url, max_attempts=3).read()
        assert len(proxy.paths) == 2 + 3


def test_a_server_killed_between_pages_fails_the_read(tmp_path: Path) -> None:
    server = start_scim2_server(make_directory(50, 2), tmp_path, SCIM_TOKEN)
    try:

        def kill_on_third(number: int, _path: str) -> None:
            if number == 3:
                server.kill()

        with FaultProxy(server.url, kill_on_third) as proxy:
            with pytest.raises(SourceError, match="GET /v2/Users"):
                scim_source(proxy.url, page_size=10).read()
    finally:
        server.stop()


def test_https_is_verified_against_the_configured_ca(scimmy: ServerProcess, tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    with FaultProxy(scimmy.url, tls=tls) as proxy:
        assert proxy.url.startswith("https://")
        snapshot = scim_source(proxy.url, verify=str(tls.ca)).read()
        assert len(snapshot.people) == 600
        with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
            scim_source(proxy.url, max_attempts=1).read()


def test_a_refused_token_names_the_key_that_holds_it(scimmy: ServerProcess) -> None:
    with pytest.raises(SourceError, match=r"HTTP 401.*source\.token_env \(IDP_TOKEN\)"):
        scim_source(scimmy.url, token="wrong").read()


def test_basic_auth(tmp_path: Path) -> None:
    directory = make_directory(30, 2)
    server = start_scimmy(directory, tmp_path, "basic:orgsync:pa55-word")
    try:
        source = ScimSource.connect(
            server.url,
            username="orgsync",
            password="pa55-word",
            credential_key="source.password_env (P)",
            settings=HttpSettings(retry=RetrySettings(max_attempts=1)),
        )
        check_snapshot(source.read(), server, directory)
        wrong = ScimSource.connect(
            server.url,
            username="orgsync",
            password="nope",
            credential_key="source.password_env (P)",
            settings=HttpSettings(retry=RetrySettings(max_attempts=1)),
        )
        with pytest.raises(SourceError, match=r"401.*source\.password_env \(P\)"):
            wrong.read()
    finally:
        server.stop()


def test_a_user_without_any_email_is_rejected_by_id_and_the_rest_is_read(
    scimmy: ServerProcess,
) -> None:
    """Issue 10: one mail-less user no longer fails the whole read; the core rejects that
    record by id (reported, never acted on) and everybody else is read."""
    stripped: list[str] = []

    def strip(body: dict[str, Any]) -> dict[str, Any]:
        user = {**body["Resources"][7], "userName": "jdoe"}
        user.pop("emails", None)
        stripped.append(user["id"])
        return {**body, "Resources": [*body["Resources"][:7], user, *body["Resources"][8:]]}

    with FaultProxy(scimmy.url, on_request(2, Rewrite(strip))) as proxy:
        snapshot = scim_source(proxy.url).read()
    people, rejected = screen(snapshot)
    assert [(r.source_id, r.reason) for r in rejected] == [(stripped[0], "no email address")]
    assert len(people) == len(snapshot.people) - 1 > 0


def test_members_pointing_to_nothing_are_skipped_and_counted(scimmy: ServerProcess) -> None:
    def dangle(body: dict[str, Any]) -> dict[str, Any]:
        groups = body["Resources"]
        extra = [{"value": "no-such-user", "type": "User"}, {"value": "gone", "type": "User"}]
        groups[0] = {**groups[0], "members": [*groups[0].get("members", []), *extra]}
        return body

    with FaultProxy(
        scimmy.url, lambda _n, path: Rewrite(dangle) if "/Groups" in path else None
    ) as proxy:
        with capture_logs() as logs:
            snapshot = scim_source(proxy.url).read()
    assert len(snapshot.groups) == 16
    assert not any(m in ("no-such-user", "gone") for g in snapshot.groups for m in g.members)
    warning = next(e for e in logs if e["event"] == "source.dangling_members")
    assert warning["skipped"] == 2


# --------------------------------------------------------------------------- the CLI


def scim_config(url: str, page_size: int = 1000) -> str:
    return f"""[source]
type = "scim"
url = "{url}"
token_env = "{SOURCE_SECRET_ENV}"
allow_plaintext = true
page_size = {page_size}
max_attempts = 2
max_retry_delay = "1s"
"""


def expected_holdings(directory: Directory) -> dict[str, str]:
    wanted = dict.fromkeys(directory.flattened("openai-users"), "reader")
    wanted.update(dict.fromkeys(directory.flattened("openai-owners"), "owner"))
    return wanted


# As processes: `orgsync sync` reading SCIM through its real entry point.
@pytest.mark.orgsync_in_process(False)
@pytest.mark.parametrize("which", SERVERS)
def test_end_to_end_sync_into_the_openai_emulator(
    which: str, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    # A small directory of its own, read in three pages: the CLI's start-up dominates.
    directory = make_directory(60, 3)
    if which == "scim2-server":
        process = start_scim2_server(directory, tmp_path / "server", SCIM_TOKEN)
    else:
        process = start_scimmy(directory, tmp_path / "server", f"bearer:{SCIM_TOKEN}")
    try:
        config = write_config(tmp_path, emulator, scim_config(process.url, page_size=25))
        dry = orgsync(config, "sync", "--dry-run", secret=SCIM_TOKEN)
        assert dry.returncode == 2, dry.stdout + dry.stderr
        assert emulator.writes() == []
        done = orgsync(config, "sync", secret=SCIM_TOKEN)
        assert done.returncode == 0, done.stdout + done.stderr
        wanted = expected_holdings(directory)
        assert "user5@example.test" not in wanted, "a disabled member of openai-users"
        assert len(wanted) == 14
        assert holdings(emulator) == wanted
        again = orgsync(config, "sync", "--dry-run", secret=SCIM_TOKEN)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        process.stop()


def test_a_read_failing_mid_way_exits_1_with_zero_writes(
    scimmy: ServerProcess, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    with FaultProxy(scimmy.url, lambda n, _p: Respond(503) if n >= 4 else None) as proxy:
        config = write_config(tmp_path, emulator, scim_config(proxy.url, page_size=100))
        result = orgsync(config, "sync", secret=SCIM_TOKEN)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gave up after retrying" in result.stdout + result.stderr
    assert emulator.writes() == []
    assert holdings(emulator) == {}


def test_validate_counts_people_and_names_a_missing_credential(
    scimmy: ServerProcess, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    config = write_config(tmp_path, emulator, scim_config(scimmy.url))
    result = orgsync(config, "validate", secret=SCIM_TOKEN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source scim: 600 people (7 inactive), 16 groups" in result.stdout
    missing = orgsync(config, "validate", secret=None)
    assert missing.returncode == 1
    assert f"source.token_env: environment variable {SOURCE_SECRET_ENV} is not set" in (
        missing.stdout + missing.stderr
    )
    wrong = orgsync(config, "validate", secret="wrong-token")
    assert wrong.returncode == 1
    assert f"source.token_env ({SOURCE_SECRET_ENV})" in wrong.stdout
