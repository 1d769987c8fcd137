"""A member's organization role assignments in the emulated OpenAI organization.

Owns users' direct role assignments and what ``/organization/users/{id}/roles`` shows:
one entry per role the user holds, whether directly or inherited through groups. The
groups themselves belong to `orgsync.testing.openai.groups`; this module only reads them.

Rules the spec does not state, chosen as the real API plausibly behaves:

* a member's organization role (``owner``/``reader``, ``User.role``) shows as a direct
  assignment of the predefined role of that name; it is changed only through
  ``POST /organization/users/{id}``, so assigning or unassigning it here answers 400;
* ``assignment_sources`` is null for a role held only directly; for an inherited role it
  lists each group it comes through (``principal_type`` ``group``), plus the user itself
  (``principal_type`` ``user``) when it is also assigned directly;
* unassigning a role the user holds only through groups answers 400 ``role_inherited``:
  it must be removed from the group; unassigning a direct assignment leaves inherited ones;
* assigning a role already assigned directly answers 409 ``role_already_assigned``.

Every public method takes the organization's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from orgsync.testing.openai.groups import (
    ORG_RESOURCE,
    body_string,
    check_seed_grant,
    org_role,
    paged,
)
from orgsync.testing.openai.records import (
    ORG_ROLES,
    ApiError,
    GroupRecord,
    RoleGrant,
    RoleRecord,
    UserRecord,
    not_found,
    render_assigned_role,
    render_role,
    render_user,
)


@dataclass(frozen=True)
class HeldRole:
    """One entry of a user's role list: the role, and the principals it comes from."""

    seq: int
    role: RoleRecord
    sources: list[dict[str, str]] | None


class UserRoles:
    """Direct role assignments of members, and their role lists with inherited roles.

    ``users``, ``roles`` and ``groups`` are `OrgState`'s live records (read only here).
    """

    def __init__(
        self,
        *,
        lock: AbstractContextManager[Any],
        users: Mapping[str, UserRecord],
        roles: Mapping[str, RoleRecord],
        groups: Mapping[str, GroupRecord],
        next_seq: Callable[[], int],
        now: Callable[[], int],
    ) -> None:
        self._lock = lock
        self._users = users
        self._roles = roles
        self._groups = groups
        self._next_seq = next_seq
        self._now = now
        self._grants: dict[str, dict[str, RoleGrant]] = {}  # user id -> role id -> grant

    # -- lookups (callers hold the lock) ---------------------------------------------

    def _user(self, user_id: str) -> UserRecord:
        user = self._users.get(user_id)
        if user is None:
            raise not_found("user", user_id, "user_id")
        return user

    def _base_role(self, user: UserRecord) -> RoleRecord | None:
        """The predefined role that a member's organization role (owner/reader) stands for."""
        for role in self._roles.values():
            if role.predefined and role.resource_type == ORG_RESOURCE and role.name == user.role:
                return role
        return None

    def held(self, user: UserRecord) -> list[HeldRole]:
        """Everything in the user's role list, in catalog order."""
        direct = set(self._grants.get(user.id, {}))
        base = self._base_role(user)
        if base is not None:
            direct.add(base.id)
        via: dict[str, list[str]] = {}
        for group in sorted(self._groups.values(), key=lambda g: g.seq):
            if user.id in group.members:
                for role_id in group.roles:
                    via.setdefault(role_id, []).append(group.id)
        entries: list[HeldRole] = []
        for role_id in direct | set(via):
            role = self._roles[role_id]
            groups = via.get(role_id)
            sources: list[dict[str, str]] | None = None
            if groups:
                sources = [{"principal_id": g, "principal_type": "group"} for g in groups]
                if role_id in direct:
                    sources.append({"principal_id": user.id, "principal_type": "user"})
            entries.append(HeldRole(role.seq, role, sources))
        return sorted(entries, key=lambda h: h.seq)

    # -- seeding and inspection ------------------------------------------------------

    def assign(self, user_id: str, role_id: str) -> None:
        """Assign a role directly (seeding): KeyError for unknown ids, ValueError if the
        role is a project role or already assigned."""
        with self._lock:
            if user_id not in self._users:
                raise KeyError(user_id)
            grants = self._grants.setdefault(user_id, {})
            check_seed_grant(self._roles, role_id, grants)
            grants[role_id] = RoleGrant(role_id, self._next_seq(), self._now())

    def listing(self, user_id: str) -> list[dict[str, Any]]:
        """The user's whole role list, rendered as the API lists it."""
        with self._lock:
            user = self._users[user_id]
            return [render_assigned_role(h.role, h.sources) for h in self.held(user)]

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            self._grants.pop(user_id, None)

    # -- API -------------------------------------------------------------------------

    def api_list(
        self, user_id: str, *, limit: int, after: str | None, order: str
    ) -> dict[str, Any]:
        with self._lock:
            entries = self.held(self._user(user_id))
            return paged(
                entries, after, limit, order, lambda h: render_assigned_role(h.role, h.sources)
            )

    def api_assign(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            user = self._user(user_id)
            role = org_role(self._roles, body_string(body, "role_id"))
            if role.predefined and role.name in ORG_ROLES:
                raise ApiError(
                    400,
                    f"'{role.name}' is a member's organization role; set it with "
                    f"POST /organization/users/{user_id}.",
                    param="role_id",
                )
            grants = self._grants.setdefault(user_id, {})
            if role.id in grants:
                raise ApiError(
                    409,
                    f"Role '{role.name}' is already assigned to user '{user_id}'.",
                    param="role_id",
                    code="role_already_assigned",
                )
            grants[role.id] = RoleGrant(role.id, self._next_seq(), self._now())
            return {"object": "user.role", "user": render_user(user), "role": render_role(role)}

    def api_get(self, user_id: str, role_id: str) -> dict[str, Any]:
        with self._lock:
            for entry in self.held(self._user(user_id)):
                if entry.role.id == role_id:
                    return render_assigned_role(entry.role, entry.sources)
            raise not_found("role assigned to this user", role_id, "role_id")

    def api_unassign(self, user_id: str, role_id: str) -> dict[str, Any]:
        with self._lock:
            user = self._user(user_id)
            if self._grants.get(user_id, {}).pop(role_id, None) is not None:
                return {"object": "user.role.deleted", "deleted": True}
            base = self._base_role(user)
            if base is not None and base.id == role_id:
                raise ApiError(
                    400,
                    f"'{base.name}' is this member's organization role; change it with "
                    f"POST /organization/users/{user_id}.",
                    param="role_id",
                )
            groups = sorted(
                g.name for g in self._groups.values() if user_id in g.members and role_id in g.roles
            )
            if groups:
                raise ApiError(
                    400,
                    "This role is inherited from group(s) "
                    + ", ".join(f"'{name}'" for name in groups)
                    + "; remove it from the group instead.",
                    param="role_id",
                    code="role_inherited",
                )
            raise not_found("role assigned to this user", role_id, "role_id")
