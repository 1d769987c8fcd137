"""Time to read a whole directory from real servers: slapd, scim2-server and SCIMMY.

Starts each server on loopback with the test suite's launchers (tests/sources/servers.py),
loads the same made-up organization (N people, G groups, nesting, a cycle), reads it with
orgsync's source the way `orgsync sync` does, and prints per server: seconds, people per
second, requests (LDAP pages or SCIM pages) and their ratio to the fewest the protocol
allows at that page size (LDAP: pages of the users and groups searches; SCIM: the /Users
and /Groups pages). LDAP's extra requests are the disabled-accounts search.

SCIMMY turns every stored record into a schema object on each list request (O(N) a page),
so it is read at a smaller size by default.

usage: .venv/bin/python bench/source_read.py [--people 10000] [--groups 1000]
       [--scimmy-people 2000] [--ldap-page 1000] [--scim-page 1000] [--only ldap,scim2,scimmy]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog
from tests.sources.directory import Directory, make_directory
from tests.sources.servers import (
    READER_DN,
    READER_PASSWORD,
    SUFFIX,
    Slapd,
    ldif,
    start_scim2_server,
    start_scimmy,
)

from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings
from orgsync.sources.ldap import LdapSettings, LdapSource
from orgsync.sources.scim import ScimSource

TOKEN = "bench-token"
RETRY = RetrySettings(max_attempts=1)


def timed(read: Callable[[], object]) -> float:
    started = time.perf_counter()
    read()
    return time.perf_counter() - started


def row(name: str, directory: Directory, seconds: float, requests: int, minimum: int) -> None:
    people = len(directory.people)
    print(
        f"{name:<20} {people:>7} {len(directory.groups):>6} {seconds:>8.2f} "
        f"{people / seconds:>10.0f} {requests:>8} {minimum:>8} {requests / minimum:>6.2f}"
    )


def bench_ldap(directory: Directory, folder: Path, page: int) -> None:
    started = time.perf_counter()
    server = Slapd(folder / "slapd", ldif(directory))
    load = time.perf_counter() - started
    try:
        settings = LdapSettings(
            url=server.url,
            bind_dn=READER_DN,
            password=READER_PASSWORD,
            users_base=f"ou=people,{SUFFIX}",
            groups_base=f"ou=groups,{SUFFIX}",
            disabled_filter="(employeeType=disabled)",
            allow_plaintext=True,
            page_size=page,
        )
        source = LdapSource(settings, retry=RETRY)
        seconds = timed(source.read)
        minimum = math.ceil(len(directory.people) / page) + math.ceil(len(directory.groups) / page)
        row(f"slapd p{page}", directory, seconds, source.pages, minimum)
    finally:
        server.stop()
    print(f"{'':20} (slapadd + start {load:.2f} s)")


def bench_scim(
    name: str, directory: Directory, folder: Path, page: int, start: Callable[..., object]
) -> None:
    started = time.perf_counter()
    if start is start_scim2_server:
        server = start_scim2_server(directory, folder / name, TOKEN)
    else:
        server = start_scimmy(directory, folder / name, f"bearer:{TOKEN}")
    load = time.perf_counter() - started
    try:
        source = ScimSource.connect(
            server.url,
            token=TOKEN,
            credential_key="bench",
            page_size=page,
            settings=HttpSettings(retry=RETRY),
        )
        seconds = timed(source.read)
        # Servers may cap `count` (both cap at 1000): the fewest pages at that cap.
        effective = min(page, 1000)
        minimum = math.ceil(len(directory.people) / effective) + math.ceil(
            len(directory.groups) / effective
        )
        row(f"{name} p{page}", directory, seconds, source.pages, minimum)
    finally:
        server.stop()
    print(f"{'':20} (seed + start {load:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--scimmy-people", type=int, default=2_000)
    parser.add_argument("--ldap-page", type=int, default=1000)
    parser.add_argument("--scim-page", type=int, default=1000)
    parser.add_argument("--only", default="ldap,scim2,scimmy")
    args = parser.parse_args()
    only = set(args.only.split(","))
    # Per-request debug lines would drown the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    big = make_directory(args.people, args.groups)
    print(
        f"{'server':<20} {'people':>7} {'groups':>6} {'seconds':>8} {'people/s':>10} "
        f"{'requests':>8} {'minimum':>8} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if "ldap" in only:
            bench_ldap(big, folder, args.ldap_page)
        if "scim2" in only:
            bench_scim("scim2-server", big, folder, args.scim_page, start_scim2_server)
        if "scimmy" in only:
            small = make_directory(args.scimmy_people, max(1, args.groups // 5))
            bench_scim("scimmy", small, folder, args.scim_page, start_scimmy)


if __name__ == "__main__":
    main()
