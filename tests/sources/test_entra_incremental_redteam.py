"""Red team of incremental passes over Microsoft Entra ID (issue 13), against the Graph
emulator on loopback: after random changes made to the tenant, an incremental pass plans
exactly what a full pass plans.

The Entra probe follows the deltaLinks of `/users/delta` and `/groups/delta`. How it could
hurt an administrator: a leaver disabled or deleted (`@removed`) whom the probe misses
keeps their access until the next full pass; so does a member taken out of a group, a
group un-nested, deleted (`@removed`) or renamed out of scope; a joiner never invited; a
user deleted and re-created under the same UPN (a new object id) never relinked; an
expired sync state (410 Gone) that stops reconciling instead of reading whole. For every
step: a full dry run plans F, the incremental sync plans I, I must be F, and a full dry
run afterwards plans nothing.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import Config, parse_config
from orgsync.core.errors import CursorExpired, SourceError
from orgsync.engine import Engine
from orgsync.testing.entra import EntraEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.engine.differential import openai_target, run_sequence
from tests.sources.test_entra import source as entra_source

SECRET_ENV = "ENTRA_SECRET_FOR_TEST"


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


def entra_config(folder: Path, entra: EntraEmulator, emulator: OpenAIEmulator) -> Config:
    document: dict[str, Any] = {
        "source": {
            "type": "entra",
            "tenant_id": entra.tenant_id,
            "client_id": entra.client_id,
            "client_secret_env": SECRET_ENV,
            "graph_url": entra.graph_url,
            "login_url": entra.login_url,
            "allow_plaintext": True,
        },
        "targets": [openai_target(emulator)],
        "safety": {"max_removals": 1000, "max_removal_ratio": 1.0},
        "state": {"path": "state.db"},
    }
    return parse_config(document, origin="test", base_dir=folder)


class Tenant:
    """Random changes made to the emulated tenant, as an administrator makes them."""

    def __init__(self, entra: EntraEmulator, rng: random.Random) -> None:
        self.entra = entra
        self.rng = rng
        self.serial = 0
        self.log: list[str] = []
        self.users: dict[str, str] = {}  # id -> UPN
        self.enabled: dict[str, bool] = {}
        self.groups = {n: entra.add_group(n) for n in ("openai-users", "openai-owners", "team")}
        self.members: dict[str, set[str]] = {g: set() for g in self.groups.values()}
        self.nested = False
        for _ in range(8):
            self.add()

    def add(self, upn: str | None = None) -> str:
        if upn is None:
            self.serial += 1
            upn = f"user{self.serial}@example.com"
        user = self.entra.add_user(display_name=f"U {self.serial}", user_principal_name=upn)
        self.users[user] = upn
        self.enabled[user] = True
        self.toggle(self.groups[self.rng.choice(["openai-users", "openai-users", "team"])], user)
        return user

    def toggle(self, group: str, member: str) -> None:
        if member in self.members[group]:
            self.entra.remove_member(group, member)
            self.members[group].discard(member)
        else:
            self.entra.add_member(group, member)
            self.members[group].add(member)

    def step(self) -> None:
        rng = self.rng
        user = rng.choice(sorted(self.users))
        kind = rng.choice(
            [
                "add",
                "disable",
                "enable",
                "delete",
                "recreate",
                "mail",
                "users",
                "owners",
                "team",
                "nest",
                "rename",
                "delete_group",
            ]
        )
        entra = self.entra
        if kind == "add":
            user = self.add()
        elif kind in ("disable", "enable"):
            entra.set_account_enabled(user, kind == "enable")
        elif kind in ("delete", "recreate"):
            if len(self.users) < 3:
                return
            entra.remove_user(user)
            upn = self.users.pop(user)
            for members in self.members.values():
                members.discard(user)
            if kind == "recreate":  # the same UPN, a new object id
                user = self.add(upn)
        elif kind == "mail":
            self.serial += 1
            entra.set_mail(user, f"moved{self.serial}@example.com")
        elif kind in ("users", "owners", "team"):
            name = {"users": "openai-users", "owners": "openai-owners", "team": "team"}[kind]
            self.toggle(self.groups[name], user)
        elif kind == "nest":  # team in and out of openai-users
            self.toggle(self.groups["openai-users"], self.groups["team"])
        elif kind == "rename":
            group = self.groups["team"]
            renamed = rng.random() < 0.5
            entra.rename_group(group, "openai-team" if renamed else "team")
        elif kind == "delete_group":
            group = self.groups["team"]
            entra.remove_group(group)
            self.members.pop(group)
            for members in self.members.values():
                members.discard(group)
            self.groups["team"] = entra.add_group("team")
            self.members[self.groups["team"]] = set()
        self.log.append(f"{kind} {user[-4:]}")


@pytest.mark.parametrize("seed", [2, 9])
def test_incremental_passes_over_entra_plan_what_full_passes_plan(
    tmp_path: Path, emulator: OpenAIEmulator, entra: EntraEmulator, seed: int
) -> None:
    entra.start()
    tenant = Tenant(entra, random.Random(seed))
    engine = Engine(
        entra_config(tmp_path, entra, emulator),
        environ={KEY_ENV: API_KEY, SECRET_ENV: entra.client_secret},
    )

    def expire_midway(step: int) -> None:
        if step == 7:
            entra.expire_delta_tokens()  # 410 Gone: this pass reads whole

    try:
        kinds = run_sequence(
            engine, emulator, tenant, steps=15, label=f"seed {seed} ", after_changes=expire_midway
        )
    finally:
        engine.close()
    assert kinds.get("incremental", 0) >= 12, kinds


def test_a_cursor_naming_another_host_never_gets_the_token(entra: EntraEmulator) -> None:
    """The cursor is two deltaLinks (URLs) kept in the state database: one rewritten to
    another host (a tampered or shared database) must not receive Graph's bearer token.
    The probe fails, which the pass answers by reading whole (a probe only spares a
    read), and the next cursor comes from Graph again."""
    entra.start()
    entra.add_user(display_name="Ada", user_principal_name="ada@example.com")
    seen: list[str] = []

    class Catch(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    catcher = HTTPServer(("127.0.0.1", 0), Catch)
    thread = threading.Thread(target=catcher.serve_forever, daemon=True)
    thread.start()
    try:
        reader = entra_source(entra)
        honest = json.loads(str(reader.change_cursor()))
        foreign = f"http://127.0.0.1:{catcher.server_port}/v1.0/users/delta?$deltatoken=x"
        cursor = json.dumps({"users": foreign, "groups": honest["groups"]})
        with pytest.raises(SourceError, match="refusing to send the credential") as caught:
            reader.probe_changes(cursor, 1, 0)
        assert not isinstance(caught.value, CursorExpired)
        assert seen == []
        assert len(reader.read().people) == 1
    finally:
        catcher.shutdown()
        catcher.server_close()
