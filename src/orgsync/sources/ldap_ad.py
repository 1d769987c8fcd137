"""Active Directory's change probe: update sequence numbers and deleted objects.

Every write on a domain controller takes the next number of that DC's update sequence
(USN), stamped on the object as `uSNChanged`, and the rootDSE's `highestCommittedUSN`
is the last one committed (Microsoft, "Polling for Changes Using the USNChanged
Attribute"). So:

* quiet: one base search of the rootDSE; the same `highestCommittedUSN` on the same DC
  (`dsServiceName`) means nothing was written there since the cursor;
* moved: the DC's `invocationId` (a restored DC gets a new one, and its USNs no longer
  continue the cursor's), then the objects with `uSNChanged` in (cursor, now] under the
  naming context holding the bases, then the tombstones (`isDeleted=TRUE`) in its
  Deleted Objects container, asked for with the show-deleted control, in that range.
  The first change of ours ends the probe (the pass then reads the source whole): a busy
  domain (a bulk import, logons stamping `lastLogonTimestamp` on thousands of users) is
  not paged through only to be counted and read again.

A change is the probe's business when the object is under a base (or is a base, or
above one), or is a user, group, organizational unit or container anywhere in the
domain: a person (or an OU of people) moved out of the bases is a leaver, and the moved
entry, now outside them, is the only trace of it (AD changes no group and no child entry
on a move), so a change to such an object anywhere cannot be told from a move out. A
tombstone counts when its `lastKnownParent` was under a base, or it was a user or a
group (moved out and deleted between two probes leaves only a tombstone whose parent is
elsewhere; an OU is deleted empty, or with its children's tombstones). Computers,
contacts and everything else outside the bases are ignored.

The cursor is refused (`CursorExpired`, the source is read whole) when another DC
answers (USNs are per DC), the USN went backwards, the `invocationId` changed, or the
cursor is older than the forest's `tombstoneLifetime` less a day (a deletion that old may
have been purged, so its absence proves nothing).

Tombstones are listed only with the rights to see them: AD answers a search of Deleted
Objects by an account without List Contents there with no entries and success, which
would read as "nobody left". `usn_cursor` therefore takes the USN cursor only when the
bind account sees at least one tombstone (a domain keeps every deletion for
`tombstoneLifetime`, 180 days by default, so a live domain always has some); otherwise
the caller keeps the timestamp-and-count probe and logs why, once per full read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

import ldap3
from ldap3.core import exceptions as lx

from orgsync.core.errors import CursorExpired

SHOW_DELETED: Final = "1.2.840.113556.1.4.417"
"""LDAP_SERVER_SHOW_DELETED_OID: tombstones are returned to this search."""
DEFAULT_TOMBSTONE_DAYS: Final = 60
"""What AD assumes when the forest does not set `tombstoneLifetime` (older forests)."""
TOMBSTONE_MARGIN: Final = timedelta(days=1)
_KINDS: Final = frozenset({"user", "group", "organizationalunit", "container"})
"""Objects a change to which, anywhere in the domain, may be a move out of the bases."""
_PEOPLE_KINDS: Final = frozenset({"user", "group"})
_GENERALIZED: Final = "%Y%m%d%H%M%SZ"

Raw = dict[str, list[bytes]]


class Searches(Protocol):
    """What the probe needs of the LDAP source (one connection, counted requests)."""

    def entry(self, conn: ldap3.Connection, dn: str, attributes: Sequence[str]) -> Raw | None:
        """A base search; None when the entry is absent or hidden."""
        ...

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
        """A paged search."""
        ...


@dataclass(frozen=True, slots=True)
class UsnCursor:
    dc: str
    """`dsServiceName`: the DC whose USNs these are."""
    invocation: str
    """That DC database's `invocationId` (hex)."""
    usn: int
    taken: datetime
    """When `usn` was last known to cover everything (the tombstone window starts here)."""
    tombstone_days: int
    naming_context: str

    def dump(self) -> str:
        return json.dumps(
            {
                "usn": {
                    "dc": self.dc,
                    "invocation": self.invocation,
                    "highest": self.usn,
                    "taken": self.taken.astimezone(UTC).strftime(_GENERALIZED),
                    "tombstone_days": self.tombstone_days,
                    "nc": self.naming_context,
                }
            }
        )

    @classmethod
    def parse(cls, value: object) -> UsnCursor:
        try:
            raw = dict(value)  # type: ignore[call-overload]
            return cls(
                dc=str(raw["dc"]),
                invocation=str(raw["invocation"]),
                usn=int(raw["highest"]),
                taken=datetime.strptime(raw["taken"], _GENERALIZED).replace(tzinfo=UTC),
                tombstone_days=int(raw["tombstone_days"]),
                naming_context=str(raw["nc"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise CursorExpired(
                f"ldap: the USN change cursor is not one this source wrote ({error})"
            ) from None


def _first(raw: Raw | None, name: str) -> bytes | None:
    for key, values in (raw or {}).items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def _text(raw: Raw | None, name: str) -> str | None:
    value = _first(raw, name)
    return value.decode("utf-8", errors="replace") if value is not None else None


def _classes(raw: Raw) -> set[str]:
    values = next((v for k, v in raw.items() if k.lower() == "objectclass"), [])
    return {v.decode("utf-8", errors="replace").lower() for v in values}


def _root(search: Searches, conn: ldap3.Connection) -> tuple[int, str, str]:
    """(highestCommittedUSN, dsServiceName, defaultNamingContext) from the rootDSE."""
    raw = search.entry(conn, "", ["highestCommittedUSN", "dsServiceName", "defaultNamingContext"])
    usn, dc = _text(raw, "highestCommittedUSN"), _text(raw, "dsServiceName")
    if usn is None or dc is None or not usn.isdigit():
        raise CursorExpired("ldap: the rootDSE has no highestCommittedUSN (not Active Directory)")
    return int(usn), dc, _text(raw, "defaultNamingContext") or ""


def _invocation(search: Searches, conn: ldap3.Connection, dc: str) -> str | None:
    value = _first(search.entry(conn, dc, ["invocationId"]), "invocationId")
    return value.hex() if value else None


def usn_cursor(
    search: Searches,
    conn: ldap3.Connection,
    bases: Sequence[str],
    *,
    now: datetime,
    key: Callable[[str], str],
) -> tuple[UsnCursor | None, str]:
    """The USN cursor for now, or None and why (the caller then keeps the timestamp
    probe). `key` turns a DN into its comparable form."""
    try:
        usn, dc, naming_context = _root(search, conn)
    except CursorExpired as error:
        return None, str(error)
    nc = key(naming_context)
    if not nc or not all(_within(key(b), nc) for b in bases):
        return None, f"the bases are not all under the default naming context {naming_context!r}"
    invocation = _invocation(search, conn, dc)
    if invocation is None:
        return None, f"{dc!r} shows no invocationId to this account"
    if not _sees_tombstones(search, conn, naming_context):
        return None, (
            f"this account sees no tombstone in CN=Deleted Objects,{naming_context} (it needs "
            'List Contents and Read Property there: dsacls "CN=Deleted Objects,..." '
            "/takeownership, then /G DOMAIN\\account:LCRP), so deletions could not be seen"
        )
    return UsnCursor(
        dc=dc,
        invocation=invocation,
        usn=usn,
        taken=now,
        tombstone_days=_tombstone_days(search, conn),
        naming_context=naming_context,
    ), ""


def _tombstone_days(search: Searches, conn: ldap3.Connection) -> int:
    raw = search.entry(conn, "", ["configurationNamingContext"])
    config = _text(raw, "configurationNamingContext")
    if not config:
        return DEFAULT_TOMBSTONE_DAYS
    service = f"CN=Directory Service,CN=Windows NT,CN=Services,{config}"
    days = _text(search.entry(conn, service, ["tombstoneLifetime"]), "tombstoneLifetime")
    return int(days) if days and days.isdigit() else DEFAULT_TOMBSTONE_DAYS


def _sees_tombstones(search: Searches, conn: ldap3.Connection, naming_context: str) -> bool:
    try:
        for _ in search.entries(
            conn,
            f"CN=Deleted Objects,{naming_context}",
            "(isDeleted=TRUE)",
            ["1.1"],
            scope=ldap3.LEVEL,
            controls=[(SHOW_DELETED, True, None)],
        ):
            return True
    except (lx.LDAPNoSuchObjectResult, lx.LDAPInsufficientAccessRightsResult):
        return False
    return False


def _within(dn: str, base: str) -> bool:
    return dn == base or dn.endswith("," + base)


def probe_usn(
    search: Searches,
    conn: ldap3.Connection,
    cursor: UsnCursor,
    bases: Sequence[str],
    *,
    now: datetime,
    key: Callable[[str], str],
) -> tuple[bool, UsnCursor]:
    """(changed, the next cursor) since `cursor`; the searches end at the first change
    of ours."""
    if now >= cursor.taken + timedelta(days=cursor.tombstone_days) - TOMBSTONE_MARGIN:
        raise CursorExpired(
            f"ldap: the USN cursor is from {cursor.taken:%Y-%m-%d}, beyond the "
            f"{cursor.tombstone_days}-day tombstone lifetime: a deletion may be purged"
        )
    usn, dc, _ = _root(search, conn)
    if dc != cursor.dc:
        raise CursorExpired(
            f"ldap: answered by {dc!r}, not {cursor.dc!r} (USNs are per domain controller)"
        )
    if usn < cursor.usn:
        raise CursorExpired(
            f"ldap: {dc!r}'s highestCommittedUSN went back from {cursor.usn} to {usn} "
            "(a restored domain controller)"
        )
    following = UsnCursor(
        dc=dc,
        invocation=cursor.invocation,
        usn=usn,
        taken=now,
        tombstone_days=cursor.tombstone_days,
        naming_context=cursor.naming_context,
    )
    if usn == cursor.usn:
        return False, following
    if _invocation(search, conn, dc) != cursor.invocation:
        raise CursorExpired(
            f"ldap: {dc!r}'s invocationId changed (restored from a backup): its USNs no "
            "longer continue the cursor's"
        )
    keys = [key(b) for b in bases]

    def in_scope(dn: str) -> bool:
        """Under a base, a base, or above one (a renamed OU moves the base)."""
        k = key(dn)
        return any(_within(k, b) or _within(b, k) for b in keys)

    def was_under(parent: str) -> bool:
        k = key(parent)
        return any(_within(k, b) for b in keys)

    window = f"(uSNChanged>={cursor.usn + 1})(uSNChanged<={usn})"
    for dn, raw in search.entries(conn, cursor.naming_context, f"(&{window})", ["objectClass"]):
        classes = _classes(raw)
        if in_scope(dn) or (classes & _KINDS and "computer" not in classes):
            return True, following
    for _, raw in search.entries(
        conn,
        f"CN=Deleted Objects,{cursor.naming_context}",
        f"(&(isDeleted=TRUE){window})",
        ["objectClass", "lastKnownParent"],
        scope=ldap3.LEVEL,
        controls=[(SHOW_DELETED, True, None)],
    ):
        classes = _classes(raw)
        parent = _text(raw, "lastKnownParent") or ""
        if (parent and was_under(parent)) or (
            classes & _PEOPLE_KINDS and "computer" not in classes
        ):
            return True, following
    return False, following
