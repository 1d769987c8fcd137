"""The Microsoft Entra ID source: users, groups and direct members through Microsoft Graph.

Owns the Graph dialect: the client-credentials token from
`{login_url}/{tenant_id}/oauth2/v2.0/token` (scope `https://graph.microsoft.com/.default`),
cached until shortly before it expires and renewed once if Graph refuses it; pages followed
through `@odata.nextLink`; Graph's error body (`error.code`, `error.message`) and the
OAuth one (`error`, `error_description`); and the mapping of users and groups into a
`SourceSnapshot`. Transport, retries (429/503 with `Retry-After`) and page-sequence checks
are `orgsync.http`'s.

Calls, and nothing per user: `/users` and `/groups` with `$select` (only what is needed,
and `accountEnabled` is returned only when selected) and `$top=999`, then one
`/groups/{id}/members?$select=id` listing per group, a few at a time. Members are direct
(users and nested groups); the core flattens nesting and breaks cycles. Devices, service
principals and contacts in a group are not people and are left out.

Decisions:

* Email: `mail`, else `userPrincipalName` when it is an address. A guest's UPN
  (`name_domain#EXT#@tenant.onmicrosoft.com`) is not a mailbox, so a guest without `mail`
  has no email. Such people (rare: room or service accounts, mail-less guests) cannot be
  matched by email; they are rejected records of the snapshot (reported with their id,
  never acted on, and a member linked to them is kept) rather than failing every run
  for the whole directory, or reading as absent.
* Change probe (incremental passes, `core.ports.DetectsChanges`): Graph delta queries.
  The cursor is the pair of `@odata.deltaLink`s of `/users/delta` and `/groups/delta`,
  taken with `$deltatoken=latest` just before a full read; a probe follows both and
  reports a change when either lists anything (deletions included, as `@removed`). A
  410 Gone (the sync state expired) is `CursorExpired`: the source is read whole.
* Active: `accountEnabled` true. Null (unknown) is inactive: an unknown state never
  grants access. A user object without the property means `$select` was not honoured,
  and the read fails rather than guessing for everybody.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote, unquote

import httpx
import structlog

from orgsync.core.errors import ApiError, CursorExpired, SourceDataError, SourceError
from orgsync.core.model import (
    RejectedRecord,
    SourceId,
    SourcePerson,
    SourceSnapshot,
)
from orgsync.core.ports import ChangeProbe, ProbeState, ProbeStatus
from orgsync.http.auth import ClientCredentials, TokenEndpoint
from orgsync.sources._http import (
    HttpSettings,
    NewIds,
    SourceHttp,
    add_once,
    check_disjoint,
    metrics_system,
    page_guard,
    require_list,
    resolve_groups,
)

__all__ = ["GRAPH_SCOPE", "EntraSource", "graph_error_message", "pick_email"]

log = structlog.get_logger(__name__)

GRAPH_SCOPE: Final = "https://graph.microsoft.com/.default"
USER_SELECT: Final = "id,mail,userPrincipalName,displayName,accountEnabled"
GROUP_SELECT: Final = "id,displayName"
MEMBER_TYPES: Final = frozenset({"#microsoft.graph.user", "#microsoft.graph.group"})


def graph_error_message(response: httpx.Response) -> str | None:
    """`message [code]` of a Graph error, or `error: error_description` of an OAuth one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return f"{error['message']} [{code}]" if isinstance(code, str) else error["message"]
    if isinstance(error, str):
        description = body.get("error_description")
        if isinstance(description, str):
            # AADSTS descriptions append trace and correlation ids on further lines.
            return f"{error}: {description.splitlines()[0]}"
        return error
    return None


def pick_email(user: dict[str, Any]) -> str | None:
    """`mail`, else the UPN when it is an address (not a guest's `#EXT#` UPN), else None."""
    mail = user.get("mail")
    if isinstance(mail, str) and "@" in mail:
        return mail
    upn = user.get("userPrincipalName")
    if isinstance(upn, str) and "@" in upn and "#EXT#" not in upn.upper():
        return upn
    return None


def _check_member_kind(
    path: str,
    member_id: str,
    kind: str | None,
    user_ids: Collection[SourceId],
    group_ids: Collection[SourceId],
) -> None:
    """A member typed a user must not be a listed group, nor one typed a group a listed
    user: the core tells people from nested groups by id, so a mistyped member would give
    a group's members a person's access, or a person a group's."""
    if kind == "#microsoft.graph.user" and member_id in group_ids:
        actual = "a group"
    elif kind == "#microsoft.graph.group" and member_id in user_ids:
        actual = "a user"
    else:
        return
    raise SourceDataError(
        f"entra: GET {path}: member {member_id!r} is typed {kind} but is {actual} of the "
        "directory; nothing will be planned"
    )


