"""The SCIM 2.0 source: `/Users` and `/Groups` of any RFC 7644 service provider.

Owns the page walk and the translation of SCIM resources into `SourceSnapshot`s. Wire
formats are scim2-models' (`ListResponse[User[EnterpriseUser]]`, `ListResponse[Group]`),
parsed under a tolerant policy so an attribute the models do not declare (a vendor
extension) is dropped instead of failing the read; transport, auth and retries are
`orgsync.http`'s.

Read completely or not at all. Index-based paging (`startIndex`/`count`) has no snapshot
isolation: a user created or deleted between two pages shifts every later page. So each
page is checked against the first: `totalResults` must not change, `startIndex` must be
the one asked for, no page but the last may be shorter than the first, no resource may
come twice, and the walk must end with exactly `totalResults` resources. Any breach is a
`SourceError`; the next run reads again. Servers may answer fewer resources than `count`
asks (their `maxResults`): the first page's length is taken as the page size.

Change probe (incremental passes, `core.ports.DetectsChanges`): `filter=meta.lastModified
gt "<cursor>"` on `/Users` and `/Groups` (attributes `id,meta`), and a one-resource page
of each for `totalResults`, since a deletion leaves no timestamp. The cursor is a time on
orgsync's clock minus `PROBE_OVERLAP` with the resources already seen inside that window;
a provider whose `Date` header shows its clock further behind than that expires the
cursor (the source is read whole), since its stamps could fall before the cursor.
A server that refuses the filter (400, 501), or answers resources older than it asked for
(it ignored the filter), is read whole on every incremental pass instead (a snapshot
diff), until the next full pass tries the filter again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import httpx
import structlog
from pydantic import ValidationError
from scim2_models import (
    Context,
    Email,
    EnterpriseUser,
    Group,
    ListResponse,
    Resource,
    ScimPolicy,
    User,
)

from orgsync.core.errors import ApiError, AuthError, CursorExpired, SourceDataError, SourceError
from orgsync.core.member_kinds import member_kind
from orgsync.core.model import SourceGroup, SourceId, SourcePerson, SourceSnapshot
from orgsync.core.ports import ChangeProbe, ProbeState, ProbeStatus
from orgsync.http.auth import HeaderAuth
from orgsync.http.responses import server_time
from orgsync.sources._http import HttpSettings, SourceHttp

__all__ = ["GROUP_ATTRIBUTES", "USER_ATTRIBUTES", "ScimSource", "pick_email"]

log = structlog.get_logger(__name__)

USER_ATTRIBUTES: Final = "id,userName,emails,name,displayName,active,externalId"
"""What a person needs; `attributes` keeps pages small (no photos, addresses, groups)."""
GROUP_ATTRIBUTES: Final = "id,displayName,members,externalId"

PROBE_OVERLAP: Final = timedelta(minutes=5)
"""How far behind orgsync's clock the provider's may be without a change being missed."""
_WHOLE: Final = "each incremental pass reads /Users and /Groups whole and compares them"

_TOLERANT: Final = ScimPolicy(unknown=ScimPolicy.Unknown.ignore)
"""Vendor extensions and attributes we did not ask for are dropped, never fatal."""


class _Email(Email):
    """scim2-models' Email with `value` read as text.

    Its `EmailStr` refuses special-use domains (`.local`, `.internal`, `.test`), which
    real directories use for internal accounts: one such address would fail the whole
    read. Addresses are checked where orgsync uses them (matching, invitations).
    """

    value: str | None = None


class _UserModel(User[EnterpriseUser]):
    """The core User with its enterprise extension, emails read as `_Email`."""

    emails: list[_Email] | None = None  # type: ignore[assignment]


R = TypeVar("R", bound=Resource[Any])


def pick_email(user: User[Any]) -> str | None:
    """The primary email, else the first work email, else userName if it is an address,
    else any email; None when the user has no address at all."""
    emails = [e for e in user.emails or [] if e.value]
    for email in emails:
        if email.primary:
            return str(email.value)
    for email in emails:
        if (email.type or "").lower() == "work":
            return str(email.value)
    if user.user_name and "@" in user.user_name:
        return user.user_name
    return str(emails[0].value) if emails else None


def _display_name(user: User[Any]) -> str:
    if user.display_name:
        return user.display_name
    if user.name is not None:
        if user.name.formatted:
            return user.name.formatted
        parts = [user.name.given_name, user.name.family_name]
        joined = " ".join(p for p in parts if p)
        if joined:
            return joined
    return user.user_name or ""


class ScimSource:
    """Reads people and groups from a SCIM 2.0 service provider.

    Args:
        http: the source's HTTP client (auth, TLS and retries are set up on it).
        page_size: the `count` asked for per page.
    """

    def __init__(
        self,
        http: SourceHttp,
        *,
        page_size: int = 100,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.http = http
        self.page_size = page_size
        self.clock = clock
        self.pages = 0
        """Pages fetched by the last `read` (the benchmark reports it)."""
        self.filter_refused: str | None = None
        """Why the provider refused the probe's filter, once a probe found out."""

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        credential_key: str,
        page_size: int = 100,
        settings: HttpSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ScimSource:
        """A source with a bearer `token`, or HTTP basic auth with `username`/`password`.

        `settings`: timeouts, TLS trust, retry budget, stop signal and response counter,
        as every REST source takes them (`transport`, `sleep`: for tests).
        """
        settings = settings or HttpSettings()
        auth: httpx.Auth
        if token is not None:
            auth = HeaderAuth.bearer(token)
        elif username is not None and password is not None:
            auth = httpx.BasicAuth(username, password)
        else:
            raise ValueError("give a token, or a username and a password")
        http = SourceHttp(
            url,
            system="scim",
            credential_key=credential_key,
            auth=auth,
            secrets=tuple(s for s in (token, password) if s),
            retry=settings.retry,
            **settings.options(
                headers={"Accept": "application/scim+json, application/json"},
                transport=transport,
                sleep=sleep,
            ),
        )
        return cls(http, page_size=page_size)

    def close(self) -> None:
        self.http.close()

    def read(self) -> SourceSnapshot:
        """Walk /Users then /Groups; the connections are closed at the end (one read per
        instance: the engine builds a source for every run)."""
        self.pages = 0
        try:
            users = list(self._walk("/Users", ListResponse[_UserModel], USER_ATTRIBUTES))
            groups = list(self._walk("/Groups", ListResponse[Group], GROUP_ATTRIBUTES))
        finally:
            self.close()
        people = tuple(_person(u) for u in users)
        return SourceSnapshot(people=people, groups=_groups(groups, people))

    # ------------------------------------------------------------------ change probe

    def change_cursor(self) -> str | None:
        """A time on the earlier of orgsync's clock and the provider's (`Date`, one
        request): the probe's clock check guards the pass that probes, not the full read
        that wrote the cursor, so a host clock ahead during that read (or a replica whose
        clock is wrong) would leave a cursor in the provider's future, and a member taken
        out of a group before it would read as quiet once the clocks agree again."""
        ours = self.clock()
        _, response = self.http.get_page(
            "/Users", {"startIndex": 1, "count": 1, "attributes": "id"}
        )
        theirs = server_time(response)
        now = ours if theirs is None else min(ours, theirs)
        return _cursor(now - PROBE_OVERLAP, {}, filters=True)

    def probe_changes(self, cursor: str, people: int, groups: int) -> ChangeProbe:
        """See the module docstring. The connection stays open: a probe that finds
        something is followed by `read`, which closes it."""
        since, seen, filters = _parse_cursor(cursor)
        started = self.clock()
        following = started - PROBE_OVERLAP
        if not filters:
            return ChangeProbe(changed=True, cursor=_cursor(following, {}, filters=False))
        calls = 0
        recent: dict[str, str] = {}
        too_many = False
        try:
            for path in ("/Users", "/Groups"):
                found, complete = self._changed_since(path, since)
                calls += 1
                recent.update(found)
                too_many = too_many or not complete
        except _FilterRefused as refused:
            self.filter_refused = str(refused)
            log.warning("source.filter_unsupported", system="scim", reason=str(refused))
            return ChangeProbe(
                changed=True, cursor=_cursor(following, {}, filters=False), calls=calls + 1
            )
        counted = (self._total("/Users"), self._total("/Groups"))
        calls += 2
        fresh = sorted(key for key, stamp in recent.items() if seen.get(key) != stamp)
        changed = too_many or bool(fresh) or counted != (people, groups)
        if changed:
            log.info(
                "source.changes_found",
                system="scim",
                changed_resources=len(fresh),
                counted=counted,
                before=(people, groups),
            )
        keep = {k: v for k, v in recent.items() if _instant(v.split("|")[0]) >= following}
        if too_many:
            keep = {}  # more than a page changed: read whole until the window has passed
        return ChangeProbe(
            changed=changed, cursor=_cursor(following, keep, filters=True), calls=calls
        )

    def change_probe_status(self, people: int, groups: int) -> ProbeStatus:
        """A cursor taken now and probed once, as an incremental pass would (reads only)."""
        self.filter_refused = None
        try:
            probe = self.probe_changes(self.change_cursor() or "", people, groups)
        except CursorExpired as expired:
            return ProbeStatus(ProbeState.DEGRADED, reason=str(expired), cost=_WHOLE)
        if self.filter_refused is not None:
            return ProbeStatus(
                ProbeState.DEGRADED,
                reason=f"the provider does not filter on meta.lastModified ({self.filter_refused})",
                cost=_WHOLE,
                enable=(
                    'a provider that answers filter=meta.lastModified gt "<time>" on /Users '
                    "and /Groups (RFC 7644 3.4.2.2; check its filter support and whether "
                    "meta.lastModified is filterable): nothing to set in orgsync"
                ),
            )
        return ProbeStatus(
            ProbeState.AVAILABLE,
            cost=(
                f"a quiet incremental pass is {probe.calls} requests (resources changed "
                "since, and how many there are, of /Users and /Groups)"
            ),
        )

    def _changed_since(self, path: str, since: datetime) -> tuple[dict[str, str], bool]:
        """`path` resource key -> lastModified of one page of those changed since `since`,
        and whether that page held them all."""
        stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {
            "filter": f'meta.lastModified gt "{stamp}"',
            "attributes": "id,meta",
            "startIndex": 1,
            "count": self.page_size,
        }
        try:
            body, response = self.http.get_page(path, params)
        except SourceError as error:
            cause = error.__cause__
            if (
                isinstance(cause, ApiError)
                and not isinstance(cause, AuthError)
                and cause.status in (400, 501)
            ):
                raise _FilterRefused(f"GET {path}?filter=meta.lastModified: {error}") from error
            raise
        self._check_clock(response)
        if not isinstance(body, Mapping):
            raise SourceDataError(f"scim: GET {path} (filter): the answer is no JSON object")
        resources = body.get("Resources") or []
        found: dict[str, str] = {}
        for resource in resources if isinstance(resources, list) else []:
            meta = resource.get("meta") if isinstance(resource, Mapping) else None
            if not isinstance(meta, Mapping):
                meta = {}
            modified = meta.get("lastModified")
            if not isinstance(modified, str) or _instant(modified) < since:
                # No time to compare, or one before what was asked: the filter was not
                # applied, so this answer says nothing about what changed.
                raise _FilterRefused(f"GET {path}: resources outside the filter came back")
            # The version (an ETag) tells apart two changes with one timestamp.
            found[f"{path}/{resource.get('id')}"] = f"{modified}|{meta.get('version') or ''}"
        total = body.get("totalResults")
        return found, isinstance(total, int) and total <= len(found)

    def _check_clock(self, response: httpx.Response) -> None:
        """The filter compares the provider's `lastModified` stamps with a time on
        orgsync's clock: a provider whose clock is behind by more than the overlap stamps a
        change before the cursor, and a member taken out of a group would read as quiet.
        Its `Date` header (whole seconds, hence the margin) shows that skew."""
        said = server_time(response)
        if said is None:
            return  # no Date: nothing to compare (RFC 9110 makes it a server's duty)
        behind = self.clock() - said
        if behind > PROBE_OVERLAP - timedelta(seconds=2):
            raise CursorExpired(
                f"scim: the provider's clock (Date: {response.headers['date']}) is "
                f"{behind.total_seconds():.0f} s behind orgsync's, more than the "
                f"{PROBE_OVERLAP} its meta.lastModified filter allows; reading it whole"
            )

    def _total(self, path: str) -> int:
        body = self.http.get_json(path, {"startIndex": 1, "count": 1, "attributes": "id"})
        total = body.get("totalResults") if isinstance(body, Mapping) else None
        if not isinstance(total, int):
            raise SourceDataError(f"scim: GET {path}: the response has no totalResults")
        return total

    # ------------------------------------------------------------------ the page walk

    def _walk(self, path: str, model: type[ListResponse[R]], attributes: str) -> Iterator[R]:
        """Every resource of `path`, page by page, with the page sequence checked."""
        start, total, first_len = 1, -1, 0
        seen: set[str] = set()
        while True:
            params = {"startIndex": start, "count": self.page_size, "attributes": attributes}
            body = self.http.get_json(path, params)
            self.pages += 1
            page = _parse(model, body, f"GET {path} (startIndex={start})")
            where = f"scim: GET {path} (startIndex={start}, count={self.page_size})"
            if page.total_results is None:
                raise SourceError(f"{where}: the response has no totalResults")
            if total == -1:
                total = page.total_results
            elif page.total_results != total:
                raise SourceError(
                    f"{where}: totalResults changed from {total} to {page.total_results} during "
                    "the read (the directory changed); nothing was planned, the next run reads "
                    "again"
                )
            if page.start_index is not None and page.start_index != start:
                raise SourceError(
                    f"{where}: the server answered startIndex={page.start_index}; paging is "
                    "not honoured, so the read cannot be complete"
                )
            resources: Sequence[R] = page.resources or []
            if len(resources) > self.page_size:
                raise SourceError(
                    f"{where}: {len(resources)} resources on a page of {self.page_size} "
                    "(count is not honoured)"
                )
            got = len(seen) + len(resources)
            if got < total and (not resources or (first_len and len(resources) < first_len)):
                raise SourceError(
                    f"{where}: a short page ({len(resources)} resources) before the end "
                    f"({len(seen)} of {total} read)"
                )
            if got > total:
                raise SourceError(
                    f"{where}: more resources than totalResults={total} (the directory changed "
                    "during the read)"
                )
            first_len = first_len or len(resources)
            for resource in resources:
                if not resource.id:
                    raise SourceDataError(f"{where}: a resource without an id")
                if resource.id in seen:
                    raise SourceError(
                        f"{where}: resource {resource.id!r} came twice (the directory changed "
                        "during the read)"
                    )
                seen.add(resource.id)
                yield resource
            if got == total:
                return
            start += len(resources)


