"""Red team: one organization under two target names in one state database.

Harm, tried with the real command against one emulated organization:

- a target renamed in the configuration (`prod` -> `production`): the new name starts
  with no memory, so the people orgsync invited as `prod` are unmanaged as `production`
  and a leaver keeps access for good, silently (nothing failed, nothing was said);
- a second configuration (another team's, or a copy) sharing the state database, with
  its own name for the same organization: each manages only the people it linked, so
  one's leaver is the other's joiner, removed and invited again run after run;
- a target removed from the configuration: its people are left as they are (right), and
  nobody is told that its memory is still there.

Now a target name new to the state database that reaches the organization (same address,
same organization from the API) another name's memory is about is refused before anything
is planned, by sync, dry run and validate, naming both and the ways out:
`orgsync state rename OLD NEW` (new) keeps whom orgsync manages there; `orgsync state
forget OLD` gives it up. `orgsync status` lists the targets the state remembers that the
configuration no longer names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import Rig, directory
from tests.store.test_target_identity import state_lines

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def _rename(rig: Rig, old: str, new: str) -> None:
    text = rig.config_path.read_text()
    rig.config_path.write_text(text.replace(f'name = "{old}"', f'name = "{new}"'))


def _without(document: dict[str, object], person: str) -> dict[str, object]:
    left = json.loads(json.dumps(document))
    left["people"] = [p for p in left["people"] if p["id"] != person]
    for group in left["groups"]:
        group["members"] = [m for m in group["members"] if m != person]
    return left


def test_a_renamed_target_is_refused_until_its_memory_is_moved_then_leavers_go(rig: Rig) -> None:
    document = directory(4)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    rig.write(_without(document, "p3"))  # person3 leaves the company
    _rename(rig, "openai-test", "production")

    for args in (("sync",), ("sync", "--dry-run"), ("sync", "--incremental")):
        refused = rig.orgsync(*args)
        assert refused.returncode == 1, (args, refused.stdout)
        assert "target production: it reaches organization org-emulated" in refused.stdout
        assert "which the state database remembers as target openai-test" in refused.stdout
        assert "`orgsync state rename openai-test production`" in refused.stdout
        assert "nothing was planned or changed" in refused.stdout
    assert "person3@example.com" in rig.holdings()

    checked = rig.orgsync("validate")
    assert checked.returncode == 1
    assert "target production (openai): FAILED: target production: it reaches" in checked.stdout

    status = rig.orgsync("status")
    assert "openai-test (in the state database, not in the configuration):" in status.stdout
    assert "4 people orgsync manages there are left as they are" in status.stdout
    assert "`orgsync state rename openai-test NEW`" in status.stdout

    moved = rig.orgsync("state", "rename", "openai-test", "production")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "moved what orgsync remembered of target openai-test to production" in moved.stdout
    assert "not in the configuration" not in rig.orgsync("status").stdout

    synced = rig.orgsync("sync")
    assert synced.returncode == 0, synced.stdout
    assert "no longer in the source (orgsync managed them)" in synced.stdout
    assert "person3@example.com" not in rig.holdings()
    # The history stays under the name each run ran as.
    runs = json.loads(rig.orgsync("runs", "--json").stdout)
    assert {run["target"] for run in runs} == {"openai-test", "production"}


def test_a_second_configuration_under_another_name_is_refused(rig: Rig) -> None:
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    before = rig.holdings()
    # A colleague's copy: same state database, same organization, another name and source.
    other = rig.folder / "other.toml"
    text = rig.config_path.read_text().replace('name = "openai-test"', 'name = "ml-team"')
    other.write_text(text.replace('path = "directory.json"', 'path = "other.json"'))
    (rig.folder / "other.json").write_text(json.dumps(directory(2)))
    result = rig.orgsync("--config", str(other), "sync")
    assert result.returncode == 1, result.stdout
    assert "which the state database remembers as target openai-test" in result.stdout
    assert "Two configurations must not manage one organization" in result.stdout
    assert rig.holdings() == before


def test_state_rename_refuses_a_name_with_memory_and_a_name_without(rig: Rig) -> None:
    rig.write(directory(2))
    assert rig.orgsync("sync").returncode == 0
    nothing = rig.orgsync("state", "rename", "never-synced", "openai-test-2")
    assert nothing.returncode == 1
    assert "remembers nothing of target never-synced; nothing was renamed" in nothing.stderr
    taken = rig.orgsync("state", "rename", "never-synced", "openai-test")
    assert taken.returncode == 1
    assert "target openai-test already has memory in the state database" in taken.stderr
    same = rig.orgsync("state", "rename", "openai-test", "openai-test")
    assert same.returncode == 1
    assert "one name" in same.stderr
    assert rig.orgsync("sync", "--dry-run").returncode == 0  # the memory is untouched


def test_the_refusal_and_the_rename_work_on_both_backends(
    tmp_path: Path, location: str, emulator: OpenAIEmulator
) -> None:
    """Two configurations on one state database (a SQLite file or one PostgreSQL
    database): the second name is refused; renamed, it manages what the first did."""
    state, env = state_lines(location)
    first = Rig(folder=tmp_path / "a", emulator=emulator, state=state, env=dict(env))
    first.folder.mkdir()
    document = directory(4)
    first.write(document)
    assert first.orgsync("sync").returncode == 0
    second = Rig(folder=tmp_path / "b", emulator=emulator, state=state, env=dict(env))
    second.folder.mkdir()
    second.write(_without(document, "p3"))
    _rename(second, "openai-test", "renamed")
    refused = second.orgsync("sync")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "which the state database remembers as target openai-test" in refused.stdout
    assert "person3@example.com" in second.holdings()
    moved = second.orgsync("state", "rename", "openai-test", "renamed")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    synced = second.orgsync("sync")
    assert synced.returncode == 0, synced.stdout
    assert "person3@example.com" not in second.holdings()
