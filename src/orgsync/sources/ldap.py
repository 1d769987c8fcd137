"""The LDAP / Active Directory source: people and groups read with ldap3, paged.

Owns the connection (LDAPS or StartTLS, certificates verified unless the configuration
allows plain LDAP; simple bind), the paged searches of the users and groups bases, the
flavour defaults (OpenLDAP `inetOrgPerson`/`groupOfNames` keyed on `entryUUID`; Active
Directory `user`/`group` keyed on `objectGUID`, disabled by `userAccountControl`), the
attribute map, and the translation of member DNs into person and group ids.

Read completely or not at all: the whole read (bind, users, disabled users, groups) runs
on one connection and is retried from the start on a transient failure, because a paged
search's cookie belongs to its connection and cannot resume elsewhere. A size limit, a
missing paged-results control, a cookie that does not advance, or a server that goes away
for good raise `SourceError`; the core plans nothing.

Nested groups: by default group members that are group DNs become group ids, and the
core flattens them, breaking cycles. With `nested_groups = "in_chain"` (Active Directory
only) each group's transitive people are asked of the server with the
LDAP_MATCHING_RULE_IN_CHAIN rule instead: one search per group, never one per user.
Member DNs outside the users and groups found (other OUs, deleted entries) are skipped
and counted in one warning, since groups routinely reference entries out of scope.

Change probe (incremental passes, `core.ports.DetectsChanges`). First, where the server
offers it, the `contextCSN` of the database holding the bases (OpenLDAP's syncprov
overlay keeps it on the database's suffix entry and moves it on every write: an add, a
modify, a modrdn, a delete): one base search, and an unchanged value means nothing was
written since the cursor was taken. The entry holding it is found once, when the cursor
is taken before a full read (the nearest entry at or above each base that has a
`contextCSN`), and kept in the cursor. Without it (no syncprov, Active Directory), or when
it moved (a write anywhere in that database, in scope or not), one search per base for
people and groups whose `modifyTimestamp` is at or after the cursor (entries added or
changed, a group's membership included; `entryCSN` or `uSNChanged` tell two changes
within one second apart), and DN-only searches (`1.1`, no attributes) counting the
people and the groups, since a deletion leaves no timestamp behind (below). The cursor is
a time on orgsync's clock minus `PROBE_OVERLAP`, with the entries already seen inside that
window, so the directory's clock may be that far behind orgsync's without a change being
missed, and a change is reported once; where a moved `contextCSN` shows that bound
broken (a CSN stamped before the cursor) or the directory restored or replaced (a CSN
that went back), the cursor is expired and the source read whole. A `contextCSN` does
not move for what syncprov does not see: an offline `slapadd` without `-w`, or a glued
subordinate database when syncprov sits on the subordinate only; full passes
(`full_interval`) catch those.

The counts (`_count`) are what a quiet pass without syncprov costs. Each is one DN-only
paged search asking for `COUNT_PAGE` (a million) entries a page, counted as they stream
in, not kept: where the server honours the page (OpenLDAP does unless the account's
`size.pr` is lower, whatever its `sizelimit` on unpaged answers) a quiet pass is four
searches (three when the bases are one) up to a million people, about 50 bytes a person
on the wire (5.3 MB and about 0.5 s of orgsync's CPU at 100k people) and no memory that
grows with it. Only a searchResDone with success ends a page: a server that refuses the
page (adminLimitExceeded) or cuts the first one short (sizeLimitExceeded; AD caps pages
at MaxPageSize without either, and is simply paged) is counted again in pages of
`page_size`, the one the reads use, and the cursor keeps that page for the next passes (a
full pass's new cursor asks again); a server that will not page through everyone
(`size.prtotal`) fails the probe with the size-limit error (as it fails the read), and
never answers a short count.
Considered and not taken: ldap3's own search with larger pages, or unpaged (the same
transfer under a smaller number, and ldap3 keeps a page's entries at about 800 bytes
each: 80 MB for 100k DNs); an unpaged search first (OpenLDAP's default `sizelimit 500`
cuts it short where a large page passes, so it would cost a call more); a count from the
server (OpenLDAP has none without an overlay: no count control, no `numSubordinates` in
back-mdb, VLV's `contentCount` needs sssvlv, cn=Monitor's `olmMDBEntries` counts the
whole database and needs the monitor backend); the accesslog overlay's `reqType=delete`
entries (a deletion is not the only way out: a `mail` removed or a move out of the base
leave none, so it would replace the counts only as "any write under the bases", needs
read access to `cn=accesslog` and a purge window longer than the interval, and an
operator who can load it can load syncprov, which makes a quiet pass one search).
"""

from __future__ import annotations

import json
import math
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal, cast
from urllib.parse import unquote, urlsplit

import ldap3
import structlog
import tenacity
from ldap3.core import exceptions as lx
from ldap3.operation.search import search_operation
from ldap3.protocol.rfc2696 import paged_search_control
from ldap3.utils.asn1 import decode_message_fast
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn, to_dn

from orgsync.core.errors import (
    CursorExpired,
    Interrupted,
    SourceDataError,
    SourceError,
    TransientError,
)
from orgsync.core.model import SourceGroup, SourceId, SourcePerson, SourceSnapshot
from orgsync.core.ports import ChangeProbe, ProbeState, ProbeStatus
from orgsync.core.redaction import scrub
from orgsync.retrying import RetrySettings
from orgsync.sources.ldap_ad import UsnCursor, probe_usn, usn_cursor

if TYPE_CHECKING:
    from orgsync.interrupt import ReadInterrupt

SLICE: Final = 0.1
"""Seconds between two looks at a stop request while a search waits (as `interrupt.SLICE`)."""

__all__ = ["AD", "OPENLDAP", "Flavor", "LdapSettings", "LdapSource"]

log = structlog.get_logger(__name__)

