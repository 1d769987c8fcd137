"""Credentials as `httpx.Auth` flows, for sources and targets alike.

* `HeaderAuth`: a fixed header value (a bearer token or API key, Okta's `SSWS <token>`).
* `RenewingBearerAuth`: an access token fetched on first use and cached (`TokenCache`)
  until shortly before it expires. Written as an auth flow, as httpx's `DigestAuth` is: it
  sends the request with the cached token, and on a 401 drops the token that was refused,
  fetches one fresh token and sends the request once more (a token can be revoked or
  expire early server-side). A second 401 is the answer: the credential is wrong, and the
  client maps it to `AuthError`. Concurrent requests that find the cache empty wait for
  one fetch instead of each asking the token endpoint.
* `ClientCredentials` (OAuth 2.0 client credentials grant, RFC 6749 §4.4: Entra ID,
  Keycard) and `JwtBearer` (a signed assertion exchanged for a token, RFC 7523 §2.1:
  Google service accounts) are those flows with their token request, sent through a
  `TokenEndpoint`.

A token request is one attempt: it runs inside the API call that needed the token, whose
retry loop (for idempotent calls) covers it. A refused client (400, 401 or 403 from the
token endpoint, RFC 6749 §5.2) is `AuthError`: no retry can help, and the run must stop
rather than fail every call. Neither a client secret, an assertion nor any token appears
in a log line, an error message or a repr.

This module imports only httpx, structlog, the standard library, `orgsync.core`,
`orgsync.retrying`, `orgsync.interrupt` and the rest of `orgsync.http`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Unpack

import httpx
import structlog

from orgsync.core.errors import ApiError, AuthError, RequestRejected, TransientError
from orgsync.core.redaction import auth_failure_detail
from orgsync.http.client import ClientOptions, HttpClient, SecretSet
from orgsync.retrying import RetrySettings

__all__ = [
    "JWT_BEARER_GRANT",
    "REFRESH_MARGIN",
    "AccessToken",
    "ClientCredentials",
    "HeaderAuth",
    "JwtBearer",
    "RenewingBearerAuth",
    "TokenCache",
    "TokenEndpoint",
    "oauth_error_message",
]

log = structlog.get_logger(__name__)

JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_MARGIN: Final = 60.0
"""Seconds before expiry at which a cached token is replaced (a tenth of its life for a
short one): a long read must not be cut by a token that expires between two pages."""


class HeaderAuth(httpx.Auth):
    """A fixed credential header on every request; nothing to renew.

    Args:
        value: the header's value ("Bearer sk-...", "SSWS 00a...").
        header: the header's name.
        secret: the part of `value` to scrub from messages (the whole value by default).
    """

    def __init__(
        self, value: str, *, header: str = "Authorization", secret: str | None = None
    ) -> None:
        self._value = value
        self._header = header
        self._secret = secret or value

    @classmethod
    def bearer(cls, token: str) -> HeaderAuth:
        """`Authorization: Bearer <token>`."""
        return cls(f"Bearer {token}", secret=token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._value
        yield request

    def fixed_header(self) -> tuple[str, str]:
        """The header and its value (`orgsync.http.client.FixedHeader`)."""
        return self._header, self._value

    def secrets(self) -> Iterable[str]:
        return (self._secret,)

    def __repr__(self) -> str:
        return f"HeaderAuth({self._header!r}, '***')"


# --------------------------------------------------------------------------- token cache


@dataclass(frozen=True, slots=True, repr=False)
class AccessToken:
    """A token and its lifetime in seconds (None: until the API refuses it)."""

    value: str
    lifetime: float | None

    def __repr__(self) -> str:
        return f"AccessToken('***', lifetime={self.lifetime})"


class TokenCache:
    """An access token, fetched on first use and kept until shortly before it expires.

    Thread-safe: the fetch runs under the lock, so concurrent callers that find the cache
    empty wait for one fetch. `fetches` counts the tokens obtained (never the tokens).
    """

    def __init__(
        self, fetch: Callable[[], AccessToken], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.fetches = 0

    def get(self) -> str:
        """A token valid for a while yet: the cached one, or a freshly fetched one."""
        with self._lock:
            if self._token is not None and self._clock() < self._expires:
                return self._token
            started = self._clock()
            token = self._fetch()
            self.fetches += 1
            self._token = token.value
            if token.lifetime is None:
                self._expires = math.inf
            else:
                margin = min(REFRESH_MARGIN, token.lifetime / 10)
                self._expires = started + token.lifetime - margin
            return self._token

    def invalidate(self, stale: str) -> None:
        """Forget `stale` after the API refused it, unless another thread already did."""
        with self._lock:
            if self._token == stale:
                self._token = None

    def __repr__(self) -> str:
        return f"TokenCache(fetches={self.fetches})"


class RenewingBearerAuth(httpx.Auth):
    """`Authorization: Bearer <cached token>`, renewed once when the API answers 401.

    Args:
        fetch: obtains a new token (a grant at a `TokenEndpoint`).
        known: credentials to scrub (the client secret; tokens are added as fetched).
        clock: monotonic seconds; tests pass a fake.
        close: releases what `fetch` uses (the token endpoint's connections).
    """

    def __init__(
        self,
        fetch: Callable[[], AccessToken],
        *,
        known: SecretSet | None = None,
        clock: Callable[[], float] = time.monotonic,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._known = known if known is not None else SecretSet()
        self._recent: deque[str] = deque(maxlen=2)
        self._remember_lock = threading.Lock()
        self._fetch = fetch
        self.tokens = TokenCache(self._fetch_and_remember, clock=clock)
        self._close = close

    @property
    def fetches(self) -> int:
        return self.tokens.fetches

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.get()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        # Revoked or expired early: one fresh token, once. A request body is in memory
        # (JSON or a form), so the request can be sent again as is.
        self.tokens.invalidate(token)
        log.info("http.token.refused", reason="401 from the API; retrying with a new token")
        request.headers["Authorization"] = f"Bearer {self.tokens.get()}"
        yield request

    def secrets(self) -> Iterable[str]:
        return self._known

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fetches={self.fetches})"

    def _fetch_and_remember(self) -> AccessToken:
        token = self._fetch()
        with self._remember_lock:
            # The token before last can no longer be in any message: forgotten, so a
            # daemon renewing hourly does not scrub against thousands of dead tokens.
            if len(self._recent) == self._recent.maxlen:
                self._known.discard(self._recent[0])
            self._recent.append(token.value)
            self._known.add(token.value)
        return token


# --------------------------------------------------------------------------- token endpoint


def oauth_error_message(response: httpx.Response) -> str | None:
    """`error: error_description` of an OAuth error body (RFC 6749 §5.2), else None."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        return None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None
    description = body.get("error_description")
    if isinstance(description, str) and description.strip():
        # Entra's descriptions append trace and correlation ids on further lines.
        return f"{body['error']}: {description.strip().splitlines()[0]}"
    return str(body["error"])


class TokenEndpoint:
    """An OAuth 2.0 token endpoint: posts a grant, returns the `AccessToken`.

    Its own client, never the API's: the client authentication (Basic) never rides on API
    calls, and API credentials never reach the token endpoint.

    Args:
        url: the token endpoint's absolute URL.
        system: the metrics/log label (the API's system).
        secrets: credentials to scrub (the client secret); assertions and tokens are
            added as they are made.
        hint: appended to a refused client's message (what to check).
        options: as the API's client (`HttpClient`); the error parser is OAuth's unless
            given.
    """

    def __init__(
        self,
        url: str,
        *,
        system: str,
        secrets: Iterable[str] = (),
        hint: str = "",
        **options: Unpack[ClientOptions],
    ) -> None:
        self.url = url
        self._system = system
        self._hint = hint
        self.secrets = SecretSet(secrets)
        options.setdefault("error_parser", oauth_error_message)
        self._options = options
        self._lock = threading.Lock()
        self._http: HttpClient | None = None

    def __repr__(self) -> str:
        return f"TokenEndpoint({self.url!r})"

    def close(self) -> None:
        """Close the connections; the next grant opens new ones (a source closes its
        connections after each read and keeps its token for the next)."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _client(self) -> HttpClient:
        with self._lock:
            if self._http is None:
                self._http = HttpClient(
                    system=self._system,
                    retry=RetrySettings(max_attempts=1),
                    secrets=self.secrets,
                    **self._options,
                )
            return self._http

    def grant(self, form: Mapping[str, str], *, auth: httpx.Auth | None = None) -> AccessToken:
        """POST `form`; the token, or `AuthError` if the client is refused."""
        try:
            return self._client().send(
                "POST", self.url, data=form, auth=auth, idempotent=False, parse=_token
            )
        except (AuthError, RequestRejected) as error:
            if error.status not in (400, 401, 403):
                raise
            # RFC 6749 §5.2: a refused client or grant is 400 (invalid_client,
            # invalid_grant, unauthorized_client) or 401; no retry can fix either.
            raise AuthError(
                auth_failure_detail(error.message) + self._hint,
                status=error.status,
                request_id=error.request_id,
            ) from error


def _token(response: httpx.Response) -> AccessToken:
    context = f"POST {response.request.url.path}"
    try:
        body: Any = json.loads(response.content)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deeply
        # A truncated transfer or a proxy's HTML page: another attempt may well succeed.
        raise TransientError(
            f"{context}: the token response is not JSON", status=response.status_code
        ) from exc
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise ApiError(f"{context}: the answer holds no access_token")
    kind = body.get("token_type")
    if isinstance(kind, str) and kind.lower() != "bearer":
        raise ApiError(f"{context}: unexpected token type {kind!r}")
    lifetime: float | None
    try:
        lifetime = float(body["expires_in"])
    except (KeyError, TypeError, ValueError):
        lifetime = None
    if lifetime is not None and not (math.isfinite(lifetime) and lifetime >= 0):
        lifetime = None
    log.debug("http.token.fetched", path=response.request.url.path, expires_in=lifetime)
    return AccessToken(token, lifetime)


# --------------------------------------------------------------------------- the grants


class ClientCredentials(RenewingBearerAuth):
    """The OAuth 2.0 client credentials grant (RFC 6749 §4.4) as a renewing bearer flow.

    Args:
        endpoint: the token endpoint (owned from now on).
        client_id, client_secret: the client's credentials; the secret is never logged.
        scope: the `scope` asked for, if the server wants one (Entra's `.default`).
        in_body: send the credentials in the form (Entra) rather than as HTTP Basic
            (Keycard; RFC 6749 §2.3.1 prefers Basic).
        clock: monotonic seconds; tests pass a fake.
    """

    def __init__(
        self,
        endpoint: TokenEndpoint,
        *,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        in_body: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        endpoint.secrets.add(client_secret)
        form = {"grant_type": "client_credentials"}
        if scope is not None:
            form["scope"] = scope
        basic: httpx.Auth | None = None
        if in_body:
            form |= {"client_id": client_id, "client_secret": client_secret}
        else:
            basic = httpx.BasicAuth(client_id, client_secret)

        def fetch() -> AccessToken:
            return endpoint.grant(form, auth=basic)

        super().__init__(fetch, known=endpoint.secrets, clock=clock, close=endpoint.close)


class JwtBearer(RenewingBearerAuth):
    """A signed assertion exchanged for an access token (RFC 7523 §2.1) as a renewing
    bearer flow: a Google service account with domain-wide delegation.

    Args:
        endpoint: the token endpoint (owned from now on).
        assertion: signs a fresh assertion (a JWT) for each token request.
        clock: monotonic seconds; tests pass a fake.
    """

    def __init__(
        self,
        endpoint: TokenEndpoint,
        *,
        assertion: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        def fetch() -> AccessToken:
            signed = assertion()
            endpoint.secrets.add(signed)
            try:
                return endpoint.grant({"grant_type": JWT_BEARER_GRANT, "assertion": signed})
            finally:
                # Scrubbed from whatever the grant raised; never sent again after it.
                endpoint.secrets.discard(signed)

        super().__init__(fetch, known=endpoint.secrets, clock=clock, close=endpoint.close)
