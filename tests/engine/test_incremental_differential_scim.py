"""Red team of incremental passes over a real SCIM 2.0 provider (scim2-server on
loopback; issue 13): after random changes made through the provider's own API, an
incremental pass plans exactly what a full pass plans.

The SCIM probe sees changes through `meta.lastModified gt` and deletions through
`totalResults`. What could slip past it, and keep a leaver's access until the next full
pass: a member taken out of a group (only the group's stamp moves), a deletion and an
addition in one pass (the count does not move), a group nested or un-nested, an email
changed, a user deactivated. For every step: a full dry run plans F, the incremental
sync plans I, I must be F, and a full dry run afterwards plans nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgsync.config import load_config
from orgsync.engine import Engine
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.engine.differential import run_sequence
from tests.sources.cli import SOURCE_SECRET_ENV, write_config
from tests.sources.conftest import SCIM_TOKEN
from tests.sources.directory import make_directory
from tests.sources.servers import ServerProcess, start_scim2_server
from tests.sources.test_scim import scim_config
from tests.sources.test_scim_changes import AUTH

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_scim2_server(make_directory(20, 2), tmp_path / "scim2", SCIM_TOKEN)
    yield running
    running.stop()


class Provider:
    """Random changes made through the provider's API."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.url = url
        self.rng = rng
        self.serial = 0
        self.log: list[str] = []
        self.client = httpx.Client(headers=AUTH, timeout=30)

    def list(self, kind: str) -> list[dict[str, Any]]:
        answer = self.client.get(f"{self.url}/{kind}", params={"count": 500})
        assert answer.is_success, answer.text
        resources: list[dict[str, Any]] = answer.json().get("Resources", [])
        return resources

    def group(self, name: str) -> dict[str, Any]:
        return next(g for g in self.list("Groups") if g["displayName"] == name)

    def patch_group(self, name: str, operation: dict[str, Any]) -> None:
        group = self.group(name)
        body = {"schemas": [PATCH], "Operations": [operation]}
        answer = self.client.patch(f"{self.url}/Groups/{group['id']}", json=body)
        assert answer.is_success, answer.text

    def toggle_member(self, name: str, member_id: str) -> None:
        members = {m["value"] for m in self.group(name).get("members") or []}
        if member_id in members:
            operation = {"op": "remove", "path": f'members[value eq "{member_id}"]'}
        else:
            operation = {"op": "add", "path": "members", "value": [{"value": member_id}]}
        self.patch_group(name, operation)

    def add_user(self) -> str:
        self.serial += 1
        email = f"scimnew{self.serial}@example.test"
        payload = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email,
            "displayName": f"New {self.serial}",
            "active": True,
            "emails": [{"value": email, "type": "work", "primary": True}],
        }
        answer = self.client.post(f"{self.url}/Users", json=payload)
        assert answer.is_success, answer.text
        user_id = str(answer.json()["id"])
        self.toggle_member(self.rng.choice(["openai-users", "team-ml"]), user_id)
        return user_id

    def replace_user(self, user: dict[str, Any], **changes: Any) -> None:
        full = self.client.get(f"{self.url}/Users/{user['id']}").json()
        full.update(changes)
        answer = self.client.put(f"{self.url}/Users/{user['id']}", json=full)
        assert answer.is_success, answer.text

    def step(self) -> None:
        users = self.list("Users")
        user = self.rng.choice(users)
        kind = self.rng.choice(
            ["add", "delete", "email", "active", "owner", "team", "users", "nest", "swap"]
        )
        if kind == "add":
            self.add_user()
        elif kind == "delete":
            assert self.client.delete(f"{self.url}/Users/{user['id']}").is_success
        elif kind == "email":
            self.serial += 1
            email = f"moved{self.serial}@example.test"
            emails = [{"value": email, "type": "work", "primary": True}]
            self.replace_user(user, emails=emails, userName=email)
        elif kind == "active":
            self.replace_user(user, active=not user.get("active", True))
        elif kind == "owner":
            self.toggle_member("openai-owners", user["id"])
        elif kind == "team":
            self.toggle_member("team-ml", user["id"])
        elif kind == "users":
            self.toggle_member("openai-users", user["id"])
        elif kind == "nest":
            self.toggle_member("openai-users", self.group("team-ml")["id"])
        elif kind == "swap":  # a deletion and an addition: the count does not move
            assert self.client.delete(f"{self.url}/Users/{user['id']}").is_success
            self.add_user()
        self.log.append(f"{kind} {user['id'][:8]}")


def test_incremental_passes_over_scim_plan_what_full_passes_plan(
    tmp_path: Path, emulator: OpenAIEmulator, server: ServerProcess
) -> None:
    config = write_config(tmp_path, emulator, scim_config(server.url))
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("max_removal_ratio = 0.5", "max_removal_ratio = 1.0"), encoding="utf-8"
    )
    engine = Engine(load_config(config), environ={KEY_ENV: API_KEY, SOURCE_SECRET_ENV: SCIM_TOKEN})
    provider = Provider(server.url, random.Random(5))
    try:
        kinds = run_sequence(engine, emulator, provider, steps=15)
    finally:
        engine.close()
        provider.client.close()
    assert kinds.get("incremental", 0) >= 12, kinds
