"""Groups, group members and group role assignments of the emulated OpenAI organization.

Owns the groups of `OrgState` and every rule the emulator enforces on them, plus the
helpers every opaque-cursor list and assignment endpoint shares. What a user's own role
list shows (direct and inherited roles) lives in `orgsync.testing.openai.user_roles`.

Rules the spec does not state, chosen as the real API plausibly behaves (documented here
because tests and the target rely on them):

* a group with ``is_scim_managed`` belongs to the identity provider that pushes it over
  SCIM: renaming or deleting it, or changing its members or roles, answers **400**
  ``invalid_request_error`` with code ``group_scim_managed``. 400 rather than 403: the key
  is allowed to manage groups, this one group is read-only (a business rule like the last
  owner), and a client must fail that one operation, not conclude its key is refused;
* group names are unique, compared case-insensitively and trimmed: a create or rename to
  a taken name answers **409** ``group_name_taken`` (unless the emulator is told to allow
  duplicates, which lets fault tests see a blind retry create a second group);
* adding a user who already is in the group, or assigning a role the group already
  holds, answers **409** (code ``user_already_in_group`` / ``role_already_assigned``); an
  unknown group, user or role, or a membership or assignment that does not exist, **404**;
* only organization roles (``resource_type`` ``api.organization``) can be assigned to a
  group; project roles answer 400;
* deleting a group drops its memberships and role assignments with it;
* every list uses the opaque ``next`` cursor, and only that: a user or group id in
  ``after`` is refused with 400, so a client that follows the spec's prose ("the ID of the
  last user") instead of ``next`` fails loudly. Group user lists default to ``desc``.

Every public method takes the organization's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from orgsync.testing.openai.records import (
    ApiError,
    GroupRecord,
    Membership,
    RoleGrant,
    RoleRecord,
    UserRecord,
    not_found,
    render_assigned_role,
    render_group,
    render_group_member,
    render_group_summary,
    render_group_updated,
    render_group_user,
    render_role,
)
from orgsync.testing.pagination import InvalidCursorError, Sequenced, page_by_cursor
from orgsync.testing.tables import Table, by_seq

NAME_MAX = 255
ORG_RESOURCE = "api.organization"

_Row = TypeVar("_Row", bound=Sequenced)


def paged(
    rows: Sequence[_Row],
    after: str | None,
    limit: int,
    order: str,
    render: Callable[[_Row], dict[str, Any]],
) -> dict[str, Any]:
    """`page_by_cursor`, with a cursor it did not make answered as the API would (400)."""
    try:
        return page_by_cursor(rows, after, limit, order, render)
    except InvalidCursorError:
        raise ApiError(400, f"Invalid pagination cursor '{after}'.", param="after") from None


def _name_key(name: str) -> str:
    return name.strip().casefold()


def body_string(body: Mapping[str, Any], key: str, *, max_length: int | None = None) -> str:
    """The non-blank string field ``key`` of a request body, or a 400 naming it."""
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"'{key}' must be a non-empty string.", param=key)
    if max_length is not None and len(value) > max_length:
        raise ApiError(400, f"'{key}' must be at most {max_length} characters long.", param=key)
    return value


def org_role(roles: Mapping[str, RoleRecord], role_id: str) -> RoleRecord:
    """The organization role ``role_id`` for an assignment: 404 unknown, 400 project role."""
    role = roles.get(role_id)
    if role is None:
        raise not_found("role", role_id, "role_id")
    if role.resource_type != ORG_RESOURCE:
        raise ApiError(
            400,
            f"Role '{role.name}' is a {role.resource_type} role; only organization "
            "roles can be assigned here.",
            param="role_id",
        )
    return role


def check_seed_grant(
    roles: Mapping[str, RoleRecord], role_id: str, grants: Mapping[str, RoleGrant]
) -> None:
    """Seeding's version of the assignment rules: KeyError / ValueError, not API errors."""
    role = roles[role_id]
    if role.resource_type != ORG_RESOURCE:
        raise ValueError(f"{role.name!r} is not an organization role")
    if role_id in grants:
        raise ValueError(f"{role.name!r} is already assigned")


