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
