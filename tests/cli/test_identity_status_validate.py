"""`orgsync status` shows which organization each target's memory is about, and `orgsync
validate` checks, before a sync refuses, that the target still answers as it: the real
`orgsync` command, the OpenAI emulator (its `openai-organization` header) and a real state
database (SQLite and PostgreSQL).

The harm guarded against is `orgsync.store.identity`'s: a configuration whose target name
is reused for another organization. An administrator must be able to see what a target's
memory is about (`status`) and to learn from `validate` that the next sync will refuse,
with the same way out; and neither command may write to the other organization or record
anything (a validate that recorded Y would disarm the fence).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory
from tests.output_schema import assert_status_output
from tests.store.test_target_identity import (
    KEY_Y,
    LOOSE,
    ORG_X,
    ORG_Y,
    TARGET,
    at_the_same_url,
    members,
    rig,
)

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

REFUSAL = "the state database's memory of it is about"


@pytest.fixture
def org_x() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY, organization_id=ORG_X) as running:
        running.start()
        yield running


def status_of(json_text: str) -> dict[str, object]:
    document = json.loads(json_text)
    assert_status_output(document)
    (entry,) = document
    assert isinstance(entry, dict) and entry["target"] == TARGET
    return entry


def refusal_in(output: str) -> str:
    """The organization fence's message, from `target NAME:` to its end, in `output`."""
    start = output.index(f"target {TARGET}: {REFUSAL}")
    end = output.index("keeps the memory)", start) + len("keeps the memory)")
    return output[start:end]


def test_status_and_validate_show_and_check_the_recorded_organization(
    tmp_path: Path, location: str, org_x: OpenAIEmulator
) -> None:
    a = rig(tmp_path / "a", location, org_x, API_KEY, LOOSE)
    a.write(directory(3))
    url = org_x.base_url

    # Before any sync: nothing recorded, said so; validate says what the sync will record.
    status = a.orgsync("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "memory is about: not recorded yet" in status.stdout
    assert status_of(a.orgsync("status", "--json").stdout)["identity"] is None
    checked = a.orgsync("validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"the first sync records organization {ORG_X} at openai {url}" in checked.stdout

    synced = a.orgsync("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr

    status = a.orgsync("status")
    assert f"memory is about: organization {ORG_X} at openai {url} (recorded " in status.stdout
    identity = status_of(a.orgsync("status", "--json").stdout)["identity"]
    assert isinstance(identity, dict)
    assert identity["organization"] == ORG_X
    assert identity["address"] == f"openai {url}"
    recorded_at = datetime.fromisoformat(str(identity["recorded_at"]))
    assert abs(datetime.now(UTC) - recorded_at) < timedelta(minutes=5)
    checked = a.orgsync("validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"memory: about organization {ORG_X} at openai {url}" in checked.stdout
    assert "it answers as that" in checked.stdout

    # Organization Y where X was, under a configuration reusing the name: validate fails
    # with the sync's own refusal, writes nothing to Y and records nothing.
    y = at_the_same_url(org_x)
    try:
        b = rig(tmp_path / "b", location, y, KEY_Y, LOOSE)
        b.write(directory(1))
        before = members(y)
        checked = b.orgsync("validate")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        refused = b.orgsync("sync", "--dry-run")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        message = refusal_in(refused.stdout + refused.stderr)
        assert ORG_X in message and ORG_Y in message
        assert f"orgsync state forget {TARGET}" in message
        assert f"target {TARGET} (openai): FAILED: {message}" in checked.stdout
        assert f"target {TARGET} (openai): reachable" in checked.stdout  # read, then judged
        assert members(y) == before
        assert not y.writes(), [w.path for w in y.writes()]
        # What the memory is about stays X until an administrator says otherwise.
        identity = status_of(b.orgsync("status", "--json").stdout)["identity"]
        assert isinstance(identity, dict) and identity["organization"] == ORG_X
        with StateStore.open(location) as store:
            recorded = store.identity(TARGET)
        assert recorded is not None and recorded.identity.organization == ORG_X

        # --offline contacts nothing, so it cannot know.
        offline = b.orgsync("validate", "--offline")
        assert offline.returncode == 0, offline.stdout + offline.stderr
        assert "memory" not in offline.stdout

        # The way out the message gives, then validate passes and says what will be recorded.
        forgot = b.orgsync("state", "forget", TARGET)
        assert forgot.returncode == 0, forgot.stdout + forgot.stderr
        assert "not recorded yet" in b.orgsync("status").stdout
        checked = b.orgsync("validate")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"the next sync records organization {ORG_Y} at openai {url}" in checked.stdout
    finally:
        y.stop()


def test_validate_on_a_new_address_of_the_same_organization_passes_and_records_nothing(
    tmp_path: Path, org_x: OpenAIEmulator
) -> None:
    location = str(tmp_path / "state.db")
    a = rig(tmp_path / "a", location, org_x, API_KEY, LOOSE)
    a.write(directory(3))
    assert a.orgsync("sync").returncode == 0
    url = org_x.base_url
    moved = url.replace("127.0.0.1", "localhost")
    config = a.config_path.read_text(encoding="utf-8")
    a.config_path.write_text(config.replace(url, moved), encoding="utf-8")

    checked = a.orgsync("validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"memory: about organization {ORG_X} at openai {url} (recorded " in checked.stdout, (
        checked.stdout
    )
    assert (
        f"it answers as organization {ORG_X} at openai {moved}, which the next sync records"
        in checked.stdout
    )
    with StateStore.open(location) as store:
        recorded = store.identity(TARGET)
    assert recorded is not None and recorded.identity.address == f"openai {url}"


def test_a_hostile_organization_header_is_shown_inert(tmp_path: Path) -> None:
    """The organization is what a server said: status and validate print it escaped."""
    hostile = "org-\x1b[2Jcleared\u202eevil"
    with OpenAIEmulator(api_key=API_KEY, organization_id=hostile) as emulator:
        emulator.start()
        a = rig(tmp_path / "a", str(tmp_path / "state.db"), emulator, API_KEY, LOOSE)
        a.write(directory(2))
        synced = a.orgsync("sync")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        checked = a.orgsync("validate")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        status = a.orgsync("status")
    for output in (checked.stdout, status.stdout):
        assert "\x1b" not in output and "\u202e" not in output
        assert "cleared" in output
