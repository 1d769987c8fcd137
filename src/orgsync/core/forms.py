"""Request forms a target learned its server accepts (SCIM: how a change is asked for).

One change can be asked for in several ways that mean the same thing (RFC 7644 §3.5.2
removes a group member with a path filter; servers built for Entra ID want a value array;
a read-modify-write PUT always works where PUT does). A target that meets a server
refusing one form falls back to the next, and remembers the form that worked, so the next
run asks that way first. Pure: the state database keeps these records (`orgsync.store`),
the target decides with them, `validate` and `status` show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["CHANGE_LABELS", "LearnedForm", "describe", "server_key"]

CHANGE_LABELS: Final = {
    "add_members": "member addition",
    "remove_members": "member removal",
    "rename_group": "group rename",
    "update_user": "user update",
}
"""The changes whose form is learned, as people read them."""


@dataclass(frozen=True, slots=True)
class LearnedForm:
    """The form of `change` that `server` (the target's base URL) accepted, and why."""

    change: str
    form: str
    server: str
    reason: str
    """What was refused before it (`filter: HTTP 501`), or that it was accepted at once."""
    learned_at: datetime | None = None
    """Set by the state database when it stores the record."""


def describe(learned: Sequence[LearnedForm]) -> str:
    """`member removal value_array (filter: HTTP 501), ...` for status and validate."""
    if not learned:
        return "none yet (learned on the first change of each kind)"
    parts = []
    for record in sorted(learned, key=lambda r: r.change):
        label = CHANGE_LABELS.get(record.change, record.change)
        parts.append(f"{label} {record.form} ({record.reason})")
    return "; ".join(parts)


def server_key(base_url: str) -> str:
    """A target's base URL as learned forms name it: without user info, query or fragment
    (they may carry credentials), and without a trailing slash."""
    parts = urlsplit(base_url.strip())
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