class _FilterRefused(Exception):
    """The provider does not filter on meta.lastModified (refused, or ignored)."""


def _cursor(since: datetime, seen: Mapping[str, str], *, filters: bool) -> str:
    text = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"since": text, "seen": dict(seen), "filters": filters})


def _parse_cursor(cursor: str) -> tuple[datetime, dict[str, str], bool]:
    try:
        value = json.loads(cursor)
        since = datetime.fromisoformat(value["since"]).astimezone(UTC)
        seen = {str(k): str(v) for k, v in dict(value["seen"]).items()}
        filters = bool(value["filters"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CursorExpired(
            f"scim: the change cursor is not one this source wrote ({error})"
        ) from None
    return since, seen, filters


def _instant(text: str) -> datetime:
    """An xsd:dateTime; unreadable or without a zone: the epoch (before any cursor)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return when if when.tzinfo is not None else datetime.fromtimestamp(0, UTC)


def _parse(model: type[ListResponse[R]], body: Any, where: str) -> ListResponse[R]:
    try:
        return model.model_validate(
            body, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=_TOLERANT
        )
    except ValidationError as error:
        # Name fields and record positions, not values: a body holds personal data.
        problems = sorted(
            {".".join(str(p) for p in e["loc"]) + f" ({e['type']})" for e in error.errors()}
        )
        raise SourceDataError(
            f"scim: {where}: not a valid SCIM ListResponse: {'; '.join(problems[:5])}"
        ) from error


def _person(user: User[Any]) -> SourcePerson:
    assert user.id is not None  # checked by the walk
    # No address at all is the core's to reject (reported with the id, never acted on).
    email = pick_email(user) or ""
    attributes: dict[str, object] = {"userName": user.user_name}
    if user.external_id:
        attributes["externalId"] = user.external_id
    return SourcePerson(
        id=SourceId(user.id),
        email=email,
        name=_display_name(user),
        # RFC 7643 makes `active` optional; a server that omits it has no notion of a
        # disabled account, so everyone it lists is active.
        active=user.active is not False,
        attributes=attributes,
    )


def _groups(groups: list[Group], people: tuple[SourcePerson, ...]) -> tuple[SourceGroup, ...]:
    """Groups with members resolved to people and nested groups; dangling members skipped.

    A member is a person or a group by `type`, then `$ref`, then the ids it matches
    (`orgsync.core.member_kinds`): servers numbering users and groups from separate
    sequences give user 2 and group 2 the same id, and taking a nested group for a person
    would give that person its access.
    """
    person_ids = frozenset(p.id for p in people)
    group_ids = frozenset(g.id for g in groups if g.id)
    dangling = 0
    result = []
    for group in groups:
        assert group.id is not None  # checked by the walk
        members: list[SourceId] = []
        subgroups: list[SourceId] = []
        for member in group.members or []:
            value = member.value or ""
            if member.type and member.type.strip().casefold() not in ("user", "group"):
                # A device, contact or service principal: no person. Providers numbering
                # each kind from its own sequence give device 2 and user 2 the same id,
                # and looking the value up would hand this group's access to user 2.
                dangling += 1
                continue
            kind = member_kind(
                value, type_=member.type, ref=member.ref, user_ids=person_ids, group_ids=group_ids
            )
            # Servers need not check references (scim2-server does not), and a user can
            # be deleted between the /Users and /Groups walks: such members are skipped,
            # counted, and picked up by the next run if they come back.
            if kind == "User" and value in person_ids:
                members.append(SourceId(value))
            elif kind == "Group" and value in group_ids:
                subgroups.append(SourceId(value))
            else:
                dangling += 1
        result.append(
            SourceGroup(
                id=SourceId(group.id),
                name=group.display_name or group.id,
                members=tuple(members),
                subgroups=tuple(subgroups),
            )
        )
    if dangling:
        log.warning(
            "source.dangling_members",
            system="scim",
            skipped=dangling,
            reason="group members that are neither a listed user nor a listed group",
        )
    return tuple(result)
