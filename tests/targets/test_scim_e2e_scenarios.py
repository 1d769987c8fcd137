"""The scenarios of issue 11 (`tests/targets/scim_scenarios.py`) end to end: the `orgsync`
command against every SCIM provider (scim2-server, SCIMMY, django-scim2), plus
scim2-server with emulated 501 refusals, behind the recording proxy.

Split from test_scim_e2e.py, whose helpers it uses, so that `--dist loadfile` can run
the two halves (about two minutes each) on both workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.targets import scim_scenarios as scenarios
from tests.targets.cli import Rig, scim_target
from tests.targets.scim_servers import (
    TOKEN,
    Scim2Server,
    ScimProxy,
    start_django_scim,
    start_scimmy,
)
from tests.targets.test_scim_e2e import Org, emails

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

# --------------------------------------------------------------------------- issue 11

LEARNED = {
    "scim2-server": {
        "add_members": "value_array",
        "remove_members": "filter",
        "rename_group": "path",
        "update_user": "path",
    },
    "scimmy": {
        "add_members": "value_array",
        "remove_members": "filter",
        "rename_group": "path",
        "update_user": "path",
    },
    "django-scim2": {
        "add_members": "value_array",
        "remove_members": "value_array",
        "rename_group": "put",
        "update_user": "path",
    },
    "scim2-server+quirks": {
        "add_members": "value_array",
        "remove_members": "put",
        "rename_group": "put",
        "update_user": "path",
    },
}
"""The request forms each provider ends up with after the scenarios."""
REFUSALS = {
    "scim2-server": [],
    "scimmy": [],
    "django-scim2": [501, 501, 501],  # filtered removal; rename by path, then without
    "scim2-server+quirks": [501, 400, 501, 501],  # ... and its own refusal of the value array
}


@pytest.fixture(params=scenarios.PROVIDERS)
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(provider name, upstream base URL) of a fresh, empty server."""
    name = str(request.param)
    if name.startswith("scim2-server"):
        scim2: Scim2Server = request.getfixturevalue("scim2")
        yield name, scim2.tenant()
        return
    server = (start_scimmy if name == "scimmy" else start_django_scim)(tmp_path / name)
    yield name, server.url
    server.stop()


def test_issue_11_scenarios_converge_on_every_provider(
    tmp_path: Path, provider: tuple[str, str]
) -> None:
    """Fresh provisioning, deactivation, leaving the source, moving between groups, a
    rename keeping the group id, a user created by someone else left alone, and a second
    dry run that exits 0: each step's sync plans exactly that step's changes."""
    name, upstream = provider
    foreign = scenarios.create_foreign_user(upstream, TOKEN)
    proxy = ScimProxy(upstream, quirks=scenarios.QUIRKS.get(name, frozenset()))
    org = Org(upstream)
    try:
        rig = Rig(tmp_path, [scim_target(proxy.url, on_removal="suspend")])
        group_ids: dict[str, str] = {}
        for step in scenarios.steps():
            rig.write(step.document)
            code, plans = rig.plans("--dry-run") if step.dry_run else rig.plans()
            plan = plans["scim-test"]
            assert code == 0, (step.name, plan.get("error"), plan["operations"])
            assert scenarios.ops_of(plan) == sorted(step.expected), step.name
            assert all(op.get("email") != scenarios.FOREIGN for op in plan["operations"])
            if step.name == "fresh":
                group_ids = {g: body["id"] for g, body in org.groups().items()}
        # Each refusal happens once: later steps (new processes) ask in the learned form.
        refusals = [r.status for r in proxy.requests if r.status is not None and r.status >= 400]
        assert refusals == REFUSALS[name]
        users = org.users()
        kept = ("id", "userName", "active", "name", "emails", "externalId")
        assert {k: users[scenarios.FOREIGN].get(k) for k in kept} == {
            k: foreign.get(k) for k in kept
        }
        assert {u: users[u]["active"] for u in users} == {
            scenarios.FOREIGN: True,
            **{scenarios.email(i): i not in (1, 4) for i in range(6)},
        }
        groups = org.groups()
        assert {g: body["id"] for g, body in groups.items()} == {
            "team-c": group_ids["team-a"],
            "team-b": group_ids["team-b"],
        }
        assert org.members("team-c") == emails(0, 1) - emails(1)
        assert org.members("team-b") == emails(2, 3)

        status = rig.orgsync("status", "--json")
        assert status.returncode == 0, status.stderr
        (entry,) = json.loads(status.stdout)
        learned = {f["change"]: f["form"] for f in entry["learned_forms"]}
        assert learned == LEARNED[name]
        if name in ("scim2-server", "scimmy"):
            return  # RFC 7644 forms only: validate has nothing learned to show
        validate = rig.orgsync("validate")
        assert validate.returncode == 0, validate.stdout + validate.stderr
        assert "ServiceProviderConfig: PATCH" in validate.stdout
        assert f"member removal {LEARNED[name]['remove_members']}" in validate.stdout
    finally:
        org.close()
        proxy.stop()