class GroupDirectory:
    """The organization's groups, sharing `OrgState`'s records.

    ``users`` and ``roles`` are `OrgState`'s own dictionaries (read, never written here);
    ``new_id``, ``next_seq`` and ``now`` are its id, sequence and clock sources, so ids and
    cursors stay unique across the whole organization.
    """

    def __init__(
        self,
        *,
        lock: AbstractContextManager[Any],
        users: Mapping[str, UserRecord],
        roles: Mapping[str, RoleRecord],
        new_id: Callable[[str, Container[str]], str],
        next_seq: Callable[[], int],
        now: Callable[[], int],
    ) -> None:
        self._lock = lock
        self._users = users
        self._roles = roles
        self._new_id = new_id
        self._next_seq = next_seq
        self._now = now
        # In list order between requests (a page never sorts every group), with two
        # indexes so that no request scans every group: names (case-folded, trimmed) to
        # group ids, and each user's groups.
        self._groups: Table[GroupRecord] = Table(by_seq)
        self._by_name: dict[str, set[str]] = {}
        self._groups_of: dict[str, set[str]] = {}

    @property
    def records(self) -> Mapping[str, GroupRecord]:
        """The group records by id, live (read them under the organization's lock)."""
        return self._groups

    # -- lookups (callers hold the lock) ---------------------------------------------

    def _group(self, group_id: str) -> GroupRecord:
        group = self._groups.get(group_id)
        if group is None:
            raise not_found("group", group_id, "group_id")
        return group

    def _writable(self, group_id: str) -> GroupRecord:
        group = self._group(group_id)
        if group.is_scim_managed:
            raise ApiError(
                400,
                f"Group '{group.name}' is managed through SCIM by your identity provider "
                "and cannot be changed here.",
                param="group_id",
                code="group_scim_managed",
            )
        return group

    def _user(self, user_id: str, param: str = "user_id") -> UserRecord:
        user = self._users.get(user_id)
        if user is None:
            raise not_found("user", user_id, param)
        return user

    def _name_taken(self, name: str, *, other_than: str | None = None) -> bool:
        return any(gid != other_than for gid in self._by_name.get(_name_key(name), ()))

    def _store_group(self, group: GroupRecord) -> None:
        self._groups[group.id] = group
        self._by_name.setdefault(_name_key(group.name), set()).add(group.id)

    def _rename(self, group: GroupRecord, name: str) -> None:
        self._unname(group)
        group.name = name
        self._by_name.setdefault(_name_key(name), set()).add(group.id)

    def _unname(self, group: GroupRecord) -> None:
        key = _name_key(group.name)
        namesakes = self._by_name[key]
        namesakes.discard(group.id)
        if not namesakes:
            del self._by_name[key]

    def _remove_member(self, group: GroupRecord, user_id: str) -> bool:
        if group.members.pop(user_id, None) is None:
            return False
        groups = self._groups_of[user_id]
        groups.discard(group.id)
        if not groups:
            del self._groups_of[user_id]
        return True

    def _check_name(self, name: str, *, allow_duplicates: bool, other_than: str | None) -> None:
        if not allow_duplicates and self._name_taken(name, other_than=other_than):
            raise ApiError(
                409,
                f"A group named '{name.strip()}' already exists.",
                param="name",
                code="group_name_taken",
            )

    def _add_member(self, group: GroupRecord, user_id: str) -> None:
        group.members[user_id] = Membership(user_id, self._next_seq(), self._now())
        self._groups_of.setdefault(user_id, set()).add(group.id)

    # -- seeding and inspection ------------------------------------------------------

    def add_group(self, name: str, *, is_scim_managed: bool = False) -> str:
        if not name.strip() or len(name) > NAME_MAX:
            raise ValueError(f"a group name has 1 to {NAME_MAX} characters, got {name!r}")
        with self._lock:
            if self._name_taken(name):
                raise ValueError(f"a group named {name!r} already exists")
            gid = self._new_id("group_", self._groups)
            self._store_group(
                GroupRecord(gid, self._next_seq(), name, self._now(), is_scim_managed)
            )
            return gid

    def add_group_member(self, group_id: str, user_id: str) -> None:
        with self._lock:
            group = self._groups[group_id]
            if user_id not in self._users:
                raise KeyError(user_id)
            if user_id in group.members:
                raise ValueError(f"{user_id} is already in group {group_id}")
            self._add_member(group, user_id)

    def assign_group_role(self, group_id: str, role_id: str) -> None:
        with self._lock:
            grants = self._groups[group_id].roles
            check_seed_grant(self._roles, role_id, grants)
            grants[role_id] = RoleGrant(role_id, self._next_seq(), self._now())

    def groups(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self.group(g.id) for g in self._groups.rows()]

    def group(self, group_id: str) -> dict[str, Any]:
        with self._lock:
            group = self._groups[group_id]
            return {
                **render_group(group),
                "members": [m.user_id for m in group.members.rows()],
                "roles": [r.role_id for r in group.roles.rows()],
            }

    def forget_user(self, user_id: str) -> None:
        """A member left the organization: they leave every group."""
        with self._lock:
            for group_id in list(self._groups_of.get(user_id, ())):
                self._remove_member(self._groups[group_id], user_id)

    # -- groups ----------------------------------------------------------------------

    def api_list_groups(self, *, limit: int, after: str | None, order: str) -> dict[str, Any]:
        with self._lock:
            return paged(self._groups.rows(), after, limit, order, render_group)

    def api_create_group(
        self, body: Mapping[str, Any], *, allow_duplicates: bool
    ) -> dict[str, Any]:
        name = body_string(body, "name", max_length=NAME_MAX)
        with self._lock:
            self._check_name(name, allow_duplicates=allow_duplicates, other_than=None)
            gid = self._new_id("group_", self._groups)
            group = GroupRecord(gid, self._next_seq(), name, self._now(), False)
            self._store_group(group)
            return render_group(group)

    def api_get_group(self, group_id: str) -> dict[str, Any]:
        with self._lock:
            return render_group(self._group(group_id))

    def api_update_group(
        self, group_id: str, body: Mapping[str, Any], *, allow_duplicates: bool
    ) -> dict[str, Any]:
        with self._lock:
            group = self._writable(group_id)
            name = body_string(body, "name", max_length=NAME_MAX)
            self._check_name(name, allow_duplicates=allow_duplicates, other_than=group_id)
            self._rename(group, name)
            return render_group_updated(group)

    def api_delete_group(self, group_id: str) -> dict[str, Any]:
        with self._lock:
            group = self._writable(group_id)
            # Its memberships and role assignments go with it (and so do the roles its
            # members inherited through it).
            for user_id in list(group.members):
                self._remove_member(group, user_id)
            self._unname(group)
            del self._groups[group_id]
            return {"object": "group.deleted", "id": group_id, "deleted": True}

    # -- group users -----------------------------------------------------------------

    def api_list_group_users(
        self, group_id: str, *, limit: int, after: str | None, order: str
    ) -> dict[str, Any]:
        with self._lock:
            group = self._group(group_id)
            return paged(
                group.members.rows(),
                after,
                limit,
                order,
                lambda m: render_group_user(self._users[m.user_id]),
            )

    def api_add_group_user(self, group_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            group = self._writable(group_id)
            user_id = body_string(body, "user_id")
            self._user(user_id)
            if user_id in group.members:
                raise ApiError(
                    409,
                    f"User '{user_id}' is already a member of group '{group.name}'.",
                    param="user_id",
                    code="user_already_in_group",
                )
            self._add_member(group, user_id)
            return {"object": "group.user", "user_id": user_id, "group_id": group_id}

    def api_get_group_user(self, group_id: str, user_id: str) -> dict[str, Any]:
        with self._lock:
            group = self._group(group_id)
            if user_id not in group.members:
                raise not_found("user in this group", user_id, "user_id")
            return render_group_member(self._users[user_id])

    def api_remove_group_user(self, group_id: str, user_id: str) -> dict[str, Any]:
        with self._lock:
            group = self._writable(group_id)
            if not self._remove_member(group, user_id):
                raise not_found("user in this group", user_id, "user_id")
            return {"object": "group.user.deleted", "deleted": True}

    # -- group roles -----------------------------------------------------------------

    def api_list_group_roles(
        self, group_id: str, *, limit: int, after: str | None, order: str
    ) -> dict[str, Any]:
        with self._lock:
            group = self._group(group_id)
            return paged(
                group.roles.rows(),
                after,
                limit,
                order,
                lambda grant: render_assigned_role(self._roles[grant.role_id], None),
            )

    def api_assign_group_role(self, group_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            group = self._writable(group_id)
            role = org_role(self._roles, body_string(body, "role_id"))
            if role.id in group.roles:
                raise ApiError(
                    409,
                    f"Role '{role.name}' is already assigned to group '{group.name}'.",
                    param="role_id",
                    code="role_already_assigned",
                )
            group.roles[role.id] = RoleGrant(role.id, self._next_seq(), self._now())
            return {
                "object": "group.role",
                "group": render_group_summary(group),
                "role": render_role(role),
            }

    def api_get_group_role(self, group_id: str, role_id: str) -> dict[str, Any]:
        with self._lock:
            group = self._group(group_id)
            if role_id not in group.roles:
                raise not_found("role assigned to this group", role_id, "role_id")
            return render_assigned_role(self._roles[role_id], None)

    def api_unassign_group_role(self, group_id: str, role_id: str) -> dict[str, Any]:
        with self._lock:
            group = self._writable(group_id)
            if group.roles.pop(role_id, None) is None:
                raise not_found("role assigned to this group", role_id, "role_id")
            return {"object": "group.role.deleted", "deleted": True}
