"""A real organization on loopback and the real `orgsync` command, for end-to-end tests.

`Rig` writes a directory file and a configuration into a temporary folder, runs the CLI
as a separate process (as an administrator would, through `tests/cli/__init__.py`; in the
test's process in a module marked `orgsync_in_process`), and reads the emulator's state
back.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli

API_KEY = "sk-admin-e2e-test-key-0123456789abcdef0123456789"
KEY_ENV = "ORGSYNC_TEST_ADMIN_KEY"


def people_records(people: int, *, inactive: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """The directory file's records of p0..pN, person{i}@example.com, active but `inactive`."""
    return [
        {
            "id": f"p{i}",
            "email": f"person{i}@example.com",
            "name": f"Person {i}",
            "active": i not in inactive,
        }
        for i in range(people)
    ]


def directory(people: int, *, owners: int = 1, inactive: tuple[int, ...] = ()) -> dict[str, Any]:
    """`people` people p0..pN in openai-users, the first `owners` also in openai-owners."""
    return {
        "people": people_records(people, inactive=inactive),
        "groups": [
            {"id": "g-users", "name": "openai-users", "members": [f"p{i}" for i in range(people)]},
            {
                "id": "g-owners",
                "name": "openai-owners",
                "members": [f"p{i}" for i in range(owners)],
            },
        ],
    }


def openai_target(name: str, url: str, extra: str = "") -> str:
    """One OpenAI organization under the rig's rules; `extra` goes into its table."""
    return f"""
[[targets]]
name = "{name}"
type = "openai"
base_url = "{url}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
timeout = "2s"
max_retry_delay = "20s"
{extra}
[[targets.roles]]
group = "openai-owners"
role = "owner"
"""


def wanted_roles(document: dict[str, Any]) -> dict[str, str]:
    """What the organization must hold for `directory()` documents under the rig's rules."""
    owners = set(next(g for g in document["groups"] if g["name"] == "openai-owners")["members"])
    return {
        p["email"]: "owner" if p["id"] in owners else "reader"
        for p in document["people"]
        if p.get("active", True)
    }


@dataclass
class Rig:
    folder: Path
    emulator: OpenAIEmulator
    safety: str = "max_removals = 10\nmax_removal_ratio = 0.5"
    extra_target: str = ""
    more_targets: str = ""
    """Further `[[targets]]` tables, after the first target's."""
    env: dict[str, str] = field(default_factory=dict)
    state: str = 'path = "state.db"'
    """The `[state]` table's keys (a PostgreSQL `url` instead of the SQLite file)."""

    @property
    def config_path(self) -> Path:
        return self.folder / "orgsync.toml"

    def write(self, document: dict[str, Any] | str) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        (self.folder / "directory.json").write_text(text, encoding="utf-8")
        self.config_path.write_text(
            f"""
[source]
type = "file"
path = "directory.json"

{openai_target("openai-test", self.emulator.start(), self.extra_target)}{self.more_targets}
[safety]
{self.safety}

[state]
{self.state}
""",
            encoding="utf-8",
        )

    def environ(self) -> dict[str, str]:
        return {**os.environ, KEY_ENV: API_KEY, **self.env}

    def orgsync(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return cli.run(self.config_path, *args, env=self.environ(), timeout=timeout)

    def popen(
        self, *args: str, piped: bool = False, preexec_fn: Callable[[], object] | None = None
    ) -> subprocess.Popen[str]:
        """Start orgsync without waiting; `piped` keeps its stdout and stderr to read."""
        output = subprocess.PIPE if piped else subprocess.DEVNULL
        return cli.start(
            self.config_path,
            *args,
            env=self.environ(),
            stdout=output,
            stderr=output,
            preexec_fn=preexec_fn,
        )

    def holdings(self) -> dict[str, str]:
        return holdings(self.emulator)

    def pending_invites_per_email(self) -> dict[str, int]:
        return pending_invites_per_email(self.emulator)


def holdings(emulator: OpenAIEmulator) -> dict[str, str]:
    """email -> role of every member and pending invitation, minus the key's owner."""
    state = emulator.state
    held = {
        str(user["email"]).lower(): str(user["role"])
        for user in state.users()
        if user["id"] != state.key_owner_id
    }
    for invite in state.invites():
        if invite["status"] == "pending":
            held[str(invite["email"]).lower()] = str(invite["role"])
    return held


def pending_invites_per_email(emulator: OpenAIEmulator) -> dict[str, int]:
    """email -> how many pending invitations it has (more than one is a duplicate e-mail)."""
    counts: dict[str, int] = {}
    for invite in emulator.state.invites():
        if invite["status"] == "pending":
            email = str(invite["email"]).lower()
            counts[email] = counts.get(email, 0) + 1
    return counts
