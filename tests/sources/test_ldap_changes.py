"""The LDAP source's change probe (incremental passes) against a real OpenLDAP slapd on
loopback. Without syncprov: a quiet directory is reported quiet in four small searches,
and every kind of change (an attribute, a second change within the same second, a
group's members, a rename, a deletion, an addition) is reported once. With syncprov: a
quiet directory is one base search (the database's `contextCSN`), every write moves it,
and a write outside the bases costs the four searches once and is reported quiet.
The counts (one streamed paged search each) against servers that cap unpaged answers,
page sizes or paged totals: exact, or a clear failure, never a short count."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.core import exceptions as lx
from structlog.testing import capture_logs

from orgsync.core.errors import CursorExpired, Interrupted, SourceError
from orgsync.core.ports import DetectsChanges
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings
from orgsync.sources import ldap as ldap_module
from orgsync.sources.ldap import LdapSource
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.sources.cli import holdings, orgsync, write_config
from tests.sources.directory import Directory, make_directory
from tests.sources.probing import Prober
from tests.sources.servers import (
    READER_PASSWORD,
    SUFFIX,
    Slapd,
    TcpProxy,
    group_dn,
    ldif,
    person_dn,
)
from tests.sources.test_ldap import ldap_config, settings

ADMIN_DN, ADMIN_PASSWORD = f"cn=admin,{SUFFIX}", "admin-secret"


@pytest.fixture(scope="module")
def directory() -> Directory:
    return make_directory(40, 2)


@pytest.fixture(scope="module")
def server(directory: Directory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    running = Slapd(tmp_path_factory.mktemp("slapd-changes"), ldif(directory))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    running = Slapd(
        tmp_path_factory.mktemp("slapd-syncprov"), ldif(make_directory(40, 2)), syncprov=True
    )
    yield running
    running.stop()


@contextmanager
def admin(server: Slapd) -> Iterator[ldap3.Connection]:
    conn = ldap3.Connection(
        ldap3.Server("127.0.0.1", port=server.port), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True
    )
    try:
        yield conn
    finally:
        conn.unbind()
        if conn.socket is not None:
            conn.socket.close()


def test_probes_report_each_change_once(server: Slapd, tmp_path: Path) -> None:
    source = LdapSource(settings(server.url), retry=RetrySettings(max_attempts=1, max_delay=1))
    assert isinstance(source, DetectsChanges)
    snapshot = source.read()
    people, groups = len(snapshot.people), len(snapshot.groups)
    prober = Prober(source, people, groups)
    assert "csn" not in json.loads(prober.cursor), "this server keeps no contextCSN"
    # Everything was written in the last minutes (slapadd): seen once, then quiet.
    assert prober.changed()
    assert not prober.changed()
    assert prober.calls == 4  # people and groups changed since; people and groups counted

    with admin(server) as conn:
        victim = person_dn(next(iter(make_directory(40, 2).people)))
        assert conn.modify(victim, {"displayName": [(ldap3.MODIFY_REPLACE, ["Renamed"])]})
        assert prober.changed()
        assert not prober.changed()
        # The same entry again within the same second: its timestamp does not move.
        assert conn.modify(victim, {"displayName": [(ldap3.MODIFY_REPLACE, ["Again"])]})
        assert prober.changed()
        assert not prober.changed()

        assert conn.modify(group_dn("group1"), {"member": [(ldap3.MODIFY_ADD, [person_dn_of(0)])]})
        assert prober.changed()
        assert not prober.changed()

        # A rename (modrdn) moves the entry's timestamp; the pass that reads it sees
        # the same entryUUID under a new DN.
        assert conn.modify_dn(person_dn_of(5), "uid=renamed5")
        assert prober.changed()
        assert not prober.changed()

        assert conn.modify(
            group_dn("group1"), {"member": [(ldap3.MODIFY_DELETE, [person_dn_of(0)])]}
        )
        assert prober.changed()
        assert not prober.changed()

        # A deletion leaves no timestamp: the count of people tells.
        assert conn.delete(person_dn_of(7))
        assert prober.changed()
        prober.people = people - 1  # the pass that read the source whole records this
        assert not prober.changed()

        assert conn.add(
            f"uid=newcomer,ou=people,{SUFFIX}",
            ["inetOrgPerson"],
            {"cn": "New", "sn": "Comer", "mail": "newcomer@example.com", "uid": "newcomer"},
        )
        assert prober.changed()
        prober.people = people
        assert not prober.changed()

        # Deleting a group changes no member's entry (no refint here): counted too.
        assert conn.delete(group_dn("cycle-b"))
        assert prober.changed()
        prober.groups = groups - 1
        assert not prober.changed()


def test_without_syncprov_the_costlier_probe_is_said_once(
    server: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet pass costs a count of every entry there (a deletion leaves no timestamp):
    the log says so, and what to enable, once per process rather than at every pass."""
    monkeypatch.setattr(ldap_module, "_SAID_DEGRADED", set())
    with capture_logs() as logs:
        for _ in range(2):
            LdapSource(
                settings(server.url), retry=RetrySettings(max_attempts=1, max_delay=1)
            ).change_cursor()
    (said,) = [e for e in logs if e["event"] == "source.change_probe_degraded"]
    assert "syncprov" in said["enable"]
    assert "counts every person and group" in said["cost"]


