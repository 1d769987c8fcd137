"""The LDAP source's Active Directory change probe against a real AD: Samba's AD DC
(tests/sources/samba.py) on loopback, bound as a plain domain user.

A quiet directory is one base search (the rootDSE's `highestCommittedUSN`); every change
a person's access depends on (an attribute, an addition, a deletion, a group's members,
a rename, a move out of the bases) is reported once, a write elsewhere is not; a cursor
that cannot be trusted (another DC, USNs gone back, a new invocationId, a cursor older
than the tombstone lifetime) sends the pass to a full read; and an account that may not
list deleted objects keeps the timestamp-and-count probe rather than miss a leaver."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ldap3
import pytest
from structlog.testing import capture_logs

from orgsync.core.errors import CursorExpired
from orgsync.retrying import RetrySettings
from orgsync.sources import ldap as ldap_module
from orgsync.sources.ldap import LdapSettings, LdapSource
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.sources.cli import SOURCE_SECRET_ENV, holdings, orgsync, write_config
from tests.sources.probing import Prober
from tests.sources.samba import BASE, READER_PASSWORD, SambaDC

PEOPLE, GROUPS, ELSEWHERE = f"OU=People,{BASE}", f"OU=Groups,{BASE}", f"OU=Elsewhere,{BASE}"
ACTIVE = "544"  # NORMAL_ACCOUNT | PASSWD_NOTREQD: enabled without a password
DISABLED = "546"


def person(index: int) -> str:
    return f"CN=Person {index},{PEOPLE}"


@pytest.fixture(scope="module")
def dc(samba_dc: SambaDC) -> SambaDC:
    """20 people, `openai-users` (everyone) and `openai-owners` (person 0); a tombstone
    exists (a live domain always has some) and `reader` may list them."""
    with samba_dc.admin() as conn:
        for ou in (PEOPLE, GROUPS, ELSEWHERE):
            assert conn.add(ou, "organizationalUnit"), conn.result
        for i in range(20):
            assert conn.add(
                person(i),
                "user",
                {
                    "mail": f"person{i}@example.com",
                    "displayName": f"Person {i}",
                    "userAccountControl": ACTIVE,
                },
            ), conn.result
        for name, members in (
            ("openai-users", [person(i) for i in range(20)]),
            ("openai-owners", [person(0)]),
        ):
            assert conn.add(f"CN={name},{GROUPS}", "group", {"member": members}), conn.result
        assert conn.add(f"OU=scratch,{ELSEWHERE}", "organizationalUnit"), conn.result
        assert conn.delete(f"OU=scratch,{ELSEWHERE}"), conn.result
    samba_dc.grant_deleted_objects("reader")
    return samba_dc


def settings(dc: SambaDC, account: str = "reader", **overrides: Any) -> LdapSettings:
    values: dict[str, Any] = {
        "url": dc.url,
        "bind_dn": f"{account}@example.test",
        "password": READER_PASSWORD,
        "users_base": PEOPLE,
        "groups_base": GROUPS,
        "flavor": "ad",
        "allow_plaintext": True,
        "timeout": 10,
    }
    values.update(overrides)
    return LdapSettings(**values)


def source(dc: SambaDC, account: str = "reader", **overrides: Any) -> LdapSource:
    return LdapSource(
        settings(dc, account, **overrides), retry=RetrySettings(max_attempts=1, max_delay=1)
    )


@pytest.fixture
def prober(dc: SambaDC) -> Prober:
    reader = source(dc)
    snapshot = reader.read()
    made = Prober(reader, len(snapshot.people), len(snapshot.groups))
    assert "usn" in json.loads(made.cursor)
    settle(made)
    return made


def settle(prober: Prober) -> None:
    """Whatever earlier tests or binds wrote (a first logon stamps lastLogonTimestamp on
    the account) is seen once; then the directory is quiet."""
    for _ in range(3):
        if not prober.changed():
            return
    raise AssertionError("the directory did not settle")


def admin_write(dc: SambaDC, write: Callable[[ldap3.Connection], bool]) -> None:
    with dc.admin() as conn:
        assert write(conn), conn.result


def test_a_paged_read_of_active_directory(dc: SambaDC) -> None:
    """Samba answers every page of a search with the same cookie (a handle, `1\\0`):
    the read moves on by its pages, not its cookie, and gets everyone once."""
    reader = source(dc, page_size=7)
    snapshot = reader.read()
    assert reader.pages > 3
    emails = sorted(p.email for p in snapshot.people)
    assert emails == sorted(f"person{i}@example.com" for i in range(20))
    assert all(p.active for p in snapshot.people)
    groups = {g.name: g for g in snapshot.groups}
    assert len(groups["openai-users"].members) == 20
    by_id = {p.id: p.email for p in snapshot.people}
    assert [by_id[m] for m in groups["openai-owners"].members] == ["person0@example.com"]


def test_a_quiet_directory_is_one_search(dc: SambaDC, prober: Prober) -> None:
    for _ in range(3):
        assert not prober.changed()
        assert prober.calls == 1
    assert prober.people == 20


@pytest.mark.parametrize(
    "change",
    [
        "modify",
        "disable",
        "add",
        "delete",
        "member-add",
        "member-remove",
        "rename",
        "move-out",
        "group-delete",
        "user-elsewhere",
        "ou-moved-out",
        "delete-lone",
    ],
)
def test_each_change_is_seen_once(dc: SambaDC, prober: Prober, change: str) -> None:
    replace, add, delete = ldap3.MODIFY_REPLACE, ldap3.MODIFY_ADD, ldap3.MODIFY_DELETE
    users = f"CN=openai-users,{GROUPS}"
    writes: dict[str, Callable[[ldap3.Connection], bool]] = {
        "modify": lambda c: c.modify(person(1), {"displayName": [(replace, ["Renamed"])]}),
        "disable": lambda c: c.modify(person(2), {"userAccountControl": [(replace, [DISABLED])]}),
        "add": lambda c: c.add(
            f"CN=Newcomer,{PEOPLE}",
            "user",
            {"mail": "newcomer@example.com", "userAccountControl": ACTIVE},
        ),
        # A leaver: the entry becomes a tombstone under CN=Deleted Objects; its group
        # memberships go with it, and no group's uSNChanged is required to move.
        "delete": lambda c: c.delete(person(3)),
        "member-add": lambda c: c.modify(
            f"CN=openai-owners,{GROUPS}", {"member": [(add, [person(4)])]}
        ),
        "member-remove": lambda c: c.modify(users, {"member": [(delete, [person(5)])]}),
        "rename": lambda c: c.modify_dn(person(6), "CN=Person Six"),
        # Moved out of the bases: AD changes no group (member values follow the object),
        # and the entry, now elsewhere, is the only trace.
        "move-out": lambda c: c.modify_dn(person(7), "CN=Person 7", new_superior=ELSEWHERE),
        "group-delete": lambda c: c.delete(f"CN=openai-owners,{GROUPS}"),
        # A user outside the bases may be one that just moved out: counted, not guessed.
        "user-elsewhere": lambda c: c.add(
            f"CN=Outsider,{ELSEWHERE}", "user", {"userAccountControl": ACTIVE}
        ),
        # In no group: nothing but its tombstone says it left.
        "delete-lone": lambda c: (
            c.add(
                f"CN=Lone,{PEOPLE}",
                "user",
                {"mail": "lone@example.com", "userAccountControl": ACTIVE},
            )
            and prober.changed()
            and not prober.changed()
            and c.delete(f"CN=Lone,{PEOPLE}")
        ),
        # An OU of people moved out of the bases: only the OU's uSNChanged moves.
        "ou-moved-out": lambda c: (
            c.add(f"OU=Team,{PEOPLE}", "organizationalUnit")
            and c.add(
                f"CN=Teammate,OU=Team,{PEOPLE}",
                "user",
                {"mail": "teammate@example.com", "userAccountControl": ACTIVE},
            )
            and prober.changed()
            and not prober.changed()
            and c.modify_dn(f"OU=Team,{PEOPLE}", "OU=Team", new_superior=ELSEWHERE)
        ),
    }
    try:
        admin_write(dc, writes[change])
        assert prober.changed()
        assert prober.calls >= 3  # rootDSE, invocationId, changed entries (tombstones)
        assert not prober.changed()
        assert prober.calls == 1
    finally:
        restore(dc, change)


def restore(dc: SambaDC, change: str) -> None:
    """Put the module's directory back as the other tests expect it."""
    with dc.admin() as conn:
        if change == "modify":
            conn.modify(person(1), {"displayName": [(ldap3.MODIFY_REPLACE, ["Person 1"])]})
        elif change == "disable":
            conn.modify(person(2), {"userAccountControl": [(ldap3.MODIFY_REPLACE, [ACTIVE])]})
        elif change == "add":
            conn.delete(f"CN=Newcomer,{PEOPLE}")
        elif change == "delete":
            conn.add(
                person(3), "user", {"mail": "person3@example.com", "userAccountControl": ACTIVE}
            )
        elif change == "member-add":
            conn.modify(
                f"CN=openai-owners,{GROUPS}", {"member": [(ldap3.MODIFY_DELETE, [person(4)])]}
            )
        elif change == "member-remove":
            conn.modify(f"CN=openai-users,{GROUPS}", {"member": [(ldap3.MODIFY_ADD, [person(5)])]})
        elif change == "rename":
            conn.modify_dn(f"CN=Person Six,{PEOPLE}", "CN=Person 6")
        elif change == "move-out":
            conn.modify_dn(f"CN=Person 7,{ELSEWHERE}", "CN=Person 7", new_superior=PEOPLE)
        elif change == "group-delete":
            conn.add(f"CN=openai-owners,{GROUPS}", "group", {"member": [person(0)]})
        elif change == "user-elsewhere":
            conn.delete(f"CN=Outsider,{ELSEWHERE}")
        elif change == "ou-moved-out":
            conn.delete(f"CN=Teammate,OU=Team,{ELSEWHERE}")
            conn.delete(f"OU=Team,{ELSEWHERE}")


