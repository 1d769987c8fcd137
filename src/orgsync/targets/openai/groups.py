"""OpenAI organization groups for the target: reading them, changing them, the role catalog.

What the Admin API allows shapes everything here (see `wire` for the shapes):
- groups, a group's users and a group's roles are three opaque-cursor lists; a read costs
  one list call per group and per list (more pages only past 1000 entries), never a call
  per member; group details are read on a small thread pool, since an organization with
  thousands of groups would otherwise take minutes of round trips;
- a group's role list may show roles it holds through someone else (`assignment_sources`
  naming another principal); only its own assignments are reported, the others are not
  orgsync's to remove;
- a group the target marks as managed elsewhere (`is_scim_managed`, or a `tenant_group`,
  which belongs to the enterprise tenant rather than this organization) is reported as
  `is_scim_managed`, so the planner never touches it;
- creations (a group, a membership, a role assignment) are not idempotent: they are sent
  once, and `find_existing` answers whether an earlier attempt took effect (after a 409
  or a lost response; a namesake holding roles is not what a create made, and is left
  to the next plan); deletions, renames and unassignments are idempotent and retried.

Users' own role lists (`/organization/users/{id}/roles`) are never read or written: a role
a member inherits through a group is changed by changing the group.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from types import MappingProxyType
from typing import Final, cast

import structlog

from orgsync.core.errors import NotFoundError, TargetError
from orgsync.core.model import RoleCatalog, TargetGroup
from orgsync.core.plan import (
    AddGroupMember,
    AdoptGroup,
    AssignGroupRole,
    CreateGroup,
    DeleteGroup,
    GroupOperation,
    RemoveGroupMember,
    RenameGroup,
    UnassignGroupRole,
)
from orgsync.targets._common import check_created, segment
from orgsync.targets.http import ApiClient
from orgsync.targets.openai import wire
from orgsync.targets.openai.paging import ids_by_next, list_by_next

__all__ = ["GROUPS", "GROUP_PAGE_SIZE", "OpenAIGroups", "role_catalog"]

log = structlog.get_logger(__name__)

GROUPS: Final = "/organization/groups"
GROUP_PAGE_SIZE: Final = 1000
"""The largest page the group, group user and group role lists accept (spec: 0-1000)."""
ORGANIZATION_ROLE: Final = "api.organization"
OWNER: Final = "owner"


def role_catalog(base: RoleCatalog, roles: Iterable[wire.Role]) -> RoleCatalog:
    """`base` (the member roles) with the organization's RBAC roles added.

    `assignable` maps each organization-level role's name (predefined and custom) to its
    id; a name two roles share is left out, since a configuration naming it could mean
    either. `privileged` adds the owner-level roles: the predefined role named "owner"
    (in any case), and any role granting every permission that one grants, since giving
    a group such a role makes its members owners in all but name.
    """
    organization = [r for r in roles if r.resource_type == ORGANIZATION_ROLE and r.name]
    by_name: dict[str, list[wire.Role]] = {}
    for role in organization:
        by_name.setdefault(str(role.name), []).append(role)
    ambiguous = sorted(name for name, found in by_name.items() if len(found) > 1)
    if ambiguous:
        log.warning("openai.roles.ambiguous", names=ambiguous)
    assignable = {name: found[0].id for name, found in sorted(by_name.items()) if len(found) == 1}
    owners = [r for r in organization if r.predefined_role and str(r.name).casefold() == OWNER]
    owner_permissions = frozenset(p for r in owners for p in r.permissions)
    privileged = set(base.privileged) | {str(r.name) for r in owners}
    if owner_permissions:
        privileged |= {
            str(r.name) for r in organization if owner_permissions <= frozenset(r.permissions)
        }
    return RoleCatalog(
        order=base.order,
        privileged=frozenset(privileged),
        invitable=base.invitable,
        assignable=MappingProxyType(assignable),
    )


def _group_id(operation: GroupOperation) -> str:
    if operation.group_id is None:
        # The applier fills it in from the create's result; a missing id is a wiring bug.
        raise TargetError(f"{operation.op} of group {operation.group!r} has no group id")
    return operation.group_id


def _own_roles(group_id: str, roles: Iterable[wire.AssignedRole]) -> frozenset[str]:
    """The ids of roles assigned to the group itself (not inherited from elsewhere)."""
    return frozenset(
        role.id
        for role in roles
        if not role.assignment_sources
        or any(source.principal_id == group_id for source in role.assignment_sources)
    )


def _on_threads(
    work: Callable[[wire.Group], TargetGroup], groups: Sequence[wire.Group], workers: int
) -> tuple[TargetGroup, ...]:
    """`tuple(map(work, groups))` on `workers` threads, as `ThreadPoolExecutor.map` in a
    `with` block gives it: every group is worked on, in order of start, and the error of
    the first group (in their order) that failed is raised once all are done.

    The threads take the next group from a shared index rather than a future each: at 10k
    groups the executor's bookkeeping (a future, a work item, a queue and a condition per
    call) cost more than the groups' own Python work."""
    results: list[TargetGroup | None] = [None] * len(groups)
    errors: dict[int, BaseException] = {}
    following = iter(range(len(groups)))
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                index = next(following, None)
            if index is None:
                return
            try:
                results[index] = work(groups[index])
            except BaseException as error:  # noqa: BLE001 - raised by the caller's thread
                errors[index] = error

    threads = [
        threading.Thread(target=run, name=f"openai-groups_{number}") for number in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[min(errors)]
    return tuple(cast("list[TargetGroup]", results))


class OpenAIGroups:
    """The group half of `OpenAITarget`, over the same `ApiClient`.

    `read_concurrency` bounds the threads reading group members and roles (1: sequential).
    """

    def __init__(self, client: ApiClient, *, read_concurrency: int = 4) -> None:
        if read_concurrency < 1:
            raise ValueError("read_concurrency must be at least 1")
        self._client = client
        self._concurrency = read_concurrency

    # ------------------------------------------------------------------ reading

    def list_groups(self) -> list[wire.Group]:
        return list_by_next(self._client, GROUPS, wire.GroupPage, limit=GROUP_PAGE_SIZE)

    def read(self) -> tuple[TargetGroup, ...]:
        """Every group with its members and its own role assignments."""
        groups = self.list_groups()
        if self._concurrency == 1 or len(groups) < 2:
            return tuple(self._detail(group) for group in groups)
        return _on_threads(self._detail, groups, min(self._concurrency, len(groups)))

    def _detail(self, group: wire.Group) -> TargetGroup:
        base = f"{GROUPS}/{segment(group.id)}"
        users = ids_by_next(self._client, f"{base}/users", limit=GROUP_PAGE_SIZE)
        roles = list_by_next(
            self._client, f"{base}/roles", wire.AssignedRolePage, limit=GROUP_PAGE_SIZE
        )
        return TargetGroup(
            id=group.id,
            name=group.name,
            # Interned: a million memberships name a hundred thousand users, each id
            # then one object (memory), compared by identity with the members' (planning).
            member_ids=frozenset(map(sys.intern, users)),
            role_ids=_own_roles(group.id, roles),
            is_scim_managed=bool(group.is_scim_managed) or group.group_type == "tenant_group",
        )

    # ------------------------------------------------------------------ writing

    def execute(self, operation: GroupOperation) -> str | None:
        """Perform one group operation; the group's id for create and adopt, else None."""
        if isinstance(operation, CreateGroup):
            created = self._client.request_model(
                "POST",
                GROUPS,
                wire.Group,
                json=wire.GroupName(name=operation.group).model_dump(),
                idempotent=False,
            )
            check_created(f"POST {GROUPS}", "name", operation.group, created.name)
            return created.id
        group_id = _group_id(operation)
        base = f"{GROUPS}/{segment(group_id)}"
        if isinstance(operation, AdoptGroup):
            return group_id  # ownership is recorded in the state database; no API call
        if isinstance(operation, RenameGroup):
            # Setting the same name twice ends in the same state: safe to retry.
            self._client.request_model(
                "POST",
                base,
                wire.GroupUpdated,
                json=wire.GroupName(name=operation.group).model_dump(),
                idempotent=True,
            )
        elif isinstance(operation, DeleteGroup):
            self._delete(base, wire.GroupDeleted)
        elif isinstance(operation, AddGroupMember):
            if operation.user_id is None:
                # Only a target that creates users plans a membership for one it creates.
                raise TargetError(
                    f"add_group_member of {operation.email} to {operation.group!r} has no "
                    "user id (OpenAI members join by invitation only)"
                )
            self._client.request_model(
                "POST",
                f"{base}/users",
                wire.GroupUserAdded,
                json=wire.GroupUserRequest(user_id=operation.user_id).model_dump(),
                idempotent=False,
            )
        elif isinstance(operation, RemoveGroupMember):
            self._delete(f"{base}/users/{segment(operation.user_id)}", wire.Deletion)
        elif isinstance(operation, AssignGroupRole):
            self._client.request_model(
                "POST",
                f"{base}/roles",
                wire.GroupRoleAssigned,
                json=wire.RoleAssignmentRequest(role_id=operation.role_id).model_dump(),
                idempotent=False,
            )
        elif isinstance(operation, UnassignGroupRole):
            self._delete(f"{base}/roles/{segment(operation.role_id)}", wire.Deletion)
        return None

    def find_existing(self, operation: GroupOperation) -> str | None:
        """Whether an earlier attempt of a creation took effect (after a 409 or a lost
        response): the group's id if so, None otherwise (or for other operations)."""
        if isinstance(operation, CreateGroup):
            found = self._find_group(operation.group)
            if found is None or not self._holds_roles(found):
                return found
            # A group the create made holds no role yet (assignments come in a later
            # phase), so this is a namesake made by someone else since the plan. The
            # planner adopts one only when its rule gives every role it holds; adopted
            # here, the IdP team would be added to a group granting, say, owner.
            log.warning(
                "openai.group.namesake_not_adopted",
                system=self._client.system,
                group=operation.group,
                group_id=found,
                reason="it holds roles; the next run's plan decides whether to adopt it",
            )
            return None
        group_id = operation.group_id
        if group_id is None:
            return None
        base = f"{GROUPS}/{segment(group_id)}"
        if isinstance(operation, AddGroupMember):
            if operation.user_id is None:
                return None
            return self._exists(f"{base}/users/{segment(operation.user_id)}", group_id)
        if isinstance(operation, AssignGroupRole):
            return self._exists(f"{base}/roles/{segment(operation.role_id)}", group_id)
        return None

    def _find_group(self, name: str) -> str | None:
        """A group named `name` that orgsync may own: exactly that name, else the one group
        whose name differs only in case (the planner matches names the same way)."""
        candidates = [
            g
            for g in self.list_groups()
            if not g.is_scim_managed and g.group_type != "tenant_group"
        ]
        exact = [g.id for g in candidates if g.name == name]
        if exact:
            # Of several (a server letting names repeat) none: the planner adopts none.
            return exact[0] if len(exact) == 1 else None
        folded = [g.id for g in candidates if g.name.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    def _holds_roles(self, group_id: str) -> bool:
        base = f"{GROUPS}/{segment(group_id)}"
        roles = list_by_next(
            self._client, f"{base}/roles", wire.AssignedRolePage, limit=GROUP_PAGE_SIZE
        )
        return bool(_own_roles(group_id, roles))

    def _exists(self, path: str, group_id: str) -> str | None:
        try:
            self._client.request("GET", path, idempotent=True)
        except NotFoundError:
            return None
        return group_id

    def _delete(self, path: str, model: type[wire.Deletion]) -> None:
        result = self._client.request_model("DELETE", path, model, idempotent=True)
        if not result.deleted:
            raise TargetError(f"DELETE {path}: the server answered but reports nothing deleted")
