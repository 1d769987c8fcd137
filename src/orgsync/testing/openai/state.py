"""In-memory organization behind the OpenAI Admin API emulator, and its business rules.

This module owns the emulated organization (members, invites, the role catalog, admin
keys) and every rule the emulator enforces on it: duplicate invites, the last owner,
accepted invites not deletable, invite expiry, which pagination style each list uses.
Groups live in `orgsync.testing.openai.groups` (`OrgState.directory`), members' own role
assignments in `orgsync.testing.openai.user_roles` (`OrgState.user_roles`); their
seeding and inspection methods are repeated here.
Records and their spec-shaped rendering live in `orgsync.testing.openai.records`, paging
in `orgsync.testing.pagination`. It knows nothing about HTTP except `ApiError`, which
carries the status and the spec's error body. All methods are thread-safe: tests seed and
inspect it from their own thread while the server thread mutates it.
"""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Callable, Container
from typing import Any

from orgsync.testing.openai.groups import GroupDirectory
from orgsync.testing.openai.records import (
    INVITE_STATUSES,
    INVITE_TTL,
    ORG_ROLES,
    PREDEFINED_ROLES,
    PROJECT_ROLES,
    AdminKeyRecord,
    ApiError,
    InviteRecord,
    RoleRecord,
    UserRecord,
    invite_status,
    norm_email,
    not_found,
    render_admin_key,
    render_invite,
    render_role,
    render_user,
)
from orgsync.testing.openai.user_roles import UserRoles
from orgsync.testing.pagination import InvalidCursorError, page_by_cursor, page_by_id
from orgsync.testing.tables import Table, by_id, by_seq

_ID_ALPHABET = string.ascii_letters + string.digits