def _person(doc: dict[str, Any]) -> SourcePerson | None:
    user_id = doc.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise SourceDataError("entra: a user without an id in GET /users")
    if "accountEnabled" not in doc:
        raise SourceDataError(
            f"entra: user {user_id!r} has no accountEnabled: the server ignored $select, so "
            "nobody's status can be known"
        )
    email = pick_email(doc)
    if email is None:
        return None
    enabled = doc.get("accountEnabled")
    name = doc.get("displayName")
    attributes: dict[str, object] = {"accountEnabled": enabled}
    if isinstance(doc.get("userPrincipalName"), str):
        attributes["userPrincipalName"] = doc["userPrincipalName"]
    return SourcePerson(
        id=SourceId(user_id),
        email=email,
        name=name if isinstance(name, str) else "",
        active=enabled is True,
        attributes=MappingProxyType(attributes),
    )


class EntraSource:
    """Reads an Entra ID tenant through Microsoft Graph as an application.

    The app registration needs the application permissions `User.Read.All` and
    `GroupMember.Read.All` (or `Group.Read.All`), with admin consent.

    Args:
        tenant_id, client_id, client_secret: the app registration's credentials.
        graph_url: the Graph root ("https://graph.microsoft.com/v1.0").
        login_url: the identity platform root ("https://login.microsoftonline.com").
        page_size: `$top` of every listing (Graph allows up to 999).
        settings: timeouts, TLS trust, retry budget, member-list workers.
        transport, sleep, clock: for tests.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        graph_url: str = "https://graph.microsoft.com/v1.0",
        login_url: str = "https://login.microsoftonline.com",
        page_size: int = 999,
        settings: HttpSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= page_size <= 999:
            raise ValueError("page_size must be between 1 and 999")
        self.graph_url = graph_url.rstrip("/")
        self.token_url = f"{login_url.rstrip('/')}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"
        self.page_size = page_size
        self.settings = settings or HttpSettings()
        self._transport = transport
        self._sleep = sleep
        # Kept across reads: a daemon reusing this source asks for a token once an hour.
        self.token = ClientCredentials(
            TokenEndpoint(
                self.token_url,
                system=metrics_system("entra"),
                **self.settings.options(
                    error_parser=graph_error_message,
                    transport=transport,
                ),
            ),
            client_id=client_id,
            client_secret=client_secret,
            scope=GRAPH_SCOPE,
            in_body=True,
            clock=clock,
        )
        self.skipped_without_email = 0

    def __repr__(self) -> str:
        return f"EntraSource(graph_url={self.graph_url!r}, token_url={self.token_url!r})"

    def _http(self) -> SourceHttp:
        return SourceHttp(
            self.graph_url,
            system="entra",
            credential_key="source.client_secret",
            auth=self.token,
            retry=self.settings.retry,
            **self.settings.options(
                error_parser=graph_error_message,
                transport=self._transport,
                sleep=self._sleep,
            ),
        )

    # ------------------------------------------------------------------ change probe

    def change_cursor(self) -> str | None:
        with self._http() as http:
            links = {
                kind: self._delta_round(http, f"/{kind}/delta", {"$deltatoken": "latest"})[1]
                for kind in ("users", "groups")
            }
        return json.dumps(links)

    def probe_changes(self, cursor: str, people: int, groups: int) -> ChangeProbe:
        try:
            links = json.loads(cursor)
            starts = {kind: str(links[kind]) for kind in ("users", "groups")}
        except (ValueError, KeyError, TypeError) as error:
            raise CursorExpired(
                f"entra: the change cursor is not one this source wrote ({error})"
            ) from None
        changed = 0
        calls = 0
        following: dict[str, str] = {}
        with self._http() as http:
            for kind, link in starts.items():
                try:
                    count, following[kind], pages = self._delta_round(http, link, None)
                except SourceError as error:
                    cause = error.__cause__
                    if isinstance(cause, ApiError) and cause.status == 410:
                        raise CursorExpired(f"entra: {error}") from error
                    raise
                changed += count
                calls += pages
        if changed:
            log.info("source.changes_found", system="entra", changed_objects=changed)
        return ChangeProbe(changed=bool(changed), cursor=json.dumps(following), calls=calls)

    def change_probe_status(self, people: int, groups: int) -> ProbeStatus:
        """A cursor taken now and probed once, as an incremental pass would (reads only).
        Graph delta needs no permission the read does not: nothing to enable."""
        cursor = self.change_cursor()
        try:
            probe = self.probe_changes(cursor or "", people, groups)
        except CursorExpired as expired:
            return ProbeStatus(
                ProbeState.DEGRADED,
                reason=str(expired),
                cost="each incremental pass reads the whole directory and compares it",
            )
        return ProbeStatus(
            ProbeState.AVAILABLE,
            cost=(
                f"a quiet incremental pass is {probe.calls} requests (Graph delta of /users "
                "and /groups)"
            ),
        )

    def _delta_round(
        self, http: SourceHttp, start: str, params: dict[str, object] | None
    ) -> tuple[int, str, int]:
        """Follow a delta round to its deltaLink: (objects listed, the deltaLink, pages)."""
        guard = page_guard("entra", f"GET {start.split('?', maxsplit=1)[0]}")
        body = http.get_json(start, params)
        listed = 0
        while True:
            if not isinstance(body, dict):
                raise SourceDataError("entra: a delta page is not a JSON object")
            items = require_list(body.get("value"), system="entra", where="delta: value")
            listed += len(items)
            next_link, delta_link = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
            guard.page(len(items), next_link if isinstance(next_link, str) else None)
            if isinstance(delta_link, str):
                return listed, delta_link, guard.pages
            if not isinstance(next_link, str):
                raise SourceDataError("entra: a delta page without nextLink or deltaLink")
            body = http.get_json(next_link)

    def read(self) -> SourceSnapshot:
        with self._http() as http:
            return self._read(http)

    def _read(self, http: SourceHttp) -> SourceSnapshot:
        top = self.page_size
        people: dict[SourceId, SourcePerson] = {}
        skipped: list[str] = []
        for doc in self._pages(http, "/users", {"$select": USER_SELECT, "$top": top}):
            person = _person(doc)
            if person is None:
                skipped.append(str(doc["id"]))
            else:
                add_once(people, person.id, person, system="entra", where="GET /users")
        rejected = tuple(
            RejectedRecord(SourceId(user_id), "neither mail nor an address-shaped UPN")
            for user_id in skipped
        )
        self.skipped_without_email = len(skipped)
        if skipped:
            log.warning(
                "source.people_without_email",
                system="entra",
                skipped=len(skipped),
                ids=skipped[:10],
                reason="neither mail nor an address-shaped userPrincipalName: cannot be matched",
            )

        named: dict[SourceId, str] = {}
        for doc in self._pages(http, "/groups", {"$select": GROUP_SELECT, "$top": top}):
            group_id, name = doc.get("id"), doc.get("displayName")
            if not isinstance(group_id, str) or not group_id:
                raise SourceDataError("entra: a group without an id in GET /groups")
            if not isinstance(name, str) or not name.strip():
                raise SourceDataError(f"entra: group {group_id!r} has no displayName")
            add_once(named, SourceId(group_id), name, system="entra", where="GET /groups")
        groups = list(named.items())
        user_ids: set[SourceId] = {*people, *(SourceId(i) for i in skipped)}
        check_disjoint("entra", user_ids, named)

        def members(group: tuple[SourceId, str]) -> tuple[SourceId, ...]:
            path = f"/groups/{quote(group[0], safe='')}/members"
            ids: list[SourceId] = []
            for doc in self._pages(http, path, {"$select": "id", "$top": top}):
                member_id, kind = doc.get("id"), doc.get("@odata.type")
                if not isinstance(member_id, str) or not member_id:
                    raise SourceDataError(f"entra: GET {path}: a member without an id")
                if kind is None or kind in MEMBER_TYPES:
                    _check_member_kind(path, member_id, kind, user_ids, named)
                    ids.append(SourceId(member_id))
            return tuple(dict.fromkeys(ids))

        snapshot_groups = resolve_groups(
            http, groups, members, workers=self.settings.max_concurrency
        )
        log.info("source.entra.read", people=len(people), groups=len(snapshot_groups))
        return SourceSnapshot(
            people=tuple(people.values()), groups=snapshot_groups, rejected=rejected
        )

    @staticmethod
    def _pages(http: SourceHttp, path: str, params: dict[str, object]) -> Iterator[dict[str, Any]]:
        """Every object of one listing, following `@odata.nextLink` to the end."""
        listing = f"GET {path}"
        guard = page_guard("entra", listing)
        progress = NewIds("entra", listing)
        body = http.get_json(path, params)
        while True:
            where = f"{listing} (page {guard.pages + 1})"
            if not isinstance(body, dict):
                raise SourceDataError(f"entra: {where}: expected a JSON object")
            items = require_list(body.get("value"), system="entra", where=f"{where}: value")
            next_link = body.get("@odata.nextLink")
            if next_link is not None and not isinstance(next_link, str):
                raise SourceDataError(f"entra: {where}: @odata.nextLink is not a string")
            guard.page(len(items), next_link)
            progress.page(items, more=next_link is not None)
            yield from items
            if next_link is None:
                return
            if not _same_listing(http.url(next_link).path, unquote(path)):
                # Graph's nextLink is the same listing with a $skiptoken: one naming
                # another (all-staff's members after owners') would read one as another.
                raise SourceError(
                    f"entra: {listing}: the @odata.nextLink leads to another listing "
                    f"({http.url(next_link).path}); nothing will be planned"
                )
            # The next link repeats $select and $top and adds the $skiptoken.
            body = http.get_json(next_link)


def _same_listing(link_path: str, listing_path: str) -> bool:
    """Whether a nextLink's path names the listing asked for.

    Compared without case and by its end: Graph documents nextLinks as opaque and may
    spell the service root its own way (a tenant segment before the resource, another
    casing), but the resource path itself (`/groups/{id}/members`) must be the one
    asked for."""
    link, listing = link_path.casefold().rstrip("/"), listing_path.casefold().rstrip("/")
    return link == listing or link.endswith(listing)
