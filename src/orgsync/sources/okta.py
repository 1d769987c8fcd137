"""The Okta source: people, groups and group members of an Okta org (Management API v1).

Owns the Okta dialect: the `SSWS` API token, `Link: <...>; rel="next"` pagination with
`limit`, Okta's error body (`errorSummary`, `errorCode`, `errorCauses`) and its rate limit
headers (`X-Rate-Limit-Reset`, epoch seconds, measured against the response's own `Date`
so that a skewed local clock neither hammers nor stalls), and the mapping of Okta users
and groups into a `SourceSnapshot`. Transport, retries and the page-sequence checks are
`orgsync.http`'s.

Calls, and nothing per user: users (two listings, see below), groups, and one member
listing per group (`/api/v1/groups/{id}/users`), a few groups at a time. Okta groups
cannot contain groups, so there is no nesting to resolve.

Who is known, and who is active:

* `GET /api/v1/users` leaves out `DEPROVISIONED` (deactivated) people. Leavers must be
  *known* as inactive, not merely absent: orgsync removes an absent person only if it
  manages them, while an inactive one is out of scope everywhere. So the deactivated are
  read with a second listing, `filter=status eq "DEPROVISIONED"` (the documented way to
  include them; `filter` reads Okta's primary store, unlike the eventually consistent
  `search`). Someone seen by both listings changed status in between: the second wins.
* Active: `ACTIVE`, `PROVISIONED` (activated, first sign-in pending: a joiner),
  `RECOVERY`, `PASSWORD_EXPIRED` and `LOCKED_OUT` (a person who still works here with a
  credential problem; removing their access over a forgotten password would be wrong).
  Inactive: `STAGED` (not yet activated: a future joiner), `SUSPENDED`, `DEPROVISIONED`,
  and any status Okta may add later, so an unknown state never grants access.

Change probe (incremental passes, `core.ports.DetectsChanges`): three requests, one page
each. Users with `filter=lastUpdated gt "<cursor>"` (a filtered listing includes
`DEPROVISIONED` people, and reads Okta's primary store); groups with `lastUpdated gt` or
`lastMembershipUpdated gt` (a rename, a membership); and the System Log
(`/api/v1/logs?since=<cursor>&filter=eventType eq ...`, a polling query: `since` is the
events' persistence time, so an event published late is not missed) for what leaves no
record behind: deleted users and groups, and membership and deactivation events besides.
A full page means more changed than one page holds: the source is read whole. The
cursor is a time on the earlier of orgsync's clock and Okta's (the `Date` of a response;
a full read's cursor costs one request for it) minus `PROBE_OVERLAP`, with what was already seen
inside that window (each object's stamps, each event's uuid), so Okta's clock may be that
far behind orgsync's and a change is reported once; a probe whose answer's `Date` shows
orgsync's clock further ahead than that is refused (`CursorExpired`: read whole), since
its cursor may lie after changes Okta has stamped. A query Okta refuses (400: the
System Log's `since` beyond its retention, a filter it does not take) or a token that may
not read the System Log (403) is `CursorExpired`: the source is read whole that pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

import httpx
import structlog

from orgsync.core.errors import ApiError, CursorExpired, SourceDataError, SourceError
from orgsync.core.model import SourceId, SourcePerson, SourceSnapshot
from orgsync.core.ports import ChangeProbe, ProbeState, ProbeStatus
from orgsync.http.auth import HeaderAuth
from orgsync.http.responses import parse_retry_after, server_time
from orgsync.sources._cursors import dump_cursor, earlier, iso_millis, load_cursor
from orgsync.sources._http import (
    HttpSettings,
    NewIds,
    SourceHttp,
    add_once,
    check_disjoint,
    page_guard,
    require_list,
    resolve_groups,
)

__all__ = ["ACTIVE_STATUSES", "OktaSource", "okta_error_message", "okta_retry_after"]

log = structlog.get_logger(__name__)

ACTIVE_STATUSES: Final = frozenset(
    {"ACTIVE", "PROVISIONED", "RECOVERY", "PASSWORD_EXPIRED", "LOCKED_OUT"}
)
USERS_MAX_LIMIT: Final = 200
"""Okta answers at most 200 users per page of `/api/v1/users`, whatever `limit` asks."""
DEPROVISIONED_FILTER: Final = 'status eq "DEPROVISIONED"'
PROBE_OVERLAP: Final = timedelta(minutes=5)
"""How far behind orgsync's clock Okta's may be, and how late an event may be indexed."""
CLOCK_MARGIN: Final = timedelta(seconds=30)
"""Of the overlap, what is kept for indexing delays when the clocks disagree (the probe
refuses a clock further ahead than the overlap less this)."""
PROBE_PAGE: Final = 200
"""One page per probe listing: more changes than this are read whole, not paged through."""
PROBE_EVENTS: Final = (
    "group.user_membership.add",
    "group.user_membership.remove",
    "user.lifecycle.deactivate",
    "user.lifecycle.delete.initiated",
    "user.lifecycle.delete.completed",
    "group.lifecycle.delete",
    "user.lifecycle.create",
    "user.lifecycle.activate",
    "user.lifecycle.reactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.unsuspend",
    "user.account.update_profile",
    "group.lifecycle.create",
    "group.profile.update",
)
"""System Log events the probe asks for: deletions leave no record to filter on; the
others are also seen through `lastUpdated`/`lastMembershipUpdated`, but an event has a
uuid of its own, so a second change within one millisecond's stamp is still told apart."""


