"""The organization behind the Keycard API emulator: users, invitations, roles, and rules.

Owns what an emulated Keycard organization *is* and how each object is rendered in the
SDK models' shapes (`keycardai/keycard-python` @ d9a374f: `OrganizationUser`,
`Invitation`, the roles list item), with pages carrying the subset spec's `PageInfo`
(`has_next_page`, `has_previous_page`, `start_cursor`, `end_cursor`). Every refusal is a
`KeycardError`, the subset spec's `Error` (`message`, `code`, `status`) carried as an
exception. No HTTP here: `orgsync.testing.keycard.emulator` serves it.

Rules the SDKs do not state are emulator choices, each pinned by the contract tests:
a second pending invitation for one email, or one for a current member, is a 409; DELETE
of an invitation marks it `revoked` (the record stays listed); DELETE of an unknown or
already revoked invitation is a 404; the last active `org_admin` cannot be demoted,
disabled or removed (400 `last_admin`); an invitation without `role` gets `org_admin`
(the SDK's documented default).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import random
import string
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from orgsync.testing.tables import Table, by_seq

ORG_ROLES: Final = ("org_admin", "org_member", "org_viewer")
ZONE_ROLES: Final = ("zone_manager", "zone_viewer")
USER_STATUSES: Final = ("active", "disabled")
INVITATION_STATUSES: Final = ("pending", "accepted", "expired", "revoked")
INVITE_TTL: Final = 7 * 86_400
"""Seconds an invitation stays pending (not documented; a week, like most vendors)."""
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
"""Page size bounds of the subset spec's list endpoints (1-1000, default 100)."""

_ROLE_TEXT: Final = {
    "org_admin": ("Organization Admin", "Full access to the organization and its zones"),
    "org_member": ("Organization Member", "Can use the organization's zones"),
    "org_viewer": ("Organization Viewer", "Read-only access to the organization"),
    "zone_manager": ("Zone Manager", "Manages one zone"),
    "zone_viewer": ("Zone Viewer", "Reads one zone"),
}
_NANOID: Final = string.ascii_lowercase + string.digits
_CURSOR_PREFIX: Final = "kc:"


class KeycardError(Exception):
    """An error answer: HTTP status plus the spec's `Error` fields."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code, "status": self.status}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _norm(email: str) -> str:
    return email.strip().casefold()


@dataclass
class UserRecord:
    seq: int
    id: str
    email: str | None
    role: str
    status: str
    source: str
    created_at: float
    updated_at: float


@dataclass
class InvitationRecord:
    seq: int
    id: str
    email: str
    role: str
    status: str
    """Stored status; a pending one past `expires_at` is rendered `expired`."""
    expires_at: float
    created_at: float
    created_by: str
    updated_at: float


_Row = TypeVar("_Row", UserRecord, InvitationRecord)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, param: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raw = ""
    if not raw.startswith(_CURSOR_PREFIX) or not raw[len(_CURSOR_PREFIX) :].isdigit():
        raise KeycardError(400, "invalid_cursor", f"Invalid '{param}' cursor.")
    return int(raw[len(_CURSOR_PREFIX) :])


def page(
    rows: list[_Row],
    *,
    after: str | None,
    before: str | None,
    limit: int,
    render: Callable[[_Row], dict[str, Any]],
) -> dict[str, Any]:
    """One page in creation order with the spec's `PageInfo`; cursors survive deletions."""
    if after is not None and before is not None:
        raise KeycardError(400, "invalid_request", "Give either 'after' or 'before', not both.")
    # Rows are in creation (seq) order: bisection finds a cursor's place without a scan.
    if after is not None:
        mark = decode_cursor(after, "after")
        start = bisect.bisect_right(rows, mark, key=_seq)
        chosen = rows[start : start + limit]
        has_next, has_previous = len(rows) - start > limit, start > 0
    elif before is not None:
        mark = decode_cursor(before, "before")
        end = bisect.bisect_left(rows, mark, key=_seq)
        chosen = rows[max(0, end - limit) : end] if limit > 0 else rows[:end][-limit:]
        has_next, has_previous = end < len(rows), end > limit
    else:
        chosen = rows[:limit]
        has_next, has_previous = len(rows) > limit, False
    return {
        "items": [render(r) for r in chosen],
        "page_info": {
            "has_next_page": has_next,
            "has_previous_page": has_previous,
            "start_cursor": encode_cursor(chosen[0].seq) if chosen else None,
            "end_cursor": encode_cursor(chosen[-1].seq) if chosen else None,
        },
    }


def _seq(row: UserRecord | InvitationRecord) -> int:
    return row.seq