class OrgState:
    """The emulated organization. Seed it with `add_user`/`add_invite`, inspect it with
    `users`/`invites`; the HTTP layer calls the ``api_*`` methods, which raise `ApiError`."""

    def __init__(
        self,
        *,
        key_owner_email: str = "key-owner@example.com",
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = threading.RLock()
        #: Source of "now" in unix seconds; replace it to move time (invite expiry).
        self.clock = clock
        self._ids = random.Random(f"orgsync-emulator-ids:{seed}")  # noqa: S311 - ids, not secrets
        self._seq = 0
        # Tables keep their list order between requests: a page never sorts the table.
        self._users: Table[UserRecord] = Table(by_id)
        self._by_email: dict[str, str] = {}  # normalised email -> user id
        self._invites: Table[InviteRecord] = Table(by_id)
        # Normalised email -> ids of its invites, so a create need not scan every invite.
        self._invites_by_email: dict[str, set[str]] = {}
        self._roles: Table[RoleRecord] = Table(by_seq)
        self._admin_keys: Table[AdminKeyRecord] = Table(by_seq)
        #: Groups, their members and role assignments; then members' own role lists.
        self.directory = GroupDirectory(
            lock=self.lock,
            users=self._users,
            roles=self._roles,
            new_id=self._new_id,
            next_seq=self._next_seq,
            now=self.now,
        )
        self.user_roles = UserRoles(
            lock=self.lock,
            users=self._users,
            roles=self._roles,
            groups=self.directory.records,
            next_seq=self._next_seq,
            now=self.now,
        )
        for name, description, permissions in PREDEFINED_ROLES:
            self.add_role(name, permissions, description=description, predefined=True)
        self.key_owner_id: str = self.add_user(key_owner_email, "owner", name="Key Owner")

    # -- helpers ---------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def _new_id(self, prefix: str, taken: Container[str]) -> str:
        while True:
            candidate = prefix + "".join(self._ids.choices(_ID_ALPHABET, k=24))
            if candidate not in taken:
                return candidate

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _store_invite(self, inv: InviteRecord) -> None:
        self._invites[inv.id] = inv
        self._invites_by_email.setdefault(norm_email(inv.email), set()).add(inv.id)

    def _drop_invite(self, inv: InviteRecord) -> None:
        del self._invites[inv.id]
        same_email = self._invites_by_email[norm_email(inv.email)]
        same_email.discard(inv.id)
        if not same_email:
            del self._invites_by_email[norm_email(inv.email)]

    def _member_by_email(self, email: str) -> UserRecord | None:
        uid = self._by_email.get(norm_email(email))
        return None if uid is None else self._users[uid]

    def _owner_count(self) -> int:
        return sum(1 for u in self._users.values() if u.role == "owner")

    def _invite_status(self, inv: InviteRecord) -> str:
        return invite_status(inv, self.now())

    def _render_invite(self, inv: InviteRecord) -> dict[str, Any]:
        return render_invite(inv, self.now())

    def _render_admin_key(self, k: AdminKeyRecord) -> dict[str, Any]:
        return render_admin_key(k, self._users.get(k.owner_id))

    # -- seeding and inspection (tests, demo) ----------------------------------------

    def add_user(
        self,
        email: str,
        role: str = "reader",
        *,
        name: str = "",
        is_service_account: bool = False,
        is_scim_managed: bool = False,
    ) -> str:
        """Make someone a member directly (the real API cannot); return the ``user_…`` id."""
        if role not in ORG_ROLES:
            raise ValueError(f"role must be one of {ORG_ROLES}, got {role!r}")
        with self.lock:
            if self._member_by_email(email) is not None:
                raise ValueError(f"{email} is already a member")
            uid = self._new_id("user_", self._users)
            self._users[uid] = UserRecord(
                id=uid,
                email=email,
                name=name,
                role=role,
                added_at=self.now(),
                is_service_account=is_service_account,
                is_scim_managed=is_scim_managed,
            )
            self._by_email[norm_email(email)] = uid
            return uid

    def add_invite(
        self,
        email: str,
        role: str = "reader",
        *,
        status: str = "pending",
        expires_at: int | None = None,
    ) -> str:
        """Record an invite as if it had been sent (no duplicate check); return its id.

        ``status="expired"`` without ``expires_at`` dates the invite so that it expired a
        second ago; ``status="accepted"`` records history only and creates no member (use
        `accept_invite` for both).
        """
        if role not in ORG_ROLES:
            raise ValueError(f"role must be one of {ORG_ROLES}, got {role!r}")
        if status not in INVITE_STATUSES:
            raise ValueError(f"status must be one of {INVITE_STATUSES}, got {status!r}")
        with self.lock:
            now = self.now()
            if status == "expired":
                expires = now - 1 if expires_at is None else expires_at
                if expires > now:
                    raise ValueError("an expired invite needs expires_at in the past")
            else:
                expires = now + INVITE_TTL if expires_at is None else expires_at
            created = min(now, expires - INVITE_TTL)
            iid = self._new_id("invite-", self._invites)
            self._store_invite(
                InviteRecord(
                    id=iid,
                    email=email,
                    role=role,
                    created_at=created,
                    expires_at=expires,
                    accepted_at=now if status == "accepted" else None,
                )
            )
            return iid

    def accept_invite(self, invite_id: str) -> str:
        """The invitee accepts: the invite becomes ``accepted``, a member appears; return
        the member's id. Raises KeyError for an unknown id, ValueError if not pending."""
        with self.lock:
            inv = self._invites[invite_id]
            status = self._invite_status(inv)
            if status != "pending":
                raise ValueError(f"invite {invite_id} is {status}, not pending")
            uid = self.add_user(inv.email, inv.role)
            inv.accepted_at = self.now()
            return uid

    def add_role(
        self,
        name: str,
        permissions: list[str],
        *,
        description: str | None = None,
        resource_type: str = "api.organization",
        predefined: bool = False,
    ) -> str:
        """Add a role to the catalog (custom unless ``predefined``); return its id."""
        with self.lock:
            rid = self._new_id("role_", self._roles)
            self._roles[rid] = RoleRecord(
                rid,
                self._next_seq(),
                name,
                description,
                list(permissions),
                resource_type,
                predefined,
                self.now(),
            )
            return rid

    def role_id(self, name: str, *, resource_type: str = "api.organization") -> str:
        """The id of the catalog role called ``name``; KeyError if there is none."""
        with self.lock:
            for role in self._roles.rows():
                if role.name == name and role.resource_type == resource_type:
                    return role.id
            raise KeyError(name)

    def add_group(self, name: str, *, is_scim_managed: bool = False) -> str:
        """Create a group (SCIM-managed too, as an IdP would); return its ``group_…`` id."""
        return self.directory.add_group(name, is_scim_managed=is_scim_managed)

    def add_group_member(self, group_id: str, user_id: str) -> None:
        self.directory.add_group_member(group_id, user_id)

    def assign_group_role(self, group_id: str, role_id: str) -> None:
        self.directory.assign_group_role(group_id, role_id)

    def assign_user_role(self, user_id: str, role_id: str) -> None:
        """Give a member an organization role directly (a custom one: not owner/reader)."""
        self.user_roles.assign(user_id, role_id)

    def groups(self) -> list[dict[str, Any]]:
        """All groups in list order, spec-shaped, with ``members`` (user ids, in the order
        they joined) and ``roles`` (role ids, in the order assigned)."""
        return self.directory.groups()

    def user_role_list(self, user_id: str) -> list[dict[str, Any]]:
        """The member's role list (direct and inherited) as the API shows it."""
        return self.user_roles.listing(user_id)

    def add_admin_key(self, redacted_value: str, owner_id: str, *, name: str = "Admin key") -> str:
        with self.lock:
            if owner_id not in self._users:
                raise KeyError(owner_id)
            kid = self._new_id("key_", self._admin_keys)
            self._admin_keys[kid] = AdminKeyRecord(
                kid, self._next_seq(), name, redacted_value, self.now(), owner_id
            )
            return kid

    def touch_admin_key(self, key_id: str) -> None:
        with self.lock:
            key = self._admin_keys.get(key_id)
            if key is not None:
                key.last_used_at = self.now()

    def users(self) -> list[dict[str, Any]]:
        """All members, spec-shaped, in the list order of the API (by id)."""
        with self.lock:
            return [render_user(u) for u in self._users.rows()]

    def invites(self) -> list[dict[str, Any]]:
        """All invites incl. accepted/expired history, spec-shaped, by id."""
        with self.lock:
            return [self._render_invite(inv) for inv in self._invites.rows()]

    def roles(self) -> list[dict[str, Any]]:
        with self.lock:
            return [render_role(r) for r in self._roles.rows()]

    def user(self, user_id: str) -> dict[str, Any]:
        with self.lock:
            return render_user(self._users[user_id])

    def invite(self, invite_id: str) -> dict[str, Any]:
        with self.lock:
            return self._render_invite(self._invites[invite_id])

    # -- API operations (raise ApiError) ---------------------------------------------

    def api_list_users(self, *, limit: int, after: str | None, emails: list[str]) -> dict[str, Any]:
        with self.lock:
            if emails:
                wanted = {self._by_email.get(norm_email(e)) for e in emails}
                rows = [self._users[k] for k in sorted(k for k in wanted if k is not None)]
            else:
                rows = self._users.rows()
            return page_by_id(rows, after, limit, render_user)

    def api_get_user(self, user_id: str) -> dict[str, Any]:
        with self.lock:
            u = self._users.get(user_id)
            if u is None:
                raise not_found("user", user_id, "user_id")
            return render_user(u)

    def api_update_user(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            u = self._users.get(user_id)
            if u is None:
                raise not_found("user", user_id, "user_id")
            role = body.get("role")
            role_id = body.get("role_id")
            if role is not None and role not in ORG_ROLES:
                raise ApiError(
                    400, f"Invalid role '{role}': must be 'owner' or 'reader'.", param="role"
                )
            if role_id is not None:
                r = self._roles.get(str(role_id))
                if r is None:
                    raise not_found("role", str(role_id), "role_id")
                if not (r.predefined and r.name in ORG_ROLES):
                    raise ApiError(
                        400,
                        "The emulator assigns only the predefined 'owner' and 'reader' roles "
                        "through role_id.",
                        param="role_id",
                    )
                if role is not None and role != r.name:
                    raise ApiError(400, "role and role_id disagree.", param="role_id")
                role = r.name
            for key in ("technical_level", "developer_persona"):
                if body.get(key) is not None and not isinstance(body[key], str):
                    raise ApiError(400, f"'{key}' must be a string.", param=key)
            if role == "reader" and u.role == "owner" and self._owner_count() == 1:
                raise ApiError(
                    400, "Cannot demote the last owner of the organization.", param="role"
                )
            if role is not None:
                u.role = role
            if body.get("technical_level") is not None:
                u.technical_level = body["technical_level"]
            if body.get("developer_persona") is not None:
                u.developer_persona = body["developer_persona"]
            return render_user(u)

    def api_delete_user(self, user_id: str) -> dict[str, Any]:
        with self.lock:
            u = self._users.get(user_id)
            if u is None:
                raise not_found("user", user_id, "user_id")
            if u.role == "owner" and self._owner_count() == 1:
                raise ApiError(400, "Cannot remove the last owner of the organization.")
            del self._users[user_id]
            del self._by_email[norm_email(u.email)]
            self.directory.forget_user(user_id)
            self.user_roles.forget_user(user_id)
            return {"object": "organization.user.deleted", "id": user_id, "deleted": True}

    def api_list_invites(self, *, limit: int, after: str | None) -> dict[str, Any]:
        with self.lock:
            return page_by_id(self._invites.rows(), after, limit, self._render_invite)

    def api_create_invite(self, body: dict[str, Any], *, allow_duplicates: bool) -> dict[str, Any]:
        email = body.get("email")
        role = body.get("role")
        projects = body.get("projects", [])
        if not isinstance(email, str) or "@" not in email.strip():
            raise ApiError(400, "'email' must be a valid email address.", param="email")
        if role not in ORG_ROLES:
            raise ApiError(400, "'role' must be one of 'owner' or 'reader'.", param="role")
        if not isinstance(projects, list) or not all(
            isinstance(p, dict) and isinstance(p.get("id"), str) and p.get("role") in PROJECT_ROLES
            for p in projects
        ):
            raise ApiError(
                400, "'projects' must be a list of {id, role: member|owner}.", param="projects"
            )
        with self.lock:
            if not allow_duplicates:
                if self._member_by_email(email) is not None:
                    raise ApiError(
                        409,
                        f"{email} is already a member of this organization.",
                        param="email",
                        code="user_already_member",
                    )
                key = norm_email(email)
                for same in self._invites_by_email.get(key, ()):
                    if self._invite_status(self._invites[same]) == "pending":
                        raise ApiError(
                            409,
                            f"{email} already has a pending invite.",
                            param="email",
                            code="invite_already_exists",
                        )
            now = self.now()
            iid = self._new_id("invite-", self._invites)
            inv = InviteRecord(
                id=iid,
                email=email,
                role=str(role),
                created_at=now,
                expires_at=now + INVITE_TTL,
                projects=[{"id": p["id"], "role": p["role"]} for p in projects],
            )
            self._store_invite(inv)
            return self._render_invite(inv)

    def api_get_invite(self, invite_id: str) -> dict[str, Any]:
        with self.lock:
            inv = self._invites.get(invite_id)
            if inv is None:
                raise not_found("invite", invite_id, "invite_id")
            return self._render_invite(inv)

    def api_delete_invite(self, invite_id: str) -> dict[str, Any]:
        with self.lock:
            inv = self._invites.get(invite_id)
            if inv is None:
                raise not_found("invite", invite_id, "invite_id")
            if self._invite_status(inv) == "accepted":
                raise ApiError(
                    400,
                    "This invite has already been accepted and cannot be deleted.",
                    param="invite_id",
                )
            self._drop_invite(inv)
            return {"object": "organization.invite.deleted", "id": invite_id, "deleted": True}

    def api_list_roles(self, *, limit: int, after: str | None, order: str) -> dict[str, Any]:
        with self.lock:
            try:
                return page_by_cursor(self._roles.rows(), after, limit, order, render_role)
            except InvalidCursorError:
                raise ApiError(
                    400, f"Invalid pagination cursor '{after}'.", param="after"
                ) from None

    def api_list_admin_keys(self, *, limit: int, after: str | None, order: str) -> dict[str, Any]:
        with self.lock:
            keys = self._admin_keys.rows()
            if order == "desc":
                keys = keys[::-1]
            return page_by_id(keys, after, limit, self._render_admin_key, id_sorted=False)

    def api_get_admin_key(self, key_id: str) -> dict[str, Any]:
        with self.lock:
            k = self._admin_keys.get(key_id)
            if k is None:
                raise not_found("API key", key_id, "key_id")
            return self._render_admin_key(k)
