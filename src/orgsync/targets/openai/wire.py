"""Wire shapes of the OpenAI Admin API, as far as orgsync reads and writes them.

Field names and nullability follow the official OpenAPI description (components `User`,
`Invite`, `Role`, `AdminApiKey`, `GroupResponse`, `GroupUser`, `AssignedRoleDetails` and
their list envelopes). Every model ignores fields it
does not know and makes optional whatever orgsync can live without, so the vendor adding
or dropping an unused field never breaks a sync; only what the mapping truly needs (ids,
emails of invitations, statuses, list envelopes) is required.
"""

from __future__ import annotations

from typing import Final, Generic, NotRequired, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter

# pydantic validates `typing_extensions.TypedDict` only, on Python below 3.12.
from typing_extensions import TypedDict

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
    """Opaque-cursor list (`PublicRoleListResource`, `GroupListResource`, `UserListResource`,
    `RoleListResource`): the next page is `after=<next>`."""

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


class NestedUserFields(TypedDict):
    """`User.user` as a member's read needs it (other fields ignored)."""

    email: NotRequired[str | None]
    name: NotRequired[str | None]


class UserFields(TypedDict):
    """A `User` as a member's read needs it: the fields and types of `User`, validated
    the same way, into a plain dictionary (other fields ignored)."""

    id: str
    name: NotRequired[str | None]
    email: NotRequired[str | None]
    role: NotRequired[str | None]
    is_service_account: NotRequired[bool | None]
    is_scim_managed: NotRequired[bool | None]
    user: NotRequired[NestedUserFields | None]


class UserFieldsPage(TypedDict):
    """A page of the users list (`UserListResponse`) as plain dictionaries.

    A full read lists every member: 100k at 100k people. A `User` model per member (with
    its nested model) cost several times the CPU and memory of a dictionary of the fields
    used, and the pages' models all lived until the last page was read."""

    data: list[UserFields]
    has_more: bool
    first_id: NotRequired[str | None]
    last_id: NotRequired[str | None]


USER_FIELDS: Final = TypeAdapter(UserFields)
USER_FIELDS_PAGE: Final = TypeAdapter(UserFieldsPage)


class Deletion(_Wire):
    """Every deletion answer carries `deleted`; a false one means nothing was removed."""

    deleted: bool = True


class UserDeleted(Deletion):
    """`UserDeleteResponse`."""

    id: str | None = None


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


class InviteDeleted(Deletion):
    """`InviteDeleteResponse`."""

    id: str | None = None


# --------------------------------------------------------------------------- roles


class Role(_Wire):
    """`Role`: an entry of the organization's role catalog."""

    id: str
    name: str | None = None
    resource_type: str | None = None
    predefined_role: bool | None = None
    permissions: tuple[str, ...] = ()


# --------------------------------------------------------------------------- groups


class Group(_Wire):
    """`GroupResponse`. `group_type` is `group` or `tenant_group`."""

    id: str
    name: str
    is_scim_managed: bool | None = None
    group_type: str | None = None


class GroupUpdated(_Wire):
    """`GroupResourceWithSuccess`, the answer to a rename (no `group_type` there)."""

    id: str
    name: str | None = None


class GroupName(_Wire):
    """`CreateGroupBody` and `UpdateGroupBody` (1-255 characters)."""

    name: str = Field(min_length=1, max_length=255)


class GroupDeleted(Deletion):
    """`GroupDeletedResource`."""

    id: str | None = None


class GroupUser(_Wire):
    """`GroupUser`: an entry of a group's user list."""

    id: str
    name: str | None = None
    email: str | None = None


class GroupUserId(TypedDict):
    """A `GroupUser` as a group's read needs it: the id only (other fields ignored)."""

    id: str


class GroupUserIdPage(TypedDict):
    """A page of a group's user list (`UserListResource`) as plain dictionaries.

    A full read lists every group's users: a million memberships at 100k people. Validated
    into dictionaries of the one field used rather than a `GroupUser` model each, the
    page costs a fraction of the models' CPU and nothing is kept but the ids."""

    data: list[GroupUserId]
    has_more: bool
    next: NotRequired[str | None]


GROUP_USER_IDS: Final = TypeAdapter(GroupUserIdPage)


class GroupUserRequest(_Wire):
    """`CreateGroupUserBody`."""

    user_id: str


class GroupUserAdded(_Wire):
    """`GroupUserAssignment`."""

    user_id: str | None = None
    group_id: str | None = None


class RoleAssignmentRequest(_Wire):
    """`PublicAssignOrganizationGroupRoleBody` (groups and users alike)."""

    role_id: str


class GroupRoleAssigned(_Wire):
    """`GroupRoleAssignment`: only the role is read back."""

    role: Role | None = None


class AssignmentSource(_Wire):
    principal_id: str
    principal_type: str | None = None


class AssignedRole(_Wire):
    """`AssignedRoleDetails`: one entry of a principal's role list. `assignment_sources`
    names the principals a role is inherited from (null for a direct assignment)."""

    id: str
    name: str | None = None
    resource_type: str | None = None
    assignment_sources: list[AssignmentSource] | None = None


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
GroupPage = NextPage[Group]
GroupUserPage = NextPage[GroupUser]
AssignedRolePage = NextPage[AssignedRole]
