"""Which organization each target's memory is about (the `target_identities` table).

A target's memory (links, missing-since clocks, owned groups, baselines) names people by
e-mail and remote id. Applied to another organization it is wrong in the worst way: the
people it lists look managed there, so a sync removes those the source no longer wants,
people orgsync never managed in that organization. That happens when two configurations
share one state database and reuse a target name, or when a configuration's target is
pointed at another organization. So the first sync of a target records what it is about,
and every run (sync or dry run, full, incremental or targeted) compares that with what the
target answers before anything is planned.

What a target is, best first:
- `organization`: what the API says (OpenAI's `openai-organization` response header,
  Keycard's organization id in every path); a key rotation does not change it, a move
  of the vendor's domain does not either;
- `address`: the target type and base URL without credentials, query or trailing slash:
  the fallback where the API identifies nothing (SCIM). Never a secret, never a key
  hash: a rotated key must not look like another organization.

A database from before this table has memory but no row: the first run adopts what it
finds (refusing would stop every upgraded installation). See `judge` for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orgsync.core.errors import ConfigError
from orgsync.core.forms import server_key
from orgsync.core.ports import IdentifiesOrganization
from orgsync.store.db import StateDB, encode_time


@dataclass(frozen=True, slots=True)
class Identity:
    """What a target is: `organization` from the API (None when it gives nothing) and its
    `address` (type and base URL)."""

    organization: str | None
    address: str

    def describe(self) -> str:
        if self.organization is not None:
            return f"organization {self.organization} at {self.address}"
        return f"{self.address} (its API names no organization)"


@dataclass(frozen=True, slots=True)
class Recorded:
    identity: Identity
    recorded_at: datetime


def address(type_: str, base_url: str) -> str:
    return f"{type_} {server_key(base_url)}"


def seen(type_: str, base_url: str, target: object) -> Identity:
    """What `target` (read at least once) says it is: no call of its own."""
    organization = target.organization() if isinstance(target, IdentifiesOrganization) else None
    return Identity(organization=organization or None, address=address(type_, base_url))


class OrganizationChanged(ConfigError):
    """The configuration points a target whose memory is about one organization at
    another: nothing is planned or changed (exit 1)."""


def judge(target: str, recorded: Recorded | None, seen: Identity) -> Identity | None:
    """The identity to record now (None: keep the row as it is), or `OrganizationChanged`.

    - no row: adopt what is seen (a new target, or a database from before this check);
    - both organizations known: they must be equal; the address may change (a vendor
      moving its domain) and is updated;
    - one side's organization unknown (the API said nothing this time, or said nothing
      before): the addresses must be equal; an organization seen for the first time is
      added to the row.
    """
    if recorded is None:
        return seen
    was = recorded.identity
    if was.organization is not None and seen.organization is not None:
        if was.organization != seen.organization:
            raise _changed(target, recorded, seen)
        return None if was == seen else seen
    if was.address != seen.address:
        raise _changed(target, recorded, seen)
    if was.organization is None and seen.organization is not None:
        return seen
    return None


def _changed(target: str, recorded: Recorded, seen: Identity) -> OrganizationChanged:
    when = recorded.recorded_at.strftime("%Y-%m-%d %H:%M UTC")
    return OrganizationChanged(
        f"target {target}: the state database's memory of it is about "
        f"{recorded.identity.describe()} (recorded {when}), but the configuration now "
        f"reaches {seen.describe()}. That memory would make orgsync remove people it never "
        "managed there; nothing was planned or changed. If this target is now another "
        f"organization, give it another name in the configuration, or run `orgsync state "
        f"forget {target}` (forgets whom orgsync manages in it). If it is the same "
        f"organization at a new address, run `orgsync state forget {target} "
        "--identity-only` (the next sync records the new one and keeps the memory)"
    )


class OrganizationTwice(ConfigError):
    """A target name new to the state database reaches the organization another name's
    memory is about: nothing is planned or changed (exit 1)."""


def same_organization(one: Identity, other: Identity) -> bool:
    """Whether two identities surely name one organization: one type and address, and the
    same organization from the API (or none from either). Deliberately narrow: a false
    match would stop a target that is not a twin (every OpenAI organization shares one
    address, and an API that names no organization once cannot be compared)."""
    return one.address == other.address and one.organization == other.organization


def twin(target: str, seen: Identity, others: dict[str, Recorded]) -> OrganizationTwice | None:
    """The refusal when `target`, with no memory yet, reaches the organization another
    target's memory is about (None: it does not).

    Two names for one organization fight: each manages only the people it linked, so a
    person one configuration wants out and the other wants in is removed and invited
    again, run after run (an invitation e-mail each time), and roles flip between their
    rules. And a renamed target starts with no memory: whom it managed under the old name
    is unmanaged under the new one, so leavers are never removed, silently. Either way
    the operator must say which it is."""
    for name, recorded in sorted(others.items()):
        if name != target and same_organization(recorded.identity, seen):
            when = recorded.recorded_at.strftime("%Y-%m-%d %H:%M UTC")
            return OrganizationTwice(
                f"target {target}: it reaches {seen.describe()}, which the state database "
                f"remembers as target {name} (recorded {when}). Under a second name it "
                f"would manage none of the people orgsync manages there as {name} (leavers "
                "would keep their access), and two configurations syncing it under two "
                "names would undo each other's changes; nothing was planned or changed. "
                f"If {name} was renamed to {target}, run `orgsync state rename {name} "
                f"{target}` (keeps whom orgsync manages there). If {name} is no longer "
                f"synced at all, run `orgsync state forget {name}`. Two configurations "
                "must not manage one organization"
            )
    return None


class Identities:
    """Owns `target_identities`."""

    def __init__(self, db: StateDB) -> None:
        self._db = db

    def get(self, target: str) -> Recorded | None:
        with self._db.read() as session:
            row = session.one(
                "SELECT organization, address, recorded_at FROM target_identities WHERE target = ?",
                (target,),
            )
        if row is None:
            return None
        return Recorded(
            Identity(organization=row.opt_text("organization"), address=row.text("address")),
            recorded_at=row.time("recorded_at"),
        )

    def record(self, target: str, identity: Identity) -> None:
        now = encode_time(self._db.clock())
        with self._db.write() as session:
            session.execute(
                """
                INSERT INTO target_identities
                    (target, organization, address, recorded_at, updated_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (target) DO UPDATE SET
                    organization = excluded.organization,
                    address = excluded.address,
                    updated_at = excluded.updated_at
                """,
                (target, identity.organization, identity.address, now, now),
            )

    def others(self, target: str | None) -> dict[str, Recorded]:
        """What every target's memory but `target`'s is about."""
        with self._db.read() as session:
            rows = session.query(
                "SELECT target, organization, address, recorded_at FROM target_identities "
                "WHERE target <> ?",
                (target or "",),
            )
        return {
            row.text("target"): Recorded(
                Identity(organization=row.opt_text("organization"), address=row.text("address")),
                recorded_at=row.time("recorded_at"),
            )
            for row in rows
        }

    def rename(self, old: str, new: str) -> dict[str, int]:
        """Move `old`'s memory (whom orgsync manages there, and which organization it is
        about) to `new`, which must have none; returns the rows moved per table. Run
        history stays under the name it ran as."""
        with self._db.write() as session:
            for table in TARGET_MEMORY:
                if session.scalar(
                    f"SELECT COUNT(*) FROM {table} WHERE target = ?",  # noqa: S608 - our names
                    (new,),
                ):
                    raise ConfigError(
                        f"target {new} already has memory in the state database ({table}); "
                        f"nothing was renamed: `orgsync state forget {new}` first if it is "
                        "not needed"
                    )
            return {
                table: session.execute(
                    f"UPDATE {table} SET target = ? WHERE target = ?",  # noqa: S608 - our names
                    (new, old),
                )
                for table in TARGET_MEMORY
            }

    def forget(self, target: str, *, identity_only: bool) -> dict[str, int]:
        """Forget which organization `target` is about and, unless `identity_only`, all
        its memory (whom orgsync manages there); returns the rows deleted per table. Run
        history stays: it is what happened."""
        tables = ("target_identities",) if identity_only else TARGET_MEMORY
        with self._db.write() as session:
            return {
                table: session.execute(
                    f"DELETE FROM {table} WHERE target = ?",  # noqa: S608 - our names
                    (target,),
                )
                for table in tables
            }


TARGET_MEMORY = (
    "links",
    "missing",
    "owned_groups",
    "learned_forms",
    "baselines",
    "source_digests",
    "target_identities",
)
"""The tables holding what orgsync remembers of one target (runs and journal aside)."""
