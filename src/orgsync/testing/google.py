"""A local fake of Google Workspace: the Admin SDK Directory and Reports APIs, and OAuth.

Owns, on one loopback server: the OAuth token endpoint (`POST /token`) that accepts a
service account's RS256-signed JWT (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`)
when the key is registered, the claims are sound (`iss`, `aud` = this endpoint, an `exp`
at most an hour after `iat`) and domain-wide delegation covers the asked scopes for the
impersonated `sub`; and the Directory listings `users.list`, `groups.list`,
`members.list` under `/admin/directory/v1` with `customer`, `maxResults` (500 for users,
200 for groups and members), opaque `pageToken`/`nextPageToken`, scope checks per method,
and the list key left out of an empty page (as Google does). Errors use Google's body
(`error.code`, `error.message`, `error.errors[].reason`, `error.status`) and the OAuth one
(`error`, `error_description`).

The Reports API's `activities.list`
(`GET /admin/reports/v1/activity/users/{userKey}/applications/{applicationName}`) serves
the audit log the seeding methods write as they change the account, as Google's Admin
console and Directory API do: `admin` activities of type `USER_SETTINGS` (`CREATE_USER`,
`DELETE_USER`, `SUSPEND_USER`, `UNSUSPEND_USER`, `RENAME_USER` for a new primary address,
`CHANGE_FIRST_NAME` / `CHANGE_LAST_NAME`) and `GROUP_SETTINGS` (`CREATE_GROUP`,
`DELETE_GROUP`, `CHANGE_GROUP_NAME`, `ADD_GROUP_MEMBER`, `REMOVE_GROUP_MEMBER`), and
`groups_enterprise` activities (`add_member`, `remove_member`) for a membership a group's
owner changes outside the Admin console (`add_member(..., by_owner=True)`). It takes
`startTime`, `endTime` (RFC 3339; a start after the end or after now is refused with 400,
as the reference says the API "returns an error"), `maxResults` (1-1000, default 1000),
`pageToken`/`nextPageToken`, answers newest first, leaves `items` out of an empty page,
keeps 180 days (a start older than that returns the last 180 days, as documented), needs
the scope `admin.reports.audit.readonly` (403 `insufficientPermissions` otherwise; the
token endpoint refuses a token for it with `unauthorized_client` when it is not
delegated) and an impersonated admin. `activity_lag` delays when a recorded activity
becomes visible ("Data retention and lag times": admin log events arrive in about a couple
of minutes, and in rare cases later). Activities are stamped with `clock()` (settable; the
`Date` of every response is read from it too).

Test switches: `throttle` (every Nth Directory request answers 403 `userRateLimitExceeded`,
Google's usual way, or 429 `rateLimitExceeded` with `Retry-After`), `failure` (one page of
one listing answers 503 forever, or its link carries a page token the server rejects, or
points back to the page before) and the transport faults of `orgsync.testing.faults`.
Every request is recorded.

Shapes follow the Directory v1 discovery document (revision 20260421: schemas `Users`,
`User`, `UserName`, `Groups`, `Group`, `Members`, `Member`) and developers.google.com for
the service-account token exchange; the Reports API from its reference pages:
https://developers.google.com/workspace/admin/reports/v1/reference/activities/list (the
request, `Activities`/`Activity` shapes), .../reports/v1/appendix/activity/admin-user-settings
and .../admin-group-settings (event names and parameters),
.../reports/v1/appendix/activity/groups-enterprise, and
https://support.google.com/a/answer/7061566 (lag and retention). tests/data holds no
OpenAPI description of the Reports API to validate against. Imports nothing from orgsync outside
``orgsync.testing``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orgsync.testing._server import LoopbackEmulator
from orgsync.testing._throttle import Throttle
from orgsync.testing.faults import FaultInjector, Faults
from orgsync.testing.pagination import (
    Listing,
    PageFailure,
    failure_for,
    next_offset_token,
    token_offset,
)
from orgsync.testing.tables import Table

__all__ = [
    "DELEGABLE_SCOPES",
    "DIRECTORY_SCOPES",
    "REPORTS_SCOPE",
    "GoogleEmulator",
    "PageFailure",
    "Throttle",
]

_AUTH = "https://www.googleapis.com/auth/admin.directory."
REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
DIRECTORY_SCOPES = frozenset(
    _AUTH + s
    for s in (
        "user",
        "user.readonly",
        "group",
        "group.readonly",
        "group.member",
        "group.member.readonly",
    )
)
DELEGABLE_SCOPES = DIRECTORY_SCOPES | {REPORTS_SCOPE}
"""What `register_service_account` delegates unless told otherwise; `DIRECTORY_SCOPES`
alone is an install that never delegated the Reports API's scope."""
_METHOD_SCOPES = {
    "users": frozenset({_AUTH + "user", _AUTH + "user.readonly"}),
    "groups": frozenset({_AUTH + "group", _AUTH + "group.readonly"}),
    "members": frozenset(
        {
            _AUTH + "group",
            _AUTH + "group.readonly",
            _AUTH + "group.member",
            _AUTH + "group.member.readonly",
        }
    ),
    "activities": frozenset({REPORTS_SCOPE}),
}
_MAX_RESULTS = {"users": (100, 500), "groups": (200, 200), "members": (200, 200)}
"""Per listing: the default and the largest `maxResults`."""
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PREFIX = "/admin/directory/v1"
REPORTS_PREFIX = "/admin/reports/v1"
REPORTS_RETENTION = timedelta(days=180)
"""Admin and Groups Enterprise log events are kept six months ("Data retention and lag
times"); `activities.list` "returns ... the most recent 180 days" for an older start."""
REPORTS_MAX_RESULTS = 1000
APPLICATIONS = frozenset(
    {
        "access_transparency", "admin", "calendar", "chat", "chrome", "context_aware_access",
        "data_studio", "drive", "gcp", "gplus", "groups", "groups_enterprise", "jamboard",
        "keep", "login", "meet", "mobile", "rules", "saml", "token", "user_accounts",
    }
)  # fmt: skip
"""The documented `applicationName` values; the emulator records `admin` and
`groups_enterprise` activities only, the others answer an empty report."""

