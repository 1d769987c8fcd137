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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from orgsync.core.errors import ConfigError, SourceDataError
from orgsync.core.model import SourceId, SourcePerson, SourceSnapshot
from orgsync.http.auth import JWT_BEARER_GRANT, JwtBearer, TokenEndpoint
from orgsync.http.responses import default_is_transient
from orgsync.sources._http import (
    HttpSettings,
    SourceHttp,
    metrics_system,
    page_guard,
    require_list,
    resolve_groups,
)

__all__ = [
    "JWT_BEARER_GRANT",
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
USERS_MAX_RESULTS: Final = 500
GROUPS_MAX_RESULTS: Final = 200
"""`groups.list` and `members.list` allow at most 200 per page (`users.list` 500)."""
ASSERTION_LIFETIME: Final = 3600
"""Google accepts assertions valid for at most an hour."""
_RATE_LIMIT_REASONS: Final = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


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


def _google_error(response: httpx.Response) -> tuple[str | None, set[str]]:
    """The message and the `errors[].reason`s of a Google error body."""
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
                f"for the scopes {', '.join(SCOPES)}?)"
            )
        return message, set()
    return None, set()


def google_error_message(response: httpx.Response) -> str | None:
    return _google_error(response)[0]


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

    def __repr__(self) -> str:
        return f"GoogleSource(customer={self.customer!r}, subject={self.subject!r})"

    def assertion(self) -> str:
        """The signed JWT that asks for an access token on behalf of `subject`."""
        now = int(self._wall_clock())
        claims = {
            "iss": self.key.client_email,
            "sub": self.subject,
            "scope": " ".join(SCOPES),
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

    def read(self) -> SourceSnapshot:
        with SourceHttp(
            self.directory_url,
            system="google",
            credential_key="source.credentials_file",
            auth=self.token,
            retry=self.settings.retry,
            **self.settings.options(
                error_parser=google_error_message,
                is_transient=google_is_transient,
                transport=self._transport,
                sleep=self._sleep,
            ),
        ) as http:
            return self._read(http)

    def _read(self, http: SourceHttp) -> SourceSnapshot:
        people: dict[SourceId, SourcePerson] = {}
        user_params = {
            "customer": self.customer,
            "maxResults": min(self.page_size, USERS_MAX_RESULTS),
            "projection": "basic",
        }
        for doc in self._pages(http, "/users", "users", user_params):
            person = _person(doc)
            people[person.id] = person

        group_size = min(self.page_size, GROUPS_MAX_RESULTS)
        groups: list[tuple[SourceId, str]] = []
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
            groups.append((SourceId(group_id), name))

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
            yield from items
            if token is None:
                return
            body = http.get_json(path, {**params, "pageToken": token})
