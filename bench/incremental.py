"""Incremental passes per source kind: what a quiet pass and a one-change pass cost.

For each source kind (the file source; a real slapd without and with the syncprov overlay,
`ldap` and `ldap-syncprov`, and `ldap-capped`, without it and with the bind account under
OpenLDAP's default `sizelimit 500` (paging allowed), whose counts are paged (not in the
default list); a real Active Directory DC, Samba's, `ad` (loaded through
Samba's own module stack in ldb batch mode, tests/sources/samba.py: 100k people and a
100k-member group in about 20 minutes on this 2-core machine, still more than linear;
not in the default list); a real scim2-server; the Okta, Entra ID and Google emulators,
in this process) the same made-up organization of N people (everyone in scope through the
`all-staff` group) is loaded, the OpenAI emulator (in this process) already holds every
active person, and `orgsync` runs in fresh processes against one state database:

1. `orgsync sync`: the full pass that records the baseline;
2. `orgsync sync --incremental`: settles (the seeded entries are minutes old, inside the
   probes' overlap window, so this one still reads the source once);
3. `orgsync sync --incremental`, measured: a quiet pass;
4. one person changed at the source (a display name; Google: suspended, a leaver; the
   Reports log says so), `orgsync sync --incremental`, measured. Active Directory makes
   three such changes, each followed by a measured pass: a display name modified, a
   person deleted (only a tombstone says so), a person taken out of all-staff.

Okta's objects and System Log events, and Google's audit log activities, are stamped a
week back (a directory that has been there a while; a probe's overlap window holds none of
them). Google's probe lists the Reports API's `admin` and `groups_enterprise` activities:
its quiet pass is a token request (each pass is a fresh process) and two requests; the
source column counts token requests too, for every HTTP source.

Per measured pass: source requests (LDAP searches and pages, HTTP requests including
token requests; the file source makes none; for LDAP the quiet pass also prints the bytes
received, since its counts are one search each carrying every DN), target requests (the emulator's log), fsync+fdatasync calls of the orgsync process
(`strace -f -c --seccomp-bpf`: only those calls stop it; the emulator not traced), what
the change probe answered (`changed/3`: changed, in 3 calls), wall seconds, orgsync's
CPU seconds and the process's peak RSS. The
issue's goal for a quiet pass over 100k people: at most 5 calls in total (source and
target), and 0 target calls for the file source; each line prints its ratio to it.

usage: .venv/bin/python bench/incremental.py [--people 10000 100000]
       [--only file,ldap,ldap-syncprov,ldap-capped,ad,scim,okta,entra,google]
needs: strace, slapd, samba-ad-dc for `ad` (scripts/setup-system installs them)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import ldap3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.sources.directory import Directory, make_directory
from tests.sources.samba import BASE as SAMBA_BASE
from tests.sources.samba import READER_PASSWORD as SAMBA_READER_PASSWORD
from tests.sources.samba import SambaDC
from tests.sources.servers import (
    READER_DN,
    READER_PASSWORD,
    SUFFIX,
    ServerProcess,
    Slapd,
    ldif,
    person_dn,
    start_scim2_server,
)

from orgsync.testing.entra import EntraEmulator
from orgsync.testing.google import GoogleEmulator
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator

KEY = "sk-admin-bench-0000000000000000000000000000000000000000"
SOURCE_SECRET = "bench-source-secret"
GOAL_CALLS = 5


@dataclass
class Pass:
    source: int
    target: int
    fsyncs: int
    seconds: float
    rss_mib: float
    kind: str
    cpu: float
    """orgsync's user+system CPU seconds (strace stops it at fsyncs only: seccomp-bpf)."""
    probe: str
    """What the change probe answered: `quiet/1` (changed?/its calls), `-` if none ran."""
    received: int = 0
    """Bytes of LDAP messages the source received (reads and probes; LDAP sources only)."""


