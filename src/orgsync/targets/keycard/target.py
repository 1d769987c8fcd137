"""A Keycard organization as an orgsync target: users, invitations, roles, soft disable.

What the Keycard API allows shapes everything here (research/target-apis.md §2):
- people join only by invitation (there is no user creation); an invitation cannot be
  edited, so a wrong-role or expired one is revoked and a new one created;
- organization users change role and status (`active` | `disabled`) with one PATCH, so
  `on_removal = "suspend"` disables and a returning person is re-enabled, never invited
  again; removal is a DELETE;
- there are no groups (`capabilities.groups` is false: the planner plans none and
  `validate` refuses group rules);
- lists are cursor pages (`after` = the previous `page_info.end_cursor` while
  `has_next_page`); a server that repeats a cursor or claims a next page after an empty
  one is refused rather than followed forever;
- a revoked invitation may stay listed (status `revoked`) or vanish: both mean gone;
- service accounts are principals of their own, not organization users, so the
  credential's identity is never among the members (`key_owner_id` is None).

Only `orgsync.core`, `orgsync.retrying`, `orgsync.http` and `orgsync.targets.http` are
imported here (besides this package).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, cast, get_args

import httpx
import structlog

from orgsync.core.errors import NotFoundError, TargetError, TransientError
from orgsync.core.model import (
    Capabilities,
    InviteStatus,
    RoleCatalog,
    TargetInvite,
    TargetMember,
    TargetSnapshot,
)
from orgsync.core.plan import (
    Invite,
    Operation,
    RemoveMember,
    RevokeInvite,
    SetRole,
    SuspendMember,
    UpdateUser,
)
from orgsync.http.auth import ClientCredentials, TokenEndpoint
from orgsync.http.paging import PageGuard
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings
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
from orgsync.targets.keycard import wire
from orgsync.targets.keycard.connector import CAPABILITIES

__all__ = ["CAPABILITIES", "KeycardTarget"]

log = structlog.get_logger(__name__)

PAGE_SIZE: Final = 100
"""Items asked for per page (the subset spec allows 1-1000 and defaults to 100)."""
TOKEN_PATH: Final = "/service-account-token"  # noqa: S105 - a path, not a secret


class KeycardTarget:
    """The `orgsync.core.ports.Target` for one Keycard organization.

    Args:
        client: the API client (its transport sets the bearer token); owned from now on.
        organization_id: the organization's id or label, as paths take either.
        clock: the current time, for telling live invitations from expired ones.
    """

    def __init__(
        self,
        client: ApiClient,
        *,
        organization_id: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._client = client
        self._org = f"/organizations/{segment(organization_id)}"
        self._organization_id = organization_id
        self._clock = clock

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        organization_id: str,
        client_id: str,
        client_secret: str,
        system: str,
        retry: RetrySettings,
        token_url: str | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
        requests_per_second: float | None = None,
        on_response: Callable[[str, int], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        interrupt: ReadInterrupt | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> KeycardTarget:
        """A target authenticating as a service account; `token_url` defaults to
        `base_url` + `/service-account-token`. `transport` replaces the network (tests)."""
        # OAuth client credentials, sent as HTTP Basic as Keycard's SDKs do; the token
        # endpoint has its own client, so the Basic credentials never ride on API calls.
        # A stop ends a token fetch even during the apply (which pauses the stop for the
        # calls in flight): the operation waiting for the token has not been sent.
        credentials = ClientCredentials(
            TokenEndpoint(
                token_url or base_url.rstrip("/") + TOKEN_PATH,
                system=system,
                error_parser=wire.error_message,
                hint=" (check client_id and the client secret)",
                timeout=timeout,
                verify=verify,
                transport=transport,
                interrupt=interrupt.unpausable() if interrupt is not None else None,
                on_response=on_response,
            ),
            client_id=client_id,
            client_secret=client_secret,
        )
        client = ApiClient(
            base_url,
            auth=credentials,
            system=system,
            timeout=timeout,
            verify=verify,
            requests_per_second=requests_per_second,
            retry=retry,
            user_agent="orgsync",
            transport=transport,
            on_response=on_response,
            interrupt=interrupt,
            error_parser=wire.error_message,
        )
        return cls(client, organization_id=organization_id, clock=clock)

    def __repr__(self) -> str:
        return f"KeycardTarget(client={self._client!r}, organization={self._org!r})"

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def organization(self) -> str:
        """The organization every path names, which the API answered for: a base URL
        or credential change keeps it (see `orgsync.core.ports.IdentifiesOrganization`)."""
        return self._organization_id

    # ------------------------------------------------------------------ reading

    def read(self) -> TargetSnapshot:
        """Every organization user, every invitation still pending or expired, the roles."""
        members = tuple(
            _member(u) for u in self._walk("/users", wire.CursorPage[wire.OrganizationUser])
        )
        invites = tuple(
            invite
            for invite in map(_invite, self._walk("/invitations", wire.CursorPage[wire.Invitation]))
            if invite is not None
        )
        roles = self._roles()
        log.debug(
            "keycard.read",
            system=self._client.system,
            members=len(members),
            disabled=sum(1 for m in members if not m.active),
            invites=len(invites),
        )
        return TargetSnapshot(members=members, invites=invites, roles=roles, key_owner_id=None)

    def find_invite(self, email: str) -> TargetInvite | None:
        """The live invitation of `email` (the newest, should there be several)."""
        invites = map(_invite, self._walk("/invitations", wire.CursorPage[wire.Invitation]))
        return newest_live_invite((i for i in invites if i is not None), email, self._clock())

    def find_existing(self, operation: Operation) -> str | None:
        """For an invitation: a live one for that email with the same role (to adopt)."""
        return invite_to_adopt(self.find_invite, operation)

    # ------------------------------------------------------------------ writing

    def execute(self, operation: Operation) -> str | None:
        """Perform one operation; return the new invitation's id for `invite`."""
        if isinstance(operation, Invite):
            return self._invite(operation)
        if isinstance(operation, RevokeInvite):
            self._delete(f"/invitations/{segment(operation.invite_id)}")
            return None
        if isinstance(operation, SetRole):
            self._update(operation.user_id, wire.UserUpdate(role=_role(operation.role)))
            return None
        if isinstance(operation, SuspendMember):
            self._update(operation.user_id, wire.UserUpdate(status="disabled"))
            return None
        if isinstance(operation, UpdateUser):
            status = "active" if operation.active else "disabled"
            self._update(operation.user_id, wire.UserUpdate(status=status))
            return None
        if isinstance(operation, RemoveMember):
            self._delete(f"/users/{segment(operation.user_id)}")
            return None
        raise TargetError(
            f"operation {operation.op!r} is not supported by the Keycard target "
            "(it has no groups and creates no users)"
        )

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ internals

    def _invite(self, operation: Invite) -> str:
        if operation.replaces_invite_id is not None:
            # Gone already (revoked by hand, purged after expiry): nothing left to drop.
            with contextlib.suppress(NotFoundError):
                self._delete(f"/invitations/{segment(operation.replaces_invite_id)}")
        body = wire.InvitationCreate(email=operation.email, role=_role(operation.role))
        # Not idempotent: a lost response may hide a created invitation, so the applier
        # retries only after `find_existing` has looked for it.
        created = self._client.request_model(
            "POST", f"{self._org}/invitations", wire.Invitation, json=body.model_dump(),
            idempotent=False,
        )  # fmt: skip
        check_created(f"POST {self._org}/invitations", "email", operation.email, created.email)
        # Made with another role (an organization policy lowering it), the invitation
        # would be replaced on every run, an e-mail each time: say so, loudly.
        check_changed(
            f"POST {self._org}/invitations",
            created.id,
            created.id,
            {"role": (operation.role, created.role)},
        )
        return created.id

    def _update(self, user_id: str, body: wire.UserUpdate) -> None:
        path = f"{self._org}/users/{segment(user_id)}"
        changes = body.model_dump(exclude_none=True)
        user = self._client.request_model(
            "PATCH",
            path,
            wire.OrganizationUser,
            json=changes,
            idempotent=True,  # setting a role or status twice ends in the same state
        )
        answered = {"role": user.role, "status": user.status}
        check_changed(
            f"PATCH {path}",
            user_id,
            user.id,
            {name: (value, answered[name]) for name, value in changes.items()},
        )

    def _delete(self, path: str) -> None:
        self._client.request("DELETE", f"{self._org}{path}", idempotent=True)

    def _walk(self, path: str, model: type[wire.CursorPage[Item]]) -> list[Item]:
        """Every item of a cursor list, each id once, or an error: never a partial list."""
        items: dict[str, Item] = {}
        after: str | None = None
        guard = PageGuard(f"GET {self._org}{path}")
        while True:
            page = self._client.request_model(
                "GET",
                f"{self._org}{path}",
                model,
                params={"limit": PAGE_SIZE, "after": after},
                idempotent=True,
            )
            for item in page.items:
                items.setdefault(item.id, item)
            if not page.page_info.has_next_page:
                return list(items.values())
            cursor = page.page_info.end_cursor
            if not page.items or not cursor:
                raise TransientError(
                    f"GET {self._org}{path}: has_next_page without items or end_cursor"
                )
            guard.page(len(page.items), cursor)
            after = cursor

    def _roles(self) -> RoleCatalog:
        listed = self._client.request_model(
            "GET",
            f"{self._org}/roles",
            wire.RoleList,
            params={"scope": "organization"},
            idempotent=True,
        )
        names = {r.name for r in listed.items if r.scope == "organization"}
        unknown = sorted(names - set(wire.ORG_ROLES))
        if unknown:
            # Their rank is unknown, so "highest role wins" cannot place them; rules that
            # name them are refused by the role-catalog check with this list.
            log.warning("keycard.roles.unranked", system=self._client.system, roles=unknown)
        order = tuple(r for r in wire.ORG_ROLES if r in names)
        if not order:
            raise TargetError(f"GET {self._org}/roles: no organization roles listed")
        return RoleCatalog(
            order=order,
            privileged=frozenset({"org_admin"}) & frozenset(order),
            invitable=frozenset(order),
        )


