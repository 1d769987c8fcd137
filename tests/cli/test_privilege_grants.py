"""Red team: a rule that names the wrong role makes everybody an owner.

Harm: extra access, the worst kind: owners of an OpenAI organization manage its keys,
billing and members. `[[targets.roles]] group = "openai-users", role = "owner"` (the
wrong line copied), or `default_role = "owner"`, raised every member to owner in one run:
the safety gate held only what takes access away (removals, lowerings) and, by default,
no addition at all; `validate` found nothing wrong (the group and the role both exist).

Now every grant of a role the target marks privileged (an invitation, a user or a role
raise to OpenAI `owner`) is held once a run has more than `[safety] max_privilege_grants`
(10) of them (exit 3, the rest applies); `--allow-additions N` lets a checked run through.
"""

from __future__ import annotations

import json

import pytest

from tests.cli.harness import Rig, directory

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def _members(rig: Rig, people: int, owners: int) -> None:
    for i in range(people):
        rig.emulator.state.add_user(f"person{i}@example.com", "owner" if i < owners else "reader")


def test_a_rule_making_everyone_an_owner_is_held_and_the_rest_applies(rig: Rig) -> None:
    document = directory(15, owners=1)
    rig.write(document)
    _members(rig, 14, owners=1)  # person14 is new: invited (as owner, held) by this run
    assert rig.orgsync("sync").returncode == 0
    before = rig.holdings()
    assert sum(role == "owner" for role in before.values()) == 1
    typo = rig.config_path.read_text().replace('default_role = "reader"', 'default_role = "owner"')
    rig.config_path.write_text(typo)

    planned = rig.orgsync("sync", "--dry-run", "--json")
    assert planned.returncode == 3, planned.stdout
    (target,) = json.loads(planned.stdout)["targets"]
    assert target["operations"] == []
    assert len(target["held"]) == 14
    assert {h["guard"] for h in target["held"]} == {
        "14 grants of a privileged role (owner) exceed safety.max_privilege_grants = 10"
    }

    result = rig.orgsync("sync")
    assert result.returncode == 3, result.stdout
    assert "to apply what is held after checking it: orgsync sync --allow-additions 14" in (
        result.stdout
    )
    assert rig.holdings() == before, "nobody was made an owner"

    short = rig.orgsync("sync", "--allow-additions", "5")
    assert short.returncode == 3
    assert "(more than --allow-additions 5)" in short.stdout
    assert rig.holdings() == before

    lifted = rig.orgsync("sync", "--allow-additions", "14")
    assert lifted.returncode == 0, lifted.stdout
    assert set(rig.holdings().values()) == {"owner"}


def test_a_few_owners_are_granted_without_an_override(rig: Rig) -> None:
    """The everyday case stays quiet: a first sync with three owners, a promotion."""
    rig.write(directory(20, owners=3))
    assert rig.orgsync("sync").returncode == 0
    assert sum(role == "owner" for role in rig.holdings().values()) == 3
    rig.write(directory(20, owners=4))
    assert rig.orgsync("sync").returncode == 0
    assert rig.holdings()["person3@example.com"] == "owner"


def test_a_first_sync_with_many_owners_is_held_until_allowed(rig: Rig) -> None:
    rig.write(directory(20, owners=12))
    result = rig.orgsync("sync")
    assert result.returncode == 3, result.stdout
    assert set(rig.holdings().values()) == {"reader"}, "readers invited, owners held"
    assert len(rig.holdings()) == 8
    assert rig.orgsync("sync", "--allow-additions", "12").returncode == 0
    assert sum(role == "owner" for role in rig.holdings().values()) == 12
