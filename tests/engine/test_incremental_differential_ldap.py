"""Red team of incremental passes over a real OpenLDAP slapd (issue 13): after random
changes made in the directory, an incremental pass plans exactly what a full pass plans.

The LDAP probe sees changes through `modifyTimestamp`/`entryCSN` (and, with syncprov,
the database's `contextCSN`) and deletions through counts. What could slip past it, and
keep a leaver's access until the next full pass: a person moved out of the search base
(a modrdn to another OU: no group changes, the count drops), moved back in (the same
entryUUID returns), a deletion and an addition in one pass (the count does not move), a
group nested or un-nested (one group entry changes, many people are reached), two
changes of one entry within one second, a delete and re-add of one DN under a new
entryUUID with the same address. Seeded sequences of these, with and without syncprov.

For every step: a full dry run plans F, the incremental sync plans I, I must be F, and a
full dry run afterwards plans nothing. The engine in-process, the OpenAI emulator over
loopback, real SQLite.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from orgsync.config import load_config
from orgsync.engine import Engine
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.engine.differential import run_sequence
from tests.sources.cli import SOURCE_SECRET_ENV, write_config
from tests.sources.directory import make_directory
from tests.sources.servers import READER_PASSWORD, SUFFIX, Slapd, group_dn, ldif
from tests.sources.test_ldap import ldap_config
from tests.sources.test_ldap_changes import admin

PEOPLE_OU, ELSEWHERE_OU = f"ou=people,{SUFFIX}", f"ou=contractors,{SUFFIX}"


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


class Changes:
    """Random changes made in the directory over an admin connection."""

    def __init__(self, conn: ldap3.Connection, rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        self.serial = 100
        self.log: list[str] = []

    def uids(self, ou: str) -> list[str]:
        # ldap3 answers False for a search that found nothing.
        self.conn.search(ou, "(objectClass=inetOrgPerson)", attributes=["uid"])
        return sorted(str(e.uid) for e in self.conn.entries)

    def members(self, group: str) -> list[str]:
        assert self.conn.search(group_dn(group), "(objectClass=*)", attributes=["member"])
        return [str(m) for m in self.conn.entries[0].member.values]

    def toggle_member(self, group: str, dn: str) -> None:
        present = dn.lower() in {m.lower() for m in self.members(group)}
        change = ldap3.MODIFY_DELETE if present else ldap3.MODIFY_ADD
        if present and len(self.members(group)) == 1:
            return  # groupOfNames needs a member
        assert self.conn.modify(group_dn(group), {"member": [(change, [dn])]}), self.conn.result

    def add_person(self, uid: str, email: str) -> str:
        dn = f"uid={uid},{PEOPLE_OU}"
        attributes = {"cn": uid, "sn": "New", "mail": email, "uid": uid, "displayName": uid}
        assert self.conn.add(dn, ["inetOrgPerson"], attributes), self.conn.result
        return dn

    def step(self) -> None:
        rng = self.rng
        inside = self.uids(PEOPLE_OU)
        outside = self.uids(ELSEWHERE_OU)
        uid = rng.choice(inside)
        dn = f"uid={uid},{PEOPLE_OU}"
        kind = rng.choice(
            [
                "add",
                "delete",
                "email",
                "name_twice",
                "disable",
                "owner",
                "team",
                "users",
                "move_out",
                "move_in",
                "nest",
                "readd_same_dn",
                "delete_and_add",
            ]
        )
        if kind == "add":
            self.serial += 1
            new = self.add_person(f"new{self.serial}", f"new{self.serial}@example.test")
            self.toggle_member(rng.choice(["openai-users", "team-ml"]), new)
        elif kind == "delete":
            assert self.conn.delete(dn), self.conn.result
        elif kind == "email":
            self.serial += 1
            mail = f"moved{self.serial}@example.test"
            assert self.conn.modify(dn, {"mail": [(ldap3.MODIFY_REPLACE, [mail])]})
        elif kind == "name_twice":  # two changes of one entry within one second
            for name in ("First", "Second"):
                assert self.conn.modify(dn, {"displayName": [(ldap3.MODIFY_REPLACE, [name])]})
        elif kind == "disable":
            assert self.conn.search(dn, "(objectClass=*)", attributes=["employeeType"])
            disabled = "disabled" in [str(v) for v in self.conn.entries[0].employeeType.values]
            change = [(ldap3.MODIFY_DELETE, [])] if disabled else [(ldap3.MODIFY_ADD, ["disabled"])]
            assert self.conn.modify(dn, {"employeeType": change}), self.conn.result
        elif kind == "owner":
            self.toggle_member("openai-owners", dn)
        elif kind == "team":
            self.toggle_member("team-ml", dn)
        elif kind == "users":
            self.toggle_member("openai-users", dn)
        elif kind == "move_out":  # out of the search base: no group entry changes
            assert self.conn.modify_dn(dn, f"uid={uid}", new_superior=ELSEWHERE_OU)
        elif kind == "move_in":
            if not outside:
                return
            uid = rng.choice(outside)
            assert self.conn.modify_dn(
                f"uid={uid},{ELSEWHERE_OU}", f"uid={uid}", new_superior=PEOPLE_OU
            )
        elif kind == "nest":
            self.toggle_member("openai-users", group_dn("team-ml"))
        elif kind == "readd_same_dn":  # a new entryUUID under the same DN and address
            assert self.conn.search(dn, "(objectClass=*)", attributes=["mail"])
            mail = str(self.conn.entries[0].mail)
            assert self.conn.delete(dn), self.conn.result
            self.add_person(uid, mail)
        elif kind == "delete_and_add":  # the count does not move
            assert self.conn.delete(dn), self.conn.result
            self.serial += 1
            new = self.add_person(f"new{self.serial}", f"new{self.serial}@example.test")
            self.toggle_member("openai-users", new)
        self.log.append(f"{kind} {uid}")


@pytest.mark.parametrize("syncprov", [False, True], ids=["timestamps", "syncprov"])
def test_incremental_passes_over_ldap_plan_what_full_passes_plan(
    tmp_path: Path, emulator: OpenAIEmulator, syncprov: bool
) -> None:
    server = Slapd(tmp_path / "slapd", ldif(make_directory(20, 2)), syncprov=syncprov)
    try:
        config = write_config(tmp_path, emulator, ldap_config(server.url))
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace("max_removal_ratio = 0.5", "max_removal_ratio = 1.0"), encoding="utf-8"
        )
        environ = {KEY_ENV: API_KEY, SOURCE_SECRET_ENV: READER_PASSWORD}
        engine = Engine(load_config(config), environ=environ)
        with admin(server) as conn:
            changes = Changes(conn, random.Random(7 if syncprov else 8))
            try:
                kinds = run_sequence(engine, emulator, changes, steps=25)
            finally:
                engine.close()
        assert kinds.get("incremental", 0) >= 18, kinds
    finally:
        server.stop()