# --------------------------------------------------------------------------- mapping


def _member(user: wire.OrganizationUser) -> TargetMember:
    if user.status not in ("active", "disabled"):
        # Reading an unknown status as active would re-enable nobody but could make the
        # planner skip a suspension; as disabled, it would "re-enable" them. Refuse.
        raise TargetError(f"organization user {user.id} has an unknown status {user.status!r}")
    return TargetMember(
        id=user.id,
        email=user.email or None,
        role=user.role,
        active=user.status == "active",
    )


def _invite(invitation: wire.Invitation) -> TargetInvite | None:
    if invitation.status == "revoked":
        return None  # gone, even if the API still lists it
    try:
        status = InviteStatus(invitation.status)
    except ValueError:
        raise TargetError(
            f"invitation {invitation.id} has an unknown status {invitation.status!r}"
        ) from None
    expires = invitation.expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)  # RFC 3339 without offset: the API means UTC
    return TargetInvite(
        id=invitation.id,
        email=invitation.email,
        role=invitation.role,
        status=status,
        expires_at=expires,
    )


def _role(role: str) -> wire.OrgRole:
    for known in get_args(wire.OrgRole):
        if role == known:
            return cast(wire.OrgRole, known)
    raise TargetError(f"{role!r} is not a Keycard organization role ({wire.ORG_ROLES})")
