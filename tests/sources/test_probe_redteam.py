"""Red team of the LDAP change probe (issue 13) against a real slapd on loopback: clocks
that disagree, a directory restored from a backup or replaced under the same URL.

How it could hurt an administrator: a probe that answers "nothing changed" while a
person was taken out of a group keeps that leaver's access until the next full pass (a
day later), and nothing says so. The probe's timestamp search trusts the directory's
clock to be at most `PROBE_OVERLAP` behind orgsync's; where syncprov keeps a
`contextCSN` (whose first part is the time of the directory's last write, on its own
clock), a write the probe cannot vouch for is recognizable and must not read as quiet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import ldap3
import pytest

from orgsync.config import load_config
from orgsync.core.errors import CursorExpired
from orgsync.core.model import SourceSnapshot
from orgsync.engine import Engine
from orgsync.results import RunOptions
from orgsync.retrying import RetrySettings
from orgsync.sources.ldap import PROBE_OVERLAP, LdapSource
from orgsync.sources.scim import ScimSource
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.engine.differential import one
from tests.sources.cli import SOURCE_SECRET_ENV, holdings, write_config
from tests.sources.conftest import SCIM_TOKEN
from tests.sources.directory import make_directory
from tests.sources.probing import Prober
from tests.sources.servers import (
    FaultProxy,
    Respond,
    ServerProcess,
    Slapd,
    group_dn,
    ldif,
    person_dn,
    start_scim2_server,
)
from tests.sources.test_ldap import settings
from tests.sources.test_ldap_changes import admin
from tests.sources.test_scim import scim_config, scim_source
from tests.sources.test_scim_changes import AUTH as SCIM_AUTH

DIRECTORY = make_directory(20, 2)


def member_of_group1() -> str:
    return person_dn(DIRECTORY.people[3])


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    running = Slapd(tmp_path_factory.mktemp("slapd-redteam"), ldif(DIRECTORY), syncprov=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    running = Slapd(tmp_path_factory.mktemp("slapd-redteam-plain"), ldif(DIRECTORY))
    yield running
    running.stop()


def source(server: Slapd, skew: timedelta = timedelta(0)) -> LdapSource:
    """`skew`: how far orgsync's clock is ahead of the directory's."""
    return LdapSource(
        settings(server.url),
        retry=RetrySettings(max_attempts=1, max_delay=1),
        clock=lambda: datetime.now(UTC) + skew,
    )


def prober(server: Slapd, skew: timedelta = timedelta(0)) -> Prober:
    reader = source(server, skew)
    snapshot = reader.read()
    probe = Prober(reader, len(snapshot.people), len(snapshot.groups))
    probe.changed()  # the seed's entries are minutes old: seen once
    assert not probe.changed()
    return probe


def toggle_membership(server: Slapd) -> None:
    """Take a member out of group1 or put them back: a leaver's (or joiner's) only trace
    is the group's modifyTimestamp."""
    with admin(server) as conn:
        assert conn.search(group_dn("group1"), "(objectClass=*)", attributes=["member"])
        members = {str(m).lower() for m in conn.entries[0].member.values}
        change = ldap3.MODIFY_DELETE if member_of_group1().lower() in members else ldap3.MODIFY_ADD
        assert conn.modify(group_dn("group1"), {"member": [(change, [member_of_group1()])]})


@pytest.mark.parametrize("kind", ["synced", "plain"])
def test_a_directory_behind_within_the_overlap_misses_nothing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Sound: the documented window (Kerberos allows 5 minutes of skew)."""
    server: Slapd = request.getfixturevalue(kind)
    probe = prober(server, skew=PROBE_OVERLAP - timedelta(seconds=30))
    toggle_membership(server)
    assert probe.changed()
    assert not probe.changed()


@pytest.mark.parametrize("kind", ["synced", "plain"])
def test_a_directory_ahead_of_orgsync_reports_a_change_once(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Sound: entries stamped in orgsync's future are remembered until they are older
    than the window, so a change is reported once, not on every pass for an hour."""
    server: Slapd = request.getfixturevalue(kind)
    probe = prober(server, skew=-timedelta(hours=1))
    toggle_membership(server)
    assert probe.changed()
    assert not probe.changed()
    assert not probe.changed()


