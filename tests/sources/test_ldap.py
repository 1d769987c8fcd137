"""The LDAP source against a real OpenLDAP slapd on loopback (10k people, 1k groups).

OpenLDAP has no `memberOf:1.2.840.113556.1.4.1941:=` (AD's in-chain rule answers nothing
there), no `objectGUID`/`userAccountControl` and no ranged retrieval, so only the
client-side nesting path and the OpenLDAP flavour run against a server here; the AD
defaults and ranged `member` retrieval are checked without one.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ldap3.utils.conv import escape_filter_chars
from structlog.testing import capture_logs

from orgsync.core.errors import Interrupted, SourceError
from orgsync.core.model import RoleCatalog, SourceSnapshot
from orgsync.core.rules import MembershipRules, desired_state
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings
from orgsync.sources.ldap import PAGED_RESULTS, LdapSettings, LdapSource, dn_key
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.test_interrupt import PROMPT, runs, start_sync, terminate_while_reading
from tests.sources.cli import SOURCE_SECRET_ENV, holdings, orgsync, write_config
from tests.sources.conftest import LDAP_DANGLING
from tests.sources.directory import Directory, Person, make_directory
from tests.sources.probing import Prober
from tests.sources.servers import (
    READER_DN,
    READER_PASSWORD,
    SUFFIX,
    Slapd,
    TcpProxy,
    TlsFiles,
    ldif,
    make_tls,
    person_dn,
)

PEOPLE, GROUPS = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"


def wanted(snapshot: SourceSnapshot, scope: str) -> set[str]:
    """The emails the core wants for a target scoped to group `scope`."""
    rules = MembershipRules(scope_groups=(scope,), default_role="reader")
    return set(desired_state(snapshot, rules, RoleCatalog(("reader", "owner"))).wanted)


def settings(url: str, **overrides: Any) -> LdapSettings:
    values: dict[str, Any] = {
        "url": url,
        "bind_dn": READER_DN,
        "password": READER_PASSWORD,
        "users_base": PEOPLE,
        "groups_base": GROUPS,
        "disabled_filter": "(employeeType=disabled)",
        "allow_plaintext": True,
        "timeout": 10,
        "credential_key": "source.bind_password_env (LDAP_PW)",
    }
    values.update(overrides)
    return LdapSettings(**values)


def source(url: str, *, max_attempts: int = 1, **overrides: Any) -> LdapSource:
    return LdapSource(
        settings(url, **overrides),
        retry=RetrySettings(max_attempts=max_attempts, max_delay=5),
        sleep=lambda _s: None,
    )


@pytest.fixture(scope="module")
def small_directory() -> Directory:
    return make_directory(40, 2)


@pytest.fixture(scope="module")
def small_slapd(
    small_directory: Directory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd-small"), ldif(small_directory))
    yield server
    server.stop()


def check(snapshot: Any, directory: Directory) -> None:
    people = {p.attributes["dn"]: p for p in snapshot.people}
    assert len(people) == len(snapshot.people) == len(directory.people)
    assert len({p.id for p in snapshot.people}) == len(directory.people)
    by_dn = {dn_key(dn): p.id for dn, p in people.items()}
    for person in directory.people:
        read = people[person_dn(person)]
        assert (read.email, read.name, read.active) == (person.email, person.display, person.active)
    groups = {g.name: g for g in snapshot.groups}
    assert len(groups) == len(directory.groups)
    for team in directory.groups:
        expected = {
            by_dn[dn_key(person_dn(m))] if isinstance(m, Person) else groups[m.key].id
            for m in (directory.by_key[k] for k in team.members)
        }
        assert set(groups[team.name].members) == expected, team.name


# --------------------------------------------------------------------------- complete reads


def test_a_complete_read_of_10k_people_and_1k_groups(
    slapd: Slapd, ldap_directory: Directory
) -> None:
    reader = source(slapd.url)
    with capture_logs() as logs:
        snapshot = reader.read()
    check(snapshot, ldap_directory)
    groups = {g.name: g for g in snapshot.groups}
    assert len(groups["big"].members) == 1500
    assert len(groups["all-staff"].members) == 1000
    assert groups["cycle-b"].id in groups["cycle-a"].members
    assert groups["cycle-a"].id in groups["cycle-b"].members
    assert groups["team-ml"].id in groups["openai-users"].members
    assert sum(not p.active for p in snapshot.people) == ldap_directory.inactive == 104
    # 10000 people in exactly 20 pages of 500 (the last page full), the disabled ones in
    # one, 1007 groups in three.
    assert reader.pages == 20 + 1 + math.ceil(1007 / 500)
    dangling = [e for e in logs if e["event"] == "source.dangling_members"]
    assert [e["skipped"] for e in dangling] == [LDAP_DANGLING]
    # The core flattens what was read: the cycle is broken, two levels of nesting reach
    # every active person.
    assert wanted(snapshot, "cycle-a") == {"user0@example.test", "user1@example.test"}
    assert len(wanted(snapshot, "all-staff")) == 10_000 - 104


@pytest.mark.parametrize("page_size", [19, 20, 21, 39, 40, 41])
def test_page_boundaries(small_slapd: Slapd, small_directory: Directory, page_size: int) -> None:
    reader = source(small_slapd.url, page_size=page_size)
    check(reader.read(), small_directory)
    groups = len(small_directory.groups)
    # A last page that comes out exactly full still ends with an empty cookie, not an
    # extra empty page.
    assert reader.pages == math.ceil(40 / page_size) + 1 + math.ceil(groups / page_size)


def test_without_a_disabled_filter_everyone_is_active(small_slapd: Slapd) -> None:
    snapshot = source(small_slapd.url, disabled_filter=None).read()
    assert all(p.active for p in snapshot.people)


# --------------------------------------------------------------------------- failures


def test_a_size_limit_fails_the_read(small_directory: Directory, tmp_path: Path) -> None:
    server = Slapd(tmp_path, ldif(small_directory), size_limit="30")
    try:
        with pytest.raises(SourceError, match="size limit was exceeded"):
            source(server.url, page_size=10).read()
    finally:
        server.stop()


@pytest.fixture
def mid_slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = Slapd(tmp_path / "slapd", ldif(make_directory(3000, 10)))
    yield server
    server.stop()


def test_slapd_killed_mid_read_fails_the_read(mid_slapd: Slapd) -> None:
    with TcpProxy(mid_slapd.port, after=150_000, trip=mid_slapd.kill) as proxy:
        with pytest.raises(SourceError, match="gave up after retrying"):
            source(proxy.url, page_size=100, max_attempts=3).read()
        assert proxy.tripped.is_set()


def test_a_stop_request_ends_a_read_stuck_on_a_frozen_server(mid_slapd: Slapd) -> None:
    """slapd frozen (SIGSTOP) in the middle of a paged read: ldap3 waits in a blocking
    recv for an answer that is not coming (up to the 10 s timeout, then retries). A stop
    request (SIGTERM sets it) ends the read within a few tenths of a second, as
    `Interrupted` (the run is `interrupted`, not `failed`), and no attempt follows."""
    interrupt = ReadInterrupt()
    stopped_at: list[float] = []

    def freeze_then_stop() -> None:
        assert mid_slapd.process is not None
        mid_slapd.process.send_signal(signal.SIGSTOP)

        def stop() -> None:
            stopped_at.append(time.monotonic())
            interrupt._stop.set()  # what the signal handler sets

        threading.Timer(0.5, stop).start()

    reader = LdapSource(
        settings(mid_slapd.url, page_size=100),
        retry=RetrySettings(max_attempts=3, max_delay=30),
        interrupt=interrupt,
    )
    try:
        with TcpProxy(mid_slapd.port, after=150_000, trip=freeze_then_stop) as proxy:
            reader.settings = settings(proxy.url, page_size=100)
            with capture_logs() as logs, pytest.raises(Interrupted, match="stopped"):
                reader.read()
            ended = time.monotonic()
            assert proxy.tripped.is_set()
    finally:
        assert mid_slapd.process is not None
        mid_slapd.process.send_signal(signal.SIGCONT)
    assert stopped_at, "the read ended before the stop request"
    assert ended - stopped_at[0] < 1.0
    assert not [e for e in logs if e["event"] == "source.retry"]


def test_sigterm_stops_a_sync_waiting_on_a_frozen_directory(
    small_directory: Directory, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """`orgsync sync` against a slapd that accepts connections and answers nothing
    (SIGSTOP): SIGTERM ends the run at once (not after the 10 s timeout and its retry),
    `interrupted`, with nothing sent to the organization."""
    frozen = Slapd(tmp_path / "slapd", ldif(small_directory))
    assert frozen.process is not None
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        config = write_config(tmp_path, emulator, ldap_config(frozen.url))
        sync = start_sync(config, **{SOURCE_SECRET_ENV: READER_PASSWORD})
        took, out, err = terminate_while_reading(sync, frozen.port)
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        frozen.stop()
    assert took < PROMPT, err
    assert sync.returncode == 1, out + err
    (run,) = runs(tmp_path / "state.db")
    assert (run["status"], run["origin"]) == ("interrupted", "cli")
    assert "shutting down" in run["error"]
    assert emulator.requests == []


def test_a_stop_request_before_a_read_sends_nothing(small_slapd: Slapd) -> None:
    interrupt = ReadInterrupt()
    interrupt._stop.set()
    with TcpProxy(small_slapd.port, after=1, trip=lambda: None) as proxy:
        reader = LdapSource(
            settings(proxy.url),
            retry=RetrySettings(max_attempts=1, max_delay=1),
            interrupt=interrupt,
        )
        with pytest.raises(Interrupted):
            reader.read()
        assert not proxy.tripped.is_set(), "no search was answered"


def test_a_connection_cut_mid_read_is_retried_from_the_start(mid_slapd: Slapd) -> None:
    def cut() -> None:
        # Ends this connection's pump, closing both sockets; the proxy (and slapd) stay
        # up, so the second attempt reads everything.
        raise OSError("cut")

    with TcpProxy(mid_slapd.port, after=150_000, trip=cut) as proxy:
        with capture_logs() as logs:
            snapshot = source(proxy.url, page_size=100, max_attempts=3).read()
    assert len(snapshot.people) == 3000
    assert [e["attempt"] for e in logs if e["event"] == "source.retry"] == [1]


def test_a_wrong_password_names_the_key_that_holds_it(small_slapd: Slapd) -> None:
    with pytest.raises(SourceError, match=re.escape("check source.bind_password_env (LDAP_PW)")):
        source(small_slapd.url, password="wrong").read()


def test_a_missing_base_fails_the_read(small_slapd: Slapd) -> None:
    with pytest.raises(SourceError, match="search base does not exist"):
        source(small_slapd.url, users_base=f"ou=nowhere,{SUFFIX}").read()


def test_a_stopped_server_fails_the_read(small_directory: Directory, tmp_path: Path) -> None:
    server = Slapd(tmp_path, ldif(small_directory))
    server.stop()
    with pytest.raises(SourceError, match="gave up after retrying"):
        source(server.url, max_attempts=2).read()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_slapd(
    small_directory: Directory, tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd-tls"), ldif(small_directory), tls=tls_files)
    yield server
    server.stop()


def test_ldaps_and_start_tls_with_a_private_ca(
    tls_slapd: Slapd, tls_files: TlsFiles, small_directory: Directory
) -> None:
    ldaps = source(tls_slapd.ldaps_url, ca_file=str(tls_files.ca), allow_plaintext=False)
    check(ldaps.read(), small_directory)
    start_tls = source(
        f"ldap://localhost:{tls_slapd.port}",
        start_tls=True,
        ca_file=str(tls_files.ca),
        allow_plaintext=False,
    )
    snapshot = start_tls.read()
    check(snapshot, small_directory)
    # The change probe's counts read their answers off the (TLS) socket themselves.
    for over in (ldaps, start_tls):
        prober = Prober(over, len(snapshot.people), len(snapshot.groups))
        assert prober.changed(), "slapadd wrote everything in the last minutes"
        assert not prober.changed(), "the counts over TLS are exact"
        assert prober.calls == 4


@pytest.mark.parametrize("scheme", ["ldaps", "start_tls"])
def test_an_untrusted_certificate_is_refused(tls_slapd: Slapd, scheme: str) -> None:
    url = tls_slapd.ldaps_url if scheme == "ldaps" else f"ldap://localhost:{tls_slapd.port}"
    reader = source(url, start_tls=scheme == "start_tls", allow_plaintext=False, max_attempts=3)
    with pytest.raises(SourceError, match="TLS failed"):
        reader.read()


# --------------------------------------------------------------------------- without a server


def test_plain_ldap_needs_an_explicit_opt_in(small_slapd: Slapd) -> None:
    with pytest.raises(SourceError, match="would send the bind password in clear"):
        source(small_slapd.url, allow_plaintext=False).read()


def test_active_directory_defaults() -> None:
    ad = LdapSettings(
        url="ldaps://dc.example.com",
        bind_dn="CN=svc,DC=example,DC=com",
        password="s3cr3t-pw",
        users_base="DC=example,DC=com",
        groups_base="DC=example,DC=com",
        flavor="ad",
    )
    assert ad.users == "(&(&(objectCategory=person)(objectClass=user))(mail=*))"
    assert ad.groups == "(objectClass=group)"
    assert ad.id_attr == "objectGUID"
    assert ad.disabled == "(userAccountControl:1.2.840.113556.1.4.803:=2)"
    assert "s3cr3t-pw" not in repr(ad), "the password stays out of reprs"


class _RangedConnection:
    """Answers base searches for `member;range=N-*` the way Active Directory does."""

    def __init__(self, members: list[bytes], window: int) -> None:
        self.members, self.window = members, window
        self.response: list[dict[str, Any]] = []
        self.asked: list[str] = []

    def search(self, dn: str, _filter: str, *, search_scope: Any, attributes: list[str]) -> bool:
        (wanted,) = attributes
        self.asked.append(wanted)
        start = int(wanted.split("=")[1].split("-")[0])
        chunk = self.members[start : start + self.window]
        last = start + len(chunk) >= len(self.members)
        name = f"member;range={start}-{'*' if last else start + len(chunk) - 1}"
        self.response = [{"type": "searchResEntry", "dn": dn, "raw_attributes": {name: chunk}}]
        return True


def test_active_directory_ranged_member_retrieval() -> None:
    members = [f"CN=u{i},OU=People,DC=example,DC=com".encode() for i in range(4000)]
    conn = _RangedConnection(members, 1500)
    reader = source("ldaps://dc.example.com", flavor="ad")
    first = {"member": [], "member;range=0-1499": members[:1500]}
    got = reader._all_members(conn, "CN=big,DC=example,DC=com", first)  # type: ignore[arg-type]
    assert got == members
    assert conn.asked == ["member;range=1500-*", "member;range=3000-*"]


class _InChainConnection:
    """Answers `memberOf:1.2.840.113556.1.4.1941:=<group>` searches as AD would."""

    def __init__(self, transitive: dict[str, list[str]]) -> None:
        self.transitive = transitive
        self.filters: list[str] = []
        self.response: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}

    def search(self, base: str, search_filter: str, **_: Any) -> bool:
        self.filters.append(search_filter)
        group = next(g for g in self.transitive if escape_filter_chars(g) in search_filter)
        self.response = [
            {"type": "searchResEntry", "dn": dn, "raw_attributes": {}}
            for dn in self.transitive[group]
        ]
        self.result = {"result": 0, "controls": {PAGED_RESULTS: {"value": {"cookie": b""}}}}
        return True


def guid(first: int) -> list[bytes]:
    """A 16-byte objectGUID value, as AD sends it."""
    return [bytes(range(first, first + 16))]


def test_active_directory_in_chain_asks_one_search_per_group() -> None:
    people = [f"CN=User {i},OU=People,DC=example,DC=com" for i in range(3)]
    team, parent = "CN=R&D (EU),OU=Groups,DC=example,DC=com", "CN=All,OU=Groups,DC=example,DC=com"
    conn = _InChainConnection({team: people[:2], parent: people})
    reader = source("ldaps://dc.example.com", flavor="ad", nested_groups="in_chain")
    groups = [
        (team, {"objectGUID": guid(1), "cn": [b"R&D (EU)"]}),
        (parent, {"objectGUID": guid(2), "cn": [b"All"]}),
    ]
    chains = reader._in_chain(conn, groups)  # type: ignore[arg-type]
    assert conn.filters == [
        "(&(&(&(objectCategory=person)(objectClass=user))(mail=*))"
        f"(memberOf:1.2.840.113556.1.4.1941:={escape_filter_chars(g)}))"
        for g in (team, parent)
    ]
    assert "\\28EU\\29" in conn.filters[0], "parentheses in a DN are escaped"
    entries = [
        (dn, {"objectGUID": guid(10 + i), "mail": [f"u{i}@example.com".encode()]})
        for i, dn in enumerate(people)
    ]
    snapshot = reader._snapshot(entries, set(), groups, chains)
    ids = {p.email: p.id for p in snapshot.people}
    assert str(uuid.UUID(bytes_le=bytes(range(10, 26)))) == ids["u0@example.com"]
    by_name = {g.name: g for g in snapshot.groups}
    assert set(by_name["All"].members) == set(ids.values())
    assert set(by_name["R&D (EU)"].members) == {ids["u0@example.com"], ids["u1@example.com"]}


# --------------------------------------------------------------------------- the CLI


def ldap_config(url: str, *, page_size: int = 1000) -> str:
    return f"""[source]
