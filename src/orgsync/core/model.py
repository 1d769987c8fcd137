"""Domain values shared by every layer: what a source says, what a target holds.

Pure data, no I/O. Adapters translate wire formats into these types; the rules and the
planner only ever see these types. Emails are always carried twice where it matters: as
written (for display and for the API call) and normalized (for matching).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import NewType

EmailKey = NewType("EmailKey", str)
"""An email address normalized for matching: Unicode NFKC, case-folded, trimmed."""

SourceId = NewType("SourceId", str)
"""The IdP's stable identifier of a person or group."""


def normalize_email(email: str) -> EmailKey:
    """Return the matching key of an email address (reference "Matching": NFKC, case-folded,
    trimmed, an internationalized domain in its Unicode form).

    The one place emails are normalized: every comparison of two addresses goes through it.
    """
    if email.isascii():
        # NFKC leaves ASCII as it is and case-folds it as lower() does: the same key
        # for a fifth of the cost, on nearly every address of a directory.
        key = email.lower().strip()
        return EmailKey(_unicode_domain(key) if "xn--" in key else key)
    return EmailKey(_unicode_domain(unicodedata.normalize("NFKC", email).casefold().strip()))


def _unicode_domain(key: str) -> str:
    """`key` with each Punycode label of its domain ("xn--bcher-kva") decoded ("bücher").

    One mailbox has two spellings: a directory may write `alice@bücher.de` while a target
    lists the account as `alice@xn--bcher-kva.de`. Keyed apart, the member was taken for
    a stranger (removed under `remove_unmanaged`, or once the link was lost) and the
    person invited again. A label that is no valid Punycode is kept as written."""
    local, at, domain = key.rpartition("@")
    if not at or "xn--" not in domain:
        return key
    labels = domain.split(".")
    for index, label in enumerate(labels):
        if label.startswith("xn--"):
            try:
                decoded = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                continue
            labels[index] = unicodedata.normalize("NFKC", decoded).casefold()
    return f"{local}@{'.'.join(labels)}"


# Scripts that one writing system mixes by design (Japanese, Korean), counted as one.
_ONE_SCRIPT = {"CJK": "CJK", "HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK"}


def mixed_scripts(email: str) -> tuple[str, ...]:
    """The scripts mixed within one part of `email` (its local part or a domain label),
    or () when every part keeps to one.

    A Cyrillic 'es' (U+0441) among Latin letters makes another address that reads as
    the one it imitates ("ceo" with its first letter Cyrillic); it is a valid address
    and a different person, so a plan that invites it says so (UTS #39 restricts a
    label to one script likewise)."""
    if email.isascii():
        return ()
    local, _, domain = normalize_email(email).rpartition("@")
    for part in (local, *domain.split(".")):
        scripts = set()
        for char in part:
            if char.isalpha():
                first = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
                scripts.add(_ONE_SCRIPT.get(first, first))
        if len(scripts) > 1:
            return tuple(sorted(scripts))
    return ()


# Plain ASCII addresses every rule of email-validator accepts, decided by one regular
# expression (about a microsecond) instead of its full parse (about 80 µs): a 100k-person
# directory read by a fresh `orgsync sync` would spend seconds there. Anything else (quoted
# or internationalized parts, Punycode, a double hyphen, special-use domains, overlong
# parts) goes to email-validator. tests/core/test_email_fast_path.py holds the two to
# the same answers.
_PLAIN = re.compile(
    r"(?P<local>[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)+[A-Za-z]{2,63})"
)
# email-validator's SPECIAL_USE_DOMAIN_NAMES less "test" (test_environment), copied so that
# the fast path does not import it: email-validator compiles dozens of regular expressions
# on import, a sixth of `orgsync validate --offline`'s start-up (bench/startup.py).
# tests/core/test_email_fast_path.py holds the copy to the installed list.
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion")
# A domain that is one of them or ends in one (".local" and "local" both), in one search.
_SPECIAL_USE_SUFFIX = re.compile(
    r"(?:^|\.)(?:" + "|".join(re.escape(d) for d in _SPECIAL_USE) + r")\Z"
)
_LONG_LABEL = re.compile(r"[^.]{64}")


