"""A local fake of the Okta Management API's user, group and group-member listings.

Owns the HTTP face of an Okta org as orgsync's Okta source sees it: `GET /api/v1/users`
(without `DEPROVISIONED` people unless a `filter` on `status` asks for them),
`GET /api/v1/groups`, `GET /api/v1/groups/{groupId}/users`; `Authorization: SSWS <token>`;
pagination by `limit` and an opaque `after` cursor carried in `Link: <...>; rel="next"`
headers; the rate limit headers (`X-Rate-Limit-Limit`, `-Remaining`, `-Reset` in epoch
seconds) on every answer and a 429 (`E0000047`) when throttling is switched on; Okta's
error body (`errorCode`, `errorSummary`, `errorLink`, `errorId`, `errorCauses`).

Test switches: `throttle` (every Nth request answers 429), `failure` (one page of one
listing answers 500 forever, or the link to it carries a cursor the server no longer
knows, or points back to the page before), and the transport faults of
`orgsync.testing.faults` (`faults`). Every request is recorded (`requests`).

Shapes follow ``okta/okta-management-openapi-spec`` ``management-minimal.yaml`` 2026.06.3
(schemas `User`, `UserProfile`, `Group`, `Error`); status semantics and error codes follow
developer.okta.com. Imports nothing from orgsync outside ``orgsync.testing``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hmac
import json
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orgsync.testing._server import LoopbackEmulator
from orgsync.testing._throttle import Throttle
from orgsync.testing.faults import FaultInjector, Faults
from orgsync.testing.pagination import Listing, PageFailure, failure_for
from orgsync.testing.tables import Table

__all__ = ["OktaEmulator", "PageFailure", "Throttle"]

USER_STATUSES = (
    "ACTIVE",
    "DEPROVISIONED",
    "LOCKED_OUT",
    "PASSWORD_EXPIRED",
    "PROVISIONED",
    "RECOVERY",
    "STAGED",
    "SUSPENDED",
)
USERS_MAX_LIMIT = 200
GROUPS_MAX_LIMIT = 10000
MEMBERS_DEFAULT_LIMIT = 1000
RATE_LIMIT = 600
"""The nominal per-minute limit reported in `X-Rate-Limit-Limit`."""
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _error(status: int, code: str, summary: str, causes: tuple[str, ...] = ()) -> JSONResponse:
    body = {
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": "oae" + base64.urlsafe_b64encode(summary.encode()[:12]).decode().rstrip("="),
        "errorCauses": [{"errorSummary": c} for c in causes],
    }
    return JSONResponse(body, status_code=status)


def _fault_body(kind: str) -> bytes:
    if kind in ("429", "rate_limit"):
        code, summary = "E0000047", "API call exceeded rate limit due to too many requests."
    elif kind == "timeout":
        code, summary = "E0000009", "Internal Server Error (gateway timeout)"
    else:
        code, summary = "E0000009", "Internal Server Error"
    return json.dumps(
        {"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oaeFault"}
    ).encode()


def _encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return raw.removeprefix("after:") if raw.startswith("after:") else None


def _stamp(n: int) -> str:
    """A deterministic ISO timestamp for the n-th object (Okta's millisecond format)."""
    moment = datetime(2024, 1, 1, tzinfo=UTC).timestamp() + n * 60
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class OktaEmulator(LoopbackEmulator):
    """The emulated Okta org. ``with OktaEmulator() as okta: okta.add_user(...)`` …

    Seed it with `add_user`, `add_group` and `add_member` (before or while serving);
    `url` is the org URL to configure (`http://127.0.0.1:PORT`).
    """

    def __init__(
        self,
        *,
        token: str = "okta-emulator-token",  # noqa: S107 - a test rig's fake token
        faults: Faults | None = None,
    ) -> None:
        self.token = token
        self.throttle: Throttle | None = None
        self.failure: PageFailure | None = None
        self._lock = threading.Lock()
        # Ids grow with creation, so id order is creation order; the tables keep it between
        # requests, and the lists a filter or a group selects are kept until a change,
        # so that a page never sorts, filters or renders the whole table.
        self._users: Table[dict[str, Any]] = Table(_by_id)
        self._groups: Table[dict[str, Any]] = Table(_by_id)
        self._members: dict[str, set[str]] = {}
        self._users_with_status: dict[frozenset[str], list[dict[str, Any]]] = {}
        self._member_rows: dict[str, list[dict[str, Any]]] = {}
        self._counter = 0
        self._api_requests = 0
        injector = FaultInjector(self._build_app(), error_body=_fault_body, faults=faults)
        super().__init__(injector, name="okta-emulator")

    # -- seeding ---------------------------------------------------------------------

    def _next_id(self, prefix: str) -> tuple[str, int]:
        self._counter += 1
        n, digits = self._counter, ""
        while n:
            n, rest = divmod(n, 62)
            digits = _B62[rest] + digits
        return f"{prefix}{digits:0>17}", self._counter

    def add_user(
        self,
        *,
        email: str,
        first_name: str = "",
        last_name: str = "",
        status: str = "ACTIVE",
        login: str | None = None,
        display_name: str | None = None,
    ) -> str:
        if status not in USER_STATUSES:
            raise ValueError(f"unknown Okta user status {status!r}")
        with self._lock:
            user_id, n = self._next_id("00u")
            profile: dict[str, Any] = {
                "firstName": first_name or None,
                "lastName": last_name or None,
                "mobilePhone": None,
                "secondEmail": None,
                "login": login or email,
                "email": email,
            }
            if display_name is not None:
                profile["displayName"] = display_name
            self._users_with_status.clear()
            self._users[user_id] = {
                "id": user_id,
                "status": status,
                "created": _stamp(n),
                "activated": None if status == "STAGED" else _stamp(n),
                "statusChanged": _stamp(n),
                "lastLogin": None,
                "lastUpdated": _stamp(n),
                "passwordChanged": None,
                "type": {"id": "oty1emulatordefault0"},
                "profile": profile,
                "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            }
            return user_id

    def set_status(self, user_id: str, status: str) -> None:
        if status not in USER_STATUSES:
            raise ValueError(f"unknown Okta user status {status!r}")
        with self._lock:
            self._users[user_id]["status"] = status
            self._users_with_status.clear()

    def set_email(self, user_id: str, email: str) -> None:
        with self._lock:
            self._users[user_id]["profile"]["email"] = email

    def add_group(self, name: str, *, description: str = "", group_type: str = "OKTA_GROUP") -> str:
        with self._lock:
            group_id, n = self._next_id("00g")
            self._groups[group_id] = {
                "id": group_id,
                "created": _stamp(n),
                "lastUpdated": _stamp(n),
                "lastMembershipUpdated": _stamp(n),
                "objectClass": ["okta:user_group"],
                "type": group_type,
                "profile": {"name": name, "description": description},
            }
            self._members[group_id] = set()
            return group_id

    def add_member(self, group_id: str, user_id: str) -> None:
        """Okta groups hold users only: there is no nesting to emulate."""
        with self._lock:
            if user_id not in self._users:
                raise KeyError(f"no user {user_id}")
            self._members[group_id].add(user_id)
            self._member_rows.pop(group_id, None)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.origin

    # -- HTTP ------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/users", self._list_users, methods=["GET"]),
                Route("/api/v1/groups", self._list_groups, methods=["GET"]),
                Route("/api/v1/groups/{group_id}/users", self._list_members, methods=["GET"]),
            ]
        )

    def _gate(self, request: Request) -> Response | None:
        """Authentication, then throttling: the answer to send instead, if any."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "SSWS" or not hmac.compare_digest(token.encode(), self.token.encode()):
            return _error(401, "E0000011", "Invalid token provided")
        with self._lock:
            self._api_requests += 1
            count = self._api_requests
        throttle = self.throttle
        if throttle is not None and count % throttle.every == 0:
            response = _error(
                429, "E0000047", "API call exceeded rate limit due to too many requests."
            )
            response.headers.update(self._rate_headers(remaining=0, wait=throttle.seconds))
            return response
        return None

    @staticmethod
    def _rate_headers(*, remaining: int, wait: int = 60) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": str(RATE_LIMIT),
            "X-Rate-Limit-Remaining": str(remaining),
            # Epoch seconds, like Okta; clients compare it with the response's `Date`.
            "X-Rate-Limit-Reset": str(math.floor(time.time()) + wait),
        }

    async def _list_users(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        raw_filter = request.query_params.get("filter")
        statuses = set(USER_STATUSES) - {"DEPROVISIONED"}
        if raw_filter is not None:
            parsed = _status_filter(raw_filter)
            if parsed is None:
                return _error(400, "E0000031", "Invalid search criteria.", (raw_filter,))
            statuses = parsed
        with self._lock:
            key = frozenset(statuses)
            rows = self._users_with_status.get(key)
            if rows is None:
                rows = [r for r in self._users.rows() if r["status"] in statuses]
                self._users_with_status[key] = rows
            return self._page(
                request, "users", rows, USERS_MAX_LIMIT, USERS_MAX_LIMIT, render=self._render_user
            )

    async def _list_groups(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        with self._lock:
            return self._page(
                request,
                "groups",
                self._groups.rows(),
                GROUPS_MAX_LIMIT,
                GROUPS_MAX_LIMIT,
                render=self._render_group,
            )

    async def _list_members(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        group_id = request.path_params["group_id"]
        with self._lock:
            if group_id not in self._groups:
                return _error(
                    404, "E0000007", f"Not found: Resource not found: {group_id} (UserGroup)"
                )
            rows = self._member_rows.get(group_id)
            if rows is None:
                rows = [self._users[i] for i in sorted(self._members[group_id])]
                self._member_rows[group_id] = rows
            return self._page(
                request,
                "members",
                rows,
                MEMBERS_DEFAULT_LIMIT,
                GROUPS_MAX_LIMIT,
                group=group_id,
                render=self._render_user,
            )

    @staticmethod
    def _render_user(user: dict[str, Any], request: Request) -> dict[str, Any]:
        origin = str(request.base_url).rstrip("/")
        return {**user, "_links": {"self": {"href": f"{origin}/api/v1/users/{user['id']}"}}}

    @staticmethod
    def _render_group(group: dict[str, Any], request: Request) -> dict[str, Any]:
        origin = str(request.base_url).rstrip("/")
        base = f"{origin}/api/v1/groups/{group['id']}"
        logo = f"{origin}/img/logos/groups/okta"
        return {
            **group,
            "_links": {
                "logo": [
                    {"name": "medium", "href": f"{logo}-medium.png", "type": "image/png"},
                    {"name": "large", "href": f"{logo}-large.png", "type": "image/png"},
                ],
                "users": {"href": f"{base}/users"},
                "apps": {"href": f"{base}/apps"},
            },
        }

    def _page(
        self,
        request: Request,
        listing: Listing,
        rows: list[dict[str, Any]],
        default_limit: int,
        max_limit: int,
        *,
        render: Callable[[dict[str, Any], Request], dict[str, Any]],
        group: str | None = None,
    ) -> Response:
        """One page of `rows` (sorted by id); only the page is rendered."""
        raw_limit = request.query_params.get("limit")
        limit = default_limit
        if raw_limit is not None:
            if not raw_limit.isdigit() or int(raw_limit) < 1:
                return _error(
                    400, "E0000001", "Api validation failed: limit", ("limit: must be >= 1",)
                )
            # Okta quietly serves at most its maximum, whatever `limit` asks.
            limit = min(int(raw_limit), max_limit)
        start = 0
        cursor = request.query_params.get("after")
        if cursor is not None:
            after = _decode_cursor(cursor)
            # A cursor names the last object of the page before; one whose object is gone
            # is refused, as an expired cursor would be.
            if after is None or (after and not _holds(rows, after)):
                return _error(400, "E0000031", "Invalid search criteria.", ("after",))
            start = bisect.bisect_right(rows, after, key=_by_id)
        page_no = start // limit + 1
        failure = failure_for(self.failure, listing, group)
        if failure is not None and failure.mode == "error" and page_no == failure.page:
            return _error(500, "E0000009", "Internal Server Error")
        chunk = [render(r, request) for r in rows[start : start + limit]]
        url = request.url
        links = [f'<{url.remove_query_params("after")}>; rel="self"']
        if start + len(chunk) < len(rows):
            next_cursor = _encode_cursor(chunk[-1]["id"])
            if failure is not None and page_no + 1 == failure.page:
                if failure.mode == "bad_cursor":
                    next_cursor = _encode_cursor("00uVanished")
                elif failure.mode == "loop":
                    # Back to this very page: what the client just read.
                    next_cursor = cursor if cursor is not None else _encode_cursor("")
            next_url = url.include_query_params(after=next_cursor, limit=limit)
            links.append(f'<{next_url}>; rel="next"')
        headers = {"Link": ", ".join(links), **self._rate_headers(remaining=RATE_LIMIT - 1)}
        return JSONResponse(chunk, headers=headers)


def _by_id(record: dict[str, Any]) -> str:
    return str(record["id"])


def _holds(rows: list[dict[str, Any]], object_id: str) -> bool:
    """Whether `rows` (sorted by id) hold the object `object_id`."""
    at = bisect.bisect_left(rows, object_id, key=_by_id)
    return at < len(rows) and rows[at]["id"] == object_id


def _status_filter(expression: str) -> set[str] | None:
    """The statuses of `status eq "X" [or status eq "Y" ...]`, else None (unsupported)."""
    statuses: set[str] = set()
    for clause in expression.split(" or "):
        field, op, value = [*clause.strip().strip("()").split(" ", 2), "", ""][:3]
        value = value.strip()
        if field != "status" or op.lower() != "eq" or len(value) < 2 or value[0] != '"':
            return None
        status = value.strip('"')
        if status not in USER_STATUSES:
            return None
        statuses.add(status)
    return statuses
