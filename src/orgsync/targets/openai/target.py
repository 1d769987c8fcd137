"""OpenAI organization as an orgsync target: members, invitations, roles and groups.

What the Admin API allows shapes everything here (see `wire` for the shapes):
- people join only by invitation, which carries `owner` or `reader`; a wrong-role or
  expired invitation is replaced by delete + create, since invitations cannot be edited;
- members are removed, never suspended; their role changes with `POST /users/{id}`;
- lists come in two pagination styles (id cursor for users, invites and admin keys; an
  opaque `next` cursor for roles), and a server that contradicts itself (a repeated
  cursor, `has_more` with nothing in the page) is refused rather than followed forever;
- the admin key's own owner is found by matching the key against each key's redacted
  value, so the planner can leave that person alone;
- groups, their members and their role assignments are read and changed by
  `orgsync.targets.openai.groups`; the role catalog adds the organization's RBAC roles
  (predefined and custom) by name, for the roles groups are given.

Only `orgsync.core`, `orgsync.retrying`, `orgsync.http` and `orgsync.targets.http` are imported
here.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import structlog

from orgsync.core.errors import (
    AuthError,
    NotFoundError,
    RequestRejected,
    TargetError,
    TransientError,
)
from orgsync.core.model import (
    Capabilities,
    EmailKey,
    InviteStatus,
    RoleCatalog,
    TargetInvite,
    TargetMember,
    TargetSnapshot,
)
from orgsync.core.plan import (
    GroupOperationFields,
    Invite,
    Operation,
    RemoveMember,
    RevokeInvite,
    SetRole,
    SuspendMember,
)
from orgsync.http.client import QueryParams
from orgsync.http.paging import PageGuard
from orgsync.targets._common import (
    Item,
    check_changed,
    check_created,
    invite_to_adopt,
    newest_live_invite,
    segment,
    utcnow,
)
from orgsync.targets.http import ApiClient
from orgsync.targets.openai import wire
from orgsync.targets.openai.connector import CAPABILITIES
from orgsync.targets.openai.groups import OpenAIGroups, role_catalog
from orgsync.targets.openai.paging import list_by_next

__all__ = ["OpenAITarget"]

log = structlog.get_logger(__name__)

USERS: Final = "/organization/users"
INVITES: Final = "/organization/invites"
ROLES: Final = "/organization/roles"
ADMIN_KEYS: Final = "/organization/admin_api_keys"

LEGACY_PAGE_SIZE: Final = 100
"""The largest page the id-cursor lists accept (spec: 1-100)."""
ROLES_PAGE_SIZE: Final = 1000
"""The largest page the roles list accepts (spec: 0-1000)."""

ORG_ROLES: Final = RoleCatalog(
    order=("reader", "owner"),
    privileged=frozenset({"owner"}),
    invitable=frozenset({"owner", "reader"}),
)
"""The organization roles that `User.role` reports and that invitations and role updates
accept. `read` adds the catalog's RBAC roles as `assignable` (what groups can be given)
and its owner-level ones to `privileged`."""


_REDACTION = re.compile(r"(?s)(.*?)(?:\.{2,}|\u2026|\*{2,})(.*)")
"""How `redacted_value` hides the middle of a key: "sk-admin...def" (dots, an ellipsis or
asterisks), leaving a visible prefix and suffix."""


class OpenAITarget:
    """The `orgsync.core.ports.Target` for one OpenAI organization.

    Args:
        client: the HTTP client for the Admin API; the target owns it from now on and
            closes it in `close`.
        api_key: the admin key `client` authenticates with, used only to recognise its
            owner among the organization's admin keys; never logged or sent elsewhere.
        invite_projects: `(project id, project role)` pairs every invitation grants; empty
            means none (the field is still sent, so the default project is not implied).
        clock: the current time, for telling live invitations from expired ones.
        read_concurrency: threads reading the groups' members and roles.
    """

    def __init__(
        self,
        client: ApiClient,
        *,
        api_key: str,
        invite_projects: Sequence[tuple[str, str]] = (),
        clock: Callable[[], datetime] = utcnow,
        read_concurrency: int = 4,
    ) -> None:
        self._client = client
        self._groups = OpenAIGroups(client, read_concurrency=read_concurrency)
        self._key_matches: Callable[[str], bool] = lambda redacted: _redaction_matches(
            redacted, api_key
        )
        self._projects = tuple(
            wire.InviteProject(id=project, role=role) for project, role in invite_projects
        )
        self._clock = clock

    def __repr__(self) -> str:
        return f"OpenAITarget(client={self._client!r})"

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def organization(self) -> str | None:
        """The `openai-organization` header of the first answer this target read (see
        `orgsync.core.ports.IdentifiesOrganization`)."""
        return self._client.header_seen

    # ------------------------------------------------------------------ reading

    def read(self) -> TargetSnapshot:
        """Read every member, every outstanding invitation (`read_invitations`), the
        roles, every group with its members and role assignments, and the key owner."""
        members = tuple(self._members())
        invites = self.read_invitations()
        catalog = role_catalog(ORG_ROLES, self._list_roles())
        groups = self._groups.read()
        log.debug(
            "openai.read",
            system=self._client.system,
            members=len(members),
            invites=len(invites),
            groups=len(groups),
            assignable_roles=sorted(catalog.assignable),
        )
        return TargetSnapshot(
            members=members,
            invites=invites,
            roles=catalog,
            key_owner_id=self._key_owner_id(),
            groups=groups,
        )

    def read_people(
        self, emails: frozenset[EmailKey], member_ids: frozenset[str]
    ) -> TargetSnapshot:
        """The named people only (`orgsync.core.ports.ReadsPeople`): the users list
        filtered by `emails` (one request per 100 emails), each linked member id the
        filter did not return by `GET /users/{id}` (a person whose email changed), the
        roles and the key owner; no invitations (`read_invitations`), no groups."""
        found: dict[str, TargetMember] = {}
        ordered = sorted(emails)
        for start in range(0, len(ordered), LEGACY_PAGE_SIZE):
            batch = ordered[start : start + LEGACY_PAGE_SIZE]
            for member in self._members(emails=batch):
                found.setdefault(member.id, member)
        for member_id in sorted(member_ids - found.keys()):
            try:
                user = self._client.request_adapted(
                    "GET", f"{USERS}/{segment(member_id)}", wire.USER_FIELDS, idempotent=True
                )
            except NotFoundError:
                continue  # removed since orgsync linked it: absent, as in a full read
            member = _member(user)
            found[member.id] = member
        # The filter is the server's; the email match is ours (normalized), so that a
        # server matching loosely never brings a stranger into the slice.
        members = tuple(m for m in found.values() if m.email_key in emails or m.id in member_ids)
        catalog = role_catalog(ORG_ROLES, self._list_roles())
        log.debug(
            "openai.read_people",
            system=self._client.system,
            asked=len(emails) + len(member_ids),
            members=len(members),
        )
        return TargetSnapshot(
            members=members, invites=(), roles=catalog, key_owner_id=self._key_owner_id()
        )

    def read_invitations(self) -> tuple[TargetInvite, ...]:
        """Every outstanding invitation (pending or expired). The Admin API's list has no
        filter, so it is read whole, also for a targeted run.

        Accepted invitations are history (the list keeps them, the person is a member now)
        and are left out: counted as well, everyone who joined by invitation would count
        twice in the safety gate's managed population. Expired ones stay: renewing one
        deletes it first.
        """
        return tuple(
            invite
            for invite in map(_invite, self._list_by_id(INVITES, wire.InvitePage))
            if invite.status is not InviteStatus.ACCEPTED
        )

    def find_invite(self, email: str) -> TargetInvite | None:
        """The live (pending, unexpired) invitation of `email`, matched on the normalized
        email; the newest if the organization somehow holds several."""
        invites = map(_invite, self._list_by_id(INVITES, wire.InvitePage))
        return newest_live_invite(invites, email, self._clock())

    def find_existing(self, operation: Operation) -> str | None:
        """For an invitation: the id of a live one for that email with the same role. For a
        group creation: the id of a group with that name orgsync may own; for a group
        membership or role assignment: the group's id if it is already in place."""
        if isinstance(operation, GroupOperationFields):
            return self._groups.find_existing(operation)
        return invite_to_adopt(self.find_invite, operation)

    # ------------------------------------------------------------------ writing

    def execute(self, operation: Operation) -> str | None:
        """Perform one operation; return the new invitation's id for `invite`, the group's
        id for `create_group` and `adopt_group`."""
        if isinstance(operation, GroupOperationFields):
            return self._groups.execute(operation)
        if isinstance(operation, Invite):
            return self._invite(operation)
        if isinstance(operation, RevokeInvite):
            # An accepted invitation cannot be deleted; the API's refusal (a 4xx) surfaces
            # as RequestRejected with its message, which is the truth to report.
            self._delete(f"{INVITES}/{segment(operation.invite_id)}", wire.InviteDeleted)
            return None
        if isinstance(operation, SetRole):
            path = f"{USERS}/{segment(operation.user_id)}"
            user = self._client.request_model(
                "POST",
                path,
                wire.User,
                json=wire.UserRoleUpdate(role=operation.role).model_dump(),
                idempotent=True,  # setting the same role twice ends in the same state
            )
            check_changed(
                f"POST {path}", operation.user_id, user.id, {"role": (operation.role, user.role)}
            )
            return None
        if isinstance(operation, RemoveMember):
            self._delete(f"{USERS}/{segment(operation.user_id)}", wire.UserDeleted)
            return None
        if isinstance(operation, SuspendMember):
            raise RequestRejected("target cannot suspend members (OpenAI only removes them)")
        raise TargetError(f"operation {operation.op!r} is not supported by the OpenAI target")

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ internals

    def _invite(self, operation: Invite) -> str:
        if operation.replaces_invite_id is not None:
            # Already gone (expired and purged, or deleted by hand): nothing left to drop.
            with contextlib.suppress(NotFoundError):
                self._delete(
                    f"{INVITES}/{segment(operation.replaces_invite_id)}", wire.InviteDeleted
                )
        body = wire.InviteRequest(
            email=operation.email, role=operation.role, projects=list(self._projects)
        )
        # Not idempotent: a lost response may hide a created invitation, so the applier
        # retries only after `find_existing` has looked for it.
        created = self._client.request_model(
            "POST", INVITES, wire.Invite, json=body.model_dump(), idempotent=False
        )
        check_created(f"POST {INVITES}", "email", operation.email, created.email)
        # Made with another role (an organization policy lowering it), the invitation
        # would be replaced on every run, an e-mail each time: say so, loudly.
        check_changed(
            f"POST {INVITES}", created.id, created.id, {"role": (operation.role, created.role)}
        )
        return created.id

    def _delete(self, path: str, model: type[wire.Deletion]) -> None:
        result = self._client.request_model("DELETE", path, model, idempotent=True)
        if not result.deleted:
            raise TargetError(f"DELETE {path}: the server answered but reports nothing deleted")

    def _list_by_id(self, path: str, page_model: type[wire.CursorPage[Item]]) -> list[Item]:
        """Every item of an id-cursor list, in server order, each id once."""

        def fetch(params: QueryParams) -> tuple[list[Item], bool, str | None]:
            page = self._client.request_model(
                "GET", path, page_model, params=params, idempotent=True
            )
            return page.data, page.has_more, page.last_id

        return _walk_by_id(path, fetch)

    def _members(self, *, emails: Sequence[str] = ()) -> list[TargetMember]:
        """Every member, in server order, each id once; `emails` filters the users list
        (repeated `emails` parameters, as the spec's array). Each page is mapped to
        members as it comes (`wire.UserFieldsPage`): nothing else of it is kept."""

        def fetch(params: QueryParams) -> tuple[list[TargetMember], bool, str | None]:
            page = self._client.request_adapted(
                "GET",
                USERS,
                wire.USER_FIELDS_PAGE,
                params={**params, "emails": list(emails)} if emails else params,
                idempotent=True,
            )
            return list(map(_member, page["data"])), page["has_more"], page.get("last_id")

        return _walk_by_id(USERS, fetch)

    def _list_roles(self) -> list[wire.Role]:
        return list_by_next(self._client, ROLES, wire.RolePage, limit=ROLES_PAGE_SIZE)

    def _key_owner_id(self) -> str | None:
        """The id of the member who owns our admin key, or None (with a warning)."""
        try:
            keys = self._list_by_id(ADMIN_KEYS, wire.AdminApiKeyPage)
        except AuthError as error:
            if error.status != 403:
                raise
            # A restricted key may manage users without seeing admin keys; syncing stays
            # possible, but the key's owner is then unprotected, so say so loudly.
            log.warning(
                "openai.key_owner.unknown",
                system=self._client.system,
                reason="the key may not list admin keys",
                error=str(error),
            )
            return None
        owners = {
            key.owner.id for key in keys if key.owner and self._key_matches(key.redacted_value)
        }
        if len(owners) == 1:
            return owners.pop()
        log.warning(
            "openai.key_owner.unknown",
            system=self._client.system,
            reason="no admin key matches" if not owners else "several admin keys match",
            keys=len(keys),
        )
        return None