def test_writes_elsewhere_are_not_changes(dc: SambaDC, prober: Prober) -> None:
    """A computer, a contact or an empty OU's deletion outside the bases moves the USN:
    the searches run once, find nothing of ours, and the next probe is one search again.
    (A live user, group, OU or container changed anywhere counts: it may have just moved
    out of the bases.)"""
    writes = [
        # An empty OU deleted: its tombstone holds no one (an OU with people in it is
        # deleted with their tombstones).
        lambda c: (
            c.add(f"OU=Lab,{ELSEWHERE}", "organizationalUnit") and c.delete(f"OU=Lab,{ELSEWHERE}")
        ),
        lambda c: c.add(f"CN=ws1,{ELSEWHERE}", ["computer"], {"sAMAccountName": "ws1$"}),
        lambda c: c.modify(
            f"CN=ws1,{ELSEWHERE}", {"description": [(ldap3.MODIFY_REPLACE, ["lab"])]}
        ),
        lambda c: c.delete(f"CN=ws1,{ELSEWHERE}"),
        lambda c: c.add(f"CN=Supplier,{ELSEWHERE}", "contact", {"mail": "s@example.org"}),
    ]
    for write in writes:
        admin_write(dc, write)
        assert not prober.changed()
        assert prober.calls >= 3
        assert not prober.changed()
        assert prober.calls == 1