def run_orgsync(folder: Path, *args: str, secret: str) -> Pass:
    """One `orgsync sync` under strace; the counts of its calls."""
    summary = folder / "strace.txt"
    command = [
        "strace", "-f", "-c", "--seccomp-bpf", "-e", "trace=fsync,fdatasync", "-o", str(summary),
        sys.executable, "-c",
        "import resource, sys, runpy; sys.argv = ['orgsync', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('orgsync', run_name='__main__')\n"
        "finally:\n    u = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    print('PEAK_RSS_KB', u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr)",
        "--config", str(folder / "orgsync.toml"), "sync", "--json",
        "--log-format", "json", "--log-level", "debug", *args,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_KEY": KEY, "BENCH_SOURCE_SECRET": secret}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 2):
        raise SystemExit(f"orgsync sync {args} failed ({done.returncode}): {done.stderr[-3000:]}")
    fsyncs = 0
    for line in summary.read_text().splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)$", line)
        if match:
            fsyncs += int(match.group(1))
    http_source = probe_calls = ldap_pages = received = 0
    rss = cpu = 0.0
    probe = "-"
    for line in done.stderr.splitlines():
        if line.startswith("PEAK_RSS_KB"):
            rss, cpu = int(line.split()[1]) / 1024, float(line.split()[2])
            continue
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "http.request" and event.get("system", "").startswith("source:"):
            http_source += 1
        elif event.get("event") == "source.probed":
            probe_calls += int(event.get("calls", 0))
            changed = "changed" if event.get("changed") else "quiet"
            probe = f"{changed}/{event.get('calls', 0)}"
        elif event.get("event") == "source.requests":
            ldap_pages += int(event.get("pages", 0))
        if event.get("event") in ("source.requests", "source.probe_received"):
            received += int(event.get("received", 0))
    # HTTP sources log each request (their probes' too); LDAP logs pages per read or probe.
    source = http_source or probe_calls + ldap_pages
    (target,) = json.loads(done.stdout)["targets"]
    kind = target["run"].get("pass", "full")
    return Pass(source, 0, fsyncs, seconds, rss, kind, cpu, probe, received)


def file_source(directory: Directory, folder: Path) -> tuple[str, Callable[[int], None]]:
    def write(renamed: int | None = None) -> None:
        people = [
            {
                "id": p.key,
                "email": p.email,
                "name": "Renamed" if p.index == renamed else p.display,
                "active": p.active,
            }
            for p in directory.people
        ]
        document = {
            "people": people,
            "groups": [
                {"id": "all", "name": "all-staff", "members": [p.key for p in directory.people]}
            ],
        }
        (folder / "directory.json").write_text(json.dumps(document))

    write()
    return '[source]\ntype = "file"\npath = "directory.json"\n', write


CAPPED_LIMITS = "size.soft=500 size.hard=500 size.prtotal=unlimited"
"""OpenLDAP's default `sizelimit 500` for the bind account, with paging allowed past it."""


def ldap_source(
    directory: Directory, folder: Path, *, syncprov: bool = False, limits: str | None = None
) -> tuple[str, Callable[[int], None], Slapd]:
    # Loaded as a directory that has been there a while: a probe's overlap window (entries
    # changed in the last 5 minutes are looked at again) would otherwise hold everyone.
    old = "modifyTimestamp: 20200101000000Z\ncreateTimestamp: 20200101000000Z\n"
    data = "\n".join(
        block.rstrip("\n") + "\n" + old for block in ldif(directory).split("\n\n") if block
    )
    server = Slapd(folder / "slapd", data, syncprov=syncprov, limits=limits)
    table = f"""[source]
type = "ldap"
url = "{server.url}"
allow_plaintext = true
bind_dn = "{READER_DN}"
bind_password_env = "BENCH_SOURCE_SECRET"
users_base = "ou=people,{SUFFIX}"
groups_base = "ou=groups,{SUFFIX}"
disabled_filter = "(employeeType=disabled)"
page_size = 1000
"""

    def rename(index: int) -> None:
        conn = ldap3.Connection(
            ldap3.Server("127.0.0.1", port=server.port),
            f"cn=admin,{SUFFIX}",
            "admin-secret",
            auto_bind=True,
        )
        try:
            dn = person_dn(directory.people[index])
            conn.modify(dn, {"displayName": [(ldap3.MODIFY_REPLACE, ["Renamed"])]})
        finally:
            conn.unbind()

    return table, rename, server


