"""Which organization a target's memory is about (`orgsync.store.identity`), end to end:
the real `orgsync` command, the OpenAI emulator, a real state database (SQLite and
PostgreSQL).

The harm (red team, reproduced on main before this fence): two configurations share one
state database and both name a target "openai-test", one for organization X, one for
organization Y, at the same base URL (every OpenAI organization has the same one). X's
memory lists people by e-mail; a sync of Y then removed the members of Y with those
e-mails, people orgsync never managed in Y: lost access. Now the run is refused before
anything is planned, a dry run and a targeted run too, and the way out (`orgsync state
forget`) works. What must not trip it: a rotated key, a new address of the same
organization, a database from before this check (adopted).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory
from tests.postgres import PASSWORD, PASSWORD_ENV, state_keys

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

TARGET = "openai-test"
ORG_X = "org-XXXXXXXXXXXXXXXXXXXXXXXX"
ORG_Y = "org-YYYYYYYYYYYYYYYYYYYYYYYY"
KEY_Y = "sk-admin-organization-y-0123456789abcdef0123456789"
# Y's own people, whom orgsync never managed there; two share e-mails with X's memory.
Y_PEOPLE = ("person1@example.com", "person2@example.com", "someone@example.com")
LOOSE = "max_removals = 100\nmax_removal_ratio = 1.0"


@pytest.fixture
def org_x() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY, organization_id=ORG_X) as running:
        running.start()
        yield running


def organization_y() -> OpenAIEmulator:
    emulator = OpenAIEmulator(
        api_key=KEY_Y, organization_id=ORG_Y, key_owner_email="owner-y@example.com"
    )
    for email in Y_PEOPLE:
        emulator.state.add_user(email, "reader")
    return emulator


def state_lines(location: str) -> tuple[str, dict[str, str]]:
    if location.startswith("postgresql://"):
        return state_keys(location), {PASSWORD_ENV: PASSWORD}
    return f'path = "{location}"', {}


def rig(folder: Path, location: str, emulator: OpenAIEmulator, key: str, safety: str) -> Rig:
    """A configuration in `folder` whose target openai-test is `emulator`'s organization,
    on the state database at `location` (shared by every such configuration)."""
    state, env = state_lines(location)
    folder.mkdir()
    return Rig(
        folder=folder, emulator=emulator, state=state, env={**env, KEY_ENV: key}, safety=safety
    )


def members(emulator: OpenAIEmulator) -> set[str]:
    return {str(user["email"]) for user in emulator.state.users()}


def at_the_same_url(x: OpenAIEmulator) -> OpenAIEmulator:
    """Organization Y served where X was: the base URL every OpenAI organization shares."""
    port = urlsplit(x.base_url).port
    assert port is not None
    x.stop()
    y = organization_y()
    y.start(port=port)
    return y


def test_a_target_name_reused_for_another_organization_is_refused(
    tmp_path: Path, location: str, org_x: OpenAIEmulator
) -> None:
    a = rig(tmp_path / "a", location, org_x, API_KEY, LOOSE)
    a.write(directory(5))
    first = a.orgsync("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    url = org_x.base_url

    y = at_the_same_url(org_x)
    try:
        b = rig(tmp_path / "b", location, y, KEY_Y, LOOSE)
        b.write(directory(1))  # only person0: X's memory lists person1..4 as managed
        assert y.base_url == url
        before = members(y)
        for args in (
            ("sync", "--dry-run"),
            ("sync",),
            ("sync", "--only", "person1@example.com"),
            ("explain", "person1@example.com"),
        ):
            refused = b.orgsync(*args)
            assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
            said = refused.stdout + refused.stderr
            assert f"target {TARGET}" in said
            assert ORG_X in said and ORG_Y in said, said
            assert f"orgsync state forget {TARGET}" in said
            assert members(y) == before  # nobody removed
            assert not y.writes(), [w.path for w in y.writes()]

        # The way out: forget the memory of X; B then manages only whom it links in Y.
        forgot = b.orgsync("state", "forget", TARGET)
        assert forgot.returncode == 0, forgot.stdout + forgot.stderr
        assert ORG_X in forgot.stdout
        synced = b.orgsync("sync")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert set(Y_PEOPLE) <= members(y)  # Y's own people kept their access
        with StateStore.open(location) as store:
            recorded = store.identity(TARGET)
            assert recorded is not None
            assert recorded.identity.organization == ORG_Y
    finally:
        y.stop()


def test_a_rotated_key_and_a_new_address_of_the_same_organization_are_not_refused(
    tmp_path: Path, org_x: OpenAIEmulator
) -> None:
    location = str(tmp_path / "state.db")
    a = rig(tmp_path / "a", location, org_x, API_KEY, LOOSE)
    a.write(directory(3))
    assert a.orgsync("sync").returncode == 0

    # The key is rotated: another secret, the same organization.
    rotated = "sk-admin-rotated-0123456789abcdef0123456789abcdef"
    org_x.api_key = rotated
    a.env = {KEY_ENV: rotated}
    again = a.orgsync("sync")
    assert again.returncode == 0, again.stdout + again.stderr

    # The same organization under another address (a vendor's domain move).
    moved = org_x.base_url.replace("127.0.0.1", "localhost")
    a.write(directory(3))
    config = a.config_path.read_text(encoding="utf-8")
    a.config_path.write_text(config.replace(org_x.base_url, moved), encoding="utf-8")
    there = a.orgsync("sync")
    assert there.returncode == 0, there.stdout + there.stderr
    with StateStore.open(location) as store:
        recorded = store.identity(TARGET)
    assert recorded is not None
    assert recorded.identity.organization == ORG_X
    assert recorded.identity.address == f"openai {moved}"


def test_a_database_from_before_the_check_is_adopted(tmp_path: Path, org_x: OpenAIEmulator) -> None:
    location = str(tmp_path / "state.db")
    a = rig(tmp_path / "a", location, org_x, API_KEY, LOOSE)
    a.write(directory(3))
    assert a.orgsync("sync").returncode == 0
    # What an orgsync of schema 7 left: memory, no identity table.
    with sqlite3.connect(location) as db:
        db.execute("DROP TABLE target_identities")
        db.execute("DROP TABLE state_markers")
        db.execute("DROP TABLE write_marks")
        db.execute("DROP TABLE restores")
        db.execute("DROP TABLE seen_deliveries")  # schema 10
        db.execute("DELETE FROM schema_version WHERE version >= 8")
    Path(location + ".mark").unlink()  # nor a write mark beside it
    with StateStore.open(location) as store:
        assert store.identity(TARGET) is None  # migrated again: no row yet
        assert store.memory(TARGET).managed
    upgraded = a.orgsync("sync")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    with StateStore.open(location) as store:
        recorded = store.identity(TARGET)
    assert recorded is not None
    assert recorded.identity.organization == ORG_X


def test_a_dry_run_checks_but_records_nothing(tmp_path: Path, org_x: OpenAIEmulator) -> None:
    location = str(tmp_path / "state.db")
    a = rig(tmp_path / "a", location, org_x, API_KEY, LOOSE)
    a.write(directory(2))
    assert a.orgsync("sync", "--dry-run").returncode == 2
    with StateStore.open(location) as store:
        assert store.identity(TARGET) is None


def test_state_forget_waits_for_no_sync_and_forgets_only_that_target(
    tmp_path: Path, location: str, org_x: OpenAIEmulator
) -> None:
    a = rig(tmp_path / "a", location, org_x, API_KEY, LOOSE)
    a.write(directory(3))
    assert a.orgsync("sync").returncode == 0
    with StateStore.open(location) as store:
        store.link("another", email_key="ada@example.com", source_id="p9", member_id="u9")
        keeper = store.lease_keeper(
            "a sync in another process", timedelta(seconds=30), instance="x"
        )
        assert keeper.try_take(TARGET) is not None  # a sync of the target is running
        try:
            busy = a.orgsync("state", "forget", TARGET)
        finally:
            keeper.close()
        assert busy.returncode == 1, busy.stdout + busy.stderr
        assert "being synced right now" in busy.stderr
        assert store.memory(TARGET).managed  # nothing forgotten

        forgot = a.orgsync("state", "forget", TARGET)
        assert forgot.returncode == 0, forgot.stdout + forgot.stderr
        assert not store.memory(TARGET).managed
        assert store.identity(TARGET) is None
        assert store.memory("another").managed  # another target's memory stays
        assert store.runs(target=TARGET)  # history stays