# `_PLAIN`'s two halves, matched apart: neither contains "@", so an address `_PLAIN`
# matches has exactly one, and the domain's verdict is kept per domain (a directory has
# a handful; room for 16k), which halves the check of a 100k-person directory.
_LOCAL = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)+[A-Za-z]{2,63}")


def plainly_valid(address: str) -> bool:
    """True when `address` (trimmed) is certainly valid without asking email-validator."""
    local, at, domain = address.partition("@")
    if not at or len(address) > 254 or len(local) > 64 or _LOCAL.fullmatch(local) is None:
        return False
    return _plain_domain(domain)


@lru_cache(maxsize=1 << 14)
def _plain_domain(domain: str) -> bool:
    """The domain half of `plainly_valid` (no "@" in it, no special-use name, labels and
    whole within their lengths)."""
    if _DOMAIN.fullmatch(domain) is None:
        return False
    folded = domain.lower()
    if len(folded) > 253 or _LONG_LABEL.search(folded):
        return False
    return _SPECIAL_USE_SUFFIX.search(folded) is None


def email_problem(email: str) -> str | None:
    """Why `email` (as the source wrote it, trimmed) is no address to invite, or None.

    email-validator's syntax rules (RFC 5322/6531, internationalized addresses allowed,
    special-use domains such as `.local` refused, `.test` allowed for test rigs) without
    any DNS lookup. A plain address is decided at once (under a microsecond, cheaper than
    a cache look-up); only the others, which email-validator parses, are cached.
    """
    trimmed = email.strip()
    if plainly_valid(trimmed):
        return None
    return _validator_problem(trimmed)