class KeycardState:
    """One emulated organization. Seed it with `add_user`/`add_invitation`, inspect it with
    `users`/`invitations`; the HTTP layer calls the ``api_*`` methods (which raise
    `KeycardError`)."""

    def __init__(
        self,
        *,
        organization_id: str | None = None,
        label: str = "example-org",
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        issuer: str = "https://idp.example.com",
    ) -> None:
        self.lock = threading.RLock()
        #: Unix seconds; replace it to move time (invitation expiry).
        self.clock = clock
        self._ids = random.Random(f"keycard-emulator:{seed}")  # noqa: S311 - ids, not secrets
        self.organization_id = organization_id or self._new_id()
        self.label = label
        self.issuer = issuer
        self._seq = 0
        # In list (creation) order between requests, and indexed by normalised email, so
        # that neither a page nor a create scans every record.
        self._users: Table[UserRecord] = Table(by_seq)
        self._invitations: Table[InvitationRecord] = Table(by_seq)
        self._user_ids_by_email: dict[str, list[str]] = {}
        self._invitation_ids_by_email: dict[str, list[str]] = {}

    # -- helpers ---------------------------------------------------------------------

    def _new_id(self) -> str:
        return "".join(self._ids.choices(_NANOID, k=26))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def matches(self, organization: str) -> bool:
        """Whether a path's `{organization_id}` names this organization (id or label)."""
        return organization in (self.organization_id, self.label)

    def _status(self, record: InvitationRecord) -> str:
        if record.status == "pending" and record.expires_at <= self.clock():
            return "expired"
        return record.status

    def _user_by_email(self, email: str) -> UserRecord | None:
        ids = self._user_ids_by_email.get(_norm(email))
        return self._users[ids[0]] if ids else None

    def _active_admins(self) -> int:
        return sum(
            1 for u in self._users.values() if u.role == "org_admin" and u.status == "active"
        )

    def render_user(self, record: UserRecord) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": record.id,
            "created_at": _iso(record.created_at),
            "updated_at": _iso(record.updated_at),
            "role": record.role,
            "status": record.status,
            "source": record.source,
        }
        if record.email is not None:  # optional in the SDK model: omitted, not null
            body["email"] = record.email
        return body

    def render_invitation(self, record: InvitationRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "organization_id": self.organization_id,
            "email": record.email,
            "role": record.role,
            "status": self._status(record),
            "expires_at": _iso(record.expires_at),
            "created_at": _iso(record.created_at),
            "created_by": record.created_by,
            "updated_at": _iso(record.updated_at),
            # Named in the SDK changelog (v0.10.0) but not in its model: clients must
            # tolerate fields they do not know.
            "last_sent_at": _iso(record.created_at),
        }

    # -- seeding and inspection (tests, demo) ----------------------------------------

    def add_user(
        self,
        email: str | None,
        role: str = "org_member",
        *,
        status: str = "active",
        source: str | None = None,
    ) -> str:
        if role not in ORG_ROLES or status not in USER_STATUSES:
            raise ValueError(f"bad role {role!r} or status {status!r}")
        with self.lock:
            now = self.clock()
            record = UserRecord(
                self._next_seq(),
                self._new_id(),
                email,
                role,
                status,
                source or self.issuer,
                now,
                now,
            )
            self._users[record.id] = record
            if email:
                self._user_ids_by_email.setdefault(_norm(email), []).append(record.id)
            return record.id

    def add_invitation(
        self,
        email: str,
        role: str = "org_member",
        *,
        status: str = "pending",
        expires_at: float | None = None,
        created_by: str = "seed",
    ) -> str:
        if role not in ORG_ROLES or status not in INVITATION_STATUSES:
            raise ValueError(f"bad role {role!r} or status {status!r}")
        with self.lock:
            now = self.clock()
            record = InvitationRecord(
                self._next_seq(),
                self._new_id(),
                email,
                role,
                status,
                expires_at if expires_at is not None else now + INVITE_TTL,
                now,
                created_by,
                now,
            )
            self._invitations[record.id] = record
            self._invitation_ids_by_email.setdefault(_norm(email), []).append(record.id)
            return record.id

    def accept_invitation(self, invitation_id: str) -> str:
        """The invitee signs in: a user with the invitation's role; returns the user id."""
        with self.lock:
            record = self._invitations[invitation_id]
            if self._status(record) != "pending":
                raise ValueError(f"invitation {invitation_id} is {self._status(record)}")
            record.status = "accepted"
            record.updated_at = self.clock()
            return self.add_user(record.email, record.role)

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.render_user(u) for u in self._users.values()]

    def invitations(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.render_invitation(i) for i in self._invitations.values()]

    # -- the API ---------------------------------------------------------------------

    def api_list_users(
        self, *, after: str | None, before: str | None, limit: int, role: str | None
    ) -> dict[str, Any]:
        if role is not None and role not in ORG_ROLES:
            raise KeycardError(400, "invalid_request", f"Invalid 'role': {role!r}.")
        with self.lock:
            rows = self._users.rows()
            if role is not None:
                rows = [u for u in rows if u.role == role]
            return page(rows, after=after, before=before, limit=limit, render=self.render_user)

    def _user(self, user_id: str) -> UserRecord:
        record = self._users.get(user_id)
        if record is None:
            raise KeycardError(404, "not_found", f"Organization user {user_id} not found.")
        return record

    def api_get_user(self, user_id: str) -> dict[str, Any]:
        with self.lock:
            return self.render_user(self._user(user_id))

    def api_update_user(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, ("role", "status"))
        role, status = body.get("role"), body.get("status")
        if role is not None and role not in ORG_ROLES:
            raise KeycardError(400, "validation_error", f"'role' must be one of {ORG_ROLES}.")
        if status is not None and status not in USER_STATUSES:
            raise KeycardError(400, "validation_error", f"'status' must be one of {USER_STATUSES}.")
        with self.lock:
            record = self._user(user_id)
            leaving_admin = record.role == "org_admin" and record.status == "active"
            stays_admin = (role or record.role) == "org_admin" and (
                status or record.status
            ) == "active"
            if leaving_admin and not stays_admin and self._active_admins() <= 1:
                raise KeycardError(
                    400, "last_admin", "The organization must keep at least one active org_admin."
                )
            if role is not None:
                record.role = role
            if status is not None:
                record.status = status
            record.updated_at = self.clock()
            return self.render_user(record)

    def api_delete_user(self, user_id: str) -> None:
        with self.lock:
            record = self._user(user_id)
            if (
                record.role == "org_admin"
                and record.status == "active"
                and self._active_admins() <= 1
            ):
                raise KeycardError(
                    400, "last_admin", "The organization must keep at least one active org_admin."
                )
            del self._users[user_id]
            if record.email:
                same_email = self._user_ids_by_email[_norm(record.email)]
                same_email.remove(user_id)
                if not same_email:
                    del self._user_ids_by_email[_norm(record.email)]

    def api_list_invitations(
        self, *, after: str | None, before: str | None, limit: int
    ) -> dict[str, Any]:
        with self.lock:
            rows = self._invitations.rows()
            return page(
                rows, after=after, before=before, limit=limit, render=self.render_invitation
            )

    def api_create_invitation(
        self, body: dict[str, Any], *, created_by: str, allow_duplicates: bool
    ) -> dict[str, Any]:
        _only(body, ("email", "role"))
        email, role = body.get("email"), body.get("role", "org_admin")
        if not isinstance(email, str) or "@" not in email.strip()[1:-1]:
            raise KeycardError(400, "validation_error", "'email' must be an email address.")
        if role not in ORG_ROLES:
            raise KeycardError(400, "validation_error", f"'role' must be one of {ORG_ROLES}.")
        with self.lock:
            if not allow_duplicates:
                if self._user_by_email(email) is not None:
                    raise KeycardError(
                        409, "conflict", "This email already belongs to an organization user."
                    )
                same_email = self._invitation_ids_by_email.get(_norm(email), [])
                if any(self._status(self._invitations[i]) == "pending" for i in same_email):
                    raise KeycardError(
                        409, "conflict", "A pending invitation for this email already exists."
                    )
            invitation_id = self.add_invitation(email.strip(), role, created_by=created_by)
            return self.render_invitation(self._invitations[invitation_id])

    def api_delete_invitation(self, invitation_id: str) -> None:
        with self.lock:
            record = self._invitations.get(invitation_id)
            if record is None or record.status == "revoked":
                raise KeycardError(404, "not_found", f"Invitation {invitation_id} not found.")
            if record.status == "accepted":
                raise KeycardError(
                    400, "invalid_state", "An accepted invitation cannot be revoked."
                )
            record.status = "revoked"
            record.updated_at = self.clock()

    def api_list_roles(self, *, scope: str | None) -> dict[str, Any]:
        if scope not in (None, "organization", "zone"):
            raise KeycardError(400, "invalid_request", f"Invalid 'scope': {scope!r}.")
        items: list[dict[str, Any]] = []
        for name, role_scope in _roles():
            if scope is None or scope == role_scope:
                label, description = _ROLE_TEXT[name]
                items.append(
                    {"name": name, "label": label, "description": description, "scope": role_scope}
                )
        return {"items": items}


def _roles() -> Iterable[tuple[str, str]]:
    for name in ORG_ROLES:
        yield name, "organization"
    for name in ZONE_ROLES:
        yield name, "zone"


def _is_active_admin(record: UserRecord) -> bool:
    return record.role == "org_admin" and record.status == "active"


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise KeycardError(
            400, "validation_error", f"Unknown field(s) {unknown}; allowed: {list(allowed)}."
        )
