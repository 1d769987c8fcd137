"""Keycard API wire formats, as the official SDK models and the subset spec define them.

Sources: `keycardai/keycard-python` @ d9a374f (`types/organizations/*`, `page_info_cursor`,
`organization_list_roles_response`, `service_account_token_create_response`) and the
`Error`/`PageInfo` schemas of `keycardai/terraform-provider-keycard` `api/openapi.yaml`.
Every model ignores fields it does not declare: the SDK changelog already names fields
(`last_sent_at`) its models lack, and a vendor adding one must not break a sync.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

ORG_ROLES = ("org_viewer", "org_member", "org_admin")
"""Organization roles, lowest first (target-apis.md §2.5: admin > member > viewer)."""
OrgRole = Literal["org_admin", "org_member", "org_viewer"]

_Item = TypeVar("_Item")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PageInfo(_Model):
    """Both spellings of the previous-page flag exist: the spec's `PageInfo` says
    `has_previous_page`, the SDK's `PageInfoCursor` `has_prev_page`. Only the forward
    fields matter to a full walk."""

    has_next_page: bool
    end_cursor: str | None = None


class OrganizationUser(_Model):
    id: str
    role: str
    status: str
    email: str | None = None
    """Optional in the SDK model: a user from an IdP without an address has none."""
    source: str | None = None


class Invitation(_Model):
    id: str
    email: str
    role: str
    status: str
    expires_at: datetime | None = None


class CursorPage(_Model, Generic[_Item]):
    """A list answer (`UserListResponse`, `InvitationListResponse`): the next page is
    `after=<page_info.end_cursor>` while `page_info.has_next_page`."""

    items: list[_Item]
    page_info: PageInfo


class Role(_Model):
    name: str
    scope: str


class RoleList(_Model):
    items: list[Role]


class UserUpdate(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: OrgRole | None = None
    status: Literal["active", "disabled"] | None = None


class InvitationCreate(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str
    role: OrgRole
    """Always sent: the API would otherwise default to org_admin."""


class _Error(_Model):
    message: str
    code: str | None = None


class _OAuthError(_Model):
    error: str
    error_description: str | None = None


def error_message(response: httpx.Response) -> str | None:
    """The message of a Keycard error body: the spec's `{message, code, status}`, or the
    OAuth `{error, error_description}` a token endpoint may answer; else None."""
    try:
        body = _Error.model_validate_json(response.content)
    except ValidationError:
        pass
    else:
        message = body.message.strip()
        if body.code and body.code not in message:
            message = f"{message} [{body.code}]"
        return message or None
    try:
        oauth = _OAuthError.model_validate_json(response.content)
    except ValidationError:
        return None
    return f"{oauth.error_description or oauth.error} [{oauth.error}]"
