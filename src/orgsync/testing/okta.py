"""A local fake of the Okta Management API's user, group and group-member listings and System Log.

Owns the HTTP face of an Okta org as orgsync's Okta source sees it: `GET /api/v1/users`
(without `DEPROVISIONED` people unless a `filter` is given: a filtered listing includes
them, as Okta documents), `GET /api/v1/groups`, `GET /api/v1/groups/{groupId}/users`,
`GET /api/v1/logs`; `Authorization: SSWS <token>`;
pagination by `limit` and an opaque `after` cursor carried in `Link: <...>; rel="next"`
headers; the rate limit headers (`X-Rate-Limit-Limit`, `-Remaining`, `-Reset` in epoch
seconds) on every answer and a 429 (`E0000047`) when throttling is switched on; Okta's
error body (`errorCode`, `errorSummary`, `errorLink`, `errorId`, `errorCauses`).

Filters: Okta's expression syntax (`eq`, `gt`, `ge`, `lt`, `le` on quoted values, `and`,
`or`, parentheses), on the properties Okta documents for each listing: users `status`,
`lastUpdated`, `id`, `profile.login`, `profile.email`, `profile.firstName`,
`profile.lastName`; groups `id`, `type`, `lastUpdated`, `lastMembershipUpdated`; System
Log events `eventType` (also `sw`), `target.id`, `actor.id`. Anything else is refused
with 400 `E0000031`, as Okta refuses an unsupported filter.

Time: every object and change is stamped with `clock()` (settable: a test or a benchmark
seeds a directory "last week"). Changes (`set_status`, `set_email`, `set_display_name`,
`add_member`, `remove_member`, `delete_user`, `rename_group`, `delete_group`) move
`lastUpdated` (a group's membership: `lastMembershipUpdated`) and publish the System Log
event Okta publishes for them (`user.lifecycle.*`, `user.account.update_profile`,
`group.user_membership.add`/`remove`, `group.lifecycle.*`, `group.profile.update`).
Deleting a user takes it out of its groups without moving the groups' stamps, so only
the log tells. The System Log: `since` (default 7 days before `until`), `until`,
`filter`, `limit` (default 100, at most 1000), `after`, `sortOrder`; a *polling* request
(no `until`) always carries a `next` link, as Okta's does, a *bounded* one only while
more events remain; a `since` older than the retention (`log_retention`, 90 days) is
refused with 400 `E0000001` (the emulator's model of Okta's retention limit), and
`logs_forbidden` answers 403 `E0000006`, as for a token that may not read the log.

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
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
LOGS_DEFAULT_LIMIT = 100
LOGS_MAX_LIMIT = 1000
LOG_RETENTION = timedelta(days=90)
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


def _iso(moment: datetime) -> str:
    """Okta's timestamp format: UTC, milliseconds."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _instant(text: str) -> datetime | None:
    """An ISO 8601 time as Okta accepts it (`Z` or an offset, milliseconds optional)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


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
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        """Stamps every object, change and System Log event."""
        self.log_retention = LOG_RETENTION
        self.logs_forbidden = False
        self._lock = threading.Lock()
        # Ids grow with creation, so id order is creation order; the tables keep it between
        # requests, and the lists a filter or a group selects are kept until a change,
        # so that a page never sorts, filters or renders the whole table.
        self._users: Table[dict[str, Any]] = Table(_by_id)
        self._groups: Table[dict[str, Any]] = Table(_by_id)
        self._members: dict[str, set[str]] = {}
        self._users_with_status: dict[frozenset[str], list[dict[str, Any]]] = {}
        self._member_rows: dict[str, list[dict[str, Any]]] = {}
        # In publication order (the clock only moves forward in a run; ties by sequence).
        self._events: list[tuple[str, int, dict[str, Any]]] = []
        self._counter = 0
        self._api_requests = 0
        injector = FaultInjector(self._build_app(), error_body=_fault_body, faults=faults)
        # Okta's Date is its clock's (a test moving Okta's time moves what probes compare).
        super().__init__(injector, name="okta-emulator", clock=lambda: self.clock())  # noqa: PLW0108 (tests reassign self.clock)

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
            user_id, _ = self._next_id("00u")
            now = _iso(self.clock())
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
                "created": now,
                "activated": None if status == "STAGED" else now,
                "statusChanged": now,
                "lastLogin": None,
                "lastUpdated": now,
                "passwordChanged": None,
                "type": {"id": "oty1emulatordefault0"},
                "profile": profile,
                "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            }
            self._publish(now, "user.lifecycle.create", [self._user_target(user_id)])
            return user_id

    def set_status(self, user_id: str, status: str) -> None:
        if status not in USER_STATUSES:
            raise ValueError(f"unknown Okta user status {status!r}")
        with self._lock:
            user = self._users[user_id]
            before = user["status"]
            now = _iso(self.clock())
            user.update(status=status, statusChanged=now, lastUpdated=now)
            self._users_with_status.clear()
            event = _STATUS_EVENTS.get((before, status)) or _STATUS_EVENTS.get((None, status))
            if event is not None:
                self._publish(now, event, [self._user_target(user_id)])

    def set_email(self, user_id: str, email: str) -> None:
        self._update_profile(user_id, email=email)

    def set_display_name(self, user_id: str, name: str) -> None:
        self._update_profile(user_id, displayName=name)

    def _update_profile(self, user_id: str, **changes: str) -> None:
        with self._lock:
            user = self._users[user_id]
            now = _iso(self.clock())
            user["profile"].update(changes)
            user["lastUpdated"] = now
            self._publish(now, "user.account.update_profile", [self._user_target(user_id)])

    def delete_user(self, user_id: str) -> None:
        """Okta deletes only a deactivated (`DEPROVISIONED`) user; its memberships go with
        it, and the groups' `lastMembershipUpdated` is left as it was."""
        with self._lock:
            if self._users[user_id]["status"] != "DEPROVISIONED":
                raise ValueError("Okta deletes only deactivated users: set_status first")
            target = self._user_target(user_id)
            del self._users[user_id]
            for group_id, members in self._members.items():
                if user_id in members:
                    members.discard(user_id)
                    self._member_rows.pop(group_id, None)
            self._users_with_status.clear()
            self._publish(_iso(self.clock()), "user.lifecycle.delete.initiated", [target])

    def add_group(self, name: str, *, description: str = "", group_type: str = "OKTA_GROUP") -> str:
        with self._lock:
            group_id, _ = self._next_id("00g")
            now = _iso(self.clock())
            self._groups[group_id] = {
                "id": group_id,
                "created": now,
                "lastUpdated": now,
                "lastMembershipUpdated": now,
                "objectClass": ["okta:user_group"],
                "type": group_type,
                "profile": {"name": name, "description": description},
            }
            self._members[group_id] = set()
            self._publish(now, "group.lifecycle.create", [self._group_target(group_id)])
            return group_id

    def group_record(self, group_id: str) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._groups[group_id]))  # type: ignore[no-any-return]

    def rename_group(self, group_id: str, name: str) -> None:
        with self._lock:
            group = self._groups[group_id]
            now = _iso(self.clock())
            group["profile"]["name"] = name
            group["lastUpdated"] = now
            self._publish(now, "group.profile.update", [self._group_target(group_id)])

    def delete_group(self, group_id: str) -> None:
        with self._lock:
            target = self._group_target(group_id)
            del self._groups[group_id]
            del self._members[group_id]
            self._member_rows.pop(group_id, None)
            self._publish(_iso(self.clock()), "group.lifecycle.delete", [target])

    def add_member(self, group_id: str, user_id: str) -> None:
        """Okta groups hold users only: there is no nesting to emulate."""
        self._membership(group_id, user_id, add=True)

    def remove_member(self, group_id: str, user_id: str) -> None:
        self._membership(group_id, user_id, add=False)

    def _membership(self, group_id: str, user_id: str, *, add: bool) -> None:
        with self._lock:
            if user_id not in self._users:
                raise KeyError(f"no user {user_id}")
            members = self._members[group_id]
            if (user_id in members) == add:
                return
            if add:
                members.add(user_id)
            else:
                members.discard(user_id)
            self._member_rows.pop(group_id, None)
            now = _iso(self.clock())
            self._groups[group_id]["lastMembershipUpdated"] = now
            event = "group.user_membership." + ("add" if add else "remove")
            targets = [self._user_target(user_id), self._group_target(group_id)]
            self._publish(now, event, targets)

    # -- the System Log --------------------------------------------------------------

    def _user_target(self, user_id: str) -> dict[str, Any]:
        profile = self._users[user_id]["profile"]
        name = profile.get("displayName") or " ".join(
            p for p in (profile.get("firstName"), profile.get("lastName")) if p
        )
        return {
            "id": user_id,
            "type": "User",
            "alternateId": profile.get("login"),
            "displayName": name or profile.get("login"),
        }

    def _group_target(self, group_id: str) -> dict[str, Any]:
        name = self._groups[group_id]["profile"]["name"]
        return {
            "id": group_id,
            "type": "UserGroup",
            "alternateId": name,
            "displayName": name,
        }

    def _publish(self, published: str, event_type: str, targets: list[dict[str, Any]]) -> None:
        """Append one System Log event (under the lock)."""
        self._counter += 1
        event = {
            "uuid": str(uuid.UUID(int=self._counter | (1 << 76))),
            "published": published,
            "eventType": event_type,
            "version": "0",
            "severity": "INFO",
            "displayMessage": event_type,
            "actor": {
                "id": "00uEmulatorAdmin0001",
                "type": "User",
                "alternateId": "admin@example.com",
                "displayName": "Emulator Admin",
            },
            "outcome": {"result": "SUCCESS"},
            "target": targets,
            "transaction": {"type": "WEB", "id": f"emulator{self._counter}", "detail": {}},
        }
        entry = (published, self._counter, event)
        if self._events and self._events[-1][:2] > entry[:2]:
            bisect.insort(self._events, entry, key=lambda e: e[:2])
        else:
            self._events.append(entry)

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for _, _, e in self._events]

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
                Route("/api/v1/logs", self._list_logs, methods=["GET"]),
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
        matcher: Callable[[dict[str, Any]], bool] | None = None
        if raw_filter is not None:
            parsed = _status_filter(raw_filter)
            if parsed is None:
                matcher = _filter(raw_filter, USER_FILTER_FIELDS)
                if matcher is None:
                    return _error(400, "E0000031", "Invalid search criteria.", (raw_filter,))
            else:
                statuses = parsed
        with self._lock:
            if matcher is not None:
                # Any other filter: every user it matches, DEPROVISIONED ones included.
                rows = [r for r in self._users.rows() if matcher(r)]
            else:
                key = frozenset(statuses)
                cached = self._users_with_status.get(key)
                if cached is None:
                    cached = [r for r in self._users.rows() if r["status"] in statuses]
                    self._users_with_status[key] = cached
                rows = cached
            return self._page(
                request, "users", rows, USERS_MAX_LIMIT, USERS_MAX_LIMIT, render=self._render_user
            )

    async def _list_groups(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        raw_filter = request.query_params.get("filter")
        matcher = None
        if raw_filter is not None:
            matcher = _filter(raw_filter, GROUP_FILTER_FIELDS)
            if matcher is None:
                return _error(400, "E0000031", "Invalid search criteria.", (raw_filter,))
        with self._lock:
            rows = self._groups.rows()
            if matcher is not None:
                rows = [r for r in rows if matcher(r)]
            return self._page(
                request,
                "groups",
                rows,
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

    async def _list_logs(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        if self.logs_forbidden:
            return _error(
                403, "E0000006", "You do not have permission to perform the requested action"
            )
        query = request.query_params
        now = self.clock()
        until = _instant(query["until"]) if "until" in query else now
        if until is None:
            return _error(400, "E0000001", "Api validation failed: until", ("until: not a time",))
        since = _instant(query["since"]) if "since" in query else until - timedelta(days=7)
        if since is None:
            return _error(400, "E0000001", "Api validation failed: since", ("since: not a time",))
        if since < now - self.log_retention:
            return _error(
                400,
                "E0000001",
                "Api validation failed: since",
                (f"since: must be within the last {self.log_retention.days} days",),
            )
        if since > until:
            return _error(400, "E0000001", "Api validation failed: since", ("since > until",))
        raw_limit = query.get("limit", str(LOGS_DEFAULT_LIMIT))
        if not raw_limit.isdigit() or int(raw_limit) > LOGS_MAX_LIMIT:
            return _error(400, "E0000001", "Api validation failed: limit", ("limit: 0..1000",))
        limit = int(raw_limit)
        order = query.get("sortOrder", "ASCENDING")
        if order not in ("ASCENDING", "DESCENDING"):
            return _error(400, "E0000001", "Api validation failed: sortOrder")
        matcher = None
        if "filter" in query:
            matcher = _filter(query["filter"], LOG_FILTER_FIELDS)
            if matcher is None:
                return _error(400, "E0000031", "Invalid search criteria.", (query["filter"],))
        after = None
        if "after" in query:
            after = _decode_cursor(query["after"])
            if after is None or not after.isdigit():
                return _error(400, "E0000031", "Invalid search criteria.", ("after",))
        with self._lock:
            low = bisect.bisect_left(self._events, _iso(since), key=lambda e: e[0])
            # Polling: everything published so far; bounded: up to `until`, excluded.
            high = (
                len(self._events)
                if "until" not in query
                else bisect.bisect_left(self._events, _iso(until), key=lambda e: e[0])
            )
            window = self._events[low:high]
            if order == "DESCENDING":
                window = window[::-1]
            if after is not None:
                seq = int(after)
                window = [e for e in window if (e[1] > seq if order == "ASCENDING" else e[1] < seq)]
            chosen = [e for e in window if matcher is None or matcher(e[2])][: limit or None]
            more = len([e for e in window if matcher is None or matcher(e[2])]) > len(chosen)
        url = request.url
        links = [f'<{url.remove_query_params("after")}>; rel="self"']
        if more or "until" not in query:
            # A polling request always gets a next link: the events published after this
            # page are read from it later (Okta's documented polling behaviour).
            last = chosen[-1][1] if chosen else (int(after) if after is not None else 0)
            next_url = url.include_query_params(after=_encode_cursor(str(last)))
            links.append(f'<{next_url}>; rel="next"')
        headers = {"Link": ", ".join(links), **self._rate_headers(remaining=RATE_LIMIT - 1)}
        return JSONResponse([e[2] for e in chosen], headers=headers)

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


_STATUS_EVENTS: dict[tuple[str | None, str], str] = {
    (None, "DEPROVISIONED"): "user.lifecycle.deactivate",
    (None, "SUSPENDED"): "user.lifecycle.suspend",
    ("SUSPENDED", "ACTIVE"): "user.lifecycle.unsuspend",
    ("DEPROVISIONED", "ACTIVE"): "user.lifecycle.reactivate",
    ("STAGED", "ACTIVE"): "user.lifecycle.activate",
    ("PROVISIONED", "ACTIVE"): "user.lifecycle.activate",
}
"""The System Log event of a status change (before, after); None: from any status."""

_TIME_FIELDS = frozenset({"lastUpdated", "lastMembershipUpdated", "published"})
USER_FILTER_FIELDS = frozenset(
    {
        "status",
        "lastUpdated",
        "id",
        "profile.login",
        "profile.email",
        "profile.firstName",
        "profile.lastName",
    }
)
GROUP_FILTER_FIELDS = frozenset({"id", "type", "lastUpdated", "lastMembershipUpdated"})
LOG_FILTER_FIELDS = frozenset({"eventType", "target.id", "actor.id"})
_TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|[^\s()"]+)')
_OPERATORS = frozenset({"eq", "gt", "ge", "lt", "le", "sw"})

Matcher = Callable[[dict[str, Any]], bool]


def _filter(expression: str, fields: frozenset[str]) -> Matcher | None:
    """A predicate for Okta's filter `expression` over `fields`, else None (refused)."""
    tokens: list[str] = _TOKEN.findall(expression)
    if "".join(tokens).replace(" ", "") != expression.replace(" ", ""):
        return None
    at = 0

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take() -> str:
        nonlocal at
        at += 1
        return tokens[at - 1]

    def either() -> Matcher | None:
        left = both()
        while left is not None and (peek() or "").lower() == "or":
            take()
            right = both()
            if right is None:
                return None
            left = _any_of(left, right)
        return left

    def both() -> Matcher | None:
        left = factor()
        while left is not None and (peek() or "").lower() == "and":
            take()
            right = factor()
            if right is None:
                return None
            left = _all_of(left, right)
        return left

    def factor() -> Matcher | None:
        if peek() == "(":
            take()
            inner = either()
            if inner is None or peek() != ")":
                return None
            take()
            return inner
        if at + 3 > len(tokens):
            return None
        field, op, value = take(), take().lower(), take()
        if field not in fields or op not in _OPERATORS or not value.startswith('"'):
            return None
        return _clause(field, op, value[1:-1].replace('\\"', '"'))

    matcher = either()
    return matcher if matcher is not None and at == len(tokens) else None


def _any_of(a: Matcher, b: Matcher) -> Matcher:
    return lambda record: a(record) or b(record)


def _all_of(a: Matcher, b: Matcher) -> Matcher:
    return lambda record: a(record) and b(record)


def _clause(field: str, op: str, value: str) -> Matcher | None:
    if field == "status" and (op != "eq" or value not in USER_STATUSES):
        return None
    if field in _TIME_FIELDS:
        moment = _instant(value)
        if moment is None or op == "sw":
            return None
        bound = moment

        def timed(record: dict[str, Any]) -> bool:
            stamp = _instant(str(_get(record, field)))
            if stamp is None:
                return False
            return _compare(op, stamp, bound)

        return timed
    if op not in ("eq", "sw"):
        return None

    def plain(record: dict[str, Any]) -> bool:
        found = _get(record, field)
        values = [t.get("id") for t in found] if isinstance(found, list) else [found]
        return any(
            isinstance(v, str) and (v == value if op == "eq" else v.startswith(value))
            for v in values
        )

    return plain


def _get(record: dict[str, Any], field: str) -> Any:
    """`profile.login` -> record["profile"]["login"]; `target.id` -> the targets."""
    value: Any = record
    for part in field.split("."):
        if isinstance(value, list):
            return value  # an array of objects: the clause compares each one's id
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _compare(op: str, left: datetime, right: datetime) -> bool:
    return {
        "eq": left == right,
        "gt": left > right,
        "ge": left >= right,
        "lt": left < right,
        "le": left <= right,
    }[op]