def test_a_directory_further_behind_than_the_overlap_is_not_taken_for_quiet(
    synced: Slapd,
) -> None:
    """Bug found: with the directory's clock 10 minutes behind, the contextCSN moved but
    the timestamp search (since orgsync's time less 5 minutes) found nothing, the counts
    were unchanged, and the probe answered "quiet": the leaver kept their access until the
    next full pass. The moved contextCSN's own time is older than the cursor: the
    directory's stamps cannot be trusted, so the source is read whole."""
    probe = prober(synced, skew=timedelta(minutes=10))
    toggle_membership(synced)
    with pytest.raises(CursorExpired, match="clock"):
        probe.changed()
    # Nothing written since: still one search, quiet.
    reader = probe.source
    assert isinstance(reader, LdapSource)
    fresh = Prober(reader, probe.people, probe.groups)
    assert not fresh.changed()
    assert fresh.calls == 1


def test_a_directory_restored_from_an_older_backup_expires_the_cursor(synced: Slapd) -> None:
    """A cursor that saw a later state than the directory holds now (restored from a
    backup, or another directory under the same URL): its contextCSN went back. The
    entries the restore brought back carry their old timestamps, so the timestamp
    search cannot see them; the source must be read whole."""
    probe = prober(synced)
    cursor = json.loads(probe.cursor)
    ((dn, values),) = cursor["csn"].items()
    later = [f"{int(v[:4]) + 1}{v[4:]}" for v in values]  # a year after the directory's
    cursor["csn"] = {dn: later}
    probe.cursor = json.dumps(cursor)
    with pytest.raises(CursorExpired, match="went back"):
        probe.changed()


def test_a_directory_that_lost_its_provider_expires_the_cursor(synced: Slapd) -> None:
    """Another directory at the same URL: the contextCSN of the cursor's server id is
    gone (only another provider's is there)."""
    probe = prober(synced)
    cursor = json.loads(probe.cursor)
    ((dn, values),) = cursor["csn"].items()
    cursor["csn"] = {dn: [v.replace("#000#", "#07b#") for v in values]}
    probe.cursor = json.dumps(cursor)
    with pytest.raises(CursorExpired, match="went back"):
        probe.changed()


def test_the_skew_check_holds_on_a_real_write_only(synced: Slapd, tmp_path: Path) -> None:
    """The check must not turn every quiet pass into a full read: a contextCSN that did
    not move is quiet whatever the clocks say."""
    probe = prober(synced, skew=timedelta(hours=2))
    assert not probe.changed()
    assert probe.calls == 1


# ---------------------------------------------------------------------------- SCIM


@pytest.fixture
def scim_server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_scim2_server(make_directory(20, 2), tmp_path / "scim2", SCIM_TOKEN)
    yield running
    running.stop()


def scim_prober(server: ServerProcess, skew: timedelta) -> Prober:
    """`skew`: how far orgsync's clock is ahead of the provider's."""
    snapshot = scim_source(server.url).read()
    reader = scim_source(server.url)
    reader.clock = lambda: datetime.now(UTC) + skew
    return Prober(reader, len(snapshot.people), len(snapshot.groups))


def take_out_of_a_group(server: ServerProcess) -> None:
    """A leaver's only trace: the group's lastModified (no user changes, no count)."""
    groups = httpx.get(f"{server.url}/Groups", params={"count": 100}, headers=SCIM_AUTH).json()
    group = next(g for g in groups["Resources"] if g.get("members"))
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "remove", "path": f'members[value eq "{group["members"][0]["value"]}"]'}
        ],
    }
    answer = httpx.patch(f"{server.url}/Groups/{group['id']}", json=patch, headers=SCIM_AUTH)
    assert answer.is_success, answer.text


def test_a_scim_provider_behind_within_the_overlap_misses_nothing(
    scim_server: ServerProcess,
) -> None:
    probe = scim_prober(scim_server, PROBE_OVERLAP - timedelta(seconds=30))
    probe.changed()  # seeded moments ago
    assert not probe.changed()
    take_out_of_a_group(scim_server)
    assert probe.changed()
    assert not probe.changed()
    closer = probe.source
    assert isinstance(closer, ScimSource)
    closer.close()


def test_a_scim_provider_further_behind_than_the_overlap_is_not_taken_for_quiet(
    scim_server: ServerProcess,
) -> None:
    """Bug found: the provider's clock 10 minutes behind orgsync's, a member taken out of
    a group was stamped before the cursor and the probe answered "quiet". Its `Date`
    header shows the skew: the probe must not vouch for the filter then."""
    probe = scim_prober(scim_server, timedelta(minutes=10))
    take_out_of_a_group(scim_server)
    with pytest.raises(CursorExpired, match="clock"):
        probe.changed()
    closer = probe.source
    assert isinstance(closer, ScimSource)
    closer.close()


# ------------------------------------------------------------- a probe that fails


