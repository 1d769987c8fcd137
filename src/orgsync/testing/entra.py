"""A local fake of Microsoft Entra ID as Microsoft Graph v1.0 and the identity platform show it.

Owns, on one loopback server: the client-credentials token endpoint
(`POST /{tenant}/oauth2/v2.0/token`, the `login_url` side) and the Graph listings
(`GET /v1.0/users`, `/v1.0/groups`, `/v1.0/groups/{id}/members`, the `graph_url` side)
with `$select` (unknown properties refused, `accountEnabled` only when selected, as Graph
does), `$top` (1..999), opaque `$skiptoken`s in `@odata.nextLink`, `@odata.context`, and
`@odata.type` on group members (users, groups, devices). Access tokens are opaque, expire
(`token_lifetime`), and can be revoked (`expire_tokens`). Errors use Graph's body
(`error.code`, `error.message`, `error.innerError`) and the OAuth one (`error`,
`error_description` with an AADSTS code) on the token endpoint.

Test switches: `throttle` (every Nth Graph request answers 429 with `Retry-After`),
`failure` (one page of one listing answers 500 forever, or its link carries an expired
`$skiptoken`, or points back to the page before) and the transport faults of
`orgsync.testing.faults`. Every request is recorded.

Shapes follow Microsoft Graph v1.0 as described by ``msgraph-sdk-powershell``
``openApiDocs/v1.0`` (schemas `microsoft.graph.user`, `.group`, `.directoryObject`,
`*CollectionResponse`, `ODataErrors.ODataError`) and learn.microsoft.com for the token
endpoint. Imports nothing from orgsync outside ``orgsync.testing``.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode

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

__all__ = ["EntraEmulator", "PageFailure", "Throttle"]

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MAX_TOP = 999
DEFAULT_TOP = 100
USER_PROPERTIES = (
    "id",
    "accountEnabled",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
USER_DEFAULT = tuple(p for p in USER_PROPERTIES if p != "accountEnabled")
"""What Graph returns without `$select`: `accountEnabled` is not among them."""
GROUP_PROPERTIES = (
    "id",
    "createdDateTime",
    "description",
    "displayName",
    "groupTypes",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
)
DIRECTORY_OBJECT_PROPERTIES = ("id", "deletedDateTime")
_NAMESPACE = uuid.UUID("6f1c2f57-1b77-4b8a-9a52-0b3c2ad0e0a1")

MemberType = Literal["user", "group", "device"]


def _graph_error(status: int, code: str, message: str) -> JSONResponse:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": now, "request-id": request_id, "client-request-id": request_id},
        }
    }
    return JSONResponse(body, status_code=status, headers={"request-id": request_id})


def _oauth_error(status: int, error: str, aadsts: int, description: str) -> JSONResponse:
    trace = str(uuid.uuid4())
    body = {
        "error": error,
        "error_description": f"AADSTS{aadsts}: {description}\r\nTrace ID: {trace}\r\n"
        f"Correlation ID: {trace}\r\nTimestamp: {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [aadsts],
        "timestamp": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
        "trace_id": trace,
        "correlation_id": trace,
    }
    return JSONResponse(body, status_code=status)


def _fault_body(kind: str) -> bytes:
    if kind in ("429", "rate_limit"):
        code, message = "TooManyRequests", "Too many requests."
    elif kind == "timeout":
        code, message = "GatewayTimeout", "The gateway did not receive a timely response."
    else:
        code, message = "InternalServerError", "An internal server error occurred."
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class EntraEmulator(LoopbackEmulator):
    """The emulated tenant. ``with EntraEmulator() as entra: entra.add_user(...)`` …

    `login_url` and `graph_url` are what to configure; `tenant_id`, `client_id` and
    `client_secret` are the only credentials the token endpoint accepts.
    """

    def __init__(
        self,
        *,
        tenant_id: str = "11111111-2222-3333-4444-555555555555",
        client_id: str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        client_secret: str = "entra-emulator-secret",  # noqa: S107 - a test rig's fake
        token_lifetime: int = 3599,
        faults: Faults | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.throttle: Throttle | None = None
        self.failure: PageFailure | None = None
        self.tokens_issued = 0
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, dict[str, Any]] = {}
        self._devices: set[str] = set()
        # Insertion-ordered sets (dicts of None): listing order is the order of adding,
        # and adding a member never scans the group (100k members stay cheap to seed).
        self._members: dict[str, dict[tuple[MemberType, str], None]] = {}
        self._counter = 0
        self._graph_requests = 0
        # Delta queries: every change as (kind, id), in order; a delta token is a position
        # in it, of a generation: one of an older generation is a sync state Graph no
        # longer keeps.
        self._changes: list[tuple[str, str]] = []
        self._delta_generation = 0
        # Requests refused by `throttle`, served on their next try: the client did what
        # Retry-After asked, and a retry that could draw the refusal again and again from
        # other threads' traffic would make the test depend on scheduling.
        self._throttled: set[str] = set()
        injector = FaultInjector(self._build_app(), error_body=_fault_body, faults=faults)
        super().__init__(injector, name="entra-emulator")

    # -- seeding ---------------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        self._counter += 1
        return str(uuid.uuid5(_NAMESPACE, f"{kind}-{self._counter}"))

    def add_user(
        self,
        *,
        display_name: str,
        user_principal_name: str,
        mail: str | None = None,
        account_enabled: bool | None = True,
        given_name: str | None = None,
        surname: str | None = None,
    ) -> str:
        with self._lock:
            user_id = self._new_id("user")
            self._users[user_id] = {
                "id": user_id,
                "accountEnabled": account_enabled,
                "businessPhones": [],
                "displayName": display_name,
                "givenName": given_name,
                "jobTitle": None,
                "mail": mail,
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": None,
                "surname": surname,
                "userPrincipalName": user_principal_name,
            }
            self._changes.append(("user", user_id))
            return user_id

    def set_account_enabled(self, user_id: str, enabled: bool | None) -> None:
        with self._lock:
            self._users[user_id]["accountEnabled"] = enabled
            self._changes.append(("user", user_id))

    def set_mail(self, user_id: str, mail: str | None) -> None:
        with self._lock:
            self._users[user_id]["mail"] = mail
            self._changes.append(("user", user_id))

    def set_display_name(self, user_id: str, name: str) -> None:
        with self._lock:
            self._users[user_id]["displayName"] = name
            self._changes.append(("user", user_id))

    def remove_user(self, user_id: str) -> None:
        """Delete a user (and its group memberships, as Entra does)."""
        with self._lock:
            del self._users[user_id]
            self._changes.append(("user", user_id))
            for group_id, members in self._members.items():
                if ("user", user_id) in members:
                    del members[("user", user_id)]
                    self._changes.append(("group", group_id))

    def expire_delta_tokens(self) -> None:
        """Forget every sync state: each delta token given so far answers 410 Gone."""
        with self._lock:
            self._delta_generation += 1

    def add_group(self, display_name: str, *, description: str | None = None) -> str:
        with self._lock:
            group_id = self._new_id("group")
            nickname = "".join(c for c in display_name if c.isalnum() or c in "-_.") or "group"
            self._groups[group_id] = {
                "id": group_id,
                "createdDateTime": "2024-01-01T00:00:00Z",
                "description": description,
                "displayName": display_name,
                "groupTypes": [],
                "mail": None,
                "mailEnabled": False,
                "mailNickname": nickname,
                "securityEnabled": True,
            }
            self._members[group_id] = {}
            self._changes.append(("group", group_id))
            return group_id

    def add_device(self) -> str:
        with self._lock:
            device_id = self._new_id("device")
            self._devices.add(device_id)
            return device_id

    def add_member(self, group_id: str, member_id: str) -> None:
        """Add a user, a group (nesting; cycles are not prevented) or a device."""
        with self._lock:
            if member_id in self._users:
                kind: MemberType = "user"
            elif member_id in self._groups:
                kind = "group"
            elif member_id in self._devices:
                kind = "device"
            else:
                raise KeyError(f"no directory object {member_id}")
            if (kind, member_id) not in self._members[group_id]:
                self._members[group_id][(kind, member_id)] = None
                self._changes.append(("group", group_id))

    def remove_member(self, group_id: str, member_id: str) -> None:
        """Take a user or a group out of a group; the group is listed by the next delta."""
        with self._lock:
            members = self._members[group_id]
            kinds: tuple[MemberType, ...] = ("user", "group", "device")
            for kind in kinds:
                if (kind, member_id) in members:
                    del members[(kind, member_id)]
                    self._changes.append(("group", group_id))

    def rename_group(self, group_id: str, display_name: str) -> None:
        with self._lock:
            self._groups[group_id]["displayName"] = display_name
            self._changes.append(("group", group_id))

    def remove_group(self, group_id: str) -> None:
        """Delete a group (and its membership in other groups); listed as `@removed`."""
        with self._lock:
            del self._groups[group_id]
            del self._members[group_id]
            self._changes.append(("group", group_id))
            for other, members in self._members.items():
                if ("group", group_id) in members:
                    del members[("group", group_id)]
                    self._changes.append(("group", other))

    def expire_tokens(self) -> None:
        """Revoke every access token issued so far (the next Graph call answers 401)."""
        with self._lock:
            self._tokens.clear()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def login_url(self) -> str:
        return self.origin

    def _public_url(self, origin: str) -> str:
        return f"{origin}/v1.0"

    @property
    def graph_url(self) -> str:
        return f"{self.login_url}/v1.0"

    # -- HTTP: identity platform -----------------------------------------------------

    def _build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/v1.0/users", self._list_users, methods=["GET"]),
                Route("/v1.0/users/delta", self._users_delta, methods=["GET"]),
                Route("/v1.0/groups/delta", self._groups_delta, methods=["GET"]),
                Route("/v1.0/groups", self._list_groups, methods=["GET"]),
                Route("/v1.0/groups/{group_id}/members", self._list_members, methods=["GET"]),
            ]
        )

    async def _token(self, request: Request) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart, a dependency
        # the rest of orgsync has no use for.
        field = {k: v[0] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
        if request.path_params["tenant"] != self.tenant_id:
            return _oauth_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{request.path_params['tenant']}' not found. Check to make sure you "
                "have the correct tenant ID and are signing into the correct cloud.",
            )
        if field.get("grant_type") != "client_credentials":
            return _oauth_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        if field.get("client_id") != self.client_id:
            return _oauth_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{field.get('client_id')}' was not found in the "
                f"directory '{self.tenant_id}'.",
            )
        secret = field.get("client_secret", "")
        if not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            return _oauth_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                f"is the client secret value, not the client secret ID, for a secret added to "
                f"app '{self.client_id}'.",
            )
        if field.get("scope") != GRAPH_SCOPE:
            return _oauth_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {field.get('scope')} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        token = "eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
            self.tokens_issued += 1
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            }
        )

    # -- HTTP: Graph -----------------------------------------------------------------

    def _gate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not token:
            return _graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        with self._lock:
            expires = self._tokens.get(token)
            valid = scheme.lower() == "bearer" and expires is not None
            if valid and expires is not None and expires <= time.monotonic():
                del self._tokens[token]
                valid = False
            self._graph_requests += 1
            count = self._graph_requests
            retried = str(request.url) in self._throttled
            self._throttled.discard(str(request.url))
        if not valid:
            return _graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            )
        throttle = self.throttle
        if throttle is not None and count % throttle.every == 0 and not retried:
            with self._lock:
                self._throttled.add(str(request.url))
            response = _graph_error(
                429,
                "TooManyRequests",
                "Too many requests. Please retry after the time given in Retry-After.",
            )
            response.headers["Retry-After"] = str(throttle.seconds)
            return response
        return None

    async def _list_users(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        with self._lock:
            rows = list(self._users.values())
        return self._page(
            request, "users", rows, known=USER_PROPERTIES, default=USER_DEFAULT, context="users"
        )

    async def _list_groups(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        with self._lock:
            rows = list(self._groups.values())
        return self._page(
            request,
            "groups",
            rows,
            known=GROUP_PROPERTIES,
            default=GROUP_PROPERTIES,
            context="groups",
        )

    async def _list_members(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        group_id = request.path_params["group_id"]
        with self._lock:
            if group_id not in self._groups:
                return _graph_error(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{group_id}' does not exist or one of its queried "
                    "reference-property objects are not present.",
                )
            rows: list[dict[str, Any]] = []
            for kind, member_id in self._members[group_id]:
                if kind == "user":
                    row = dict(self._users[member_id])
                elif kind == "group":
                    row = dict(self._groups[member_id])
                else:
                    row = {"id": member_id, "deletedDateTime": None}
                rows.append({"@odata.type": f"#microsoft.graph.{kind}", **row})
        return self._page(
            request,
            "members",
            rows,
            known=DIRECTORY_OBJECT_PROPERTIES,
            default=DIRECTORY_OBJECT_PROPERTIES,
            context=f"directoryObjects/{group_id}/members",
            group=group_id,
        )

    async def _users_delta(self, request: Request) -> Response:
        return self._delta(request, "user")

    async def _groups_delta(self, request: Request) -> Response:
        return self._delta(request, "group")

    def _delta(self, request: Request, kind: str) -> Response:
        """`/users/delta`, `/groups/delta`: a round without a token lists everything,
        `$deltatoken=latest` nothing; either ends with a deltaLink, whose next use lists
        what changed since (a deleted object as `@removed`) in one page. A token older
        than the kept sync state answers 410 Gone (`syncStateNotFound`)."""
        refused = self._gate(request)
        if refused is not None:
            return refused
        token = request.query_params.get("$deltatoken")
        with self._lock:
            now = len(self._changes)
            generation_now = self._delta_generation
            table = self._users if kind == "user" else self._groups
            if token is None:
                changed = list(table)
            elif token == "latest":  # noqa: S105 - a Graph keyword, not a secret
                changed = []
            else:
                generation, _, position = token.partition(".")
                if (
                    generation != str(self._delta_generation)
                    or not position.isdigit()
                    or int(position) > now
                ):
                    return _graph_error(
                        410,
                        "syncStateNotFound",
                        "The sync state generation is not found. Delta tokens expire; "
                        "start a new round without a token.",
                    )
                changed = list(
                    dict.fromkeys(i for k, i in self._changes[int(position) :] if k == kind)
                )
            value: list[dict[str, Any]] = []
            for object_id in changed:
                row = table.get(object_id)
                if row is None:
                    value.append({"id": object_id, "@removed": {"reason": "changed"}})
                elif kind == "user":
                    value.append({k: row.get(k) for k in USER_DEFAULT})
                else:
                    members = [
                        {"@odata.type": f"#microsoft.graph.{t}", "id": m}
                        for t, m in self._members.get(object_id, {})
                    ]
                    value.append({**row, "members@delta": members})
        origin = str(request.base_url).rstrip("/")
        listing = "users" if kind == "user" else "groups"
        return JSONResponse(
            {
                "@odata.context": f"{origin}/v1.0/$metadata#{listing}",
                "@odata.deltaLink": (
                    f"{origin}/v1.0/{listing}/delta?$deltatoken={generation_now}.{now}"
                ),
                "value": value,
            }
        )

    def _page(
        self,
        request: Request,
        listing: Listing,
        rows: list[dict[str, Any]],
        *,
        known: tuple[str, ...],
        default: tuple[str, ...],
        context: str,
        group: str | None = None,
    ) -> Response:
        query = request.query_params
        raw_top = query.get("$top")
        top = DEFAULT_TOP
        if raw_top is not None:
            if not raw_top.isdigit() or not 1 <= int(raw_top) <= MAX_TOP:
                return _graph_error(
                    400,
                    "Request_UnsupportedQuery",
                    f"Invalid page size specified: '{raw_top}'. Must be between 1 and "
                    f"{MAX_TOP} inclusive.",
                )
            top = int(raw_top)
        selected = default
        raw_select = query.get("$select")
        if raw_select is not None:
            wanted = tuple(p.strip() for p in raw_select.split(",") if p.strip())
            unknown = [p for p in wanted if p not in known]
            if unknown:
                entity = {"users": "user", "groups": "group"}.get(listing, "directoryObject")
                return _graph_error(
                    400,
                    "Request_BadRequest",
                    f"Could not find a property named '{unknown[0]}' on type "
                    f"'microsoft.graph.{entity}'.",
                )
            # Graph always returns the id, selected or not.
            selected = ("id", *[p for p in wanted if p != "id"])
        offset = 0
        skiptoken = query.get("$skiptoken")
        if skiptoken is not None:
            decoded = token_offset(skiptoken, listing, group)
            if decoded is None:
                return _graph_error(
                    400,
                    "Directory_ExpiredPageToken",
                    "The specified page token value has expired and can no longer be included "
                    "in your request.",
                )
            offset = decoded
        page_no = offset // top + 1
        failure = failure_for(self.failure, listing, group)
        if failure is not None and failure.mode == "error" and page_no == failure.page:
            return _graph_error(500, "UnknownError", "An internal server error occurred.")
        chunk = rows[offset : offset + top]
        value = [{k: row[k] for k in row if k in selected or k == "@odata.type"} for row in chunk]
        origin = str(request.base_url).rstrip("/")
        select_note = f"({','.join(selected)})" if raw_select is not None else ""
        body: dict[str, Any] = {"@odata.context": f"{origin}/v1.0/$metadata#{context}{select_note}"}
        if offset + len(chunk) < len(rows):
            token = next_offset_token(
                failure, listing, group, offset=offset, taken=len(chunk), page_no=page_no
            )
            params = {k: v for k, v in query.items() if k != "$skiptoken"}
            params["$skiptoken"] = token
            body["@odata.nextLink"] = f"{origin}{request.url.path}?{urlencode(params)}"
        body["value"] = value
        return JSONResponse(body)