def test_many_changes_end_the_probe_at_the_first(dc: SambaDC) -> None:
    """A busy domain (a bulk import; logons stamping lastLogonTimestamp on thousands of
    users) is not paged through by the probe only to be counted: the first change of
    ours ends it, and the pass reads the source whole anyway. With pages of 5 and 20
    people changed, the probe is the rootDSE, the invocationId and one page."""
    reader = source(dc, page_size=5)
    snapshot = reader.read()
    prober = Prober(reader, len(snapshot.people), len(snapshot.groups))
    settle(prober)
    with dc.admin() as conn:
        for i in range(20):
            replace = [(ldap3.MODIFY_REPLACE, [f"busy {i}"])]
            assert conn.modify(person(i), {"description": replace}), conn.result
    assert prober.changed()
    assert prober.calls == 3
    assert not prober.changed()
    assert prober.calls == 1


def edited(cursor: str, **changes: Any) -> str:
    value = json.loads(cursor)
    value["usn"].update(changes)
    return json.dumps(value)


def test_a_cursor_that_cannot_be_trusted_means_a_full_read(dc: SambaDC, prober: Prober) -> None:
    reader = prober.source
    usn = json.loads(prober.cursor)["usn"]
    people, groups = prober.people, prober.groups
    untrusted = {
        "went back": edited(prober.cursor, highest=usn["highest"] + 1000),
        "invocationId changed": edited(
            prober.cursor, highest=usn["highest"] - 1, invocation="00" * 16
        ),
        "USNs are per domain controller": edited(
            prober.cursor, dc="CN=NTDS Settings,CN=OTHER,CN=Servers," + usn["dc"].split(",", 3)[3]
        ),
        "tombstone lifetime": edited(
            prober.cursor,
            taken=(datetime.now(UTC) - timedelta(days=usn["tombstone_days"])).strftime(
                "%Y%m%d%H%M%SZ"
            ),
        ),
        "not one this source wrote": json.dumps({"usn": {"highest": "x"}}),
    }
    for why, cursor in untrusted.items():
        with pytest.raises(CursorExpired, match=why):
            reader.probe_changes(cursor, people, groups)
    # The same cursor as it was is fine.
    assert not reader.probe_changes(prober.cursor, people, groups).changed