def test_with_syncprov_nothing_is_said(synced: Slapd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ldap_module, "_SAID_DEGRADED", set())
    with capture_logs() as logs:
        LdapSource(
            settings(synced.url), retry=RetrySettings(max_attempts=1, max_delay=1)
        ).change_cursor()
    assert not [e for e in logs if e["event"] == "source.change_probe_degraded"]


def person_dn_of(index: int) -> str:
    return person_dn(make_directory(40, 2).people[index])


def test_with_syncprov_a_quiet_probe_is_one_search_and_every_write_is_seen(
    synced: Slapd,
) -> None:
    source = LdapSource(settings(synced.url), retry=RetrySettings(max_attempts=1, max_delay=1))
    snapshot = source.read()
    people, groups = len(snapshot.people), len(snapshot.groups)
    prober = Prober(source, people, groups)
    assert list(json.loads(prober.cursor)["csn"]) == [SUFFIX]
    assert not prober.changed(), "nothing was written since the cursor was taken"
    assert prober.calls == 1
    assert not prober.changed()
    assert prober.calls == 1

    def seen_once(write: Callable[[ldap3.Connection], bool], *, lost: str = "") -> None:
        with admin(synced) as conn:
            assert write(conn), conn.result
        assert prober.changed()
        assert prober.calls > 1, "a moved contextCSN falls back to the searches"
        # What the pass that reads the source whole records.
        prober.people -= lost == "person"
        prober.groups -= lost == "group"
        assert not prober.changed()
        assert prober.calls == 1

    replace = ldap3.MODIFY_REPLACE
    seen_once(lambda c: c.modify(person_dn_of(1), {"displayName": [(replace, ["Renamed"])]}))
    # The same entry again within the same second.
    seen_once(lambda c: c.modify(person_dn_of(1), {"displayName": [(replace, ["Again"])]}))
    seen_once(
        lambda c: c.modify(group_dn("group1"), {"member": [(ldap3.MODIFY_ADD, [person_dn_of(2)])]})
    )
    seen_once(
        lambda c: c.modify(
            group_dn("group1"), {"member": [(ldap3.MODIFY_DELETE, [person_dn_of(2)])]}
        )
    )
    seen_once(lambda c: c.modify_dn(person_dn_of(5), "uid=renamed5"))
    seen_once(lambda c: c.delete(person_dn_of(7)), lost="person")
    seen_once(lambda c: c.delete(group_dn("cycle-b")), lost="group")

    # A write outside the bases moves the contextCSN too: the searches then find
    # nothing in scope, once, and the next probe is one search again.
    with admin(synced) as conn:
        assert conn.add(f"ou=elsewhere,{SUFFIX}", ["organizationalUnit"], {"ou": "elsewhere"})
    assert not prober.changed()
    assert prober.calls > 1
    assert not prober.changed()
    assert prober.calls == 1


