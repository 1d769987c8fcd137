"""Issue 9.6: `sync --plan FILE` applies exactly what was reviewed, through the real CLI.

Two organizations (two OpenAI emulators): a plan reviewed for one is never a licence to
change the other, and a file that is not what `--plan-out` wrote applies nothing.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from orgsync.core.errors import OrgsyncError
from orgsync.core.plan import Plan
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import Rig, directory, openai_target

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


@pytest.fixture
def two(rig: Rig, second: OpenAIEmulator) -> Rig:
    rig.more_targets = openai_target("openai-b", second.start())
    rig.write(directory(3))
    return rig


def no_writes(rig: Rig, second: OpenAIEmulator) -> bool:
    return rig.emulator.writes() == [] and second.writes() == []


def test_a_plan_for_one_target_never_applies_another(
    two: Rig, second: OpenAIEmulator, tmp_path: Path
) -> None:
    plan_a = tmp_path / "plan-a.json"
    assert (
        two.orgsync(
            "sync", "--dry-run", "--target", "openai-test", "--plan-out", str(plan_a)
        ).returncode
        == 2
    )
    refused = two.orgsync("sync", "--plan", str(plan_a), "--target", "openai-b")
    assert refused.returncode == 1
    assert "--target openai-b: the reviewed plan has no plan for this target" in refused.stderr
    assert no_writes(two, second)

    applied = two.orgsync("sync", "--plan", str(plan_a))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert len(rig_invites(two.emulator)) == 3
    assert second.writes() == [], "only the targets in the file are applied"


def rig_invites(emulator: OpenAIEmulator) -> list[dict[str, object]]:
    return emulator.state.invites()


def test_a_plan_naming_a_target_the_configuration_lacks_applies_nothing(
    two: Rig, second: OpenAIEmulator, tmp_path: Path
) -> None:
    both = tmp_path / "both.json"
    assert two.orgsync("sync", "--dry-run", "--plan-out", str(both)).returncode == 2
    documents = json.loads(both.read_text())["targets"]
    assert [d["target"] for d in documents] == ["openai-test", "openai-b"]
    ghost = Plan.from_json(documents[1]).model_copy(update={"target": "openai-ghost"})
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"targets": [documents[0], ghost.to_json()]}))
    result = two.orgsync("sync", "--plan", str(mixed))
    assert result.returncode == 1
    assert "the plan is for target(s) openai-ghost, which the configuration does not have" in (
        result.stderr
    )
    assert no_writes(two, second), "neither the reviewed target nor the unreviewed one ran"


def test_an_edited_summary_is_refused(two: Rig, second: OpenAIEmulator, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    two.orgsync("sync", "--dry-run", "--target", "openai-test", "--plan-out", str(plan_file))
    document = json.loads(plan_file.read_text())
    document["targets"][0]["summary"] = {"invite": 1}  # what a reviewer reads first
    plan_file.write_text(json.dumps(document))
    result = two.orgsync("sync", "--plan", str(plan_file))
    assert result.returncode == 1
    assert "the summary in the file" in result.stderr and "the file was edited" in result.stderr
    assert no_writes(two, second)


def test_plan_files_are_private_even_when_the_file_existed(two: Rig, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text("old, world-readable\n")
    plan_file.chmod(0o644)
    assert two.orgsync("sync", "--dry-run", "--plan-out", str(plan_file)).returncode == 2
    assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600
    assert "person0@example.com" in plan_file.read_text()
    fresh = tmp_path / "fresh.json"
    two.orgsync("sync", "--dry-run", "--plan-out", str(fresh))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "content",
    ['{"hello": "world"}', "[]", '{"target": "openai-test", "operations": 5}'],
)
def test_something_else_given_as_a_plan_says_so_plainly(
    two: Rig, second: OpenAIEmulator, tmp_path: Path, content: str
) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(content)
    result = two.orgsync("sync", "--plan", str(plan_file))
    assert result.returncode == 1
    assert f"--plan {plan_file}: not a plan written by --plan-out" in result.stderr
    for noise in ("pydantic", "Traceback", "validation error", "input_value"):
        assert noise not in result.stderr + result.stdout
    assert no_writes(two, second)


def test_a_device_given_as_a_plan_is_refused_without_reading_it(
    two: Rig, second: OpenAIEmulator
) -> None:
    """`--plan /dev/zero` (a slip of the completion key) used to read until memory ran out."""
    result = two.orgsync("sync", "--plan", "/dev/zero", timeout=30)
    assert result.returncode == 1, result.stderr
    assert "--plan /dev/zero: a device, not a plan written by --plan-out" in result.stderr
    assert no_writes(two, second)


def test_a_plan_larger_than_the_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orgsync.cli import plan_files

    monkeypatch.setattr(plan_files, "MAX_PLAN_BYTES", 16)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text('{"hello": "world", "padding": "0123456789"}')
    with pytest.raises(OrgsyncError, match=r"larger than 0 MiB, not a plan written by --plan-out"):
        plan_files.read_plans(plan_file)
    monkeypatch.setattr(plan_files, "MAX_PLAN_BYTES", 1 << 20)
    with pytest.raises(OrgsyncError, match=r"not a plan written by --plan-out: "):
        plan_files.read_plans(plan_file)