def ad_source(directory: Directory, folder: Path) -> tuple[str, Changes, SambaDC]:
    """A real Samba AD DC holding the directory under OU=People / OU=Groups, the bind
    account a plain user allowed to list Deleted Objects (one tombstone exists).

    Its changes, each measured in a pass of its own: person 3's display name modified,
    person 4 deleted (a tombstone is the only trace), person 5 taken out of all-staff
    (a group's `member` changed; the person is unchanged)."""
    server = SambaDC(folder / "samba")
    people, groups = f"OU=People,{SAMBA_BASE}", f"OU=Groups,{SAMBA_BASE}"

    def dn(index: int) -> str:
        return f"CN=Person {index},{people}"

    entries: list[dict[str, str | list[str]]] = [
        {"dn": people, "objectClass": "organizationalUnit"},
        {"dn": groups, "objectClass": "organizationalUnit"},
        {"dn": f"OU=Gone,{SAMBA_BASE}", "objectClass": "organizationalUnit"},
    ]
    entries += [
        {
            "dn": dn(p.index),
            "objectClass": "user",
            "mail": p.email,
            "displayName": p.display,
            "sAMAccountName": f"person{p.index}",
            "userAccountControl": "544" if p.active else "546",
        }
        for p in directory.people
    ]
    entries.append(
        {
            "dn": f"CN=all-staff,{groups}",
            "objectClass": "group",
            "member": [dn(p.index) for p in directory.people],
        }
    )
    try:
        started = time.monotonic()
        server.bulk_add(entries)
        print(f"(ad: {len(entries)} entries loaded in {time.monotonic() - started:.0f} s)")
        with server.admin() as conn:
            conn.delete(f"OU=Gone,{SAMBA_BASE}")  # a live domain always holds tombstones
        server.grant_deleted_objects("reader")
    except BaseException:
        server.stop()
        raise
    table = f"""[source]
type = "ldap"
flavor = "ad"
url = "{server.url}"
allow_plaintext = true
bind_dn = "reader@example.test"
bind_password_env = "BENCH_SOURCE_SECRET"
users_base = "{people}"
groups_base = "{groups}"
page_size = 1000
"""

    def write(change: Callable[[ldap3.Connection], bool]) -> Callable[[], None]:
        def run() -> None:
            with server.admin() as conn:
                if not change(conn):
                    raise SystemExit(f"the change to Samba failed: {conn.result}")

        return run

    everyone = f"CN=all-staff,{groups}"
    changes = {
        "one modified": write(
            lambda c: c.modify(dn(3), {"displayName": [(ldap3.MODIFY_REPLACE, ["Renamed"])]})
        ),
        "one deleted": write(lambda c: c.delete(dn(4))),
        "one membership": write(
            lambda c: c.modify(everyone, {"member": [(ldap3.MODIFY_DELETE, [dn(5)])]})
        ),
    }
    return table, changes, server


def scim_source(
    directory: Directory, folder: Path
) -> tuple[str, Callable[[int], None], ServerProcess]:
    server = start_scim2_server(directory, folder / "scim2", SOURCE_SECRET)
    table = f"""[source]
type = "scim"
url = "{server.url}"
token_env = "BENCH_SOURCE_SECRET"
allow_plaintext = true
page_size = 1000
# scim2-server answers GET /Groups holding the 100k-member all-staff group in over 30 s
# (the default timeout) on this machine: the bench measures calls, not that server.
timeout = "600s"
"""
    auth = {"Authorization": f"Bearer {SOURCE_SECRET}", "Content-Type": "application/scim+json"}

    def rename(index: int) -> None:
        user_id = server.ids[directory.people[index].key]
        user: dict[str, Any] = httpx.get(f"{server.url}/Users/{user_id}", headers=auth).json()
        httpx.put(
            f"{server.url}/Users/{user['id']}",
            json={**user, "displayName": "Renamed"},
            headers=auth,
        ).raise_for_status()

    return table, rename, server