def test_a_cursor_it_did_not_write_is_expired(server: Slapd) -> None:
    source = LdapSource(settings(server.url), retry=RetrySettings(max_attempts=1, max_delay=1))
    for cursor in (
        "",
        "{}",
        '{"since": "yesterday", "seen": {}}',
        "[1]",
        '{"since": "20260101000000Z", "seen": {}, "csn": {}}',
        '{"since": "20260101000000Z", "seen": {}, "csn": {"dc=example,dc=com": []}}',
        '{"since": "20260101000000Z", "seen": {}, "csn": ["x"]}',
        '{"since": "20260101000000Z", "seen": {}, "count_pages": [["ou=people", "(x=*)", 0]]}',
        '{"since": "20260101000000Z", "seen": {}, "count_pages": [["ou=people"]]}',
        '{"since": "20260101000000Z", "seen": {}, "count_pages": 5}',
    ):
        with pytest.raises(CursorExpired):
            source.probe_changes(cursor, 40, 8)


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("kind", ["server", "synced"])
def test_incremental_passes_over_ldap(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """Without syncprov, the first incremental pass after the full one reads the
    directory (its entries are minutes old) and finds nothing to plan; the next is the
    probe's four searches and nothing else. With syncprov, both are one search (the
    contextCSN did not move). A change made in the directory reaches the organization by
    the next pass."""
    server: Slapd = request.getfixturevalue(kind)
    config = write_config(tmp_path, emulator, ldap_config(server.url))

    def incremental() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        run = orgsync(
            config, "sync", "--incremental", "--json", "--log-format", "json",
            secret=READER_PASSWORD,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        (target,) = json.loads(run.stdout)["targets"]
        return target, events(run.stderr)

    full = orgsync(config, "sync", secret=READER_PASSWORD)
    assert full.returncode == 0, full.stdout + full.stderr
    target, logged = incremental()
    assert target["run"]["pass"] == "incremental"
    assert any(e["event"] == "source.read" for e in logged) == (kind == "server")
    mark = len(emulator.requests)
    target, logged = incremental()
    assert target["operations"] == []
    probed = [(e["changed"], e["calls"]) for e in logged if e["event"] == "source.probed"]
    assert probed == [(False, 1 if kind == "synced" else 4)]
    assert not any(e["event"] == "source.read" for e in logged), "a quiet probe reads nothing"
    assert emulator.requests[mark:] == []

    newcomer = f"brand.new.{kind}@example.com"
    with admin(server) as conn:
        assert conn.add(
            f"uid=brandnew{kind},ou=people,{SUFFIX}",
            ["inetOrgPerson"],
            {"cn": "Brand New", "sn": "New", "mail": newcomer, "uid": f"brandnew{kind}"},
        )
        assert conn.modify(
            group_dn("openai-users"),
            {"member": [(ldap3.MODIFY_ADD, [f"uid=brandnew{kind},ou=people,{SUFFIX}"])]},
        )
    target, logged = incremental()
    assert [op["email"] for op in target["operations"]] == [newcomer]
    assert newcomer in holdings(emulator)


# ------------------------------------------------------------------ counts a server caps


def aged(data: str) -> str:
    """`data` as written years ago: the timestamp searches then find nothing (one page
    each, whatever the page size), as in a directory that has been there a while."""
    old = "modifyTimestamp: 20200101000000Z\ncreateTimestamp: 20200101000000Z\n"
    return "\n".join(block.rstrip("\n") + "\n" + old for block in data.split("\n\n") if block)


CAPS = {
    # What the tests' other servers allow the reader: anything.
    "unlimited": "size.soft=unlimited size.hard=unlimited size.prtotal=unlimited",
    # OpenLDAP's default `sizelimit 500` (scaled down) with paging allowed past it: an
    # unpaged search would answer 15 entries and sizeLimitExceeded; a page of any size
    # is honoured.
    "unpaged capped": "size.soft=15 size.hard=15 size.prtotal=unlimited",
    # ... and pages above 12 entries refused (adminLimitExceeded, "illegal pagedResults
    # page size"); the configured page_size (10) passes.
    "page capped": "size.soft=15 size.hard=15 size.pr=12 size.prtotal=unlimited",
}


@pytest.mark.parametrize("cap", list(CAPS))
def test_a_quiet_probe_counts_in_one_search_and_a_capped_server_still_counts_exactly(
    cap: str, tmp_path: Path
) -> None:
    """Harm: a leaver missed (lost-access territory: they keep their seat until the next
    full pass), or a count cut short by the server's limits read as leavers.

    Without syncprov a deletion leaves no timestamp, so the probe counts people and
    groups: one paged search each, asking for COUNT_PAGE entries a page. A server that
    honours the page, a size limit on unpaged answers or not, makes a quiet probe four
    searches (two timestamp searches, one count per base). One that refuses a page that
    large is counted in pages of `page_size`, and the cursor keeps that for the next
    passes. Either way the count is exact: a quiet directory reads quiet, one deletion
    reads changed."""
    server = Slapd(tmp_path / "slapd", aged(ldif(make_directory(40, 2))), limits=CAPS[cap])
    try:
        source = LdapSource(
            settings(server.url, page_size=10), retry=RetrySettings(max_attempts=1, max_delay=1)
        )
        snapshot = source.read()
        people, groups = len(snapshot.people), len(snapshot.groups)
        assert people > 15 and groups < 15
        prober = Prober(source, people, groups)
        people_pages = math.ceil(people / 10) if cap == "page capped" else 1
        # Found out once: the page refused, for people and for groups. The cursor keeps
        # the page that worked for the next pass, which builds its source anew.
        learning = 2 if cap == "page capped" else 0
        for extra in (learning, 0):
            with capture_logs() as logs:
                assert not prober.changed(), "the count is exact: no one reads as gone"
            capped = [e for e in logs if e["event"] == "source.count_capped"]
            # What lifts the cap is said when it is found out, not at every pass.
            assert len(capped) == extra, capped
            assert all("size.pr=unlimited" in e["enable"] for e in capped)
            # Two timestamp searches, the people's count, the groups' (one search).
            assert prober.calls == 2 + people_pages + 1 + extra
            prober.source = LdapSource(
                settings(server.url, page_size=10),
                retry=RetrySettings(max_attempts=1, max_delay=1),
            )

        with admin(server) as conn:
            assert conn.delete(person_dn_of(7))
        assert prober.changed(), "a deletion leaves no timestamp: the count tells"
        prober.people = people - 1
        assert not prober.changed()
    finally:
        server.stop()


def test_a_server_that_will_not_page_through_everyone_fails_the_probe(tmp_path: Path) -> None:
    """A server that caps the total of a paged search too (`size.prtotal`) cannot be
    counted: the probe fails naming the size limit (as the read would), never answers
    a short count that would read as leavers, nor a quiet directory."""
    server = Slapd(
        tmp_path / "slapd",
        aged(ldif(make_directory(40, 2))),  # the timestamp searches find nothing
        limits="size.soft=15 size.hard=15 size.prtotal=30",
    )
    try:
        source = LdapSource(
            settings(server.url, page_size=10), retry=RetrySettings(max_attempts=1, max_delay=1)
        )
        cursor = source.change_cursor()
        assert cursor is not None
        for known in (15, 30, 40):
            with pytest.raises(SourceError, match="size limit was exceeded"):
                source.probe_changes(cursor, known, 8)
    finally:
        server.stop()


def test_the_count_refuses_a_continuation_reference(tmp_path: Path) -> None:
    """Harm: lost access. The count reads the answer off the connection itself; part of
    the people base held by another server (a `searchResRef`) is not followed (the bind
    password would go there), so the people there are not counted and would read as
    leavers: the count fails naming it, as the read does."""
    data = ldif(make_directory(40, 2)) + (
        f"\ndn: ou=contractors,ou=people,{SUFFIX}\nobjectClass: referral\n"
        "objectClass: extensibleObject\nou: contractors\n"
        f"ref: ldap://127.0.0.1:9/ou=contractors,ou=people,{SUFFIX}\n"
    )
    server = Slapd(tmp_path / "slapd", data)
    try:
        source = LdapSource(settings(server.url), retry=RetrySettings(max_attempts=1, max_delay=1))
        conn = source._connect()
        try:
            with pytest.raises(SourceError, match=r"referred part of the subtree to ldap://"):
                source._count(conn, source.settings.users_base, source.settings.users)
        finally:
            conn.unbind()
    finally:
        server.stop()


def test_a_stop_request_ends_a_count_stuck_mid_answer(tmp_path: Path) -> None:
    """Harm: a daemon that does not stop. The count reads its answer off the socket
    itself, not through ldap3's search: the answer stalled half-way (the proxy stops
    forwarding), a stop request still ends the probe within a few tenths of a second,
    as `Interrupted`, and no attempt follows."""
    server = Slapd(tmp_path / "slapd", aged(ldif(make_directory(3000, 10))))
    interrupt, release = ReadInterrupt(), threading.Event()
    stopped_at: list[float] = []

    def stall() -> None:
        def stop() -> None:
            stopped_at.append(time.monotonic())
            interrupt._stop.set()  # what the signal handler sets

        threading.Timer(0.3, stop).start()
        release.wait(30)  # the proxy forwards nothing more meanwhile

    try:
        # The bind and the two timestamp searches (nothing changed) are a few hundred
        # bytes; the people's count, 3000 DNs, about 160 kB.
        with TcpProxy(server.port, after=20_000, trip=stall) as proxy:
            source = LdapSource(
                settings(proxy.url),
                retry=RetrySettings(max_attempts=3, max_delay=30),
                interrupt=interrupt,
            )
            cursor = source.change_cursor()
            assert cursor is not None
            with capture_logs() as logs, pytest.raises(Interrupted, match="stopped"):
                source.probe_changes(cursor, 3000, 15)
            ended = time.monotonic()
            assert proxy.tripped.is_set()
    finally:
        release.set()
        server.stop()
    assert stopped_at, "the probe ended before the stop request"
    assert ended - stopped_at[0] < 1.0
    assert not [e for e in logs if e["event"] == "source.retry"]


def test_a_count_the_server_refuses_fails_as_the_search_would(server: Slapd) -> None:
    """The count decodes the server's answer itself: a refusal keeps its kind, so a base
    that does not exist is named as such (and a busy server is retried), as for the
    other searches."""
    source = LdapSource(settings(server.url), retry=RetrySettings(max_attempts=1, max_delay=1))
    conn = source._connect()
    try:
        with pytest.raises(lx.LDAPNoSuchObjectResult):
            source._count(conn, f"ou=nowhere,{SUFFIX}", source.settings.users)
        assert "a search base does not exist" in str(
            source._classify(lx.LDAPNoSuchObjectResult(), "search")
        )
    finally:
        conn.unbind()


def test_a_quiet_probe_is_four_searches_at_10k_people(tmp_path: Path) -> None:
    """The count's page is not what grows with the directory: 10k people are one search
    (two pages of the 5000 it asked for before, twenty at 100k), and exact."""
    directory = make_directory(10_000, 10)
    server = Slapd(tmp_path / "slapd", aged(ldif(directory)))
    try:
        source = LdapSource(settings(server.url), retry=RetrySettings(max_attempts=1, max_delay=1))
        prober = Prober(source)
        with capture_logs() as logs:
            assert prober.changed(), "none of the 10k was counted before"
        (found,) = [e for e in logs if e["event"] == "source.changes_found"]
        assert found["counted"][0] == len(directory.people)
        prober.people, prober.groups = found["counted"]
        assert not prober.changed()
        assert prober.calls == 4
        with admin(server) as conn:
            assert conn.delete(person_dn(directory.people[9_999]))
        assert prober.changed()
    finally:
        server.stop()
