"""OAuth 2.0 client credentials for a Keycard service account, and the transport that uses them.

`ClientCredentials` fetches an access token from the token endpoint (form body
`grant_type=client_credentials`, client authenticated with HTTP Basic, as Keycard's TS and
Python SDKs do), caches it until shortly before `expires_in` runs out, and fetches a new
one on demand; concurrent callers share one fetch. `BearerTransport` wraps the HTTP
transport of the target's `ApiClient`: it sets `Authorization` on every request from the
cache, and on a 401 drops the token that was refused and sends the request once more with
a fresh one (a token can be revoked or expire early server-side). A second 401 is the
answer: the credentials are wrong, and `ApiClient` maps it to `AuthError`.

Neither the client secret nor any token appears in a log line, an error message or a repr.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

import httpx
import structlog

from orgsync.core.errors import AuthError, TargetError
from orgsync.core.redaction import auth_failure_detail
from orgsync.targets.http import error_for_response, error_for_transport, redact
from orgsync.targets.keycard.wire import TokenResponse, error_message

__all__ = ["BearerTransport", "ClientCredentials"]

log = structlog.get_logger(__name__)

REFRESH_MARGIN: Final = 30.0
"""Seconds before expiry at which a cached token is replaced (clock skew, slow calls)."""


class ClientCredentials:
    """A cached client-credentials access token.

    Args:
        http: the client that talks to the token endpoint (its own, not the API's, so the
            Basic credentials never ride on API calls); owned by this object.
        token_url: absolute URL of the token endpoint.
        client_id: the service account's client id.
        client_secret: its secret; never logged.
        system: the metrics/log label of the target.
        on_response: called as `(system, status)` per token request (0: transport error).
        clock: monotonic seconds; tests pass a fake.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        system: str,
        on_response: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._token_url = token_url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._secret = client_secret
        self._system = system
        self._on_response = on_response
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires: float = float("inf")
        self.fetches = 0
        """Tokens fetched so far (for tests and debugging; never the token itself)."""

    def __repr__(self) -> str:
        return f"ClientCredentials(token_url={self._token_url!r}, system={self._system!r})"

    def token(self) -> str:
        """A token valid for a while yet: the cached one, or a freshly fetched one."""
        with self._lock:
            if self._token is not None and self._clock() < self._expires:
                return self._token
            # Fetched under the lock: threads that find the cache empty at once wait for
            # one fetch instead of each asking the server for a token.
            self._token, self._expires = self._fetch()
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` after the API refused it, unless another thread already did."""
        with self._lock:
            if self._token == token:
                self._token = None

    def secrets(self) -> Iterable[str]:
        """Every credential that must never appear in a message."""
        with self._lock:
            current = self._token
        return [s for s in (self._secret, current) if s]

    def close(self) -> None:
        self._http.close()

    def _fetch(self) -> tuple[str, float]:
        context = f"POST {httpx.URL(self._token_url).path}"
        started = self._clock()
        try:
            response = self._http.post(
                self._token_url,
                data={"grant_type": "client_credentials"},
                auth=self._auth,
                headers={"Accept": "application/json"},
            )
        except httpx.RequestError as error:
            self._report(0)
            raise redact(error_for_transport(error, context=context), [self._secret]) from error
        self._report(response.status_code)
        failure = error_for_response(response, context=context, error_parser=error_message)
        if failure is not None:
            # Called under the token lock (`secrets()` would wait for it): no token yet.
            failure = redact(failure, [self._secret])
            if response.status_code in (400, 401, 403):
                # RFC 6749 §5.2: a refused client is 400 invalid_client or 401; either way
                # no retry can help, and the run must stop rather than fail every call.
                failure = AuthError(
                    f"{auth_failure_detail(failure.message)} "
                    "(check client_id and the client secret)",
                    status=response.status_code,
                    request_id=failure.request_id,
                )
            raise failure
        try:
            body = TokenResponse.model_validate_json(response.content)
        except ValueError as error:
            raise TargetError(f"{context}: the token response is not a token") from error
        if body.token_type.lower() != "bearer":
            raise TargetError(f"{context}: unexpected token type {body.token_type!r}")
        self.fetches += 1
        log.debug("keycard.token.fetched", system=self._system, expires_in=body.expires_in)
        if body.expires_in is None:
            return body.access_token, float("inf")  # kept until the API refuses it
        # A short-lived token is refreshed a tenth of its life early, a long one 30 s early.
        margin = min(REFRESH_MARGIN, body.expires_in / 10)
        return body.access_token, started + body.expires_in - margin

    def _report(self, status: int) -> None:
        if self._on_response is not None:
            self._on_response(self._system, status)


class BearerTransport(httpx.BaseTransport):
    """Sets the cached bearer token on each request; on a 401 retries once with a new one."""

    def __init__(self, inner: httpx.BaseTransport, credentials: ClientCredentials) -> None:
        self._inner = inner
        self._credentials = credentials

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        token = self._credentials.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = self._inner.handle_request(request)
        if response.status_code != 401:
            return response
        response.read()
        response.close()
        self._credentials.invalidate(token)
        fresh = self._credentials.token()
        log.info("keycard.token.refused", reason="401 from the API; retrying with a new token")
        request.headers["Authorization"] = f"Bearer {fresh}"
        # A JSON body is an in-memory byte stream, so the request can be sent again as is.
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
        self._credentials.close()