def okta_error_message(response: httpx.Response) -> str | None:
    """`errorSummary [errorCode]: causes` of an Okta error body, else None."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("errorSummary"), str):
        return None
    message = body["errorSummary"]
    if isinstance(body.get("errorCode"), str):
        message = f"{message} [{body['errorCode']}]"
    causes = [
        c["errorSummary"]
        for c in body.get("errorCauses") or []
        if isinstance(c, dict) and isinstance(c.get("errorSummary"), str)
    ]
    return f"{message}: {'; '.join(causes)}" if causes else message


def okta_retry_after(
    response: httpx.Response, *, clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds until Okta's rate limit window resets, from `X-Rate-Limit-Reset`.

    The reset is an epoch second on Okta's clock; Okta's documentation says to compare it
    with the response's `Date`, so a local clock that runs ahead or behind does not matter.
    A `Retry-After`, should one come, is honoured first.
    """
    explicit = parse_retry_after(response.headers)
    if explicit is not None:
        return explicit
    raw = response.headers.get("x-rate-limit-reset")
    if raw is None:
        return None
    try:
        reset = float(raw.strip())
    except ValueError:
        return None
    server = server_time(response)
    now = server.timestamp() if server is not None else clock()
    wait = reset - now
    # A reset already past means the clocks disagree; plain backoff is the safer guess.
    return wait if wait > 0 else None


