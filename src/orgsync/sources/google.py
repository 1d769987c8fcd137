"""The Google Workspace source: users, groups and members through the Admin SDK Directory API.

Owns the Google dialect: a service account with domain-wide delegation (a JWT signed RS256
with the account's key, impersonating `subject`, exchanged at the token endpoint with the
`urn:ietf:params:oauth:grant-type:jwt-bearer` grant; the access token is cached until
shortly before expiry and renewed once if the API refuses it); `pageToken` /
`nextPageToken` pagination; Google's error body (`error.message`, `error.errors[].reason`)
including its habit of answering a rate limit with 403 `rateLimitExceeded` /
`userRateLimitExceeded`, which is retried like a 429; and the mapping of users, groups and
members into a `SourceSnapshot`. Transport, the token flow, retries and page-sequence
checks are `orgsync.http`'s.

Calls, and nothing per user: `users.list` and `groups.list` for the `customer`, then one
`members.list` per group, a few at a time. Members are direct; nested groups (type
`GROUP`) are flattened by the core, which also breaks cycles.

Decisions:

* Active: neither `suspended` nor `archived` (an archived user is a leaver whose data is
  kept; they must not keep access).
* A member of type `CUSTOMER` stands for every user of the account (a group "everyone in
  the company" is built that way). It is expanded to every person read, active or not;
  inactive people are out of scope anyway. Members of type `EXTERNAL` are not users of the
  account and are left out.
* The token asks only the three read-only scopes: `admin.directory.user.readonly`,
  `admin.directory.group.readonly`, `admin.directory.group.member.readonly`; those are the
  scopes to delegate to the service account's client id in the Admin console.

Change probe (incremental passes, `core.ports.DetectsChanges`), on the Admin SDK Reports
API, since the Directory API lists without any change filter: `activities.list`
(`GET {reports_url}/activity/users/all/applications/{admin,groups_enterprise}` with
`startTime`, `maxResults=1000`, `pageToken`): a quiet pass costs one token request (each
run builds its source anew) and two requests, whatever the directory's size.

* Its own token, asking only `admin.reports.audit.readonly`: domain-wide delegation refuses
  a token for any scope not delegated, so adding it to the directory token would break
  every install that has not delegated it. When that token is refused
  (`unauthorized_client`: not delegated) or the Reports API answers 403 (the impersonated
  admin may not read reports), the source says so once per process
  (`source.change_probe_degraded`: what to delegate, what each pass costs without it) and
  keeps today's behaviour: incremental passes read the directory whole and compare it with
  the digests. Nothing fails, and delegating the scope later makes the next read's cursor
  a probe's.
* Which activities count as a change (`_counts`): every `groups_enterprise` one (a group
  owner's membership change outside the Admin console, among others); `admin` ones of type
  `USER_SETTINGS` and `GROUP_SETTINGS` except a few that change no name, address, status,
  organizational unit, group or membership (passwords, 2-step verification, OAuth tokens;
  an unknown name counts); `ORG_SETTINGS` ones naming an organizational unit (renaming one
  moves its people's `orgUnitPath`) and `DOMAIN_SETTINGS` ones naming a domain (a domain
  renamed or removed changes addresses). The rule leans to counting: a false positive
  costs one read, a false negative keeps or grants access until the next full pass.
* Lag and overlap: Google's "Data retention and lag times" page says admin and groups
  events take "a couple of minutes" to appear, and may be later. The cursor is a time,
  on the earlier of orgsync's clock and Google's (`Date`), less `PROBE_OVERLAP` (15
  minutes), with the keys (`id.time`/`id.uniqueQualifier`) of the counted activities
  already seen inside that window: an activity that appears late inside the overlap is
  still found, and one already acted on is not reported again. A full read's cursor lists
  the window first (those changes are in the read).
* Expiry: the logs keep six months, and `activities.list` silently returns only the last
  180 days for an older `startTime`; a cursor older than that less a day is
  `CursorExpired` (the source is read whole), and so is a window Google refuses (400,
  "Start time is after end time": a cursor in Google's future). More than
  `PROBE_MAX_PAGES` pages in the window is a change (read whole) rather than a long page
  walk.

Residual risk, which only full passes (`[schedule] full_interval`) correct: a change that
is never logged (Google's page: "In rare cases, events might not be reported"), logged
later than the overlap, or made by a path that writes neither log: suspensions Google
makes itself (an account hijacked or spamming: the `login` log's `account_disabled_*`,
not read here), and event types outside the rule above.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from orgsync.core.errors import (
    ApiError,
    AuthError,
    ConfigError,
    CursorExpired,
    SourceDataError,
    SourceError,
)
from orgsync.core.model import SourceId, SourcePerson, SourceSnapshot
from orgsync.core.ports import ChangeProbe, ProbeState, ProbeStatus
from orgsync.http.auth import JWT_BEARER_GRANT, JwtBearer, TokenEndpoint
from orgsync.http.responses import default_is_transient, server_time
from orgsync.sources._cursors import dump_cursor, earlier, iso_millis, load_cursor
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

__all__ = [
    "JWT_BEARER_GRANT",
    "PROBE_OVERLAP",
    "REPORTS_SCOPE",
    "SCOPES",
    "GoogleSource",
    "ServiceAccountKey",
    "google_error_message",
    "google_is_transient",
]

log = structlog.get_logger(__name__)

SCOPES: Final = (
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
)
REPORTS_SCOPE: Final = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
"""The change probe's scope, asked for by a token of its own (see the module docstring)."""
USERS_MAX_RESULTS: Final = 500
GROUPS_MAX_RESULTS: Final = 200
"""`groups.list` and `members.list` allow at most 200 per page (`users.list` 500)."""
ASSERTION_LIFETIME: Final = 3600
"""Google accepts assertions valid for at most an hour."""
_RATE_LIMIT_REASONS: Final = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
PROBE_OVERLAP: Final = timedelta(minutes=15)
"""How late an activity may appear (Google: "a couple of minutes") and still be found,
and how far Google's clock may differ from orgsync's."""
REPORTS_RETENTION: Final = timedelta(days=180)
"""Admin and Groups Enterprise log events are kept six months; a cursor older than this
less `RETENTION_MARGIN` is expired."""
RETENTION_MARGIN: Final = timedelta(days=1)
PROBE_PAGE: Final = 1000
"""`maxResults` of the probe's listings (the API's default and largest)."""
PROBE_MAX_PAGES: Final = 5
"""Pages of one application's window walked before calling it a change (read whole)."""
PROBE_APPLICATIONS: Final = ("admin", "groups_enterprise")
_COUNTED_ADMIN_TYPES: Final = frozenset({"USER_SETTINGS", "GROUP_SETTINGS"})
_UNCOUNTED_USER_EVENTS: Final = frozenset(
    {
        "CHANGE_PASSWORD",
        "CHANGE_PASSWORD_ON_NEXT_LOGIN",
        "DELETE_2SV_SCRATCH_CODES",
        "GENERATE_2SV_SCRATCH_CODES",
        "REVOKE_3LO_DEVICE_TOKENS",
        "REVOKE_3LO_TOKEN",
        "REVOKE_ASP",
        "RESET_SIGNIN_COOKIES",
        "TURN_OFF_2_STEP_VERIFICATION",
    }
)
"""`USER_SETTINGS` activities that change nothing orgsync reads (credentials only)."""
_DEGRADED_REFUSALS: Final = ("unauthorized_client", "access_denied", "invalid_scope")
"""A token endpoint's refusals that mean "this scope is not delegated"."""
_QUIET: Final = "a token and two requests"
"""A quiet probe: the Reports token, and one listing per `PROBE_APPLICATIONS`."""
_SAID_DEGRADED: set[tuple[str, str, str]] = set()


