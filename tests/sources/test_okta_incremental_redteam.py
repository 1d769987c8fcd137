"""Red team of incremental passes over Okta (issue 13), against the Okta emulator on
loopback: after random changes made to the org, an incremental pass plans exactly what a
full pass plans.

The Okta probe trusts `lastUpdated gt` on users, `lastUpdated`/`lastMembershipUpdated gt`
on groups and the System Log since a time with an overlap. How it could hurt an
administrator: a leaver deactivated, suspended or deleted whom the probe misses keeps
their access until the next full pass; so does a member taken out of a group (only the
group's `lastMembershipUpdated` moves), a group deleted or renamed out of scope (a
deletion leaves no record, only an event); a joiner never invited; a user re-created under
the same login (a new id) never relinked. For every step: a full dry run plans F, the
incremental sync plans I, I must be F, and a full dry run afterwards plans nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import Config, parse_config
from orgsync.engine import Engine
from orgsync.sources.okta import PROBE_PAGE
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.engine.differential import openai_target, run_sequence
from tests.sources.conftest import SCIM_TOKEN
from tests.sources.directory import make_directory
from tests.sources.servers import ServerProcess, start_scim2_server
from tests.sources.test_okta import source
from tests.sources.test_probe_redteam import take_out_of_a_group
from tests.sources.test_scim import scim_source

OKTA_ENV = "OKTA_TOKEN_FOR_TEST"


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


def okta_config(folder: Path, okta: OktaEmulator, emulator: OpenAIEmulator) -> Config:
    document: dict[str, Any] = {
        "source": {
            "type": "okta",
            "url": okta.url,
            "token_env": OKTA_ENV,
            "allow_plaintext": True,
        },
        "targets": [openai_target(emulator)],
        "safety": {"max_removals": 1000, "max_removal_ratio": 1.0},
        "state": {"path": "state.db"},
    }
    return parse_config(document, origin="test", base_dir=folder)


class Org:
    """Random changes made to the emulated Okta org, as an administrator makes them."""

    def __init__(self, okta: OktaEmulator, rng: random.Random) -> None:
        self.okta = okta
        self.rng = rng
        self.serial = 0
        self.log: list[str] = []
        self.users: dict[str, str] = {}  # id -> login
        self.status: dict[str, str] = {}
        self.gone: list[str] = []  # logins deleted, for re-creation
        self.groups = {
            name: okta.add_group(name) for name in ("openai-users", "openai-owners", "team")
        }
        self.members: dict[str, set[str]] = {g: set() for g in self.groups.values()}
        for _ in range(8):
            self.add()

    def add(self, login: str | None = None) -> str:
        if login is None:
            self.serial += 1
            login = f"user{self.serial}@example.com"
        user = self.okta.add_user(email=login, first_name="U", last_name=str(self.serial))
        self.users[user] = login
        self.status[user] = "ACTIVE"
        self.toggle(self.groups[self.rng.choice(["openai-users", "openai-users", "team"])], user)
        return user

    def toggle(self, group: str, user: str) -> None:
        if user in self.members[group]:
            self.okta.remove_member(group, user)
            self.members[group].discard(user)
        else:
            self.okta.add_member(group, user)
            self.members[group].add(user)

    def step(self) -> None:
        rng = self.rng
        user = rng.choice(sorted(self.users))
        kind = rng.choice(
            [
                "add",
                "deactivate",
                "suspend",
                "reactivate",
                "delete",
                "recreate",
                "email",
                "users",
                "owners",
                "team",
                "rename",
                "delete_group",
            ]
        )
        okta = self.okta
        if kind == "add":
            user = self.add()
        elif kind == "deactivate":
            okta.set_status(user, "DEPROVISIONED")
            self.status[user] = "DEPROVISIONED"
        elif kind == "suspend":
            okta.set_status(user, "SUSPENDED")
            self.status[user] = "SUSPENDED"
        elif kind == "reactivate":
            okta.set_status(user, "ACTIVE")
            self.status[user] = "ACTIVE"
        elif kind in ("delete", "recreate"):
            if len(self.users) < 3:
                return
            if self.status[user] != "DEPROVISIONED":
                okta.set_status(user, "DEPROVISIONED")
            okta.delete_user(user)
            login = self.users.pop(user)
            for members in self.members.values():
                members.discard(user)
            if kind == "recreate":  # the same login, a new id
                user = self.add(login)
            else:
                self.gone.append(login)
        elif kind == "email":
            self.serial += 1
            okta.set_email(user, f"moved{self.serial}@example.com")
        elif kind in ("users", "owners", "team"):
            name = {"users": "openai-users", "owners": "openai-owners", "team": "team"}[kind]
            self.toggle(self.groups[name], user)
        elif kind == "rename":
            # `team` and `openai-team` trade places in and out of scope.
            group = self.groups["team"]
            name = okta.group_record(group)["profile"]["name"]
            okta.rename_group(group, "openai-team" if name == "team" else "team")
        elif kind == "delete_group":
            group = self.groups["team"]
            okta.delete_group(group)
            self.members.pop(group)
            self.groups["team"] = okta.add_group("team")
            self.members[self.groups["team"]] = set()
        self.log.append(f"{kind} {user[-4:]}")


@pytest.mark.parametrize(
    ("seed", "okta_ahead"),
    [(3, timedelta(0)), (11, timedelta(minutes=10)), (5, timedelta(minutes=-4))],
    ids=["same-clock", "okta-10min-ahead", "okta-4min-behind"],
)
def test_incremental_passes_over_okta_plan_what_full_passes_plan(
    tmp_path: Path, emulator: OpenAIEmulator, okta: OktaEmulator, seed: int, okta_ahead: timedelta
) -> None:
    """`okta_ahead`: Okta's clock (its stamps, its `Date`) against orgsync's; behind by
    less than the overlap is allowed, ahead by any amount."""
    okta.clock = lambda: datetime.now(UTC) + okta_ahead
    org = Org(okta, random.Random(seed))
    engine = Engine(
        okta_config(tmp_path, okta, emulator), environ={KEY_ENV: API_KEY, OKTA_ENV: okta.token}
    )
    try:
        kinds = run_sequence(engine, emulator, org, steps=15, label=f"seed {seed} ")
    finally:
        engine.close()
    assert kinds.get("incremental", 0) >= 12, kinds


def test_a_host_clock_fixed_after_a_full_read_does_not_hide_a_leaver(okta: OktaEmulator) -> None:
    """A host clock ten minutes fast during a full read (NTP broken, or a replica whose
    clock is wrong) must not leave a cursor in Okta's future: once the clock is right
    again (NTP back, or a replica with a good clock takes the target over), the probe
    passes its clock check and asks for changes after that cursor, and a leaver taken out
    of the group meanwhile keeps their access until the next full pass."""
    start = datetime.now(UTC)
    okta.clock = lambda: start - timedelta(days=1)
    ada = okta.add_user(email="ada@example.com", first_name="Ada")
    bob = okta.add_user(email="bob@example.com", first_name="Bob")
    group = okta.add_group("openai-users")
    okta.add_member(group, ada)
    okta.add_member(group, bob)
    okta.clock = lambda: start
    fast = source(okta, clock=lambda: start + timedelta(minutes=10))
    cursor = fast.change_cursor()  # what a full pass stores, taken before its read
    assert cursor is not None
    assert len(fast.read().groups[0].members) == 2
    okta.clock = lambda: start + timedelta(minutes=1)
    okta.remove_member(group, bob)  # a leaver, stamped a minute after the read
    okta.clock = lambda: start + timedelta(minutes=30)  # the next pass, clocks agreeing
    good = source(okta, clock=lambda: start + timedelta(minutes=30))
    probe = good.probe_changes(cursor, 2, 1)
    assert probe.changed, "the leaver kept their access: the probe trusted a future cursor"


@pytest.fixture
def scim_server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_scim2_server(make_directory(20, 2), tmp_path / "scim2", SCIM_TOKEN)
    yield running
    running.stop()


def test_a_host_clock_fast_during_a_full_scim_read_does_not_hide_a_leaver(
    scim_server: ServerProcess,
) -> None:
    """The same as Okta's over a real SCIM provider (scim2-server): a cursor written on a
    host ten minutes fast is in the provider's future; a probe on a good clock (NTP back,
    or another replica) passed its clock check and missed the member taken out of a
    group meanwhile (the counts do not move)."""
    fast = scim_source(scim_server.url)
    fast.clock = lambda: datetime.now(UTC) + timedelta(minutes=10)
    cursor = fast.change_cursor()
    assert cursor is not None
    snapshot = fast.read()
    take_out_of_a_group(scim_server)
    good = scim_source(scim_server.url)
    try:
        probe = good.probe_changes(cursor, len(snapshot.people), len(snapshot.groups))
    finally:
        good.close()
    assert probe.changed, "the leaver kept their access: the probe trusted a future cursor"


def test_leavers_only_in_the_system_log_beyond_one_page_are_not_quiet(
    okta: OktaEmulator,
) -> None:
    """Deletions leave only System Log events (no user left to list, no group stamp
    moved). More of them than one probe page holds, with the already-seen events of the
    window filling the page: the probe must not answer quiet, on this pass or the next."""
    okta.clock = lambda: datetime.now(UTC) - timedelta(days=7)
    users = [okta.add_user(email=f"leaver{i}@example.com") for i in range(PROBE_PAGE + 5)]
    group = okta.add_group("openai-users")
    for user in users:
        okta.add_member(group, user)
    okta.clock = lambda: datetime.now(UTC)
    reader = source(okta)
    cursor = reader.change_cursor()
    assert cursor is not None
    for user in users[: PROBE_PAGE // 2 + 1]:  # two events each: a page and more
        okta.set_status(user, "DEPROVISIONED")
    first = reader.probe_changes(cursor, len(users), 1)
    assert first.changed
    for user in users[: PROBE_PAGE // 2 + 1]:
        okta.delete_user(user)
    second = reader.probe_changes(str(first.cursor), len(users), 1)
    assert second.changed, "the deletions hid behind a page of events already seen"