def test_a_probe_that_fails_while_reads_work_does_not_stop_reconciling(
    scim_server: ServerProcess, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """A provider whose filtered query answers 500 every time (a bug behind one query,
    a gateway rule) while its plain lists work: every incremental pass failed, so a
    daemon reconciled nothing between full passes (a day) and a leaver kept access; its
    quarantine then alternated full attempts with failures. The probe is only a way to
    skip a read: when it fails, the pass reads the source whole and compares."""

    def break_filters(_number: int, path: str) -> Respond | None:
        return Respond(500) if "filter=" in path else None

    with FaultProxy(scim_server.url, break_filters) as proxy:
        config = write_config(tmp_path, emulator, scim_config(proxy.url))
        environ = {KEY_ENV: API_KEY, SOURCE_SECRET_ENV: SCIM_TOKEN}
        engine = Engine(load_config(config), environ=environ)
        try:
            assert one(engine.run(RunOptions(dry_run=False))).status == "ok"
            users = httpx.get(
                f"{scim_server.url}/Users", params={"count": 100}, headers=SCIM_AUTH
            ).json()["Resources"]
            held = holdings(emulator)
            # make_directory includes records without an email; the server lists in id order.
            leaver = next(
                u for u in users if u.get("emails") and u["emails"][0]["value"].lower() in held
            )
            gone = httpx.delete(f"{scim_server.url}/Users/{leaver['id']}", headers=SCIM_AUTH)
            assert gone.is_success
            passed = one(engine.run(RunOptions(dry_run=False, incremental=True)))
            assert (passed.status, passed.pass_kind) == ("ok", "incremental"), passed.error
            assert leaver["emails"][0]["value"].lower() not in holdings(emulator)
        finally:
            engine.close()


def test_a_change_landing_during_the_read_is_seen_by_the_next_pass(
    scim_server: ServerProcess,
    tmp_path: Path,
    emulator: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sound: a leaver taken out of the group just after the pass read the provider (so
    its snapshot, which becomes the baseline, still has them) is found by the next pass:
    the cursor recorded is the probe's, taken before the read, not one taken after."""
    config = write_config(tmp_path, emulator, scim_config(scim_server.url))
    environ = {KEY_ENV: API_KEY, SOURCE_SECRET_ENV: SCIM_TOKEN}
    engine = Engine(load_config(config), environ=environ)
    later: list[str] = []
    real_read = ScimSource.read

    def read_then_change(self: ScimSource) -> SourceSnapshot:
        snapshot = real_read(self)
        while later:
            take_out(scim_server, later.pop())
        return snapshot

    monkeypatch.setattr(ScimSource, "read", read_then_change)
    try:
        assert one(engine.run(RunOptions(dry_run=False))).status == "ok"
        one(engine.run(RunOptions(dry_run=False, incremental=True)))  # seeded: read once
        owners = set(group_members(scim_server, "openai-owners"))
        users = [u for u in group_members(scim_server, "openai-users") if u not in owners]
        first, second = users[0], users[1]
        take_out(scim_server, first)
        later.append(second)
        passed = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert passed.pass_kind == "incremental"
        assert email_of(scim_server, first) not in holdings(emulator)
        assert email_of(scim_server, second) in holdings(emulator), "after the read"
        passed = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert (passed.status, passed.pass_kind) == ("ok", "incremental")
        assert email_of(scim_server, second) not in holdings(emulator)
    finally:
        engine.close()


def group_members(server: ServerProcess, name: str) -> list[str]:
    groups = httpx.get(f"{server.url}/Groups", params={"count": 100}, headers=SCIM_AUTH).json()
    group = next(g for g in groups["Resources"] if g["displayName"] == name)
    users = {
        u["id"]
        for u in httpx.get(f"{server.url}/Users", params={"count": 100}, headers=SCIM_AUTH).json()[
            "Resources"
        ]
        if u.get("active", True) and u.get("emails")
    }
    return [m["value"] for m in group.get("members") or [] if m["value"] in users]


def take_out(server: ServerProcess, user_id: str) -> None:
    groups = httpx.get(f"{server.url}/Groups", params={"count": 100}, headers=SCIM_AUTH).json()
    group = next(g for g in groups["Resources"] if g["displayName"] == "openai-users")
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": f'members[value eq "{user_id}"]'}],
    }
    answer = httpx.patch(f"{server.url}/Groups/{group['id']}", json=patch, headers=SCIM_AUTH)
    assert answer.is_success, answer.text


def email_of(server: ServerProcess, user_id: str) -> str:
    user = httpx.get(f"{server.url}/Users/{user_id}", headers=SCIM_AUTH).json()
    return str(user["emails"][0]["value"]).lower()
