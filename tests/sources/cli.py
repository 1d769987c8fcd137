"""The real `orgsync` command with a network source, against the OpenAI emulator."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV

SOURCE_SECRET_ENV = "ORGSYNC_TEST_SOURCE_SECRET"


def write_config(folder: Path, emulator: OpenAIEmulator, source: str) -> Path:
    """A configuration with `source` (a TOML `[source]` table) and the emulated target.

    In scope: the members of openai-* groups; openai-owners are owners, the rest readers.
    """
    path = folder / "orgsync.toml"
    path.write_text(
        f"""
{source}

[[targets]]
name = "openai-test"
type = "openai"
base_url = "{emulator.start()}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
timeout = "5s"
max_retry_delay = "5s"

[[targets.roles]]
group = "openai-owners"
role = "owner"

[safety]
max_removals = 10
max_removal_ratio = 0.5

[state]
path = "{folder / "state.db"}"
""",
        encoding="utf-8",
    )
    return path


def orgsync(
    config: Path, *args: str, secret: str | None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, KEY_ENV: API_KEY}
    env.pop(SOURCE_SECRET_ENV, None)
    if secret is not None:
        env[SOURCE_SECRET_ENV] = secret
    return cli.run(config, *args, env=env, timeout=timeout)


def holdings(emulator: OpenAIEmulator) -> dict[str, str]:
    """email -> role of every member and pending invitation, minus the key's owner."""
    held: dict[str, str] = {}
    for user in emulator.state.users():
        if user["id"] != emulator.state.key_owner_id:
            held[str(user["email"]).lower()] = str(user["role"])
    for invite in emulator.state.invites():
        if invite["status"] == "pending":
            held[str(invite["email"]).lower()] = str(invite["role"])
    return held