Changes = dict[str, Callable[[], None]]
"""Changes at the source by name, each followed by a measured incremental pass."""
Source = tuple[str, Changes, Callable[[], None], str]
"""The `[source]` table, its changes, how to stop the source, its secret."""


def one_change(
    table: str, rename: Callable[[int], None], stop: Callable[[], None], secret: str
) -> Source:
    return table, {"one change": lambda: rename(3)}, stop, secret


def okta_source(directory: Directory) -> Source:
    okta = OktaEmulator()
    week_ago = datetime.now(UTC) - timedelta(days=7)
    okta.clock = lambda: week_ago
    ids = [
        okta.add_user(
            email=p.email,
            first_name=p.given,
            last_name=p.family,
            display_name=p.display,
            status="ACTIVE" if p.active else "SUSPENDED",
        )
        for p in directory.people
    ]
    group = okta.add_group("all-staff")
    for user_id in ids:
        okta.add_member(group, user_id)
    okta.clock = lambda: datetime.now(UTC)
    url = okta.start()
    table = f"""[source]
type = "okta"
url = "{url}"
token_env = "BENCH_SOURCE_SECRET"
allow_plaintext = true
"""
    return one_change(
        table, lambda i: okta.set_display_name(ids[i], "Renamed"), okta.stop, okta.token
    )


def entra_source(directory: Directory) -> Source:
    entra = EntraEmulator()
    ids = [
        entra.add_user(
            display_name=p.display,
            user_principal_name=p.email,
            mail=p.email,
            account_enabled=p.active,
        )
        for p in directory.people
    ]
    group = entra.add_group("all-staff")
    for user_id in ids:
        entra.add_member(group, user_id)
    entra.start()
    table = f"""[source]
type = "entra"
tenant_id = "{entra.tenant_id}"
client_id = "{entra.client_id}"
client_secret_env = "BENCH_SOURCE_SECRET"
graph_url = "{entra.graph_url}"
login_url = "{entra.login_url}"
allow_plaintext = true
"""
    change = lambda i: entra.set_display_name(ids[i], "Renamed")  # noqa: E731
    return one_change(table, change, entra.stop, entra.client_secret)


def google_source(directory: Directory, folder: Path) -> Source:
    admin, account, key_id = "admin@example.test", "bench@orgsync.iam.example", "0" * 40
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    credentials = folder / "service-account.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "orgsync-bench",
                "private_key_id": key_id,
                "private_key": private,
                "client_email": account,
                "client_id": "100000000000000000001",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    credentials.chmod(0o600)
    google = GoogleEmulator(domain="example.test", admins=(admin,))
    google.register_service_account(account, key_id, public)
    week_ago = datetime.now(UTC) - timedelta(days=7)
    google.clock = lambda: week_ago
    ids = [
        google.add_user(
            primary_email=p.email, given_name=p.given, family_name=p.family, suspended=not p.active
        )
        for p in directory.people
    ]
    google.add_everyone(google.add_group("all-staff"))
    google.clock = lambda: datetime.now(UTC)
    google.start()
    table = f"""[source]
type = "google"
subject = "{admin}"
credentials_file = "{credentials}"
directory_url = "{google.directory_url}"
reports_url = "{google.reports_url}"
token_url = "{google.token_url}"
allow_plaintext = true
"""
    return one_change(table, lambda i: google.set_suspended(ids[i], True), google.stop, "")


def configure(folder: Path, source: str, url: str) -> None:
    (folder / "orgsync.toml").write_text(
        f"""{source}
[[targets]]
name = "bench"
type = "openai"
base_url = "{url}"
api_key_env = "BENCH_KEY"
allow_plaintext = true
default_role = "reader"
scope_groups = ["all-staff"]
timeout = "60s"
[safety]
max_additions = 1000000
max_addition_ratio = 1.0
[state]
path = "state.db"
"""
    )


