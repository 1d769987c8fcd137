"""Wire shapes of the OpenAI Admin API, as far as orgsync reads and writes them.

Field names and nullability follow the official OpenAPI description (components `User`,
`Invite`, `Role`, `AdminApiKey` and their list envelopes). Every model ignores fields it
does not know and makes optional whatever orgsync can live without, so the vendor adding
or dropping an unused field never breaks a sync; only what the mapping truly needs (ids,
emails of invitations, statuses, list envelopes) is required.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

_Item = TypeVar("_Item")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --------------------------------------------------------------------------- list envelopes


class CursorPage(_Wire, Generic[_Item]):
    """Legacy id-cursor list (`UserListResponse`, `InviteListResponse`, `ApiKeyList`):
    the next page is `after=<last_id>` while `has_more`."""

    data: list[_Item]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class NextPage(_Wire, Generic[_Item]):
    """Opaque-cursor list (`PublicRoleListResource`): the next page is `after=<next>`."""

    data: list[_Item]
    has_more: bool
    next: str | None = None


# --------------------------------------------------------------------------- users


class NestedUser(_Wire):
    """The account behind an organization membership (`User.user`)."""

    id: str | None = None
    email: str | None = None
    name: str | None = None


class User(_Wire):
    """`User`: one organization member."""

    id: str
    name: str | None = None
    email: str | None = None
    role: str | None = None
    # The spec says boolean but marks neither required; a null is read as "no".
    is_service_account: bool | None = None
    is_scim_managed: bool | None = None
    user: NestedUser | None = None


class UserDeleted(_Wire):
    """`UserDeleteResponse`."""

    id: str | None = None
    deleted: bool = True


class UserRoleUpdate(_Wire):
    """`UserRoleUpdateRequest`, with only the predefined organization role."""

    role: str


# --------------------------------------------------------------------------- invites


class InviteProject(_Wire):
    id: str
    role: str


class Invite(_Wire):
    """`Invite`. Older published copies of the schema call `created_at` `invited_at`."""

    id: str
    email: str
    role: str | None = None
    status: str
    created_at: int | None = Field(
        default=None, validation_alias=AliasChoices("created_at", "invited_at")
    )
    expires_at: int | None = None
    accepted_at: int | None = None


class InviteRequest(_Wire):
    """`InviteRequest`. `projects` is always sent: omitted, the API would add the invitee
    to the default project (legacy behaviour); `[]` means no project at all."""

    email: str
    role: str
    projects: list[InviteProject]


class InviteDeleted(_Wire):
    """`InviteDeleteResponse`."""

    id: str | None = None
    deleted: bool = True


# --------------------------------------------------------------------------- roles


class Role(_Wire):
    """`Role`: an entry of the organization's role catalog."""

    id: str
    name: str | None = None
    resource_type: str | None = None
    predefined_role: bool | None = None


# --------------------------------------------------------------------------- admin keys


class KeyOwner(_Wire):
    """`AdminApiKey.owner`: a user or a service account."""

    id: str
    type: str | None = None
    name: str | None = None
    role: str | None = None


class AdminApiKey(_Wire):
    """`AdminApiKey`; `redacted_value` shows the key's prefix and suffix ("sk-admin...def")."""

    id: str
    redacted_value: str
    owner: KeyOwner | None = None


UserPage = CursorPage[User]
InvitePage = CursorPage[Invite]
AdminApiKeyPage = CursorPage[AdminApiKey]
RolePage = NextPage[Role]
