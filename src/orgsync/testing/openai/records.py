"""Records of the OpenAI Admin API emulator and their rendering in the spec's shapes.

Owns what an emulated object *is* (the mutable records `OrgState` keeps), how each is
rendered exactly as the spec's ``User``, ``Invite``, ``Role``, ``AdminApiKey`` and group
schemas (``GroupResponse``, ``Group``, ``GroupUser``, ``GroupMemberUser``,
``AssignedRoleDetails``), and `ApiError`, the spec's ``ErrorResponse`` carried as an
exception. No state, no rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orgsync.testing.tables import Table, by_seq

DAY = 86_400
INVITE_TTL = 7 * DAY
ORG_ROLES = ("owner", "reader")
PROJECT_ROLES = ("member", "owner")
INVITE_STATUSES = ("pending", "accepted", "expired")


class ApiError(Exception):
    """An error answer of the API: HTTP status plus the spec's ``ErrorResponse`` fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def not_found(what: str, ident: str, param: str) -> ApiError:
    return ApiError(404, f"No {what} found with id '{ident}'.", param=param, code="not_found")


def norm_email(email: str) -> str:
    return email.strip().casefold()


@dataclass
class UserRecord:
    id: str
    email: str
    name: str
    role: str
    added_at: int
    is_service_account: bool
    is_scim_managed: bool
    technical_level: str | None = None
    developer_persona: str | None = None


@dataclass
class InviteRecord:
    id: str
    email: str
    role: str
    created_at: int
    expires_at: int | None
    accepted_at: int | None = None
    projects: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RoleRecord:
    id: str
    seq: int
    name: str
    description: str | None
    permissions: list[str]
    resource_type: str
    predefined: bool
    created_at: int | None = None


@dataclass(frozen=True)
class Membership:
    """A user's place in a group; ``seq`` orders the group's user list (by time added)."""

    user_id: str
    seq: int
    added_at: int


@dataclass(frozen=True)
class RoleGrant:
    """A role assigned to a group, or directly to a user; ``seq`` orders assignment lists."""

    role_id: str
    seq: int
    granted_at: int


@dataclass
class GroupRecord:
    id: str
    seq: int
    name: str
    created_at: int
    is_scim_managed: bool
    # By user id / role id, listed in the order they were added.
    members: Table[Membership] = field(default_factory=lambda: Table(by_seq))
    roles: Table[RoleGrant] = field(default_factory=lambda: Table(by_seq))


@dataclass
class AdminKeyRecord:
    id: str
    seq: int
    name: str
    redacted_value: str
    created_at: int
    owner_id: str
    last_used_at: int | None = None


# Emulator-chosen permission strings: the real predefined roles' permissions are not
# documented; these follow the spec example's ``api.<area>.<read|write>`` pattern.
PREDEFINED_ROLES: tuple[tuple[str, str, list[str]], ...] = (
    (
        "owner",
        "Can modify billing information and manage organization members.",
        [
            "api.organization.read",
            "api.organization.write",
            "api.groups.read",
            "api.groups.write",
            "api.roles.read",
            "api.roles.write",
        ],
    ),
    (
        "reader",
        "Can make API requests that are allowed by the project's permissions.",
        ["api.organization.read", "api.groups.read", "api.roles.read"],
    ),
)


def render_user(u: UserRecord) -> dict[str, Any]:
    return {
        "object": "organization.user",
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "role": u.role,
        "added_at": u.added_at,
        "is_default": False,
        "created": u.added_at,
        "user": {
            "object": "user",
            "id": u.id,
            "email": u.email,
            "name": u.name,
            "picture": None,
            "enabled": True,
            "banned": False,
            "banned_at": None,
        },
        "is_service_account": u.is_service_account,
        "is_scim_managed": u.is_scim_managed,
        "is_scale_tier_authorized_purchaser": False,
        "api_key_last_used_at": None,
        "technical_level": u.technical_level,
        "developer_persona": u.developer_persona,
    }


def invite_status(inv: InviteRecord, now: int) -> str:
    """``expired`` is derived, never stored: an invite expires by the clock alone."""
    if inv.accepted_at is not None:
        return "accepted"
    if inv.expires_at is not None and inv.expires_at <= now:
        return "expired"
    return "pending"


def render_invite(inv: InviteRecord, now: int) -> dict[str, Any]:
    return {
        "object": "organization.invite",
        "id": inv.id,
        "email": inv.email,
        "role": inv.role,
        "status": invite_status(inv, now),
        "created_at": inv.created_at,
        "expires_at": inv.expires_at,
        "accepted_at": inv.accepted_at,
        "projects": [dict(p) for p in inv.projects],
    }


def render_role(r: RoleRecord) -> dict[str, Any]:
    return {
        "object": "role",
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "permissions": list(r.permissions),
        "resource_type": r.resource_type,
        "predefined_role": r.predefined,
    }


def render_admin_key(k: AdminKeyRecord, owner: UserRecord | None) -> dict[str, Any]:
    """``owner`` is None once the owning member was removed; the key still names them."""
    return {
        "object": "organization.admin_api_key",
        "id": k.id,
        "name": k.name,
        "redacted_value": k.redacted_value,
        "created_at": k.created_at,
        "expires_at": None,
        "last_used_at": k.last_used_at,
        "owner": {
            "type": "user",
            "object": "organization.user",
            "id": k.owner_id,
            "name": owner.name if owner else "",
            "created_at": owner.added_at if owner else k.created_at,
            "role": owner.role if owner else "owner",
        },
    }


# -- groups and role assignments -----------------------------------------------------


def render_group(g: GroupRecord) -> dict[str, Any]:
    """``GroupResponse`` (list, create, retrieve). The emulator has no tenant groups."""
    return {
        "id": g.id,
        "name": g.name,
        "created_at": g.created_at,
        "is_scim_managed": g.is_scim_managed,
        "group_type": "group",
    }


def render_group_updated(g: GroupRecord) -> dict[str, Any]:
    """``GroupResourceWithSuccess`` (rename): the spec leaves ``group_type`` out here."""
    return {
        "id": g.id,
        "name": g.name,
        "created_at": g.created_at,
        "is_scim_managed": g.is_scim_managed,
    }


def render_group_summary(g: GroupRecord) -> dict[str, Any]:
    """``Group`` inside a role assignment: note ``scim_managed``, not ``is_scim_managed``."""
    return {
        "object": "group",
        "id": g.id,
        "name": g.name,
        "created_at": g.created_at,
        "scim_managed": g.is_scim_managed,
    }


def render_group_user(u: UserRecord) -> dict[str, Any]:
    """``GroupUser``: an entry of a group's user list."""
    return {"id": u.id, "name": u.name, "email": u.email}


def render_group_member(u: UserRecord) -> dict[str, Any]:
    """``GroupMemberUser``: one member looked up in a group."""
    return {
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "picture": None,
        "is_service_account": u.is_service_account,
        "user_type": "user",
    }


def render_assigned_role(r: RoleRecord, sources: list[dict[str, str]] | None) -> dict[str, Any]:
    """``AssignedRoleDetails``; ``sources`` are the principals the role is inherited from
    (None for a direct assignment only)."""
    return {
        "id": r.id,
        "name": r.name,
        "permissions": list(r.permissions),
        "resource_type": r.resource_type,
        "predefined_role": r.predefined,
        "description": r.description,
        "created_at": r.created_at,
        "updated_at": r.created_at,
        "created_by": None,
        "created_by_user_obj": None,
        "metadata": {},
        "assignment_sources": sources,
    }