PAGED_RESULTS: Final = "1.2.840.113556.1.4.319"
IN_CHAIN: Final = "1.2.840.113556.1.4.1941"
"""LDAP_MATCHING_RULE_IN_CHAIN: Active Directory's transitive membership match."""
_NO_ATTRIBUTES: Final = "1.1"
"""RFC 4511: ask for no attributes at all (just the DNs)."""
PROBE_OVERLAP: Final = timedelta(minutes=5)
"""How far behind orgsync's clock the directory's may be (Kerberos allows as much)."""
COUNT_PAGE: Final = 1_000_000
"""DN-only entries asked a page when counting: the whole count in one search where the
server honours the page (the entries are counted as they arrive, never held)."""
_SEARCH_RESULT_ENTRY: Final = 4
"""RFC 4511's [APPLICATION 4] SearchResultEntry."""
_CAPPED: Final = frozenset({4, 11})
"""sizeLimitExceeded, adminLimitExceeded: an answer the server cut short."""
_decode_message: Final[Callable[[bytes], dict[str, Any]]] = decode_message_fast
"""ldap3's BER decoder of one LDAPMessage (untyped in types-ldap3)."""
MAX_SEEN: Final = 1000
"""Entries changed within the overlap that a cursor remembers, at most."""
_GENERALIZED: Final = "%Y%m%d%H%M%SZ"
_VERSION_ATTRIBUTES: Final = ("modifyTimestamp", "entryCSN", "uSNChanged")
_RANGE: Final = re.compile(r"^(?P<name>[^;]+);range=(?P<low>\d+)-(?P<high>\d+|\*)$", re.I)

