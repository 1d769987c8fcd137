"""The request forms each target's server accepted: the learned SCIM dialect.

Owns the `learned_forms` table: one row per target and change (`remove_members`,
`rename_group`, ...) naming the form that last worked, the server it worked on (the
target's base URL without credentials or query, so a target pointed at another server
starts learning again), why (what was refused before it) and when. No secret is stored.
"""

from __future__ import annotations

from orgsync.core.forms import LearnedForm, server_key
from orgsync.store.db import StateDB, encode_time


class FormMemory:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def learn(self, target: str, learned: LearnedForm) -> None:
        """Record (or replace) the form of `learned.change` that works on `target`."""
        now = encode_time(self._db.clock())
        with self._db.write() as session:
            session.execute(
                """
                INSERT INTO learned_forms (target, change, form, server, reason, learned_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (target, change) DO UPDATE SET
                    form = excluded.form,
                    server = excluded.server,
                    reason = excluded.reason,
                    learned_at = excluded.learned_at
                """,
                (
                    target,
                    learned.change,
                    learned.form,
                    server_key(learned.server),
                    learned.reason,
                    now,
                ),
            )

    def learned(self, target: str) -> list[LearnedForm]:
        """Every form learned for `target`, by change."""
        with self._db.read() as session:
            rows = session.query(
                "SELECT * FROM learned_forms WHERE target = ? ORDER BY change", (target,)
            )
        return [
            LearnedForm(
                change=row.text("change"),
                form=row.text("form"),
                server=row.text("server"),
                reason=row.text("reason"),
                learned_at=row.time("learned_at"),
            )
            for row in rows
        ]

    def forget(self, target: str) -> int:
        """Drop what was learned for `target`; returns the rows dropped."""
        with self._db.write() as session:
            return session.execute("DELETE FROM learned_forms WHERE target = ?", (target,))