# --------------------------------------------------------------------------- mapping


def _walk_by_id(
    path: str, fetch: Callable[[QueryParams], tuple[list[Item], bool, str | None]]
) -> list[Item]:
    """Every item of the id-cursor list at `path`, in server order, each id once: `fetch`
    gives a page's items, `has_more` and `last_id` for the parameters of that page."""
    items: dict[str, Item] = {}
    after: str | None = None
    guard = PageGuard(f"GET {path}")
    while True:
        data, has_more, last_id = fetch({"limit": LEGACY_PAGE_SIZE, "after": after})
        for item in data:
            items.setdefault(item.id, item)
        if not has_more:
            return list(items.values())
        if not data:
            raise TransientError(f"GET {path}: has_more with an empty page (after {after!r})")
        cursor = last_id or data[-1].id
        guard.page(len(data), cursor)
        after = cursor


def _member(user: wire.UserFields) -> TargetMember:
    nested = user.get("user") or {}
    email = user.get("email") or nested.get("email")
    return TargetMember(
        # Interned, as the groups' member ids are: each user id is then one object, held
        # once however many groups list it, and compared by identity when planning.
        id=sys.intern(user["id"]),
        email=email or None,
        role=user.get("role"),
        name=user.get("name") or nested.get("name") or "",
        is_service_account=bool(user.get("is_service_account")),
        is_scim_managed=bool(user.get("is_scim_managed")),
    )


def _invite(invite: wire.Invite) -> TargetInvite:
    try:
        status = InviteStatus(invite.status)
    except ValueError:
        # Guessing would be worse than failing: reading an unknown status as "expired"
        # would renew it, as "gone" would invite the person twice.
        raise TargetError(
            f"invitation {invite.id} has an unknown status {invite.status!r}"
        ) from None
    return TargetInvite(
        id=invite.id,
        email=invite.email,
        role=invite.role,
        status=status,
        expires_at=(
            datetime.fromtimestamp(invite.expires_at, UTC)
            if invite.expires_at is not None
            else None
        ),
    )


def _redaction_matches(redacted: str, key: str) -> bool:
    """Whether `key` could be the key shown as `redacted` ("sk-admin...def")."""
    match = _REDACTION.fullmatch(redacted)
    if match is None:
        return bool(key) and redacted == key
    prefix, suffix = match.group(1), match.group(2)
    if not prefix and not suffix:
        return False  # nothing visible: it would match any key
    return len(key) >= len(prefix) + len(suffix) and key.startswith(prefix) and key.endswith(suffix)