_TRANSIENT_RESULTS: Final[tuple[type[lx.LDAPOperationResult], ...]] = (
    lx.LDAPBusyResult,
    lx.LDAPUnavailableResult,
    lx.LDAPTimeLimitExceededResult,
    lx.LDAPAdminLimitExceededResult,
)
"""Result codes a later attempt can clear: the server is loaded or restarting."""
_TRANSIENT_ERRORS: Final[tuple[type[Exception], ...]] = (
    lx.LDAPCommunicationError,  # refused, reset, closed by the server
    lx.LDAPResponseTimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class Flavor:
    """The defaults of one kind of directory server."""

    user_class_filter: str
    group_filter: str
    id_attribute: str
    disabled_filter: str | None


OPENLDAP: Final = Flavor(
    user_class_filter="(objectClass=inetOrgPerson)",
    group_filter="(objectClass=groupOfNames)",
    id_attribute="entryUUID",
    # OpenLDAP has no standard "disabled" flag: give `disabled_filter` for yours.
    disabled_filter=None,
)
AD: Final = Flavor(
    user_class_filter="(&(objectCategory=person)(objectClass=user))",
    group_filter="(objectClass=group)",
    id_attribute="objectGUID",
    # userAccountControl bit 2 (ACCOUNTDISABLE), with the bitwise-AND matching rule.
    disabled_filter="(userAccountControl:1.2.840.113556.1.4.803:=2)",
)


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """What the LDAP source needs from the configuration (secrets already resolved)."""

    url: str
    bind_dn: str
    password: str = field(repr=False)
    users_base: str
    groups_base: str
    start_tls: bool = False
    flavor: Literal["openldap", "ad"] = "openldap"
    user_filter: str | None = None
    group_filter: str | None = None
    id_attribute: str | None = None
    email_attribute: str = "mail"
    name_attribute: str | None = None
    disabled_filter: str | None = None
    nested_groups: Literal["client", "in_chain"] = "client"
    page_size: int = 500
    ca_file: str | None = None
    allow_plaintext: bool = False
    timeout: float = 30.0
    credential_key: str = "source.bind_password"
    """The configuration key holding the password, named when the bind is refused."""

    @property
    def defaults(self) -> Flavor:
        return AD if self.flavor == "ad" else OPENLDAP

    @property
    def users(self) -> str:
        """The user filter; by default only entries with an email address are people."""
        if self.user_filter:
            return _wrapped(self.user_filter)
        return f"(&{self.defaults.user_class_filter}({self.email_attribute}=*))"

    @property
    def groups(self) -> str:
        return _wrapped(self.group_filter or self.defaults.group_filter)

    @property
    def disabled(self) -> str | None:
        chosen = self.disabled_filter or self.defaults.disabled_filter
        return _wrapped(chosen) if chosen else None

    @property
    def id_attr(self) -> str:
        return self.id_attribute or self.defaults.id_attribute


_AD_PARTITIONS: Final = frozenset({"dc=domaindnszones", "dc=forestdnszones", "cn=configuration"})
"""First RDNs of Active Directory's naming contexts that hold no people or groups."""


def _ad_partition(uri: str) -> bool:
    """Whether an LDAP URL's DN is one of `_AD_PARTITIONS`."""
    path = unquote(urlsplit(uri).path).lstrip("/")
    first = path.split(",", 1)[0].replace(" ", "").lower()
    return first in _AD_PARTITIONS


def _close(conn: ldap3.Connection) -> None:
    """Unbind and close the socket, whatever state a failure left the connection in."""
    # The server may already be gone; ldap3 may also keep a socket it failed to connect.
    with suppress(lx.LDAPException, OSError):
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with suppress(OSError):
            sock.close()


_SAID_DEGRADED: set[tuple[str, str]] = set()
"""(server, reason) whose costlier probe was already reported by this process."""
Raw = dict[str, list[bytes]]
Marker = dict[str, list[str]]
"""DN of the entry holding a database's `contextCSN` -> its values (one per provider)."""


def _searches(pages: int) -> str:
    return f"{pages} search page{'s' if pages != 1 else ''}"


CountPages = dict[tuple[str, str], int]
"""(base, filter) whose unpaged count the server cut short -> the page size its paged
count worked with."""


def _cursor(
    since: datetime,
    seen: Mapping[str, str],
    marker: Marker | None = None,
    pages: CountPages | None = None,
) -> str:
    value: dict[str, object] = {
        "since": since.astimezone(UTC).strftime(_GENERALIZED),
        "seen": seen,
    }
    if marker is not None:
        value["csn"] = marker
    if pages:
        # Each pass builds its source anew: the cursor tells the next probe to page at
        # once rather than have the server cut one more unpaged count short.
        value["count_pages"] = [[base, flt, page] for (base, flt), page in sorted(pages.items())]
    return json.dumps(value)


def _usn_cursor(cursor: str) -> UsnCursor | None:
    """The Active Directory cursor, when `cursor` is one (see `ldap_ad`)."""
    try:
        value = json.loads(cursor)
    except ValueError:
        return None  # _parse_cursor names the problem
    if isinstance(value, dict) and "usn" in value:
        return UsnCursor.parse(value["usn"])
    return None


def _parse_cursor(cursor: str) -> tuple[datetime, dict[str, str], Marker | None, CountPages]:
    try:
        value = json.loads(cursor)
        since = datetime.strptime(value["since"], _GENERALIZED).replace(tzinfo=UTC)
        seen = {str(k): str(v) for k, v in dict(value["seen"]).items()}
        raw = value.get("csn")
        marker = None
        if raw is not None:
            marker = {str(k): sorted(str(x) for x in v) for k, v in dict(raw).items()}
        pages = {(str(b), str(f)): p for b, f, p in value.get("count_pages", [])}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CursorExpired(
            f"ldap: the change cursor is not one this source wrote ({error})"
        ) from None
    if marker is not None and (not marker or not all(marker.values())):
        raise CursorExpired("ldap: the change cursor holds an empty contextCSN")
    if not all(isinstance(p, int) and p >= 1 for p in pages.values()):
        raise CursorExpired("ldap: the change cursor holds a count page that is not a size")
    return since, seen, marker, pages


def _csn_untrusted(before: Marker, after: Marker, since: datetime) -> str | None:
    """Why a moved `contextCSN` cannot vouch for the timestamp search that follows, or
    None. A CSN is `time#count#server id#mod`, its time on the writing server's clock.

    - A server id's CSN went back, or is gone: the directory was restored from an older
      backup or replaced by another one under the same URL, and the entries it brought
      back carry timestamps older than the cursor.
    - A new CSN's time is before `since`: the write happened after the cursor was taken
      (the marker moved) yet is stamped earlier, so the directory's clock is behind
      orgsync's by more than the overlap (or a replica delivered an old write late), and
      the search by `modifyTimestamp` would miss it: a leaver taken out of a group would
      read as quiet.
    """
    for dn, values in before.items():
        old = {_csn_server(v): v for v in values}
        new = {_csn_server(v): v for v in after.get(dn, [])}
        for server, value in old.items():
            if server not in new or new[server] < value:
                now = new.get(server, "none")
                return (
                    f"the contextCSN of {dn} went back ({value} to {now}): the directory "
                    "was restored from a backup or replaced"
                )
        for server, value in new.items():
            if value != old.get(server) and _stamp(value) < since:
                return (
                    f"the directory wrote at {value[:14]}Z by its clock, after the cursor "
                    f"of {since:{_GENERALIZED}} was taken: its clock is behind orgsync's by "
                    f"more than {PROBE_OVERLAP}, so its modifyTimestamps cannot be trusted"
                )
    return None


def _csn_server(csn: str) -> str:
    parts = csn.split("#")
    return parts[2] if len(parts) == 4 else ""


def _stamp(text: str) -> datetime:
    """The generalizedTime that starts an entry's version (seconds, optional fraction);
    unreadable: the epoch (never kept)."""
    try:
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def _wrapped(text: str) -> str:
    text = text.strip()
    return text if text.startswith("(") else f"({text})"


@lru_cache(maxsize=65536)
def dn_key(dn: str) -> str:
    """A DN in the form used to compare: attribute types and values case-folded, spaces
    around separators dropped (member values and entry DNs are spelt differently)."""
    if "\\" not in dn and '"' not in dn and "+" not in dn:
        # The common case, without escapes or multi-valued RDNs: ldap3's parser costs
        # a second per 10k entries, this a few milliseconds.
        fast = [rdn.partition("=") for rdn in dn.split(",")]
        if all(sep for _, sep, _ in fast):
            return ",".join(f"{n.strip().lower()}={v.strip().lower()}" for n, _, v in fast)
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except (lx.LDAPInvalidDnError, ValueError, IndexError):
        return dn.strip().lower()
    return ",".join(f"{name.lower()}={value.lower()}" for name, value, _ in parts)


def _entry_id(raw: Sequence[bytes], attribute: str) -> str | None:
    if not raw:
        return None
    value = raw[0]
    if attribute.lower() == "objectguid" and len(value) == 16:
        # AD's GUID is 16 bytes in Microsoft's mixed-endian layout: shown as AD shows it.
        return str(uuid.UUID(bytes_le=value))
    try:
        return value.decode("utf-8").strip() or None
    except UnicodeDecodeError:
        return value.hex()


def _text(raw: Mapping[str, Sequence[bytes]], attribute: str | None) -> str | None:
    if not attribute:
        return None
    values = raw.get(attribute)
    if values is None:
        # Servers answer in their schema's spelling (AD: modifyTimeStamp), whatever the
        # spelling asked for.
        folded = attribute.lower()
        values = next((v for k, v in raw.items() if k.lower() == folded), [])
    for value in values:
        text = value.decode("utf-8", errors="replace").strip()
        if text:
            return text
    return None


def _check_new_page(base: str, first: str | None, firsts: set[str]) -> None:
    """Fail a page of a paged search that starts with the entry an earlier page started
    with (RFC 2696's cookie may stay the same between pages: the page must change)."""
    if first is None:
        return
    if first in firsts:
        raise SourceError(
            f"ldap: search of {base!r}: the server answered a page it had "
            "already sent (the paged search does not move forward)"
        )
    firsts.add(first)


def _next_cookie(
    base: str, done: Mapping[str, Any], cookie: bytes | None, had_entries: bool
) -> bytes | None:
    """The cookie asking for the page after the one `done` ends, None after the last; an
    answer without the paged-results control, or an empty page under the same cookie,
    fails the search (it cannot be known complete, or goes round in circles)."""
    control = (done.get("controls") or {}).get(PAGED_RESULTS)
    if control is None:
        raise SourceError(
            f"ldap: search of {base!r}: the answer carries no paged-results control, "
            "so it cannot be known complete"
        )
    following: bytes = control["value"]["cookie"]
    if not following:
        return None
    if following == cookie and not had_entries:
        raise SourceError(f"ldap: search of {base!r}: the paged-results cookie did not advance")
    return following


class LdapSource:
    """Reads people and groups from an LDAP directory or Active Directory.

    Args:
        settings: connection, bases, filters and attribute names.
        retry: the retry budget of the whole read (each attempt starts over).
        sleep: how to wait between attempts; tests pass a fake.
        interrupt: set on a stop request (SIGTERM): a read or probe in flight ends within
            `SLICE` seconds with `Interrupted`, and no attempt follows.
    """

    def __init__(
        self,
        settings: LdapSettings,
        *,
        retry: RetrySettings,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        interrupt: ReadInterrupt | None = None,
    ) -> None:
        if settings.page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.settings = settings
        self.retry = retry
        # A retry's wait ends at a stop request too (the next attempt is then refused).
        self.sleep = interrupt.sleep if interrupt is not None and sleep is time.sleep else sleep
        self.interrupt = interrupt
        self.clock = clock
        self.pages = 0
        """Pages (search result batches) fetched by the last successful attempt."""
        self.searches = 0
        """Search requests sent by the last successful attempt."""
        self.received = 0
        """Bytes of LDAP messages received by the last successful attempt."""
        self._count_pages: CountPages = {}

    def read(self) -> SourceSnapshot:
        retrying = self.retry.policy(sleep=self.sleep).copy(before_sleep=self._log_retry)
        try:
            snapshot = retrying(self._read_once)
        except TransientError as error:
            raise SourceError(
                f"ldap: {error} (gave up after retrying; nothing will be planned)"
            ) from error
        log.debug(
            "source.requests",
            system="ldap",
            pages=self.pages,
            searches=self.searches,
            received=self.received,
        )
        return snapshot

    # ------------------------------------------------------------------ change probe

    def change_cursor(self) -> str | None:
        """Now minus the overlap, and the `contextCSN` marker when the server keeps one
        (looked for here, before a full read, so that a quiet probe is one search)."""
        since = self.clock() - PROBE_OVERLAP
        try:
            cursor, degraded = self._take_cursor(since)
        except (SourceError, TransientError, lx.LDAPException) as error:
            # The read that follows reports the failure; the cursor just goes without.
            log.warning("source.change_marker_unavailable", system="ldap", error=str(error))
            return _cursor(since, {})
        if degraded is not None:
            self._say_degraded(degraded)
        return cursor

    def _take_cursor(self, since: datetime) -> tuple[str, ProbeStatus | None]:
        """The cursor for now, and what degrades the probe it starts (None: nothing)."""
        conn = self._connect()
        try:
            why = enable = ""
            if self.settings.flavor == "ad":
                usn, why = usn_cursor(self, conn, self._bases, now=self.clock(), key=dn_key)
                if usn is not None:
                    return usn.dump(), None
                enable = (
                    "grant the bind account List Contents and Read Property on "
                    "CN=Deleted Objects (dsacls ... /G DOMAIN\\account:LCRP)"
                )
            marker = self._find_marker(conn)
            degraded = None
            if marker is None:
                if not why:
                    why = "no contextCSN at or above the bases (OpenLDAP's syncprov keeps one)"
                    enable = (
                        "load the syncprov overlay on the database holding the bases "
                        "(olcOverlay=syncprov): a quiet pass is then one search"
                    )
                degraded = self._degraded(why, enable)
        finally:
            _close(conn)
        return _cursor(since, {}, marker), degraded

    def _degraded(self, why: str, enable: str) -> ProbeStatus:
        """A deletion leaves no timestamp, so without a server-side marker the probe must
        count every person and group to notice a leaver."""
        return ProbeStatus(
            ProbeState.DEGRADED,
            reason=why,
            cost=(
                "each incremental pass searches the changed entries and counts every "
                "person and group, DNs only (a deletion leaves no timestamp): one search "
                "each, or a search a page where the server refuses pages of "
                f"{COUNT_PAGE} entries, about 50 bytes a person on the wire"
            ),
            enable=enable,
        )

    def _say_degraded(self, status: ProbeStatus) -> None:
        """Once per process and server: what every quiet incremental pass costs, and what
        would make it one search."""
        said = (self.settings.url, status.reason)
        if said in _SAID_DEGRADED:
            return
        _SAID_DEGRADED.add(said)
        log.warning(
            "source.change_probe_degraded",
            system="ldap",
            reason=status.reason,
            cost=status.cost,
            enable=status.enable,
        )

    def change_probe_status(self, people: int, groups: int) -> ProbeStatus:
        """A cursor taken now and probed once, as an incremental pass would (reads only);
        the cost is the searches that probe made."""
        try:
            cursor, degraded = self._take_cursor(self.clock() - PROBE_OVERLAP)
        except lx.LDAPException as error:
            raise self._classify(error, "search") from error
        except TransientError as error:
            raise SourceError(f"ldap: {error}") from error
        probe = self.probe_changes(cursor, people, groups)
        if degraded is not None:
            return replace(degraded, cost=f"{degraded.cost}: {_searches(probe.calls)} here now")
        how = (
            "the domain controller's update sequence numbers"
            if _usn_cursor(cursor) is not None
            else "the contextCSN the syncprov overlay keeps"
        )
        quiet = f"a quiet incremental pass is {_searches(probe.calls)} ({how})"
        return ProbeStatus(ProbeState.AVAILABLE, cost=quiet)

    @property
    def _bases(self) -> list[str]:
        return list(dict.fromkeys((self.settings.users_base, self.settings.groups_base)))

    def probe_changes(self, cursor: str, people: int, groups: int) -> ChangeProbe:
        retrying = self.retry.policy(sleep=self.sleep).copy(before_sleep=self._log_retry)
        usn = _usn_cursor(cursor)
        try:
            if usn is not None:
                probe: ChangeProbe = retrying(self._probe_usn_once, usn)
            else:
                since, seen, marker, pages = _parse_cursor(cursor)
                self._count_pages.update(pages)
                probe = retrying(self._probe_once, since, seen, marker, (people, groups))
        except TransientError as error:
            raise SourceError(f"ldap: {error} (gave up after retrying)") from error
        # What the calls carried: a quiet pass without syncprov is a few searches, but
        # its counts bring every DN.
        log.debug("source.probe_received", system="ldap", received=self.received)
        return probe

    def _probe_once(
        self,
        since: datetime,
        seen: dict[str, str],
        marker: Marker | None,
        known: tuple[int, int],
    ) -> ChangeProbe:
        s = self.settings
        started = self.clock()
        following = started - PROBE_OVERLAP
        self.pages = self.searches = self.received = 0
        recent: dict[str, str] = {}
        conn = self._connect()
        try:
            with self._stoppable(conn):
                now_marker = self._read_marker(conn, marker) if marker is not None else None
                if marker is not None and now_marker == marker:
                    # Nothing written since the cursor was taken: the entries seen inside the
                    # overlap are still the latest versions.
                    keep = {dn: stamp for dn, stamp in seen.items() if _stamp(stamp) >= following}
                    return ChangeProbe(
                        changed=False,
                        cursor=_cursor(following, keep, marker, self._count_pages),
                        calls=self.pages,
                    )
                if marker is not None and now_marker is not None:
                    untrusted = _csn_untrusted(marker, now_marker, since)
                    if untrusted is not None:
                        raise CursorExpired(f"ldap: {untrusted}; reading the directory whole")
                recently = f"(&(|{s.users}{s.groups})(modifyTimestamp>={since:{_GENERALIZED}}))"
                for base in dict.fromkeys((s.users_base, s.groups_base)):
                    for dn, raw in self._paged(conn, base, recently, list(_VERSION_ATTRIBUTES)):
                        # A timestamp has whole seconds: a second change within the same
                        # second is told apart by OpenLDAP's entryCSN or AD's uSNChanged.
                        version = [_text(raw, a) or "" for a in _VERSION_ATTRIBUTES]
                        recent[dn_key(dn)] = "|".join(version)
                counted = (
                    self._count(conn, s.users_base, s.users),
                    self._count(conn, s.groups_base, s.groups),
                )
        except lx.LDAPException as error:
            raise self._classify(error, "search") from error
        finally:
            self._finish(conn)
        fresh = sorted(dn for dn, stamp in recent.items() if seen.get(dn) != stamp)
        changed = bool(fresh) or counted != known
        if changed:
            log.info(
                "source.changes_found",
                system="ldap",
                changed_entries=len(fresh),
                counted=counted,
                before=known,
            )
        keep = {dn: stamp for dn, stamp in recent.items() if _stamp(stamp) >= following}
        if len(keep) > MAX_SEEN:
            # A bulk load: not remembered (the cursor stays small); passes within the
            # overlap read and compare until it is older than the window.
            keep, changed = {}, True
        return ChangeProbe(
            changed=changed,
            cursor=_cursor(following, keep, now_marker, self._count_pages),
            calls=self.pages,
        )

    def _count(self, conn: ldap3.Connection, base: str, search_filter: str) -> int:
        """How many entries under `base` match, exactly, or the search fails.

        One DN-only paged search asking for `COUNT_PAGE` entries a page, counted as they
        stream in (`_count_pages_of`): one request where the server honours the page,
        as OpenLDAP does unless the account's `size.pr` is lower, even under a
        `sizelimit` that caps unpaged answers (paged ones count against `size.prtotal`).
        A server that refuses the page (adminLimitExceeded, "illegal pagedResults page
        size") or cuts the first one short (sizeLimitExceeded) is counted again with the
        configured `page_size`, the one the reads use, and the cursor keeps that page.
        Entries of an answer cut short are never taken for the count (fewer people would
        read as leavers); a server that will not page through everyone (`size.prtotal`)
        fails the probe with the size-limit error, as it would fail the read.
        """
        key = (base, search_filter)
        page = self._count_pages.get(key, max(self.settings.page_size, COUNT_PAGE))
        counted = self._count_pages_of(conn, base, search_filter, page)
        if counted is None:
            log.warning(
                "source.count_capped",
                system="ldap",
                base=base,
                page=page,
                reason="the server refused or cut short a page that large for the bind account",
                cost=f"the count of every entry there is paged, {self.settings.page_size} a page",
                enable=(
                    "lift the bind account's page limit (OpenLDAP: olcLimits "
                    'dn.exact="<bind_dn>" size.pr=unlimited size.prtotal=unlimited): the '
                    "count is then one search; or load the syncprov overlay: a quiet pass "
                    "is one search; or, fewer pages, raise source.page_size to the limit"
                ),
            )
            page = self.settings.page_size
            counted = self._count_pages_of(conn, base, search_filter, page)
            assert counted is not None  # the configured page is never refused quietly
        # Kept for the next probes (the cursor carries it to the next passes).
        if page != max(self.settings.page_size, COUNT_PAGE):
            self._count_pages[key] = page
        return counted

    def _count_pages_of(
        self, conn: ldap3.Connection, base: str, search_filter: str, page: int
    ) -> int | None:
        """The entries of a DN-only paged search, `page` a page, counted as they arrive;
        None when the server refused or cut short its first page of more than `page_size`.

        ldap3's `search` keeps every entry of a page as a dict of about 800 bytes (80 MB
        for a page of 100k DNs): the messages are read off the connection here and only
        each page's first entry and its end are decoded, so the count holds one network
        read at a time whatever the page. The checks are `_paged`'s: only a
        searchResDone with success and a paged-results control ends a page, and a page
        that repeats an earlier one or a cookie that does not advance fail the count.
        """
        strategy = conn.strategy
        request = search_operation(
            base,
            search_filter,
            ldap3.SUBTREE,
            ldap3.DEREF_ALWAYS,  # as `Connection.search`, which the reads use
            [_NO_ATTRIBUTES],
            0,
            0,
            False,
            conn.auto_escape,
            conn.auto_encode,
        )
        may_refuse = page > self.settings.page_size
        self.searches += 1
        count = 0
        cookie: bytes | None = None
        firsts: set[str] = set()
        while True:
            if self.interrupt is not None:
                self.interrupt.check(f"the next page of {base!r}")
            control = paged_search_control(True, page, cookie)
            message_id = strategy.send("searchRequest", request, [control])
            self.pages += 1
            try:
                entries, first, done = self._stream_page(strategy, message_id, base)
            finally:
                strategy._outstanding.pop(message_id, None)
            if done["result"] in _CAPPED and cookie is None and may_refuse:
                return None
            conn.result = done
            if done["result"] not in (0, 4, 10):
                # As ldap3's search raises it: `_classify` tells a busy server (retried)
                # from a missing base or a refused account.
                raise lx.LDAPOperationResult(
                    result=done["result"],
                    description=done["description"],
                    dn=done["dn"],
                    message=done["message"],
                    response_type=done["type"],
                )
            self._check_result(conn, base)
            count += entries
            _check_new_page(base, first, firsts)
            cookie = _next_cookie(base, done, cookie, entries > 0)
            if cookie is None:
                return count

    def _stream_page(
        self, strategy: Any, message_id: int, base: str
    ) -> tuple[int, str | None, dict[str, Any]]:
        """One answer read off the connection: its entries (counted), the DN of the first,
        and its searchResDone decoded. A continuation reference fails it."""
        entries = 0
        first: str | None = None
        while True:
            messages = strategy.receiving()
            if not messages:
                raise lx.LDAPSessionTerminatedByServerError(
                    f"the connection closed during the count of {base!r}"
                )
            for raw in messages:
                self.received += len(raw)  # ldap3's usage sees only its own reads
                message = _decode_message(raw)
                if int(message["messageID"]) != message_id:
                    raise lx.LDAPSocketReceiveError(
                        f"an answer to message {message['messageID']} during the count of "
                        f"{base!r} (message {message_id})"
                    )
                if message["protocolOp"] == _SEARCH_RESULT_ENTRY and first is not None:
                    entries += 1
                    continue
                answer: dict[str, Any] = strategy.decode_response_fast(message)
                if answer["type"] == "searchResEntry":
                    entries += 1
                    first = str(answer["dn"])
                elif answer["type"] == "searchResRef":
                    self._refuse_references([answer], base)
                elif answer["type"] == "searchResDone":
                    return entries, first, answer
                else:
                    raise lx.LDAPSocketReceiveError(
                        f"a {answer['type']} during the count of {base!r}"
                    )

    def _probe_usn_once(self, cursor: UsnCursor) -> ChangeProbe:
        self.pages = self.searches = self.received = 0
        started = self.clock()
        conn = self._connect()
        try:
            with self._stoppable(conn):
                changed, following = probe_usn(
                    self, conn, cursor, self._bases, now=started, key=dn_key
                )
        except lx.LDAPException as error:
            raise self._classify(error, "search") from error
        finally:
            self._finish(conn)
        if changed:
            log.info("source.changes_found", system="ldap")
        return ChangeProbe(changed=changed, cursor=following.dump(), calls=self.pages)

    def _finish(self, conn: ldap3.Connection) -> None:
        """Close `conn`, adding the bytes ldap3 received on it to `received`."""
        if conn.usage is not None:
            self.received += conn.usage.bytes_received
        _close(conn)

    @contextmanager
    def _stoppable(self, conn: ldap3.Connection) -> Iterator[None]:
        """A stop request ends the searches on `conn` within `SLICE` seconds.

        ldap3 waits for an answer in a blocking `recv`, which no flag reaches; a watcher
        thread shuts the socket down (which, unlike a close, wakes a `recv` blocked in
        another thread), and whatever that makes the search raise becomes `Interrupted`.
        """
        interrupt = self.interrupt
        if interrupt is None:
            yield
            return
        interrupt.check("reading the directory")
        done = threading.Event()

        def watch() -> None:
            while not done.wait(SLICE):
                if interrupt.is_set():
                    sock = getattr(conn, "socket", None)
                    if sock is not None:
                        with suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    return

        watcher = threading.Thread(target=watch, name="ldap-stop-watch", daemon=True)
        watcher.start()
        try:
            yield
        except Exception as error:
            if interrupt.is_set():
                raise Interrupted("ldap: the read was stopped: orgsync is shutting down") from error
            raise
        finally:
            done.set()
            watcher.join()

    def entry(self, conn: ldap3.Connection, dn: str, attributes: Sequence[str]) -> Raw | None:
        """One base search (a rootDSE, a configuration object); None when absent."""
        self.searches += 1
        self.pages += 1
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=list(attributes))
        except (lx.LDAPNoSuchObjectResult, lx.LDAPInsufficientAccessRightsResult):
            return None
        found = next((e for e in conn.response or [] if e.get("type") == "searchResEntry"), None)
        return dict(found["raw_attributes"]) if found else None

    def entries(
        self,
        conn: ldap3.Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        scope: Literal["BASE", "LEVEL", "SUBTREE"] = "SUBTREE",
        controls: list[tuple[str, bool, bytes | None]] | None = None,
    ) -> Iterator[tuple[str, Raw]]:
        return self._paged(conn, base, search_filter, attributes, scope=scope, controls=controls)

    def _find_marker(self, conn: ldap3.Connection) -> Marker | None:
        """The `contextCSN` of the database holding each base: the nearest entry at or
        above the base that has one. None when a base has none (the server keeps none)."""
        marker: Marker = {}
        for base in dict.fromkeys((self.settings.users_base, self.settings.groups_base)):
            rdns = [rdn.strip() for rdn in to_dn(base)]
            for depth in range(len(rdns)):
                dn = ",".join(rdns[depth:])
                values = self._context_csn(conn, dn)
                if values:
                    marker[dn] = values
                    break
            else:
                return None
        return marker

    def _read_marker(self, conn: ldap3.Connection, marker: Marker) -> Marker | None:
        current: Marker = {}
        for dn in marker:
            values = self._context_csn(conn, dn)
            if not values:
                return None  # syncprov was removed, or the entry: today's method
            current[dn] = values
        return current

    def _context_csn(self, conn: ldap3.Connection, dn: str) -> list[str]:
        self.searches += 1
        self.pages += 1
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["contextCSN"])
        except (lx.LDAPNoSuchObjectResult, lx.LDAPInsufficientAccessRightsResult):
            return []
        entry = next((e for e in conn.response or [] if e.get("type") == "searchResEntry"), None)
        raw = dict((entry or {}).get("raw_attributes") or {})
        values: list[bytes] = next((v for k, v in raw.items() if k.lower() == "contextcsn"), [])
        return sorted(v.decode("utf-8", errors="replace") for v in values)

    # ------------------------------------------------------------------ one attempt

    def _read_once(self) -> SourceSnapshot:
        self.pages = self.searches = self.received = 0
        conn = self._connect()
        try:
            with self._stoppable(conn):
                people_entries = list(self._users(conn))
                disabled = self._disabled(conn)
                group_entries = list(self._groups(conn))
                chains = self._in_chain(conn, group_entries)
        except lx.LDAPException as error:
            raise self._classify(error, "search") from error
        finally:
            self._finish(conn)
        return self._snapshot(people_entries, disabled, group_entries, chains)

    def _connect(self) -> ldap3.Connection:
        s = self.settings
        if self.interrupt is not None:
            self.interrupt.check(f"connecting to {s.url}")
        parts = urlsplit(s.url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise SourceError(f"ldap: {s.url!r} is not an ldap:// or ldaps:// URL")
        use_ssl = parts.scheme == "ldaps"
        if not (use_ssl or s.start_tls or s.allow_plaintext):
            # The configuration refuses this too; kept here for sources built in code.
            raise SourceError(
                f"ldap: {s.url} without TLS would send the bind password in clear; use "
                "ldaps://, start_tls, or allow_plaintext for a loopback test rig"
            )
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=s.ca_file,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )
        server = ldap3.Server(
            parts.hostname,
            port=parts.port or (636 if use_ssl else 389),
            use_ssl=use_ssl,
            tls=tls,
            get_info=ldap3.NONE,  # no schema round trip: values are decoded here
            connect_timeout=max(1, math.ceil(s.timeout)),
        )
        conn = ldap3.Connection(
            server,
            user=s.bind_dn,
            password=s.password,
            authentication=ldap3.SIMPLE,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            collect_usage=True,  # bytes received, for `received`
            raise_exceptions=True,
            auto_referrals=False,
            # ldap3 packs this into SO_RCVTIMEO as an integer number of seconds.
            receive_timeout=max(1, math.ceil(s.timeout)),
        )
        step = "connect"
        try:
            conn.open()
            # A server that accepted the connection may still never answer the bind.
            with self._stoppable(conn):
                if s.start_tls and not use_ssl:
                    step = "StartTLS"
                    conn.start_tls()
                step = "bind"
                conn.bind()
        except Interrupted:
            _close(conn)
            raise
        except lx.LDAPInvalidCredentialsResult as error:
            _close(conn)
            raise SourceError(
                f"ldap: {s.url}: the bind as {s.bind_dn!r} was refused (invalid credentials): "
                f"check {s.credential_key} and bind_dn"
            ) from error
        except (lx.LDAPException, ssl.SSLError, OSError) as error:
            _close(conn)
            raise self._classify(error, step) from error
        return conn

    def _classify(self, error: Exception, step: str) -> Exception:
        """Map an ldap3 failure to TransientError (retry the read) or SourceError."""
        where = f"{self.settings.url}: {step}"
        # A server's diagnostic message is quoted: one that echoes the bind password
        # (a misbehaving proxy, a hostile server) must not put it in logs or run history.
        detail = scrub(f"{type(error).__name__}: {error}", [self.settings.password])
        text = str(error).lower()
        if "certificate" in text or isinstance(error, ssl.SSLError | lx.LDAPStartTLSError):
            return SourceError(
                f"ldap: {where}: TLS failed ({detail}); the server's certificate must be "
                "trusted (source.ca_file) and match the host name"
            )
        if isinstance(error, lx.LDAPSizeLimitExceededResult):
            return SourceError(
                f"ldap: {where}: the server's size limit was exceeded, so the read is "
                "incomplete; raise the limit for the bind account (OpenLDAP `limits`, AD "
                "MaxPageSize) or narrow the bases/filters"
            )
        if isinstance(error, lx.LDAPNoSuchObjectResult):
            return SourceError(f"ldap: {where}: a search base does not exist ({detail})")
        if isinstance(error, lx.LDAPInsufficientAccessRightsResult):
            return SourceError(
                f"ldap: {where}: {self.settings.bind_dn!r} may not read this ({detail})"
            )
        if isinstance(error, (*_TRANSIENT_RESULTS, *_TRANSIENT_ERRORS)):
            return TransientError(f"{where}: {detail}")
        return SourceError(f"ldap: {where}: {detail}")

    # ------------------------------------------------------------------ searches

    def _paged(
        self,
        conn: ldap3.Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        page_size: int | None = None,
        *,
        scope: Literal["BASE", "LEVEL", "SUBTREE"] = "SUBTREE",
        controls: list[tuple[str, bool, bytes | None]] | None = None,
    ) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """(dn, raw attributes) of every entry, page by page, checked to move forward.

        RFC 2696's cookie is opaque and need not change between pages (Samba's AD DC
        answers every page of a search with the same handle, `1\\0`): what must change is
        the page. A page that starts with an entry an earlier page started with, or a
        further page with no entry at all under the same cookie, is a server going round
        in circles, and the read fails rather than loops or doubles people.
        """
        cookie: bytes | None = None
        firsts: set[str] = set()
        self.searches += 1
        while True:
            if self.interrupt is not None:
                self.interrupt.check(f"the next page of {base!r}")
            conn.search(
                base,
                search_filter,
                search_scope=scope,
                attributes=attributes,
                controls=controls,
                paged_size=page_size or self.settings.page_size,
                # Critical: a server that cannot page must refuse, not answer a truncated
                # list that would read as "these people left".
                paged_criticality=True,
                paged_cookie=cookie,
            )
            self.pages += 1
            self._check_result(conn, base)
            self._check_references(conn, base)
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
            _check_new_page(base, entries[0]["dn"] if entries else None, firsts)
            for entry in entries:
                yield entry["dn"], dict(entry["raw_attributes"])
            cookie = _next_cookie(base, conn.result, cookie, bool(entries))
            if cookie is None:
                return

    @staticmethod
    def _check_result(conn: ldap3.Connection, base: str) -> None:
        """ldap3 does not raise for every failed search (sizeLimitExceeded among them)."""
        code = conn.result.get("result", 0)
        if code == 0:
            return
        description = conn.result.get("description", "")
        message = conn.result.get("message", "")
        if code == 4:  # sizeLimitExceeded: the entries so far are only part of the answer
            raise lx.LDAPSizeLimitExceededResult(f"{description} {message}".strip())
        if code == 10:  # referral: the base itself is held by another server
            where = ", ".join(map(str, conn.result.get("referrals") or [])) or "another server"
            raise SourceError(
                f"ldap: search of {base!r}: result 10 referral: the base is held by {where}; "
                "orgsync does not follow referrals (the other server would get the bind "
                "password): point the URL at the server that holds the base"
            )
        raise SourceError(f"ldap: search of {base!r}: result {code} {description} {message}")

    def _check_references(self, conn: ldap3.Connection, base: str) -> None:
        """A continuation reference (`searchResRef`) is part of the subtree held by another
        server, which is never followed (it would receive the bind password): the people
        there would read as gone, so the read fails instead, naming it. Active Directory
        answers a search from a domain's root with references to its DNS and configuration
        partitions, which hold no people or groups: those alone are passed over."""
        self._refuse_references(conn.response or [], base)

    def _refuse_references(self, responses: Sequence[Mapping[str, object]], base: str) -> None:
        for response in responses:
            if response.get("type") != "searchResRef":
                continue
            uris = [str(u) for u in cast("list[object]", response.get("uri") or [])]
            if self.settings.flavor == "ad" and uris and all(map(_ad_partition, uris)):
                continue
            raise SourceError(
                f"ldap: search of {base!r}: the server referred part of the subtree to "
                f"{', '.join(uris) or 'another server'} (a continuation reference); orgsync "
                "does not follow referrals, so the people and groups there would read as "
                "gone: point the base at the server that holds them, or narrow it to "
                "exclude the referral"
            )

    def _users(self, conn: ldap3.Connection) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        s = self.settings
        attributes = [s.id_attr, s.email_attribute, s.name_attribute or "displayName", "cn"]
        return self._paged(conn, s.users_base, s.users, attributes)

    def _disabled(self, conn: ldap3.Connection) -> set[str]:
        s = self.settings
        if s.disabled is None:
            return set()
        search_filter = f"(&{s.users}{s.disabled})"
        return {
            dn_key(dn) for dn, _ in self._paged(conn, s.users_base, search_filter, [_NO_ATTRIBUTES])
        }

    def _groups(self, conn: ldap3.Connection) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        s = self.settings
        attributes = [s.id_attr, "cn"]
        if s.nested_groups == "client":
            attributes.append("member")
        for dn, raw in self._paged(conn, s.groups_base, s.groups, attributes):
            if s.nested_groups == "client":
                raw["member"] = self._all_members(conn, dn, raw)
            yield dn, raw

    def _all_members(
        self, conn: ldap3.Connection, dn: str, raw: dict[str, list[bytes]]
    ) -> list[bytes]:
        """`member` values, following Active Directory's ranged retrieval.

        AD returns at most MaxValRange (1500) values of a large attribute, under the name
        `member;range=0-1499`, and an empty `member`; the rest is asked for range by range.
        """
        members = list(raw.get("member") or [])
        ranged = [(k, _RANGE.match(k)) for k in raw if _RANGE.match(k)]
        for key, match in ranged:
            assert match is not None
            members.extend(raw[key])
            high = match.group("high")
            while high != "*":
                start = int(high) + 1
                self.searches += 1
                conn.search(
                    dn,
                    "(objectClass=*)",
                    search_scope=ldap3.BASE,
                    attributes=[f"member;range={start}-*"],
                )
                entry = next(
                    (e for e in conn.response or [] if e.get("type") == "searchResEntry"), None
                )
                found = None
                for name, values in (entry or {}).get("raw_attributes", {}).items():
                    part = _RANGE.match(name)
                    if part and part.group("name").lower() == "member":
                        members.extend(values)
                        found = part
                if found is None or int(found.group("low")) != start:
                    raise SourceError(
                        f"ldap: {dn!r}: ranged retrieval of member from {start} answered "
                        "no or the wrong range"
                    )
                high = found.group("high")
        return members

    def _in_chain(
        self, conn: ldap3.Connection, groups: list[tuple[str, dict[str, list[bytes]]]]
    ) -> dict[str, list[str]]:
        """For `in_chain`: group DN key -> DNs of its transitive people, asked of AD."""
        s = self.settings
        if s.nested_groups != "in_chain":
            return {}
        chains = {}
        for dn, _ in groups:
            search_filter = f"(&{s.users}(memberOf:{IN_CHAIN}:={escape_filter_chars(dn)}))"
            found = self._paged(conn, s.users_base, search_filter, [_NO_ATTRIBUTES])
            chains[dn_key(dn)] = [member for member, _ in found]
        return chains

    # ------------------------------------------------------------------ the snapshot

    def _snapshot(
        self,
        people_entries: list[tuple[str, dict[str, list[bytes]]]],
        disabled: set[str],
        group_entries: list[tuple[str, dict[str, list[bytes]]]],
        chains: dict[str, list[str]],
    ) -> SourceSnapshot:
        s = self.settings
        people: list[SourcePerson] = []
        by_dn: dict[str, SourceId] = {}
        # The id attribute is the operator's choice (`id_attribute`): one that is not
        # unique (a `uid` repeated in two OUs, a `cn` shared by a person and a group)
        # would merge two entries, and the core would give one's groups to the other.
        owner: dict[SourceId, str] = {}
        for dn, raw in people_entries:
            key = dn_key(dn)
            if key in by_dn:
                continue  # the same entry answered twice: read once
            person_id = _entry_id(raw.get(s.id_attr) or [], s.id_attr)
            if person_id is None:
                raise SourceDataError(f"ldap: {dn!r} has no {s.id_attr} (the stable id)")
            self._unique(owner, SourceId(person_id), dn)
            # Without an address the core rejects the entry (reported with its id, never
            # acted on); add (mail=*) to user_filter to leave such entries out.
            email = _text(raw, s.email_attribute) or ""
            name = _text(raw, s.name_attribute or "displayName") or _text(raw, "cn") or ""
            people.append(
                SourcePerson(
                    id=SourceId(person_id),
                    email=email,
                    name=name,
                    active=key not in disabled,
                    attributes={"dn": dn},
                )
            )
            by_dn[key] = SourceId(person_id)
        group_ids: dict[str, SourceId] = {}
        for dn, raw in group_entries:
            group_id = _entry_id(raw.get(s.id_attr) or [], s.id_attr)
            if group_id is None:
                raise SourceDataError(f"ldap: group {dn!r} has no {s.id_attr} (the stable id)")
            if dn_key(dn) not in group_ids:
                self._unique(owner, SourceId(group_id), dn)
            group_ids[dn_key(dn)] = SourceId(group_id)
        dangling = 0
        groups: list[SourceGroup] = []
        done: set[str] = set()
        for dn, raw in group_entries:
            key = dn_key(dn)
            if key in done:
                continue
            done.add(key)
            if chains:
                member_dns = chains.get(key, [])
            else:
                member_dns = [v.decode("utf-8", errors="replace") for v in raw.get("member") or []]
            members: list[SourceId] = []
            for member_dn in member_dns:
                member_key = dn_key(member_dn)
                if member_key == key:
                    continue  # groupOfNames' placeholder for "no members"
                found = by_dn.get(member_key) or group_ids.get(member_key)
                if found is None:
                    dangling += 1
                else:
                    members.append(found)
            name = _text(raw, "cn") or dn
            groups.append(SourceGroup(id=group_ids[key], name=name, members=tuple(members)))
        if dangling:
            log.warning(
                "source.dangling_members",
                system="ldap",
                skipped=dangling,
                reason="member DNs that are neither a person nor a group found under the bases",
            )
        return SourceSnapshot(people=tuple(people), groups=tuple(groups))

    def _unique(self, owner: dict[SourceId, str], entry_id: SourceId, dn: str) -> None:
        """Fail the read when `entry_id` already names another entry."""
        other = owner.setdefault(entry_id, dn)
        if dn_key(other) != dn_key(dn):
            raise SourceDataError(
                f"ldap: {other!r} and {dn!r} share the id {entry_id!r} ({self.settings.id_attr} "
                "is not unique): choose an id_attribute every person and group has its own "
                "value of (entryUUID, objectGUID); nothing will be planned"
            )

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "source.retry",
            system="ldap",
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            error=str(error),
        )
