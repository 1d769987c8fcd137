"""The ownership ledger: which target groups orgsync owns, and for which IdP group.

Owns the `owned_groups` table. A row says "orgsync created this group, or a
`[[targets.groups]]` rule adopted it by name", and names the IdP group it mirrors; the
planner changes only groups in this ledger (reference "Ownership"), so a row must exist for
as long as orgsync treats the group as its own and must go once the group is deleted. The
target's group id is the identity (names are not unique, and change on rename); the name is
kept for `orgsync status` and for messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from orgsync.core.errors import StateError
from orgsync.store.db import Row, StateDB, encode_time

OwnedHow = Literal["created", "adopted"]
OWNED_HOW: Final[tuple[OwnedHow, ...]] = ("created", "adopted")


@dataclass(frozen=True, slots=True)
class OwnedGroup:
    """One row of the ledger."""

    target: str
    group_id: str
    source_group_id: str
    name: str
    how: OwnedHow
    first_owned_at: datetime
    updated_at: datetime


def _how(row: Row) -> OwnedHow:
    value = row.text("how")
    for how in OWNED_HOW:
        if value == how:
            return how
    # The CHECK constraint keeps other values out; reaching here means a foreign write.
    raise StateError(f"state database is corrupt: owned_groups.how holds {value!r}")


class GroupLedger:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def own(
        self, target: str, *, group_id: str, source_group_id: str, name: str, how: OwnedHow
    ) -> None:
        """Record (or refresh) ownership of `group_id` for `source_group_id`.

        Owning a group already owned keeps its first `how` and `first_owned_at`: a group
        orgsync created stays "created" when a later run (after a crash that lost the
        create's result) finds and adopts it again.
        """
        if how not in OWNED_HOW:
            raise ValueError(f"how must be one of {OWNED_HOW}, got {how!r}")
        now = encode_time(self._db.clock())
        with self._db.write() as session:
            session.execute(
                """
                INSERT INTO owned_groups (target, group_id, source_group_id, name, how,
                                          first_owned_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (target, group_id) DO UPDATE SET
                    source_group_id = excluded.source_group_id,
                    name = excluded.name,
                    updated_at = excluded.updated_at
                """,
                (target, group_id, source_group_id, name, how, now, now),
            )

    def rename(self, target: str, group_id: str, name: str) -> bool:
        """Record a rename; False if the group is not in the ledger (nothing written)."""
        now = encode_time(self._db.clock())
        with self._db.write() as session:
            changed = session.execute(
                "UPDATE owned_groups SET name = ?, updated_at = ? "
                "WHERE target = ? AND group_id = ?",
                (name, now, target, group_id),
            )
        return changed > 0

    def disown(self, target: str, group_id: str) -> bool:
        """Forget a group (it was deleted); False if it was not in the ledger."""
        with self._db.write() as session:
            changed = session.execute(
                "DELETE FROM owned_groups WHERE target = ? AND group_id = ?", (target, group_id)
            )
        return changed > 0

    def owned(self, target: str) -> dict[str, str]:
        """Target group id → source group id, for every group `target` owns."""
        with self._db.read() as session:
            rows = session.query(
                "SELECT group_id, source_group_id FROM owned_groups WHERE target = ? "
                "ORDER BY group_id",
                (target,),
            )
        return {row.text("group_id"): row.text("source_group_id") for row in rows}

    def records(self, target: str) -> list[OwnedGroup]:
        """Every ledger row of `target`, by name then id (for status output)."""
        with self._db.read() as session:
            rows = session.query(
                "SELECT * FROM owned_groups WHERE target = ? ORDER BY name, group_id", (target,)
            )
        return [
            OwnedGroup(
                target=row.text("target"),
                group_id=row.text("group_id"),
                source_group_id=row.text("source_group_id"),
                name=row.text("name"),
                how=_how(row),
                first_owned_at=row.time("first_owned_at"),
                updated_at=row.time("updated_at"),
            )
            for row in rows
        ]