def make_source(kind: str, directory: Directory, folder: Path) -> Source:
    """The `[source]` table of `kind`, loaded with `directory`; its changes, how to stop
    it, its secret."""
    if kind == "file":
        table, rename = file_source(directory, folder)
        return one_change(table, rename, lambda: None, SOURCE_SECRET)
    if kind in ("ldap", "ldap-syncprov", "ldap-capped"):
        table, rename, ldap_server = ldap_source(
            directory,
            folder,
            syncprov=kind == "ldap-syncprov",
            limits=CAPPED_LIMITS if kind == "ldap-capped" else None,
        )
        return one_change(table, rename, ldap_server.stop, READER_PASSWORD)
    if kind == "ad":
        table, changes, samba = ad_source(directory, folder)
        return table, changes, samba.stop, SAMBA_READER_PASSWORD
    if kind == "scim":
        table, rename, scim_server = scim_source(directory, folder)
        return one_change(table, rename, scim_server.stop, SOURCE_SECRET)
    if kind == "okta":
        return okta_source(directory)
    if kind == "entra":
        return entra_source(directory)
    if kind == "google":
        return google_source(directory, folder)
    raise SystemExit(f"unknown source kind {kind!r}")


def bench(kind: str, people: int, groups: int) -> None:
    directory = make_directory(people, groups)
    with tempfile.TemporaryDirectory() as tmp, OpenAIEmulator(api_key=KEY) as emulator:
        folder = Path(tmp)
        for person in directory.people:
            if person.active:
                emulator.state.add_user(person.email, "reader")
        table, changes, stop, secret = make_source(kind, directory, folder)
        loaded = time.monotonic()
        try:
            configure(folder, table, emulator.start())

            def measured(*args: str) -> Pass:
                mark = len(emulator.requests)
                result = run_orgsync(folder, *args, secret=secret)
                result.target = len(emulator.requests) - mark
                return result

            full = measured()
            measured("--incremental")  # settles the probes' overlap window
            if kind == "scim":
                # scim2-server stamps the seeded users with the time it loaded them: the
                # pass before the measured one must start once they are older than the
                # probe's overlap window (5 minutes), or its cursor still covers them.
                time.sleep(max(0.0, loaded + 310 - time.monotonic()))
                measured("--incremental")
            passes = [("full sync", full), ("quiet incremental", measured("--incremental"))]
            for name, change in changes.items():
                change()
                passes.append((name, measured("--incremental")))
        finally:
            stop()
    for name, result in passes:
        calls = result.source + result.target
        goal = ""
        if name == "quiet incremental":
            goal = f"   goal <= {GOAL_CALLS} calls: {calls / GOAL_CALLS:.2f}x"
            if result.received:
                # A call's size is not in the goal: an LDAP count is one search carrying
                # every DN, so the bytes are printed beside the calls.
                goal += f" ({result.received / 1e6:.1f} MB received from the source)"
            if kind == "file":
                goal += f"; target calls {result.target} (goal 0)"
        print(
            f"{kind:<13} {people:>7} {name:<18} {result.kind:<12} {result.probe:<11} "
            f"{result.source:>7} {result.target:>7} {result.fsyncs:>6} {result.seconds:>7.1f} "
            f"{result.cpu:>6.1f} {result.rss_mib:>7.0f}{goal}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--people", type=int, nargs="+", default=[10_000])
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--only", default="file,ldap,ldap-syncprov,scim,okta,entra,google")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("bench/incremental.py needs strace (apt-get install strace)")
    print(
        f"{'kind':<13} {'people':>7} {'pass':<18} {'was':<12} {'probe':<11} {'source':>7} "
        f"{'target':>7} {'fsyncs':>6} {'seconds':>7} {'CPU s':>6} {'RSS MiB':>7}"
    )
    for people in args.people:
        for kind in args.only.split(","):
            bench(kind, people, args.groups)


if __name__ == "__main__":
    main()
