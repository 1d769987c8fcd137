"""Red team: a typo in a rule's group name, as a hurried administrator makes it.

Harm: lost access or a lost role for everyone the rule was meant for, applied in one run.
A role the target lacks was already refused; a group name the source lacks was planned as
written:

- `[[targets.roles]] group = "openai-ownerz"`: every owner planned down to `default_role`.
  The safety gate counts owner demotions as removals, but three owners are within any
  `max_removals`: applied, the organization left with the key's owner alone;
- `scope_groups = ["openai-userz"]`: everyone out of scope; in an organization smaller
  than `max_removals` (and below `min_managed_for_ratio`), everyone removed;
- `validate` said "ok" for both.

Now `validate` names each pattern that matches no group of the source, with the nearest
names it has (exit 1); a sync refuses such a scope or role rule before planning when it
would take a role or access from someone (exit 1, nothing changed), and goes on when it
takes nothing (a group not created yet, a first sync).
"""

from __future__ import annotations

import pytest

from tests.cli.harness import Rig, directory

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def _members(rig: Rig, people: int, owners: int) -> None:
    """An organization where person0..N already accepted: the first `owners` are owners."""
    for i in range(people):
        rig.emulator.state.add_user(f"person{i}@example.com", "owner" if i < owners else "reader")


def test_an_owners_rule_typo_demotes_nobody_and_validate_names_it(rig: Rig) -> None:
    rig.write(directory(8, owners=3))
    _members(rig, 8, owners=3)
    before = rig.holdings()
    typo = rig.config_path.read_text().replace('"openai-owners"', '"openai-ownerz"')
    rig.config_path.write_text(typo)

    checked = rig.orgsync("validate")
    assert checked.returncode == 1, checked.stdout
    assert (
        "target openai-test (openai): FAILED: targets.openai-test.roles[0].group = "
        "'openai-ownerz' matches no group of the source (nearest: openai-owners"
    ) in checked.stdout
    assert "its people get default_role 'reader'" in checked.stdout

    for args in (("sync", "--dry-run"), ("sync",), ("explain", "person0@example.com")):
        result = rig.orgsync(*args)
        said = result.stdout + result.stderr  # explain says it on stderr, sync on stdout
        assert result.returncode == 1, (args, said)
        assert "roles[0].group = 'openai-ownerz' matches no group" in said
        assert (
            "person0@example.com, person1@example.com, person2@example.com would lose role "
            "'owner'; nothing was planned or changed"
        ) in said
    assert rig.holdings() == before


def test_a_scope_typo_removes_nobody_from_a_small_organization(rig: Rig) -> None:
    rig.write(directory(4, owners=1))
    _members(rig, 4, owners=1)
    before = rig.holdings()
    typo = rig.config_path.read_text().replace('["openai-*"]', '["openai-userz"]')
    rig.config_path.write_text(typo)

    checked = rig.orgsync("validate")
    assert checked.returncode == 1
    assert "scope_groups[0] = 'openai-userz' matches no group of the source (nearest: " in (
        checked.stdout
    )
    result = rig.orgsync("sync")
    assert result.returncode == 1, result.stdout
    assert "would lose their access; nothing was planned or changed" in result.stdout
    assert rig.holdings() == before


def test_a_rule_for_a_group_not_created_yet_takes_nothing_and_syncs(rig: Rig) -> None:
    """A role rule for a group the IdP does not have yet, nobody holding its role: the
    sync goes on (refusing would stop every sync over a rule written ahead of time);
    validate still names it."""
    rig.write(directory(3, owners=1))
    rig.extra_target = '[[targets.roles]]\ngroup = "openai-auditors"\nrole = "reader"\n'
    rig.write(directory(3, owners=1))
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout
    assert rig.holdings() == {
        "person0@example.com": "owner",
        "person1@example.com": "reader",
        "person2@example.com": "reader",
    }
    checked = rig.orgsync("validate")
    assert checked.returncode == 1
    assert "roles[0].group = 'openai-auditors' matches no group of the source" in (checked.stdout)


def test_a_correct_configuration_validates(rig: Rig) -> None:
    rig.write(directory(3, owners=1))
    checked = rig.orgsync("validate")
    assert checked.returncode == 0, checked.stdout
    assert "matches no group" not in checked.stdout