def _instant(text: str) -> datetime:
    """An Okta timestamp; unreadable: the epoch (never kept in a cursor)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _latest(version: str) -> datetime:
    """The latest of the `|`-separated stamps of a version."""
    return max(_instant(part) for part in version.split("|"))


def _person(doc: dict[str, Any]) -> SourcePerson:
    user_id = doc.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise SourceDataError("okta: a user without an id in GET /api/v1/users")
    profile = doc.get("profile")
    if not isinstance(profile, dict):
        raise SourceDataError(f"okta: user {user_id!r}: no profile")
    email = profile.get("email")
    login = profile.get("login")
    if not isinstance(email, str) or "@" not in email:
        # `email` is required by Okta's base profile; `login` is usually an address too.
        if isinstance(login, str) and "@" in login:
            email = login
        else:  # the core rejects it, with the id: reported, never acted on
            email = email if isinstance(email, str) else ""
    status = doc.get("status")
    if not isinstance(status, str):
        raise SourceDataError(f"okta: user {user_id!r}: no status")
    name = profile.get("displayName")
    if not isinstance(name, str) or not name.strip():
        parts = [profile.get("firstName"), profile.get("lastName")]
        name = " ".join(p for p in parts if isinstance(p, str) and p)
    attributes: dict[str, object] = {"status": status}
    if isinstance(login, str):
        attributes["login"] = login
    return SourcePerson(
        id=SourceId(user_id),
        email=email,
        name=name,
        active=status in ACTIVE_STATUSES,
        attributes=MappingProxyType(attributes),
    )


def _group(doc: dict[str, Any]) -> tuple[SourceId, str]:
    group_id = doc.get("id")
    if not isinstance(group_id, str) or not group_id:
        raise SourceDataError("okta: a group without an id in GET /api/v1/groups")
    profile = doc.get("profile")
    name = profile.get("name") if isinstance(profile, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise SourceDataError(f"okta: group {group_id!r}: profile has no name")
    return SourceId(group_id), name


LOG_REFUSED: Final = "the token may not read the System Log (okta.logs.read)"
"""Why the probe cannot see deletions: the words a pass logs and `validate` prints."""
LOG_ENABLE: Final = (
    "let the token read the System Log: an API token has its creating admin's rights, so "
    "create it as an admin whose role may view the System Log (Read-only Administrator, "
    "Report Administrator or above)"
)


class _LogRefused(CursorExpired):
    """The System Log was refused (403): the probe cannot see deletions."""


class OktaSource:
    """Reads an Okta org through the Management API with an API token.

    Args:
        url: the org URL, e.g. "https://example.okta.com" (a trailing "/api/v1" is ignored).
        token: the API token, sent as `Authorization: SSWS <token>`.
        page_size: `limit` of group and member pages (user pages are capped at 200).
        settings: timeouts, TLS trust, retry budget, member-list workers.
        transport, sleep: for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str,
        page_size: int = 200,
        settings: HttpSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.url = url.rstrip("/").removesuffix("/api/v1")
        self._token = token
        self.page_size = page_size
        self.settings = settings or HttpSettings()
        self._transport = transport
        self._sleep = sleep
        self.clock = clock

    def __repr__(self) -> str:
        return f"OktaSource(url={self.url!r})"

    def _http(self) -> SourceHttp:
        return SourceHttp(
            self.url,
            system="okta",
            credential_key="source.token",
            auth=HeaderAuth(f"SSWS {self._token}", secret=self._token),
            retry=self.settings.retry,
            **self.settings.options(
                error_parser=okta_error_message,
                retry_after=okta_retry_after,
                transport=self._transport,
                sleep=self._sleep,
            ),
        )

    def read(self) -> SourceSnapshot:
        with self._http() as http:
            return self._read(http)

    # ------------------------------------------------------------------ change probe

    def change_cursor(self) -> str | None:
        """A time on Okta's clock when orgsync's runs ahead of it: the probe's clock
        check guards the pass that probes, not the one that wrote the cursor, so a host
        ten minutes fast during a full read (or a replica whose clock is wrong) would
        leave a cursor in Okta's future, and once the clocks agree again the changes
        stamped before it (a leaver taken out of a group) would read as quiet. One
        request, `Date` only; its whole seconds are truncated, hence never ahead."""
        with self._http() as http:
            _, response = http.get_page("/api/v1/users", {"limit": 1})
        return dump_cursor(earlier(self.clock(), server_time(response)) - PROBE_OVERLAP, {})

    def probe_changes(self, cursor: str, people: int, groups: int) -> ChangeProbe:
        """See the module docstring; `people` and `groups` are not needed (deletions are
        in the System Log)."""
        since, seen = load_cursor(cursor, system="okta")
        now = self.clock()
        stamp = iso_millis(since)
        queries: tuple[tuple[str, str, dict[str, object]], ...] = (
            ("user", "/api/v1/users", {"filter": f'lastUpdated gt "{stamp}"'}),
            (
                "group",
                "/api/v1/groups",
                {"filter": f'lastUpdated gt "{stamp}" or lastMembershipUpdated gt "{stamp}"'},
            ),
            (
                "event",
                "/api/v1/logs",
                {
                    "since": stamp,
                    "filter": " or ".join(f'eventType eq "{e}"' for e in PROBE_EVENTS),
                },
            ),
        )
        recent: dict[str, str] = {}
        complete = True
        with self._http() as http:
            for kind, path, params in queries:
                items, server = self._probe_page(http, path, {**params, "limit": PROBE_PAGE})
                if kind == "user":
                    self._check_clock(server)
                    now = earlier(now, server)
                # A polling System Log query always has a next link; a page that is not
                # full holds everything there is so far, for every listing alike.
                complete = complete and len(items) < PROBE_PAGE
                for doc in items:
                    key, version = _probe_version(kind, doc)
                    recent[key] = version
        following = now - PROBE_OVERLAP
        fresh = sorted(k for k, v in recent.items() if seen.get(k) != v)
        changed = bool(fresh) or not complete
        if changed:
            log.info(
                "source.changes_found",
                system="okta",
                changed_objects=len(fresh),
                complete=complete,
            )
        keep = {k: v for k, v in recent.items() if _latest(v) >= following}
        if not complete:
            keep = {}  # more than a page changed: read whole until the window has passed
        return ChangeProbe(changed=changed, cursor=dump_cursor(following, keep), calls=len(queries))

    def change_probe_status(self, people: int, groups: int) -> ProbeStatus:
        """A cursor taken now and probed once, as an incremental pass would (reads only).
        A probe refused (`CursorExpired`, which a pass logs as `source.cursor_expired`)
        degrades every pass to a whole read."""
        cursor = self.change_cursor()
        try:
            probe = self.probe_changes(cursor or "", people, groups)
        except CursorExpired as expired:
            return ProbeStatus(
                ProbeState.DEGRADED,
                reason=str(expired),
                cost=(
                    "each incremental pass makes the probe's requests, then reads the whole "
                    "directory and compares it with the last one"
                ),
                enable=LOG_ENABLE if isinstance(expired, _LogRefused) else "",
            )
        return ProbeStatus(
            ProbeState.AVAILABLE,
            cost=(
                f"a quiet incremental pass is {probe.calls} requests (users and groups "
                "changed since, and the System Log)"
            ),
        )

    @staticmethod
    def _probe_page(
        http: SourceHttp, path: str, params: dict[str, object]
    ) -> tuple[list[Any], datetime | None]:
        try:
            body, response = http.get_page(path, params)
        except SourceError as error:
            cause = error.__cause__
            if isinstance(cause, ApiError) and cause.status == 403:
                raise _LogRefused(f"okta: GET {path}: {LOG_REFUSED}: {error}") from error
            if isinstance(cause, ApiError) and cause.status == 400:
                raise CursorExpired(
                    f"okta: GET {path}: Okta refused the probe's query: {error}"
                ) from error
            raise
        items = require_list(body, system="okta", where=f"GET {path} (change probe)")
        return items, server_time(response)

    def _check_clock(self, server: datetime | None) -> None:
        """Refuse the probe when orgsync's clock runs so far ahead of Okta's that the
        overlap no longer covers it: the cursor, a time on orgsync's clock, would then lie
        after changes Okta stamped since, and they would be missed until the next full
        pass. Reading whole is correct whatever the clocks say."""
        if server is None:
            return
        ahead = self.clock() - server
        if ahead > PROBE_OVERLAP - CLOCK_MARGIN:
            raise CursorExpired(
                f"okta: orgsync's clock runs {int(ahead.total_seconds())} s ahead of Okta's "
                f"(the response's Date), more than the change probe's overlap of "
                f"{int(PROBE_OVERLAP.total_seconds())} s allows; the source is read whole "
                "until the host's time is corrected (NTP)"
            )

    def _read(self, http: SourceHttp) -> SourceSnapshot:
        people: dict[SourceId, SourcePerson] = {}
        user_limit = min(self.page_size, USERS_MAX_LIMIT)
        for doc in self._pages(http, "/api/v1/users", {"limit": user_limit}):
            person = _person(doc)
            add_once(people, person.id, person, system="okta", where="GET /api/v1/users")
        deprovisioned: dict[SourceId, SourcePerson] = {}
        query = {"limit": user_limit, "filter": DEPROVISIONED_FILTER}
        for doc in self._pages(http, "/api/v1/users", query):
            person = _person(doc)
            where = f"GET /api/v1/users?filter={DEPROVISIONED_FILTER}"
            add_once(deprovisioned, person.id, person, system="okta", where=where)
        people.update(deprovisioned)  # the later listing is the fresher status

        group_pages = self._pages(http, "/api/v1/groups", {"limit": self.page_size})
        named: dict[SourceId, str] = {}
        for doc in group_pages:
            group_id, name = _group(doc)
            add_once(named, group_id, name, system="okta", where="GET /api/v1/groups")
        groups = list(named.items())
        check_disjoint("okta", people, named)

        def members(group: tuple[SourceId, str]) -> tuple[SourceId, ...]:
            path = f"/api/v1/groups/{group[0]}/users"
            ids = []
            for doc in self._pages(http, path, {"limit": self.page_size}):
                member_id = doc.get("id")
                if not isinstance(member_id, str) or not member_id:
                    raise SourceDataError(f"okta: GET {path}: a member without an id")
                if member_id in named:
                    # Okta groups hold users only; the core would read a group's id here
                    # as that group nested, giving its members this group's access.
                    raise SourceDataError(
                        f"okta: GET {path}: member {member_id!r} is a group, and Okta groups "
                        "cannot contain groups; nothing will be planned"
                    )
                ids.append(SourceId(member_id))
            return tuple(dict.fromkeys(ids))

        snapshot_groups = resolve_groups(
            http, groups, members, workers=self.settings.max_concurrency
        )
        log.info("source.okta.read", people=len(people), groups=len(snapshot_groups))
        return SourceSnapshot(people=tuple(people.values()), groups=snapshot_groups)

    @staticmethod
    def _pages(http: SourceHttp, path: str, params: dict[str, object]) -> Iterator[dict[str, Any]]:
        """Every object of one listing, following `Link: rel="next"` to the end."""
        listing = f"GET {path}"
        guard = page_guard("okta", listing)
        progress = NewIds("okta", listing)
        body, response = http.get_page(path, params)
        while True:
            items = require_list(body, system="okta", where=f"{listing} (page {guard.pages + 1})")
            next_url = response.links.get("next", {}).get("url")
            guard.page(len(items), next_url)
            progress.page(items, more=next_url is not None)
            yield from items
            if next_url is None:
                return
            if http.url(next_url).path != http.url(path).path:
                # Okta's next link is the same listing with `after`: one naming another
                # (all-staff's members after owners') would read one group as another.
                raise SourceError(
                    f"okta: {listing}: the next-page link leads to another listing "
                    f"({http.url(next_url).path}); nothing will be planned"
                )
            # The next link carries `after` and `limit` (and the filter) itself.
            body, response = http.get_page(next_url)


def _probe_version(kind: str, doc: dict[str, Any]) -> tuple[str, str]:
    """(key, version) of an object or event a probe listed."""
    if kind == "event":
        return f"event/{doc.get('uuid')}", str(doc.get("published"))
    version = str(doc.get("lastUpdated"))
    if kind == "group":
        version = f"{version}|{doc.get('lastMembershipUpdated')}"
    return f"{kind}/{doc.get('id')}", version
