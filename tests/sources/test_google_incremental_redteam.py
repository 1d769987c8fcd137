"""Red team of incremental passes over Google Workspace (issue 13), against the Google
emulator on loopback. With the Reports API's scope delegated, an incremental pass first
probes the `admin` and `groups_enterprise` activity logs and reads the directory whole
only when they show a change; without it, every pass reads the directory whole and
compares digests. How it could hurt an administrator: a leaver suspended or deleted, a
member taken out of a group (by an admin, or by the group's owner in Google Groups), a
group renamed out of scope, a nested group taken out, a user re-created under the same
address (a new id), or a joiner of a group of the whole account (a member of type
CUSTOMER) that the probe or the comparison misses; a missing scope failing the passes;
an expired cursor read as quiet. For every step: a full dry run plans F, the
incremental sync plans I, I must be F, and a full dry run afterwards plans nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import orgsync.sources.google as google_module
from orgsync.config import Config, parse_config
from orgsync.engine import Engine
from orgsync.results import RunOptions
from orgsync.testing.google import DIRECTORY_SCOPES, GoogleEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, holdings
from tests.engine.differential import one, openai_target, run_sequence, shape
from tests.sources.idp import ADMIN, KEY_ID, SERVICE_ACCOUNT, ServiceAccount


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
            "reports_url": google.reports_url,
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
        # Half by an admin (the `admin` log), half by the group's owner (`groups_enterprise`).
        by_owner = self.rng.random() < 0.5
        if member in self.members[group]:
            self.google.remove_member(group, member, by_owner=by_owner)
            self.members[group].discard(member)
        else:
            self.google.add_member(group, member, by_owner=by_owner)
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


@pytest.fixture(autouse=True)
def _say_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(google_module, "_SAID_DEGRADED", set())


def reports_calls(google: GoogleEmulator, mark: int = 0) -> int:
    return sum(1 for r in google.requests[mark:] if r.path.startswith("/admin/reports/"))


def directory_calls(google: GoogleEmulator, mark: int = 0) -> int:
    return sum(1 for r in google.requests[mark:] if r.path.startswith("/admin/directory/"))


@pytest.mark.parametrize(
    ("seed", "probe"), [(4, True), (13, True), (4, False)], ids=["probe-4", "probe-13", "no-scope"]
)
def test_incremental_passes_over_google_plan_what_full_passes_plan(
    tmp_path: Path,
    emulator: OpenAIEmulator,
    google: GoogleEmulator,
    service_account: ServiceAccount,
    seed: int,
    probe: bool,
) -> None:
    """Seeded random changes, each step checked against a full pass. With the probe, a
    change it missed would plan nothing where the full pass plans something; without the
    Reports scope, the passes still converge (the directory read whole), and the log
    says once what to delegate."""
    if not probe:
        google.register_service_account(
            SERVICE_ACCOUNT, KEY_ID, service_account.public_pem, delegated_scopes=DIRECTORY_SCOPES
        )
    account = Account(google, random.Random(seed))
    key_file = service_account.write(tmp_path)
    engine = Engine(google_config(tmp_path, google, key_file, emulator), environ={KEY_ENV: API_KEY})
    try:
        with capture_logs() as logs:
            kinds = run_sequence(engine, emulator, account, steps=15, label=f"seed {seed} ")
            # A quiet pass: with the probe, a token and two Reports requests, nothing else.
            google_mark, target_mark = len(google.requests), len(emulator.requests)
            quiet = one(engine.run(RunOptions(dry_run=False, incremental=True)))
    finally:
        engine.close()
    assert kinds.get("incremental", 0) >= 10, kinds
    assert (quiet.status, quiet.pass_kind) == ("ok", "incremental")
    assert len(emulator.requests) == target_mark, "no target call on a quiet pass"
    degraded = [e for e in logs if e["event"] == "source.change_probe_degraded"]
    probed = [e for e in logs if e["event"] == "source.probed"]
    if probe:
        assert not degraded
        assert len(probed) >= 15, "every incremental pass probed"
        assert directory_calls(google, google_mark) == 0
        assert len(google.requests) - google_mark == 3  # token, admin, groups_enterprise
    else:
        assert len(degraded) == 1, "said once, not at every pass"
        assert not probed
        assert reports_calls(google) == 0
        assert directory_calls(google, google_mark) > 0, "read whole and compared"


def test_an_expired_cursor_reads_the_directory_whole(
    tmp_path: Path,
    emulator: OpenAIEmulator,
    google: GoogleEmulator,
    service_account: ServiceAccount,
) -> None:
    """A baseline whose cursor is older than the log's retention (a host that was down for
    months, restored): the probe refuses it and the pass reads the directory whole, so a
    leaver suspended meanwhile is removed by that pass, not the next full one."""
    account = Account(google, random.Random(1))
    key_file = service_account.write(tmp_path)
    engine = Engine(google_config(tmp_path, google, key_file, emulator), environ={KEY_ENV: API_KEY})
    try:
        assert one(engine.run(RunOptions(dry_run=False))).status == "ok"
        member = next(iter(account.members[account.groups["openai-users"]]))
        email = account.users[member]
        assert email in holdings(emulator)
        old = (datetime.now(UTC) - timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        engine.store.advance_cursor("t", json.dumps({"since": old, "seen": {}}))
        google.set_suspended(member, True)
        mark = len(google.requests)
        with capture_logs() as logs:
            passed = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert (passed.status, passed.pass_kind) == ("ok", "incremental")
        assert [e for e in logs if e["event"] == "source.cursor_expired"]
        assert directory_calls(google, mark) > 0
        assert email not in holdings(emulator)
        assert shape(one(engine.run(RunOptions(dry_run=True))).plan)["operations"] == []
        # The pass that read whole wrote a fresh cursor: the next quiet one only probes.
        mark = len(google.requests)
        quiet = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert quiet.pass_kind == "incremental"
        assert directory_calls(google, mark) == 0
    finally:
        engine.close()


def test_delegating_the_reports_scope_later_turns_the_probe_on(
    tmp_path: Path,
    emulator: OpenAIEmulator,
    google: GoogleEmulator,
    service_account: ServiceAccount,
) -> None:
    """An install upgraded without the new delegation reads whole each pass (and works);
    once the administrator delegates the scope, the next pass's read writes a cursor and
    the pass after it only probes. No restart, no configuration change."""
    google.register_service_account(
        SERVICE_ACCOUNT, KEY_ID, service_account.public_pem, delegated_scopes=DIRECTORY_SCOPES
    )
    account = Account(google, random.Random(2))
    key_file = service_account.write(tmp_path)
    engine = Engine(google_config(tmp_path, google, key_file, emulator), environ={KEY_ENV: API_KEY})
    try:
        assert one(engine.run(RunOptions(dry_run=False))).status == "ok"
        mark = len(google.requests)
        unprobed = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert (unprobed.status, unprobed.pass_kind) == ("ok", "incremental")
        assert directory_calls(google, mark) > 0
        google.register_service_account(SERVICE_ACCOUNT, KEY_ID, service_account.public_pem)
        reads = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert reads.status == "ok"
        mark = len(google.requests)
        quiet = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert (quiet.status, quiet.pass_kind) == ("ok", "incremental")
        assert directory_calls(google, mark) == 0
        assert reports_calls(google, mark) == 2
        member = next(iter(account.members[account.groups["openai-users"]]))
        assert account.users[member] in holdings(emulator)
        google.remove_member(account.groups["openai-users"], member, by_owner=True)
        mark = len(google.requests)
        removed = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert removed.status == "ok"
        assert directory_calls(google, mark) > 0
        assert account.users[member] not in holdings(emulator)
    finally:
        engine.close()