type = "ldap"
url = "{url}"
allow_plaintext = true
bind_dn = "{READER_DN}"
bind_password_env = "{SOURCE_SECRET_ENV}"
users_base = "{PEOPLE}"
groups_base = "{GROUPS}"
disabled_filter = "(employeeType=disabled)"
page_size = {page_size}
max_attempts = 2
max_retry_delay = "1s"
timeout = "10s"
"""


def test_end_to_end_sync_into_the_openai_emulator(
    slapd: Slapd, ldap_directory: Directory, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    config = write_config(tmp_path, emulator, ldap_config(slapd.url))
    dry = orgsync(config, "sync", "--dry-run", secret=READER_PASSWORD)
    assert dry.returncode == 2, dry.stdout + dry.stderr
    assert emulator.writes() == []
    done = orgsync(config, "sync", secret=READER_PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    wanted = dict.fromkeys(ldap_directory.flattened("openai-users"), "reader")
    wanted.update(dict.fromkeys(ldap_directory.flattened("openai-owners"), "owner"))
    assert "user5@example.test" not in wanted and len(wanted) == 14
    assert holdings(emulator) == wanted
    again = orgsync(config, "sync", "--dry-run", secret=READER_PASSWORD)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_read_failing_mid_way_exits_1_with_zero_writes(
    mid_slapd: Slapd, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    with TcpProxy(mid_slapd.port, after=150_000, trip=mid_slapd.kill) as proxy:
        config = write_config(tmp_path, emulator, ldap_config(proxy.url, page_size=100))
        result = orgsync(config, "sync", secret=READER_PASSWORD)
        assert proxy.tripped.is_set()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gave up after retrying" in result.stdout + result.stderr
    assert emulator.writes() == []
    assert holdings(emulator) == {}


def test_validate_counts_people_and_names_a_refused_password(
    small_slapd: Slapd, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    config = write_config(tmp_path, emulator, ldap_config(small_slapd.url))
    result = orgsync(config, "validate", secret=READER_PASSWORD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source ldap: 40 people (1 inactive), 8 groups" in result.stdout
    wrong = orgsync(config, "validate", secret="wrong")
    assert wrong.returncode == 1
    assert f"check source.bind_password_env ({SOURCE_SECRET_ENV}) and bind_dn" in wrong.stdout
