"""The real `orgsync` command against Keycard and SCIM targets, for end-to-end tests.

`Rig` writes a directory file and a configuration with any mix of `[[targets]]` blocks
into a folder and runs `python -m orgsync --config …` as a separate process, as an
administrator would (through `tests/cli/__init__.py`, as every rig does).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import cli
from tests.cli.harness import people_records
from tests.output_schema import assert_sync_output
from tests.targets.scim_servers import TOKEN as SCIM_TOKEN

SCIM_TOKEN_ENV = "ORGSYNC_TEST_SCIM_TOKEN"
KEYCARD_SECRET_ENV = "ORGSYNC_TEST_KEYCARD_SECRET"
OPENAI_KEY_ENV = "ORGSYNC_TEST_ADMIN_KEY"


def scim_target(
    url: str,
    *,
    name: str = "scim-test",
    on_removal: str = "suspend",
    max_patch: int = 100,
    dialect: str = "auto",
    extra: str = "",
    groups: bool = True,
) -> str:
    block = f"""
[[targets]]
name = "{name}"
type = "scim"
base_url = "{url}"
api_key_env = "{SCIM_TOKEN_ENV}"
allow_plaintext = true
scope_groups = ["scim-*"]
on_removal = "{on_removal}"
max_patch_operations = {max_patch}
scim_dialect = "{dialect}"
timeout = "5s"
max_retry_delay = "20s"
{extra}
"""
    if groups:
        block += '\n[[targets.groups]]\nsource = "team-*"\nname = "{source}"\n'
    return block


def keycard_target(
    url: str,
    organization: str,
    client_id: str,
    *,
    name: str = "keycard-test",
    on_removal: str = "suspend",
    extra: str = "",
) -> str:
    return f"""
[[targets]]
name = "{name}"
type = "keycard"
base_url = "{url}"
client_id = "{client_id}"
client_secret_env = "{KEYCARD_SECRET_ENV}"
organization_id = "{organization}"
allow_plaintext = true
scope_groups = ["scim-*"]
default_role = "org_member"
on_removal = "{on_removal}"
timeout = "5s"
max_retry_delay = "20s"
{extra}
[[targets.roles]]
group = "scim-admins"
role = "org_admin"
"""


def directory(
    people: int,
    *,
    inactive: tuple[int, ...] = (),
    teams: dict[str, list[int]] | None = None,
    admins: tuple[int, ...] = (0,),
    out_of_scope: tuple[int, ...] = (),
) -> dict[str, Any]:
    """People p0..pN (person{i}@example.com) in `scim-users` unless `out_of_scope`; `teams`
    maps a group id `t-<name>` to (name, members) as `{name: [indexes]}`."""
    groups: list[dict[str, Any]] = [
        {
            "id": "g-users",
            "name": "scim-users",
            "members": [f"p{i}" for i in range(people) if i not in out_of_scope],
        },
        {"id": "g-admins", "name": "scim-admins", "members": [f"p{i}" for i in admins]},
    ]
    for team, members in (teams or {}).items():
        groups.append({"id": f"t-{team}", "name": team, "members": [f"p{i}" for i in members]})
    return {
        "people": people_records(people, inactive=inactive),
        "groups": groups,
    }


@dataclass
class Rig:
    folder: Path
    targets: list[str] = field(default_factory=list)
    safety: str = "max_removals = 100\nmax_removal_ratio = 1.0"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.folder / "orgsync.toml"

    def write(self, document: dict[str, Any]) -> None:
        (self.folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")
        self.config_path.write_text(
            '[source]\ntype = "file"\npath = "directory.json"\n'
            + "".join(self.targets)
            + f'\n[safety]\n{self.safety}\n\n[state]\npath = "state.db"\n',
            encoding="utf-8",
        )

    def _env(self) -> dict[str, str]:
        return {**os.environ, SCIM_TOKEN_ENV: SCIM_TOKEN, **self.env}

    def orgsync(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return cli.run(self.config_path, *args, env=self._env(), timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return cli.start(self.config_path, *args, env=self._env())

    def plans(self, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
        """Exit code and each target's plan of `sync --dry-run --json` (or a sync)."""
        result = self.orgsync("sync", "--json", *args)
        assert result.stdout.strip(), result.stderr[-3000:]
        document = json.loads(result.stdout)
        assert_sync_output(document)  # SCIM, Keycard and OpenAI plans in the documented shape
        by_target = {run["target"]: run for run in document["targets"]}
        return result.returncode, by_target