MemberType = Literal["USER", "GROUP", "CUSTOMER"]


def _error(status: int, message: str, reason: str, state: str) -> JSONResponse:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": state,
        }
    }
    return JSONResponse(body, status_code=status)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _fault_body(kind: str) -> bytes:
    if kind in ("429", "rate_limit"):
        triple = (429, "Quota exceeded.", "rateLimitExceeded", "RESOURCE_EXHAUSTED")
    elif kind == "timeout":
        triple = (504, "Deadline exceeded.", "backendError", "DEADLINE_EXCEEDED")
    else:
        triple = (500, "Internal error encountered.", "backendError", "INTERNAL")
    status, message, reason, state = triple
    return json.dumps(
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
                "status": state,
            }
        }
    ).encode()


def _etag(*parts: object) -> str:
    digest = hashlib.sha1("/".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()
    return f'"{digest[:27]}/{digest[27:40]}"'


_Row = TypeVar("_Row")


def _by_id(record: dict[str, Any]) -> str:
    return str(record["id"])


@dataclass
class _Grant:
    subject: str | None
    scopes: frozenset[str]
    expires: float


@dataclass(frozen=True)
class _Activity:
    """One audit log record: when it happened, from when `activities.list` shows it."""

    time: datetime
    visible: datetime
    document: dict[str, Any]


def _rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_rfc3339(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


class GoogleEmulator(LoopbackEmulator):
    """The emulated Workspace account. ``with GoogleEmulator() as google: ...``

    Register a service account with `register_service_account` (its public key and the
    scopes delegated to it), seed with `add_user`, `add_group`, `add_member`, then point a
    client at `directory_url` and `token_url`. Only `admins` may be impersonated.
    """

    def __init__(
        self,
        *,
        customer_id: str = "C01emu1at",
        domain: str = "example.com",
        admins: tuple[str, ...] = ("admin@example.com",),
        token_lifetime: int = 3599,
        faults: Faults | None = None,
        activity_lag: timedelta = timedelta(0),
    ) -> None:
        self.customer_id = customer_id
        self.domain = domain
        self.admins = set(admins)
        self.token_lifetime = token_lifetime
        self.throttle: Throttle | None = None
        self.failure: PageFailure | None = None
        self.tokens_issued = 0
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}
        self._grants: dict[str, _Grant] = {}
        # Kept in list (id) order between requests: a page never sorts the table.
        self._users: Table[dict[str, Any]] = Table(_by_id)
        self._groups: Table[dict[str, Any]] = Table(_by_id)
        self._members: dict[str, list[tuple[MemberType, str]]] = {}
        self._counter = 0
        self._directory_requests = 0
        # Requests refused by `throttle`, served on their next try: the client did what
        # Retry-After asked, and a retry that could draw the refusal again and again from
        # other threads' traffic would make the test depend on scheduling.
        self._throttled: set[str] = set()
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.activity_lag = activity_lag
        """How long after a change its activity appears in `activities.list`."""
        self.report_readers: frozenset[str] | None = None
        """The admins whose role lets them read reports (None: every admin); another
        impersonated admin gets 403 from the Reports API, as without the Reports
        privilege."""
        self._activities: list[_Activity] = []
        self._qualifier = 0
        injector = FaultInjector(self._build_app(), error_body=_fault_body, faults=faults)
        # Google's Date is its clock's (a test moving Google's time moves what probes see).
        super().__init__(injector, name="google-emulator", clock=lambda: self.clock())  # noqa: PLW0108 (tests reassign self.clock)

    # -- audit log -------------------------------------------------------------------

    def _record(self, application: str, kind: str, name: str, parameters: dict[str, str]) -> None:
        """Log one activity, by the first admin (the lock is held by the caller)."""
        now = self.clock()
        self._qualifier += 1
        actor = min(self.admins) if self.admins else f"admin@{self.domain}"
        document = {
            "kind": "admin#reports#activity",
            "id": {
                "time": _rfc3339(now),
                "uniqueQualifier": str(-(10**18) + self._qualifier * 7919),
                "applicationName": application,
                "customerId": self.customer_id,
            },
            "etag": _etag("activity", application, self._qualifier),
            "actor": {"callerType": "USER", "email": actor, "profileId": "100000000000000000001"},
            "ipAddress": "127.0.0.1",
            "events": [
                {
                    "type": kind,
                    "name": name,
                    "parameters": [{"name": k, "value": v} for k, v in parameters.items()],
                }
            ],
        }
        self._activities.append(_Activity(now, now + self.activity_lag, document))

    def _user_event(self, name: str, user_id: str, **more: str) -> None:
        email = self._users[user_id]["primaryEmail"]
        self._record("admin", "USER_SETTINGS", name, {"USER_EMAIL": email, **more})

    def _group_event(self, name: str, group_id: str, **more: str) -> None:
        email = self._groups[group_id]["email"]
        self._record("admin", "GROUP_SETTINGS", name, {"GROUP_EMAIL": email, **more})

    def _member_event(
        self, added: bool, group_id: str, kind: str, member: str, owner: bool
    ) -> None:
        if kind == "USER":
            address = self._users[member]["primaryEmail"]
        elif kind == "GROUP":
            address = self._groups[member]["email"]
        else:
            address = self.customer_id
        if owner:
            self._record(
                "groups_enterprise",
                "moderator_action",
                "add_member" if added else "remove_member",
                {
                    "group_id": self._groups[group_id]["email"],
                    "member_id": address,
                    "member_role": "member",
                    "member_type": kind.lower(),
                    "namespace": "",
                },
            )
            return
        name = "ADD_GROUP_MEMBER" if added else "REMOVE_GROUP_MEMBER"
        self._group_event(name, group_id, USER_EMAIL=address)

    @property
    def activities(self) -> list[dict[str, Any]]:
        """Every recorded activity, oldest first, visible or not (for tests)."""
        with self._lock:
            return [a.document for a in self._activities]

    # -- seeding ---------------------------------------------------------------------

    def register_service_account(
        self,
        client_email: str,
        private_key_id: str,
        public_key_pem: str,
        *,
        delegated_scopes: frozenset[str] = DELEGABLE_SCOPES,
    ) -> None:
        """Trust this key, with domain-wide delegation of `delegated_scopes`."""
        with self._lock:
            self._keys[(client_email, private_key_id)] = (public_key_pem, delegated_scopes)

    def add_user(
        self,
        *,
        primary_email: str,
        given_name: str,
        family_name: str,
        suspended: bool = False,
        archived: bool = False,
    ) -> str:
        with self._lock:
            self._counter += 1
            user_id = f"1{self._counter:020d}"
            user: dict[str, Any] = {
                "kind": "admin#directory#user",
                "id": user_id,
                "etag": _etag("user", user_id),
                "primaryEmail": primary_email,
                "name": {
                    "givenName": given_name,
                    "familyName": family_name,
                    "fullName": f"{given_name} {family_name}".strip(),
                },
                "isAdmin": primary_email in self.admins,
                "isDelegatedAdmin": False,
                "lastLoginTime": "1970-01-01T00:00:00.000Z",
                "creationTime": "2024-01-01T00:00:00.000Z",
                "agreedToTerms": True,
                "suspended": suspended,
                "archived": archived,
                "changePasswordAtNextLogin": False,
                "ipWhitelisted": False,
                "emails": [{"address": primary_email, "primary": True}],
                "customerId": self.customer_id,
                "orgUnitPath": "/",
                "isMailboxSetup": True,
                "isEnrolledIn2Sv": False,
                "isEnforcedIn2Sv": False,
                "includeInGlobalAddressList": True,
            }
            if suspended:
                user["suspensionReason"] = "ADMIN"
            self._users[user_id] = user
            self._user_event("CREATE_USER", user_id)
            if suspended:
                self._user_event("SUSPEND_USER", user_id)
            return user_id

    def set_suspended(self, user_id: str, suspended: bool) -> None:
        with self._lock:
            user = self._users[user_id]
            if user["suspended"] == suspended:
                return
            user["suspended"] = suspended
            self._user_event("SUSPEND_USER" if suspended else "UNSUSPEND_USER", user_id)

    def set_name(self, user_id: str, *, given_name: str, family_name: str) -> None:
        with self._lock:
            name = self._users[user_id]["name"]
            for key, value, event in (
                ("givenName", given_name, "CHANGE_FIRST_NAME"),
                ("familyName", family_name, "CHANGE_LAST_NAME"),
            ):
                if name[key] != value:
                    old, name[key] = name[key], value
                    self._user_event(event, user_id, OLD_VALUE=old, NEW_VALUE=value)
            name["fullName"] = f"{given_name} {family_name}".strip()

    def add_group(self, name: str, *, email: str | None = None, description: str = "") -> str:
        with self._lock:
            self._counter += 1
            group_id = f"0{self._counter:014x}"
            address = email or f"{name.lower().replace(' ', '-')}@{self.domain}"
            self._groups[group_id] = {
                "kind": "admin#directory#group",
                "id": group_id,
                "etag": _etag("group", group_id),
                "email": address,
                "name": name,
                "description": description,
                "adminCreated": True,
                "nonEditableAliases": [address.replace("@", "@test-google-a.")],
            }
            self._members[group_id] = []
            self._group_event("CREATE_GROUP", group_id)
            return group_id

    def add_member(self, group_id: str, member_id: str, *, by_owner: bool = False) -> None:
        """Add a user or a group (nesting; cycles are not prevented here, unlike Google).
        `by_owner`: a group owner did it in Google Groups (a `groups_enterprise` activity),
        not an administrator (an `admin` one)."""
        with self._lock:
            kind: MemberType = "USER" if member_id in self._users else "GROUP"
            if kind == "GROUP" and member_id not in self._groups:
                raise KeyError(f"no user or group {member_id}")
            if (kind, member_id) not in self._members[group_id]:
                self._members[group_id].append((kind, member_id))
                self._member_event(True, group_id, kind, member_id, by_owner)

    def remove_member(self, group_id: str, member_id: str, *, by_owner: bool = False) -> None:
        with self._lock:
            gone = [m for m in self._members[group_id] if m[1] == member_id]
            self._members[group_id] = [m for m in self._members[group_id] if m[1] != member_id]
            for kind, _ in gone:
                self._member_event(False, group_id, kind, member_id, by_owner)

    def delete_user(self, user_id: str) -> None:
        """Delete a user and its memberships, as Google does (one DELETE_USER activity:
        the memberships go with the user, unlogged)."""
        with self._lock:
            self._user_event("DELETE_USER", user_id)
            del self._users[user_id]
            for group_id, members in self._members.items():
                self._members[group_id] = [m for m in members if m[1] != user_id]

    def set_primary_email(self, user_id: str, email: str) -> None:
        with self._lock:
            user = self._users[user_id]
            self._user_event("RENAME_USER", user_id, NEW_VALUE=email)
            user["primaryEmail"] = email
            user["emails"] = [{"address": email, "primary": True}]

    def rename_group(self, group_id: str, name: str) -> None:
        with self._lock:
            group = self._groups[group_id]
            if group["name"] != name:
                old, group["name"] = group["name"], name
                self._group_event("CHANGE_GROUP_NAME", group_id, OLD_VALUE=old, NEW_VALUE=name)

    def delete_group(self, group_id: str) -> None:
        """Delete a group; it leaves every group it was nested in, unlogged."""
        with self._lock:
            self._group_event("DELETE_GROUP", group_id)
            del self._groups[group_id]
            del self._members[group_id]
            for other, members in self._members.items():
                self._members[other] = [m for m in members if m[1] != group_id]

    def add_everyone(self, group_id: str) -> None:
        """Make the whole account a member (a member of type CUSTOMER)."""
        with self._lock:
            self._members[group_id].append(("CUSTOMER", self.customer_id))
            self._member_event(True, group_id, "CUSTOMER", self.customer_id, False)

    def expire_tokens(self) -> None:
        with self._lock:
            self._grants.clear()

    # -- lifecycle -------------------------------------------------------------------

    def _public_url(self, origin: str) -> str:
        return f"{origin}{PREFIX}"

    @property
    def directory_url(self) -> str:
        return f"{self.origin}{PREFIX}"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/token"

    @property
    def reports_url(self) -> str:
        return f"{self.origin}{REPORTS_PREFIX}"

    # -- HTTP: token endpoint --------------------------------------------------------

    def _build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route(f"{PREFIX}/users", self._list_users, methods=["GET"]),
                Route(f"{PREFIX}/groups", self._list_groups, methods=["GET"]),
                Route(
                    f"{PREFIX}/groups/{{group_key}}/members", self._list_members, methods=["GET"]
                ),
                Route(
                    f"{REPORTS_PREFIX}/activity/users/{{user_key}}/applications/{{application}}",
                    self._list_activities,
                    methods=["GET"],
                ),
            ]
        )

    async def _token(self, request: Request) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart.
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type: ")
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _oauth_error(400, "invalid_grant", "Invalid JWT: could not be parsed.")
        issuer = unverified.get("iss")
        with self._lock:
            known = self._keys.get((str(issuer), str(header.get("kid"))))
        if known is None:
            return _oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        public_key, delegated = known
        try:
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=str(request.url),
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: {exc}")
        if not 0 < int(claims["exp"]) - int(claims["iat"]) <= 3600:
            return _oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return _oauth_error(400, "invalid_scope", "Empty or missing scope not allowed.")
        subject = claims.get("sub")
        if subject is not None and (subject not in self.admins or not scopes <= delegated):
            return _oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or "
                "client not authorized for any of the scopes requested.",
            )
        token = "ya29.emu-" + secrets.token_urlsafe(32)
        with self._lock:
            self._grants[token] = _Grant(subject, scopes, time.monotonic() + self.token_lifetime)
            self.tokens_issued += 1
        return JSONResponse(
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    # -- HTTP: Directory -------------------------------------------------------------

    def _gate(self, request: Request, listing: str) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            grant = self._grants.get(token) if scheme.lower() == "bearer" else None
            if grant is not None and grant.expires <= time.monotonic():
                del self._grants[token]
                grant = None
            self._directory_requests += 1
            count = self._directory_requests
            retried = str(request.url) in self._throttled
            self._throttled.discard(str(request.url))
        if grant is None:
            return _error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                "authError",
                "UNAUTHENTICATED",
            )
        if grant.subject is None:
            # The service account itself, not a delegated admin: no directory access.
            return _error(
                403, "Not Authorized to access this resource/api", "forbidden", "PERMISSION_DENIED"
            )
        if not grant.scopes & _METHOD_SCOPES[listing]:
            return _error(
                403,
                "Request had insufficient authentication scopes.",
                "insufficientPermissions",
                "PERMISSION_DENIED",
            )
        throttle = self.throttle
        if throttle is not None and count % throttle.every == 0 and not retried:
            with self._lock:
                self._throttled.add(str(request.url))
            if throttle.status == 429:
                response = _error(429, "Quota exceeded.", "rateLimitExceeded", "RESOURCE_EXHAUSTED")
                response.headers["Retry-After"] = str(throttle.seconds)
                return response
            return _error(
                403,
                "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per "
                "user'.",
                "userRateLimitExceeded",
                "PERMISSION_DENIED",
            )
        return None

    def _customer_ok(self, request: Request) -> Response | None:
        customer = request.query_params.get("customer")
        domain = request.query_params.get("domain")
        if customer is None and domain is None:
            return _error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT")
        if customer is not None and customer not in ("my_customer", self.customer_id):
            return _error(404, "Resource Not Found: customer", "notFound", "NOT_FOUND")
        if customer is None and domain != self.domain:
            return _error(
                403, "Not Authorized to access this resource/api", "forbidden", "PERMISSION_DENIED"
            )
        return None

    async def _list_users(self, request: Request) -> Response:
        refused = self._gate(request, "users") or self._customer_ok(request)
        if refused is not None:
            return refused
        with self._lock:
            return self._page(
                request, "users", self._users.rows(), kind="admin#directory#users", render=dict
            )

    async def _list_groups(self, request: Request) -> Response:
        refused = self._gate(request, "groups") or self._customer_ok(request)
        if refused is not None:
            return refused
        with self._lock:
            return self._page(
                request,
                "groups",
                self._groups.rows(),
                kind="admin#directory#groups",
                render=self._render_group,
            )

    def _render_group(self, group: dict[str, Any]) -> dict[str, Any]:
        count = sum(1 for kind, _ in self._members[group["id"]] if kind == "USER")
        return {**group, "directMembersCount": str(count)}

    async def _list_members(self, request: Request) -> Response:
        refused = self._gate(request, "members")
        if refused is not None:
            return refused
        key = request.path_params["group_key"]
        with self._lock:
            group_id = (
                key
                if key in self._groups
                else next((g for g, doc in self._groups.items() if doc["email"] == key), None)
            )
            if group_id is None:
                return _error(404, "Resource Not Found: groupKey", "notFound", "NOT_FOUND")
            return self._page(
                request,
                "members",
                self._members[group_id],
                kind="admin#directory#members",
                group=group_id,
                render=lambda member: self._render_member(*member),
            )

    def _render_member(self, kind: MemberType, member_id: str) -> dict[str, Any]:
        member: dict[str, Any] = {
            "kind": "admin#directory#member",
            "etag": _etag("member", kind, member_id),
            "id": member_id,
            "role": "MEMBER",
            "type": kind,
        }
        if kind == "USER":
            member["email"] = self._users[member_id]["primaryEmail"]
            member["status"] = "SUSPENDED" if self._users[member_id]["suspended"] else "ACTIVE"
        elif kind == "GROUP":
            member["email"] = self._groups[member_id]["email"]
        return member

    def _page(
        self,
        request: Request,
        listing: Listing,
        rows: Sequence[_Row],
        *,
        kind: str,
        render: Callable[[_Row], dict[str, Any]],
        group: str | None = None,
    ) -> Response:
        """One page of `rows` (in list order); only the page is rendered."""
        default, largest = _MAX_RESULTS[listing]
        raw = request.query_params.get("maxResults")
        size = default
        if raw is not None:
            if not raw.isdigit() or not 1 <= int(raw) <= largest:
                return _error(
                    400,
                    f"Invalid value '{raw}'. Values must be within the range: [1, {largest}]",
                    "invalid",
                    "INVALID_ARGUMENT",
                )
            size = int(raw)
        offset = 0
        token = request.query_params.get("pageToken")
        if token:
            decoded = token_offset(token, listing, group)
            if decoded is None:
                return _error(400, "Invalid Input: pageToken", "invalid", "INVALID_ARGUMENT")
            offset = decoded
        page_no = offset // size + 1
        failure = failure_for(self.failure, listing, group)
        if failure is not None and failure.mode == "error" and page_no == failure.page:
            return _error(
                503, "The service is currently unavailable.", "backendError", "UNAVAILABLE"
            )
        chunk = [render(r) for r in rows[offset : offset + size]]
        body: dict[str, Any] = {"kind": kind, "etag": _etag(kind, offset, len(rows))}
        if chunk:
            # An empty list is left out of the answer altogether.
            body[listing] = chunk
        if offset + len(chunk) < len(rows):
            body["nextPageToken"] = next_offset_token(
                failure, listing, group, offset=offset, taken=len(chunk), page_no=page_no
            )
        return JSONResponse(body)

    # -- HTTP: Reports ---------------------------------------------------------------

    async def _list_activities(self, request: Request) -> Response:
        refused = self._gate(request, "activities")
        if refused is not None:
            return refused
        _, _, bearer = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            grant = self._grants.get(bearer)
            readers = self.report_readers
        if grant is not None and readers is not None and grant.subject not in readers:
            return _error(
                403, "Not Authorized to access this resource/api", "forbidden", "PERMISSION_DENIED"
            )
        application = request.path_params["application"]
        if application not in APPLICATIONS:
            return _error(
                400,
                f"Invalid value '{application}' for applicationName",
                "invalid",
                "INVALID_ARGUMENT",
            )
        user_key = request.path_params["user_key"]
        query = request.query_params
        raw_size = query.get("maxResults")
        size = REPORTS_MAX_RESULTS
        if raw_size is not None:
            if not raw_size.isdigit() or not 1 <= int(raw_size) <= REPORTS_MAX_RESULTS:
                return _error(
                    400,
                    f"Invalid value '{raw_size}'. Values must be within the range: "
                    f"[1, {REPORTS_MAX_RESULTS}]",
                    "invalid",
                    "INVALID_ARGUMENT",
                )
            size = int(raw_size)
        now = self.clock()
        bounds: dict[str, datetime] = {}
        for name in ("startTime", "endTime"):
            raw = query.get(name)
            if raw is None:
                continue
            moment = _parse_rfc3339(raw)
            if moment is None:
                return _error(
                    400, f"Invalid value for: {name} ({raw})", "invalid", "INVALID_ARGUMENT"
                )
            bounds[name] = moment
        end = bounds.get("endTime", now)
        start = bounds.get("startTime")
        if start is not None and (start > end or start > now):
            # The reference: the start "must be before the endTime (if specified) and
            # the current time when the request is made, or the API returns an error".
            return _error(
                400,
                "Invalid request: Start time is after end time.",
                "invalid",
                "INVALID_ARGUMENT",
            )
        oldest = now - REPORTS_RETENTION
        start = oldest if start is None or start < oldest else start
        offset = 0
        token = query.get("pageToken")
        if token:
            decoded = _activity_token(token)
            if decoded is None:
                return _error(400, "Invalid Input: pageToken", "invalid", "INVALID_ARGUMENT")
            offset, pinned = decoded
            # The first page's request time holds for the rest: later pages do not shift.
            end = min(end, pinned)
        with self._lock:
            shown = [
                a.document
                for a in reversed(self._activities)
                if a.document["id"]["applicationName"] == application
                and start <= a.time <= end
                and a.visible <= now
                and (user_key == "all" or a.document["actor"]["email"] == user_key)
            ]
        chunk = shown[offset : offset + size]
        body: dict[str, Any] = {
            "kind": "admin#reports#activities",
            "etag": _etag("activities", application, offset, len(shown)),
        }
        if chunk:
            body["items"] = chunk
        if offset + len(chunk) < len(shown):
            body["nextPageToken"] = _next_activity_token(offset + len(chunk), end)
        return JSONResponse(body)


def _next_activity_token(offset: int, end: datetime) -> str:
    raw = json.dumps({"o": offset, "e": _rfc3339(end)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _activity_token(token: str) -> tuple[int, datetime] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
        offset, end = int(value["o"]), _parse_rfc3339(str(value["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return None if end is None or offset < 0 else (offset, end)