def test_an_account_that_cannot_list_deleted_objects_keeps_counting(
    dc: SambaDC, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AD answers such an account's search of Deleted Objects with nothing, and success:
    trusting it would read a leaver as quiet. The source sees no tombstone, says why, and
    keeps the timestamp-and-count probe, which sees the deletion."""
    monkeypatch.setattr(ldap_module, "_SAID_DEGRADED", set())
    dc.add_account("blind")
    blind = source(dc, "blind")
    snapshot = blind.read()
    with capture_logs() as logs:
        prober = Prober(blind, len(snapshot.people), len(snapshot.groups))
    assert "usn" not in json.loads(prober.cursor)
    (degraded,) = [e for e in logs if e["event"] == "source.change_probe_degraded"]
    assert "Deleted Objects" in degraded["reason"]
    assert "LCRP" in degraded["enable"]
    settle(prober)
    try:
        admin_write(dc, lambda c: c.delete(person(9)))
        assert prober.changed()
    finally:
        restore_person(dc, 9)


def restore_person(dc: SambaDC, index: int) -> None:
    with dc.admin() as conn:
        conn.add(
            person(index),
            "user",
            {"mail": f"person{index}@example.com", "userAccountControl": ACTIVE},
        )
        conn.modify(f"CN=openai-users,{GROUPS}", {"member": [(ldap3.MODIFY_ADD, [person(index)])]})


def ad_config(dc: SambaDC) -> str:
    return f"""[source]
type = "ldap"
flavor = "ad"
url = "{dc.url}"
allow_plaintext = true
bind_dn = "reader@example.test"
bind_password_env = "{SOURCE_SECRET_ENV}"
users_base = "{PEOPLE}"
groups_base = "{GROUPS}"
max_attempts = 1
timeout = "10s"
"""


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_incremental_passes_over_active_directory(
    dc: SambaDC, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """Full pass, then quiet incremental passes of one search and no target call; a
    leaver deleted in AD loses their pending invitation at the next pass."""
    config = write_config(tmp_path, emulator, ad_config(dc))

    def incremental() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        run = orgsync(
            config,
            "sync",
            "--incremental",
            "--json",
            "--log-format",
            "json",
            secret=READER_PASSWORD,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        (target,) = json.loads(run.stdout)["targets"]
        return target, events(run.stderr)

    full = orgsync(config, "sync", secret=READER_PASSWORD)
    assert full.returncode == 0, full.stdout + full.stderr
    assert "person11@example.com" in holdings(emulator)
    for _ in range(3):
        target, logged = incremental()
        probed = [(e["changed"], e["calls"]) for e in logged if e["event"] == "source.probed"]
        if probed == [(False, 1)]:
            break
    mark = len(emulator.requests)
    target, logged = incremental()
    probed = [(e["changed"], e["calls"]) for e in logged if e["event"] == "source.probed"]
    assert probed == [(False, 1)]
    assert target["operations"] == []
    assert emulator.requests[mark:] == []

    try:
        admin_write(dc, lambda c: c.delete(person(11)))
        target, logged = incremental()
        assert [(op["op"], op["email"]) for op in target["operations"]] == [
            ("revoke_invite", "person11@example.com")
        ]
        assert "person11@example.com" not in holdings(emulator)
    finally:
        restore_person(dc, 11)


def test_ldap_active_directory_from_the_domain_root_reads_past_its_partition_references(
    samba_dc: SambaDC,
) -> None:
    """Held (source red team), on a real Samba AD DC: a search from the domain root is answered with
    references to the DNS and configuration partitions, which hold no people; the read
    passes over them (and only them) and completes."""
    ad = LdapSource(
        LdapSettings(
            url=samba_dc.url,
            bind_dn="reader@example.test",
            password=READER_PASSWORD,
            users_base=BASE,
            groups_base=BASE,
            flavor="ad",
            allow_plaintext=True,
            timeout=10,
        ),
        retry=RetrySettings(max_attempts=1, max_delay=1),
    )
    snapshot = ad.read()
    assert snapshot.groups  # the built-in groups at least