@dataclass(frozen=True, slots=True, repr=False)
class ServiceAccountKey:
    """The parts of a service account key file (JSON) the token exchange needs."""

    client_email: str
    private_key_id: str
    private_key: RSAPrivateKey

    def __repr__(self) -> str:
        return f"ServiceAccountKey(client_email={self.client_email!r})"

    @classmethod
    def from_json(cls, text: str, *, key: str = "source.credentials_file") -> ServiceAccountKey:
        """Parse a key file's text; `ConfigError` names `key` and never quotes the content."""
        try:
            document = json.loads(text)
        except ValueError:
            raise ConfigError(f"{key}: not JSON (expected a service account key file)") from None
        if not isinstance(document, dict) or document.get("type") != "service_account":
            raise ConfigError(f'{key}: not a service account key (no "type": "service_account")')
        fields = {}
        for name in ("client_email", "private_key_id", "private_key"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}: the key file has no {name}")
            fields[name] = value
        try:
            private_key = load_pem_private_key(fields["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{key}: private_key is not a readable PEM private key") from None
        if not isinstance(private_key, RSAPrivateKey):
            raise ConfigError(f"{key}: private_key is not an RSA key (Google signs RS256)")
        return cls(fields["client_email"], fields["private_key_id"], private_key)


def _google_error(
    response: httpx.Response, scopes: tuple[str, ...] = SCOPES
) -> tuple[str | None, set[str]]:
    """The message and the `errors[].reason`s of a Google error body (`scopes`: those the
    refused token asked for, named in the hint)."""
    try:
        body = response.json()
    except ValueError:
        return None, set()
    if not isinstance(body, dict):
        return None, set()
    error = body.get("error")
    if isinstance(error, dict):
        reasons = {
            e["reason"]
            for e in error.get("errors") or []
            if isinstance(e, dict) and isinstance(e.get("reason"), str)
        }
        message = error.get("message")
        if not isinstance(message, str):
            return None, reasons
        label = ", ".join(sorted(reasons)) or error.get("status")
        return (f"{message} [{label}]" if isinstance(label, str) and label else message), reasons
    if isinstance(error, str):
        description = body.get("error_description")
        message = f"{error}: {description}" if isinstance(description, str) else error
        if error == "unauthorized_client":
            message += (
                " (is domain-wide delegation granted to this service account's client id, "
                f"for the scopes {', '.join(scopes)}?)"
            )
        return message, set()
    return None, set()


def google_error_message(response: httpx.Response) -> str | None:
    return _google_error(response)[0]


def _reports_error_message(response: httpx.Response) -> str | None:
    return _google_error(response, (REPORTS_SCOPE,))[0]


def google_is_transient(response: httpx.Response) -> bool:
    """429/408/5xx, and Google's 403 `rateLimitExceeded` / `userRateLimitExceeded`."""
    if default_is_transient(response):
        return True
    return response.status_code == 403 and bool(_google_error(response)[1] & _RATE_LIMIT_REASONS)


def _person(doc: dict[str, Any]) -> SourcePerson:
    user_id = doc.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise SourceDataError("google: a user without an id in users.list")
    email = doc.get("primaryEmail")
    if not isinstance(email, str):
        email = ""  # the core rejects it, with the id: reported, never acted on
    name_doc = doc.get("name")
    name = ""
    if isinstance(name_doc, dict):
        full = name_doc.get("fullName")
        if isinstance(full, str) and full.strip():
            name = full
        else:
            parts = [name_doc.get("givenName"), name_doc.get("familyName")]
            name = " ".join(p for p in parts if isinstance(p, str) and p)
    suspended = doc.get("suspended") is True
    archived = doc.get("archived") is True
    attributes: dict[str, object] = {"suspended": suspended, "archived": archived}
    if isinstance(doc.get("orgUnitPath"), str):
        attributes["orgUnitPath"] = doc["orgUnitPath"]
    return SourcePerson(
        id=SourceId(user_id),
        email=email,
        name=name,
        active=not (suspended or archived),
        attributes=MappingProxyType(attributes),
    )


class GoogleSource:
    """Reads a Google Workspace account through the Directory API as a delegated admin.

    Args:
        key: the service account's key.
        subject: the admin user the service account impersonates.
        customer: the account (`my_customer`, or a customer id such as `C01abc23d`).
        directory_url: the Directory API root.
        reports_url: the Reports API root (the change probe's).
        token_url: the OAuth token endpoint (also the JWT's `aud`).
        page_size: `maxResults` (capped at 500 for users, 200 for groups and members).
        settings: timeouts, TLS trust, retry budget, member-list workers.
        transport, sleep, clock, wall_clock: for tests.
    """

    def __init__(
        self,
        *,
        key: ServiceAccountKey,
        subject: str,
        customer: str = "my_customer",
        directory_url: str = "https://admin.googleapis.com/admin/directory/v1",
        reports_url: str = "https://admin.googleapis.com/admin/reports/v1",
        token_url: str = "https://oauth2.googleapis.com/token",  # noqa: S107 - a URL
        page_size: int = 500,
        settings: HttpSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.key = key
        self.subject = subject
        self.customer = customer
        self.directory_url = directory_url.rstrip("/")
        self.reports_url = reports_url.rstrip("/")
        self.token_url = token_url
        self.page_size = page_size
        self.settings = settings or HttpSettings()
        self._transport = transport
        self._sleep = sleep
        self._wall_clock = wall_clock
        # Kept across reads: a daemon reusing this source asks for a token once an hour.
        self.token = JwtBearer(
            TokenEndpoint(
                token_url,
                system=metrics_system("google"),
                **self.settings.options(error_parser=google_error_message, transport=transport),
            ),
            assertion=self.assertion,
            clock=clock,
        )
        # The probe's own token: a scope not delegated must not cost the directory's.
        self.reports_token = JwtBearer(
            TokenEndpoint(
                token_url,
                system=metrics_system("google"),
                **self.settings.options(error_parser=_reports_error_message, transport=transport),
            ),
            assertion=lambda: self.assertion((REPORTS_SCOPE,)),
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"GoogleSource(customer={self.customer!r}, subject={self.subject!r})"

    def assertion(self, scopes: tuple[str, ...] = SCOPES) -> str:
        """The signed JWT that asks for an access token on behalf of `subject`."""
        now = int(self._wall_clock())
        claims = {
            "iss": self.key.client_email,
            "sub": self.subject,
            "scope": " ".join(scopes),
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        return jwt.encode(
            claims,
            self.key.private_key,
            algorithm="RS256",
            headers={"kid": self.key.private_key_id},
        )

    # ------------------------------------------------------------------ change probe

    def change_cursor(self) -> str | None:
        """The probe's cursor for a full read about to start: the overlap window listed,
        its counted activities marked seen (their changes are in the read). None when
        the Reports API cannot be used (said once, the pass reads whole as before) or
        fails: a probe only spares a read, so it must never fail one."""
        try:
            scan = self._scan(None)
        except _Degraded as degraded:
            self._say_degraded(str(degraded))
            return None
        except SourceError as error:
            log.warning("source.change_marker_unavailable", system="google", error=str(error))
            return None
        if not scan.complete:
            return dump_cursor(scan.since, {})
        return dump_cursor(
            scan.since, {k: t for k, t in scan.counted.items() if _instant(t) >= scan.since}
        )

    def probe_changes(self, cursor: str, people: int, groups: int) -> ChangeProbe:
        """See the module docstring; `people` and `groups` are not needed (deletions are
        logged)."""
        since, seen = load_cursor(cursor, system="google")
        age = self._now() - since
        if age > REPORTS_RETENTION - RETENTION_MARGIN:
            raise CursorExpired(
                f"google: the change cursor is {age.days} days old; the Reports API keeps "
                f"{REPORTS_RETENTION.days} days of activities, so older changes may be gone"
            )
        try:
            scan = self._scan(since)
        except _Degraded as degraded:
            self._say_degraded(str(degraded))
            raise CursorExpired(f"google: the change probe cannot be used: {degraded}") from None
        fresh = sorted(k for k in scan.counted if k not in seen)
        changed = bool(fresh) or not scan.complete
        if changed:
            log.info(
                "source.changes_found",
                system="google",
                changed_objects=len(fresh),
                complete=scan.complete,
            )
        keep = {k: t for k, t in scan.counted.items() if _instant(t) >= scan.since}
        if not scan.complete:
            keep = {}  # more than the pages walked: read whole until the window has passed
        return ChangeProbe(changed=changed, cursor=dump_cursor(scan.since, keep), calls=scan.calls)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)

    def _scan(self, since: datetime | None) -> _Scan:
        """The counted activities of every probed application from `since` (None: the
        overlap window before now), and the next cursor's time."""
        now = self._now()
        fetched = self.reports_token.fetches
        counted: dict[str, str] = {}
        complete = True
        calls = 0
        start = now - PROBE_OVERLAP if since is None else since
        # Closing the session closes the token endpoint's connections too.
        with self._session(self.reports_url, self.reports_token, _reports_error_message) as http:
            try:
                # Asked for before any call: a refusal here is the scope, not the API.
                self.reports_token.tokens.get()
            except AuthError as error:
                if any(code in str(error) for code in _DEGRADED_REFUSALS):
                    raise _Degraded(
                        f"the token endpoint refused the scope {REPORTS_SCOPE} ({error})"
                    ) from None
                raise SourceError(f"google: the change probe's token: {error}") from error
            except ApiError as error:
                raise SourceError(f"google: the change probe's token: {error}") from error
            for application in PROBE_APPLICATIONS:
                path = f"/activity/users/all/applications/{application}"
                params = {"startTime": iso_millis(start), "maxResults": PROBE_PAGE}
                token: str | None = None
                for page in range(PROBE_MAX_PAGES + 1):
                    if page == PROBE_MAX_PAGES:
                        complete = False
                        break
                    body, response = self._probe_page(http, path, {**params, "pageToken": token})
                    calls += 1
                    # The next window is on the earlier clock: Google stamps activities.
                    now = earlier(now, server_time(response))
                    for activity in body.get("items", []) or []:
                        if _counts(application, activity):
                            key, stamp = _activity_key(application, activity)
                            counted[key] = stamp
                    token = body.get("nextPageToken") or None
                    if token is None:
                        break
        calls += self.reports_token.fetches - fetched
        return _Scan(since=now - PROBE_OVERLAP, counted=counted, complete=complete, calls=calls)

    def _probe_page(
        self, http: SourceHttp, path: str, params: dict[str, object]
    ) -> tuple[dict[str, Any], httpx.Response]:
        try:
            body, response = http.get_page(path, params)
        except SourceError as error:
            cause = error.__cause__
            if isinstance(cause, ApiError) and cause.status == 403:
                raise _Degraded(f"the Reports API refused: {error}") from error
            if isinstance(cause, ApiError) and cause.status == 400:
                raise CursorExpired(
                    f"google: the Reports API refused the probe's time window: {error}"
                ) from error
            raise
        if not isinstance(body, dict):
            raise SourceDataError(f"google: GET {path}: expected a JSON object")
        require_list(body.get("items", []), system="google", where=f"GET {path}: items")
        token = body.get("nextPageToken")
        if token is not None and not isinstance(token, str):
            raise SourceDataError(f"google: GET {path}: nextPageToken is not a string")
        return body, response

    def _degraded(self, why: str) -> ProbeStatus:
        """What every incremental pass costs without the Reports API's scope, and what to
        delegate."""
        return ProbeStatus(
            ProbeState.DEGRADED,
            reason=why,
            cost=(
                "each incremental pass reads the whole directory (users, groups and one "
                "member list per group) and compares it with the last one"
            ),
            enable=(
                f"delegate the scope {REPORTS_SCOPE} to the service account's client id "
                "(Admin console, Security, API controls, Domain-wide delegation), and let "
                f"{self.subject} read reports: a quiet pass is then {_QUIET}"
            ),
        )

    def _say_degraded(self, why: str) -> None:
        """Once per process and account (see `_degraded`)."""
        said = (self.token_url, self.key.client_email, self.subject)
        if said in _SAID_DEGRADED:
            return
        _SAID_DEGRADED.add(said)
        status = self._degraded(why)
        log.warning(
            "source.change_probe_degraded",
            system="google",
            reason=status.reason,
            cost=status.cost,
            enable=status.enable,
        )

    def change_probe_status(self, people: int, groups: int) -> ProbeStatus:
        """The overlap window listed now, as a full read's cursor is taken (reads only);
        `people` and `groups` are not needed (deletions are logged)."""
        try:
            self._scan(None)
        except _Degraded as degraded:
            return self._degraded(str(degraded))
        return ProbeStatus(
            ProbeState.AVAILABLE,
            cost=f"a quiet incremental pass is {_QUIET} (the Reports API's activities)",
        )

    def read(self) -> SourceSnapshot:
        with self._session(self.directory_url, self.token, google_error_message) as http:
            return self._read(http)

    def _session(
        self, url: str, auth: httpx.Auth, error_parser: Callable[[httpx.Response], str | None]
    ) -> SourceHttp:
        """A session on one of Google's APIs (the Directory, the Reports), each with its
        own token and its own error shape."""
        return SourceHttp(
            url,
            system="google",
            credential_key="source.credentials_file",
            auth=auth,
            retry=self.settings.retry,
            **self.settings.options(
                error_parser=error_parser,
                is_transient=google_is_transient,
                transport=self._transport,
                sleep=self._sleep,
            ),
        )

    def _read(self, http: SourceHttp) -> SourceSnapshot:
        people: dict[SourceId, SourcePerson] = {}
        user_params = {
            "customer": self.customer,
            "maxResults": min(self.page_size, USERS_MAX_RESULTS),
            "projection": "basic",
        }
        for doc in self._pages(http, "/users", "users", user_params):
            person = _person(doc)
            add_once(people, person.id, person, system="google", where="users.list")

        group_size = min(self.page_size, GROUPS_MAX_RESULTS)
        named: dict[SourceId, str] = {}
        group_params = {"customer": self.customer, "maxResults": group_size}
        for doc in self._pages(http, "/groups", "groups", group_params):
            group_id = doc.get("id")
            if not isinstance(group_id, str) or not group_id:
                raise SourceDataError("google: a group without an id in groups.list")
            name = doc.get("name")
            if not isinstance(name, str) or not name.strip():
                # A group's name is optional on creation; its address always exists.
                name = doc.get("email")
            if not isinstance(name, str) or not name.strip():
                raise SourceDataError(f"google: group {group_id!r} has neither name nor email")
            add_once(named, SourceId(group_id), name, system="google", where="groups.list")
        groups = list(named.items())
        check_disjoint("google", people, named)

        everyone = tuple(people)

        def members(group: tuple[SourceId, str]) -> tuple[SourceId, ...]:
            path = f"/groups/{quote(group[0], safe='')}/members"
            ids: list[SourceId] = []
            for doc in self._pages(http, path, "members", {"maxResults": group_size}):
                kind = doc.get("type")
                if kind == "CUSTOMER":
                    ids.extend(everyone)
                    continue
                member_id = doc.get("id")
                if not isinstance(member_id, str) or not member_id:
                    raise SourceDataError(f"google: GET {path}: a member without an id")
                if kind in ("USER", "GROUP"):
                    # The core tells people from nested groups by id: a member typed
                    # USER that is a group would nest that group here, and the reverse.
                    if (member_id in named) != (kind == "GROUP") and (
                        member_id in named or member_id in people
                    ):
                        raise SourceDataError(
                            f"google: GET {path}: member {member_id!r} is typed {kind} but "
                            "the directory lists it as the other kind; nothing will be planned"
                        )
                    ids.append(SourceId(member_id))
            return tuple(dict.fromkeys(ids))

        snapshot_groups = resolve_groups(
            http, groups, members, workers=self.settings.max_concurrency
        )
        log.info("source.google.read", people=len(people), groups=len(snapshot_groups))
        return SourceSnapshot(people=tuple(people.values()), groups=snapshot_groups)

    @staticmethod
    def _pages(
        http: SourceHttp, path: str, key: str, params: dict[str, object]
    ) -> Iterator[dict[str, Any]]:
        """Every object of one listing, passing `nextPageToken` back until there is none."""
        listing = f"GET {path}"
        guard = page_guard("google", listing)
        progress = NewIds("google", listing)
        body = http.get_json(path, params)
        while True:
            where = f"{listing} (page {guard.pages + 1})"
            if not isinstance(body, dict):
                raise SourceDataError(f"google: {where}: expected a JSON object")
            # Google leaves the list out altogether when it is empty.
            items = require_list(body.get(key, []), system="google", where=f"{where}: {key}")
            token = body.get("nextPageToken") or None
            if token is not None and not isinstance(token, str):
                raise SourceDataError(f"google: {where}: nextPageToken is not a string")
            guard.page(len(items), token)
            progress.page(items, more=token is not None)
            yield from items
            if token is None:
                return
            body = http.get_json(path, {**params, "pageToken": token})


class _Degraded(Exception):
    """The Reports API cannot be used with this delegation (said once, read whole)."""


@dataclass(frozen=True, slots=True)
class _Scan:
    since: datetime
    """The next cursor's time: the earlier clock's now less the overlap."""
    counted: dict[str, str]
    """Key -> `id.time` of every counted activity listed."""
    complete: bool
    calls: int


def _instant(text: str) -> datetime:
    """An activity's time; unreadable: far future (kept in the cursor, never dropped)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _activity_key(application: str, activity: dict[str, Any]) -> tuple[str, str]:
    """(key, time) of a listed activity; its key names no person (kept in the cursor)."""
    ident = activity.get("id")
    ident = ident if isinstance(ident, dict) else {}
    stamp = str(ident.get("time", ""))
    qualifier = str(ident.get("uniqueQualifier", ""))
    etag = "" if qualifier else str(activity.get("etag", ""))
    return f"{application}/{stamp}/{qualifier}{etag}", stamp


def _counts(application: str, activity: dict[str, Any]) -> bool:
    """Whether an activity may have changed a person, an address, a status, a group or a
    membership (the module docstring's rule; unknown shapes count)."""
    if application != "admin":
        return True
    events = activity.get("events")
    if not isinstance(events, list) or not events:
        return True
    for event in events:
        if not isinstance(event, dict):
            return True
        kind, name = event.get("type"), event.get("name")
        if not isinstance(kind, str) or not isinstance(name, str):
            return True
        if kind in _COUNTED_ADMIN_TYPES and name not in _UNCOUNTED_USER_EVENTS:
            return True
        if kind == "ORG_SETTINGS" and "ORG_UNIT" in name:
            return True
        if kind == "DOMAIN_SETTINGS" and "DOMAIN" in name:
            return True
    return False
