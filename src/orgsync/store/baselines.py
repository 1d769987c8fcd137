"""What an incremental pass trusts: per target, the last reconciled source snapshot.

Owns the `baselines` table (the configuration digest a target was last fully reconciled
under, when, the source's change cursor and how many people the snapshot holds) and the
`source_digests` table (one digest per source record and group, `orgsync.core.delta`;
never a record, never a secret). Written only by a sync whose pass ended clean, in one
transaction that writes only the rows that differ, so a quiet pass writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orgsync.core.delta import GROUP, PERSON, Fingerprint, diff
from orgsync.store.db import StateDB, encode_json, encode_time

INVALIDATED = "invalidated"
"""The `config` of a baseline whose last full pass did not end clean: the next is full."""


@dataclass(frozen=True, slots=True)
class Baseline:
    target: str
    config: str
    """`core.delta.config_fingerprint` of the configuration it was reconciled under."""
    cursor: str | None
    """The source's change cursor (opaque to everyone but the source), if it has one."""
    full_at: datetime
    """When the last clean full pass finished reconciling it."""
    updated_at: datetime
    people: int
    """Person records (rejected ones included) and groups the snapshot holds."""
    groups: int = 0


class Baselines:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def get(self, target: str) -> Baseline | None:
        with self._db.read() as session:
            row = session.one("SELECT * FROM baselines WHERE target = ?", (target,))
        if row is None:
            return None
        return Baseline(
            target=target,
            config=row.text("config"),
            cursor=row.opt_text("cursor"),
            full_at=row.time("full_at"),
            updated_at=row.time("updated_at"),
            people=row.integer("people"),
            groups=row.integer("groups"),
        )

    def fingerprint(self, target: str) -> Fingerprint:
        people: dict[str, str] = {}
        groups: dict[str, str] = {}
        with self._db.read() as session:
            for row in session.query(
                "SELECT kind, source_id, digest FROM source_digests WHERE target = ?", (target,)
            ):
                into = people if row.text("kind") == PERSON else groups
                into[row.text("source_id")] = row.text("digest")
        return Fingerprint(people=people, groups=groups)

    def record(
        self,
        target: str,
        *,
        config: str,
        cursor: str | None,
        fingerprint: Fingerprint,
        full_at: datetime | None,
    ) -> int:
        """Make `fingerprint` the target's baseline; `full_at` None keeps the stored time
        (an incremental pass). Returns how many digest rows were written or deleted."""
        now = encode_time(self._db.clock())
        written = 0
        with self._db.write() as session:
            for kind in (PERSON, GROUP):
                stored = {
                    row.text("source_id"): row.text("digest")
                    for row in session.query(
                        "SELECT source_id, digest FROM source_digests "
                        "WHERE target = ? AND kind = ?",
                        (target, kind),
                    )
                }
                fresh = fingerprint.of(kind)
                delta = diff(stored, fresh)
                gone = sorted(delta.removed | delta.changed)
                if gone:
                    session.execute(
                        "DELETE FROM source_digests WHERE target = ? AND kind = ? "  # noqa: S608
                        f"AND source_id IN ({session.dialect.json_array_values})",
                        (target, kind, encode_json(gone)),
                    )
                new = sorted(delta.added | delta.changed)
                session.insert_all(
                    "source_digests",
                    (
                        {"target": target, "kind": kind, "source_id": s, "digest": fresh[s]}
                        for s in new
                    ),
                )
                written += len(gone) + len(new)
            session.execute(
                """
                INSERT INTO baselines (target, config, cursor, full_at, updated_at, people,
                                       groups)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (target) DO UPDATE SET
                    config = excluded.config,
                    cursor = excluded.cursor,
                    full_at = CASE WHEN ? = 1 THEN excluded.full_at ELSE baselines.full_at END,
                    updated_at = excluded.updated_at,
                    people = excluded.people,
                    groups = excluded.groups
                """,
                (
                    target,
                    config,
                    cursor,
                    encode_time(full_at) if full_at is not None else now,
                    now,
                    len(fingerprint.people),
                    len(fingerprint.groups),
                    1 if full_at is not None else 0,
                ),
            )
        return written

    def advance_cursor(self, target: str, cursor: str | None) -> None:
        """A quiet incremental pass: the source said nothing changed up to `cursor`."""
        with self._db.write() as session:
            session.execute(
                "UPDATE baselines SET cursor = ? WHERE target = ?",
                (cursor, target),
            )

    def invalidate(self, target: str) -> None:
        """Keep the digests (the next full pass writes only what differs) but trust none."""
        with self._db.write() as session:
            session.execute(
                "UPDATE baselines SET config = ? WHERE target = ?", (INVALIDATED, target)
            )

    def forget(self, target: str) -> None:
        """The next pass of `target` is full (nothing left to trust)."""
        with self._db.write() as session:
            session.execute("DELETE FROM source_digests WHERE target = ?", (target,))
            session.execute("DELETE FROM baselines WHERE target = ?", (target,))
