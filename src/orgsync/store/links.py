"""What orgsync remembers about people between runs: links and first-missing times.

Owns the `links` and `missing` tables and builds the planner's `Memory` from them. A link
row says "orgsync linked or invited this person on this target", which is what allows an
unknown person to be removed later (reference "Ownership"); `source_id`→`member_id` lets a
person be found again after an email change. A `missing` row holds when a managed person was
first seen absent from the source, for `removal_grace`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import cast

from orgsync.core.collector import paused
from orgsync.core.model import EmailKey, Memory, SourceId
from orgsync.store.db import StateDB, encode_json, encode_time, text_time


@dataclass(frozen=True, slots=True)
class LinkRow:
    """One person matched to a target member at the end of a plan (see `record_links`)."""

    email_key: str
    source_id: str | None
    member_id: str | None


class Links:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def link(
        self,
        target: str,
        *,
        email_key: str,
        source_id: str | None,
        member_id: str | None = None,
        invite_id: str | None = None,
    ) -> None:
        """Insert or update one link. A None value keeps what is stored: a later call that
        only learns the member id must not forget the source id, nor the invitation. A
        member id belongs to the person it was linked for: an address linked now to
        another source id (reused, or swapped between two people) keeps no member id it
        is not given, or the next run would hand that person the other's account."""
        now = encode_time(self._db.clock())
        with self._db.write() as session:
            session.execute(
                """
                INSERT INTO links (target, email_key, source_id, member_id, invite_id,
                                   first_linked_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (target, email_key) DO UPDATE SET
                    source_id = COALESCE(excluded.source_id, links.source_id),
                    member_id = CASE WHEN excluded.source_id IS NOT NULL
                        AND links.source_id IS NOT NULL AND excluded.source_id <> links.source_id
                        THEN excluded.member_id
                        ELSE COALESCE(excluded.member_id, links.member_id) END,
                    invite_id = COALESCE(excluded.invite_id, links.invite_id),
                    updated_at = excluded.updated_at
                """,
                (target, email_key, source_id, member_id, invite_id, now, now),
            )

    def record_links(self, target: str, batch: Iterable[LinkRow]) -> int:
        """Link many people in one transaction, writing only the rows that change; returns
        how many were written.

        Same meaning as calling `link` for each, in order, except that a row already holding
        these values is left alone (its `updated_at` too): a pass that changes nothing
        writes nothing, so it costs no fsync. A row whose source id the newest link (the one
        `memory` takes) maps to another member is written, so that it becomes the newest.
        """
        rows = list(batch)
        if not rows:
            return 0
        now = self._db.clock()
        with self._db.write() as session:
            stored: dict[str, tuple[str | None, str | None]] = {}
            winner: dict[str, str] = {}  # source id -> member id of its newest link
            for key, source_id, member_id, updated_at in session.texts(
                "SELECT email_key, source_id, member_id, updated_at FROM links "
                "WHERE target = ? ORDER BY updated_at, email_key",
                (target,),
                optional=(False, True, True, False),
            ):
                stored[cast("str", key)] = (source_id, member_id)
                if source_id is not None and member_id is not None:
                    winner[source_id] = member_id
                # Rows come oldest first: what is written now must sort after all of them
                # (a clock that did not move, or went back, must not make it older).
                stored_at = text_time("updated_at", cast("str", updated_at))
                now = max(now, stored_at + timedelta(microseconds=1))
            written = 0
            for link in rows:
                old = stored.get(link.email_key)
                old_source, old_member = old if old is not None else (None, None)
                # As in `link`: None keeps what is stored, but another person's member id
                # is never kept.
                source_id = link.source_id if link.source_id is not None else old_source
                member_id = link.member_id
                if member_id is None and (old_source is None or source_id == old_source):
                    member_id = old_member
                wins = source_id is None or member_id is None or winner.get(source_id) == member_id
                if old == (source_id, member_id) and wins:
                    continue
                when = encode_time(now + timedelta(microseconds=written))
                session.execute(
                    """
                    INSERT INTO links (target, email_key, source_id, member_id, invite_id,
                                       first_linked_at, updated_at)
                    VALUES (?, ?, ?, ?, NULL, ?, ?)
                    ON CONFLICT (target, email_key) DO UPDATE SET
                        source_id = excluded.source_id,
                        member_id = excluded.member_id,
                        updated_at = excluded.updated_at
                    """,
                    # A microsecond apart, in batch order: as with one `link` call each,
                    # the later of two rows naming one source id is the newest.
                    (target, link.email_key, source_id, member_id, *[when] * 2),
                )
                stored[link.email_key] = (source_id, member_id)
                if source_id is not None and member_id is not None:
                    winner[source_id] = member_id
                written += 1
        return written

    def unlink(self, target: str, email_key: str) -> None:
        """Forget a person. Their missing row goes too: were they linked again and then
        left again, an old first-missing time would cut their removal grace short."""
        with self._db.write() as session:
            session.execute(
                "DELETE FROM links WHERE target = ? AND email_key = ?", (target, email_key)
            )
            session.execute(
                "DELETE FROM missing WHERE target = ? AND email_key = ?", (target, email_key)
            )

    # A few objects per person, all kept in the result: the collector's passes during the
    # build would find no garbage (see `orgsync.core.collector`).
    @paused
    def memory(self, target: str) -> Memory:
        with self._db.read() as session:
            links = cast(
                "list[tuple[EmailKey, SourceId | None, str | None]]",
                session.texts(
                    "SELECT email_key, source_id, member_id FROM links WHERE target = ? "
                    "ORDER BY updated_at, email_key",
                    (target,),
                    optional=(False, True, True),
                ),
            )
            missing = session.query(
                "SELECT email_key, since FROM missing WHERE target = ?", (target,)
            )
        # Ids interned, as the source's and the target's are: one object per id in the
        # whole run (memory at 100k people), and the planner's look-ups compare by identity.
        intern = sys.intern
        return Memory(
            managed=frozenset([key for key, _, _ in links]),
            # Rows come oldest first: after an email change the newest link wins.
            links=MappingProxyType(
                {
                    SourceId(intern(source)): intern(member)
                    for _, source, member in links
                    if source is not None and member is not None
                }
            ),
            linked_sources=MappingProxyType(
                {key: SourceId(intern(source)) for key, source, _ in links if source is not None}
            ),
            missing_since=MappingProxyType(
                {EmailKey(row.text("email_key")): row.time("since") for row in missing}
            ),
        )

    def mark_missing(self, target: str, email_keys: Iterable[str], now: datetime) -> None:
        since = encode_time(now)
        keys = sorted(set(email_keys))
        if not keys:
            return
        with self._db.write() as session:
            for key in keys:
                # Only an earlier time replaces the stored one: the first time someone went
                # missing is what the grace counts from (and an unchanged row is not written).
                session.execute(
                    """
                    INSERT INTO missing (target, email_key, since) VALUES (?, ?, ?)
                    ON CONFLICT (target, email_key) DO UPDATE SET
                        since = excluded.since
                    WHERE excluded.since < missing.since
                    """,
                    (target, key, since),
                )

    def clear_missing(self, target: str, keep_only: Iterable[str]) -> None:
        """Drop the missing rows of everyone not in `keep_only` (they came back)."""
        keep = encode_json(sorted(set(keep_only)))
        with self._db.write() as session:
            # A JSON array binds the whole set as one parameter, whatever its size.
            session.execute(
                "DELETE FROM missing WHERE target = ? "  # noqa: S608 - the dialect's SQL, no data
                f"AND email_key NOT IN ({session.dialect.json_array_values})",
                (target, keep),
            )
