"""Red team of incremental passes over Google Workspace (issue 13), against the Google
emulator on loopback. Google has no change probe: every incremental pass reads the
directory whole and compares digests. How it could hurt an administrator: a leaver
suspended or deleted, a member taken out of a group, a group renamed out of scope, a
nested group taken out, a user re-created under the same address (a new id), or a
joiner of a group of the whole account (a member of type CUSTOMER) that the comparison
misses. For every step: a full dry run plans F, the incremental sync plans I, I must be
F, and a full dry run afterwards plans nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import Config, parse_config
from orgsync.engine import Engine
from orgsync.testing.google import GoogleEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.engine.differential import openai_target, run_sequence
from tests.sources.idp import ADMIN, ServiceAccount


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


def google_config(
    folder: Path, google: GoogleEmulator, key_file: Path, emulator: OpenAIEmulator
) -> Config:
    document: dict[str, Any] = {
        "source": {
            "type": "google",
            "subject": ADMIN,
            "credentials_file": str(key_file),
            "directory_url": google.directory_url,
            "token_url": google.token_url,
            "allow_plaintext": True,
        },
        "targets": [openai_target(emulator)],
        "safety": {"max_removals": 1000, "max_removal_ratio": 1.0},
        "state": {"path": "state.db"},
    }
    return parse_config(document, origin="test", base_dir=folder)


class Account:
    """Random changes made to the emulated account, as an administrator makes them."""

    def __init__(self, google: GoogleEmulator, rng: random.Random) -> None:
        self.google = google
        self.rng = rng
        self.serial = 0
        self.log: list[str] = []
        self.users: dict[str, str] = {}
        self.groups = {n: google.add_group(n) for n in ("openai-users", "openai-owners", "team")}
        self.members: dict[str, set[str]] = {g: set() for g in self.groups.values()}
        self.everyone = google.add_group("all-staff")  # of type CUSTOMER: the whole account
        google.add_everyone(self.everyone)
        for _ in range(8):
            self.add()

    def add(self, email: str | None = None) -> str:
        if email is None:
            self.serial += 1
            email = f"user{self.serial}@example.com"
        user = self.google.add_user(primary_email=email, given_name="U", family_name="X")
        self.users[user] = email
        self.toggle(self.groups[self.rng.choice(["openai-users", "openai-users", "team"])], user)
        return user

    def toggle(self, group: str, member: str) -> None:
        if member in self.members[group]:
            self.google.remove_member(group, member)
            self.members[group].discard(member)
        else:
            self.google.add_member(group, member)
            self.members[group].add(member)

    def step(self) -> None:
        rng = self.rng
        user = rng.choice(sorted(self.users))
        kind = rng.choice(
            ["add", "suspend", "unsuspend", "delete", "recreate", "email", "users", "owners",
             "team", "nest", "rename", "everyone"]
        )  # fmt: skip
        google = self.google
        if kind == "add":
            user = self.add()
        elif kind in ("suspend", "unsuspend"):
            google.set_suspended(user, kind == "suspend")
        elif kind in ("delete", "recreate"):
            if len(self.users) < 3:
                return
            google.delete_user(user)
            email = self.users.pop(user)
            for members in self.members.values():
                members.discard(user)
            if kind == "recreate":
                user = self.add(email)
        elif kind == "email":
            self.serial += 1
            google.set_primary_email(user, f"moved{self.serial}@example.com")
        elif kind in ("users", "owners", "team"):
            name = {"users": "openai-users", "owners": "openai-owners", "team": "team"}[kind]
            self.toggle(self.groups[name], user)
        elif kind == "nest":
            self.toggle(self.groups["openai-users"], self.groups["team"])
        elif kind == "rename":
            google.rename_group(self.groups["team"], rng.choice(["team", "openai-team"]))
        elif kind == "everyone":  # the whole account in and out of scope
            google.rename_group(self.everyone, rng.choice(["all-staff", "openai-staff"]))
        self.log.append(f"{kind} {user[-4:]}")


@pytest.mark.parametrize("seed", [4, 13])
def test_incremental_passes_over_google_plan_what_full_passes_plan(
    tmp_path: Path,
    emulator: OpenAIEmulator,
    google: GoogleEmulator,
    service_account: ServiceAccount,
    seed: int,
) -> None:
    account = Account(google, random.Random(seed))
    key_file = service_account.write(tmp_path)
    engine = Engine(google_config(tmp_path, google, key_file, emulator), environ={KEY_ENV: API_KEY})
    try:
        kinds = run_sequence(engine, emulator, account, steps=15, label=f"seed {seed} ")
    finally:
        engine.close()
    assert kinds.get("incremental", 0) >= 10, kinds