@lru_cache(maxsize=1 << 14)
def _validator_problem(email: str) -> str | None:
    """email-validator's verdict on `email`. Cached: the daemon sees the same directory
    every pass, and each target of one run asks again."""
    # Pure: syntax only. Its DNS part (`check_deliverability`) is never asked for, and is
    # imported by email_validator only when it is (tests/core/test_records.py checks both).
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(email, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        return str(error)
    return None


# --------------------------------------------------------------------------- source side


@dataclass(frozen=True, slots=True)
class SourcePerson:
    """One person as the identity provider reports them."""

    id: SourceId
    email: str
    name: str = ""
    active: bool = True
    attributes: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def email_key(self) -> EmailKey:
        return normalize_email(self.email)


@dataclass(frozen=True, slots=True)
class SourceGroup:
    """One IdP group.

    `members` holds person ids and, from sources that cannot tell them apart, group ids (a
    member that is no person is a nested group); `subgroups` holds the nested groups a
    source knows to be groups. An IdP numbering people and groups from separate sequences
    (person 2 and group 2 are both "2") must use `subgroups`: in `members`, group 2 would
    be taken for person 2.
    """

    id: SourceId
    name: str
    members: tuple[SourceId, ...] = ()
    subgroups: tuple[SourceId, ...] = ()


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A person record the source returned but orgsync cannot act on (no usable email,
    a field of the wrong kind). Reported with its id on every run and never acted on:
    not invited, and not taken for absent either, so a member it stands for is kept."""

    source_id: SourceId
    reason: str
    email: str | None = None
    """The email as the source gave it, when it gave a text."""


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """A complete read of the identity provider. Partial reads never become snapshots."""

    people: tuple[SourcePerson, ...]
    groups: tuple[SourceGroup, ...] = ()
    rejected: tuple[RejectedRecord, ...] = ()
    """Person records the source could not map (see `screen` for those with bad emails)."""


def screen(snapshot: SourceSnapshot) -> tuple[tuple[SourcePerson, ...], tuple[RejectedRecord, ...]]:
    """The people orgsync may act on, and every rejected record with the reason.

    A person whose email is no address joins the records the source itself rejected.
    """
    people: list[SourcePerson] = []
    rejected = list(snapshot.rejected)
    for person in snapshot.people:
        problem = email_problem(person.email)
        if problem is None:
            people.append(person)
        else:
            reason = (
                f"email {person.email!r} is not an address: {problem}"
                if person.email.strip()
                else "no email address"
            )
            rejected.append(RejectedRecord(person.id, reason, person.email))
    return tuple(people), tuple(rejected)


# --------------------------------------------------------------------------- target side


@dataclass(frozen=True, slots=True)
class RoleCatalog:
    """The organization roles a target knows, lowest first.

    `privileged` names the owner/admin-level roles whose downgrade counts as a removal.
    `invitable` names the roles an invitation may carry (OpenAI: owner and reader only).
    """

    order: tuple[str, ...]
    privileged: frozenset[str] = frozenset()
    invitable: frozenset[str] | None = None
    assignable: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Roles a group can be given, by name → the target's role id (OpenAI RBAC roles)."""

    def rank(self, role: str | None) -> int:
        """Position of `role` in the order; unknown or missing roles rank below all."""
        if role is None or role not in self.order:
            return -1
        return self.order.index(role)

    def highest(self, roles: Sequence[str]) -> str | None:
        known = [r for r in roles if r in self.order]
        return max(known, key=self.order.index) if known else None

    def can_invite_as(self, role: str) -> bool:
        return self.invitable is None or role in self.invitable

    @property
    def owner_roles(self) -> frozenset[str]:
        """Roles that make someone an owner for the last-owner rule (the top role)."""
        return frozenset(self.order[-1:])


class InviteStatus(StrEnum):
    PENDING = "pending"
    EXPIRED = "expired"
    ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class TargetMember:
    """A member of the target organization."""

    id: str
    email: str | None
    role: str | None
    name: str = ""
    is_service_account: bool = False
    is_scim_managed: bool = False
    active: bool = True
    """False for a suspended member (Keycard `status = disabled`, SCIM `active = false`)."""

    @property
    def email_key(self) -> EmailKey | None:
        return normalize_email(self.email) if self.email else None


@dataclass(frozen=True, slots=True)
class TargetInvite:
    """An invitation the target reports (pending, expired or accepted)."""

    id: str
    email: str
    role: str | None
    status: InviteStatus
    expires_at: datetime | None = None

    @property
    def email_key(self) -> EmailKey:
        return normalize_email(self.email)

    def is_live(self, now: datetime) -> bool:
        """A pending invitation whose expiry, if any, lies in the future."""
        if self.status is not InviteStatus.PENDING:
            return False
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a target can do; the planner plans nothing beyond it."""

    invites: bool = True
    create_users: bool = False
    suspend: bool = False
    roles: bool = True
    groups: bool = False
    change_emails: bool = False
    """The target can change a member's email (SCIM `userName`); else a changed IdP email
    is shown as waiting and the member is kept, linked by source id."""


@dataclass(frozen=True, slots=True)
class TargetGroup:
    """A group of the target organization with its direct members and role assignments."""

    id: str
    name: str
    member_ids: frozenset[str] = frozenset()
    role_ids: frozenset[str] = frozenset()
    """Roles assigned to the group itself (not those its members hold otherwise)."""
    is_scim_managed: bool = False


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """A complete read of one target organization."""

    members: tuple[TargetMember, ...]
    invites: tuple[TargetInvite, ...]
    roles: RoleCatalog
    key_owner_id: str | None = None
    """The member behind the credential orgsync uses; never touched."""
    groups: tuple[TargetGroup, ...] = ()


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True, slots=True)
class Memory:
    """What earlier runs left in the state database, as the planner needs it.

    `managed` holds the normalized emails orgsync linked or invited before: only those
    unknown people may be removed when `remove_unmanaged` is off. `links` maps a source id
    to the target member id it was linked to, so a person is found again after an email
    change. `missing_since` records when a managed person was first seen missing from the
    source, for `removal_grace`.
    """

    managed: frozenset[EmailKey] = frozenset()
    links: Mapping[SourceId, str] = field(default_factory=lambda: MappingProxyType({}))
    linked_sources: Mapping[EmailKey, SourceId] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """The source id each managed email was linked to, where known (an invitation not yet
    accepted has no member id, but has this)."""
    missing_since: Mapping[EmailKey, datetime] = field(default_factory=lambda: MappingProxyType({}))
    owned_groups: Mapping[str, SourceId] = field(default_factory=lambda: MappingProxyType({}))
    """The ownership ledger: target group id → the IdP group it mirrors. Only these groups
    (and groups a rule adopts by exact name) are ever changed."""
