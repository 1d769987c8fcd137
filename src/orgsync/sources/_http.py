"""Source-side HTTP for the REST identity providers (Okta, Microsoft Graph, Google).

Owns, in one place for the three: the httpx client (TLS trust, timeouts, no redirects),
credentials (a static header, or an OAuth access token cached until shortly before it
expires and fetched again once when the API answers 401), the mapping of answers to
orgsync's errors, retries through `orgsync.retrying` honouring what the server asked for
(`Retry-After`, or a vendor header such as Okta's `X-Rate-Limit-Reset`), page-sequence
checks (a cursor seen twice, a next link to another host) and a bounded worker pool that
stops every worker as soon as one fails.

The rule it enforces for the sources above it: a read is complete or it raises
`SourceError`. Transient failures (429, 408, 5xx, timeouts, resets, a 2xx body that is not
JSON) are retried until the retry budget is spent, then become `SourceError`; every other
failure is a `SourceError` at once. Nothing here ever returns a partial page.

A stop request (`HttpSettings.interrupt`, set on SIGTERM) ends a read in flight within a
fraction of a second and sends nothing more, retries included: the read raises
`Interrupted` (see `orgsync.interrupt`).

Imports only httpx, structlog, the standard library, `orgsync.core`, `orgsync.retrying`
and `orgsync.interrupt`.
"""

from __future__ import annotations

import json
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol, TypeVar

import httpx
import structlog
import tenacity

from orgsync.core.errors import SourceDataError, SourceError, TransientError
from orgsync.core.redaction import auth_failure_detail, scrub
from orgsync.interrupt import ReadInterrupt, interruptible_transport
from orgsync.retrying import RetrySettings

__all__ = [
    "BearerToken",
    "Credential",
    "HttpSettings",
    "PageGuard",
    "SourceHttp",
    "StaticHeader",
    "default_is_transient",
    "parallel_map",
    "require_list",
    "retry_after_header",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

_BODY_SNIPPET: Final = 200
"""Characters of an unparseable error body quoted in a message: enough to recognise a
proxy's HTML page, short enough for a log line."""
_TOKEN_MARGIN: Final = 60.0
"""Seconds before an access token's expiry at which it is replaced: a read of a large
directory must not be cut by a token that expires between two pages."""
_MAX_EMPTY_PAGES: Final = 20
"""Consecutive empty pages that still point to a next page before the sequence is called
inconsistent (a server minting fresh cursors forever would otherwise never end the read)."""

ErrorMessage = Callable[[httpx.Response], str | None]
"""Extracts the vendor's human message from an error body, or None if it has no known shape."""
RetryAfter = Callable[[httpx.Response], float | None]
"""Seconds the server asks the client to wait before trying again, or None."""
IsTransient = Callable[[httpx.Response], bool]
"""Whether a non-2xx answer is worth retrying."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Connection knobs the REST sources take from their configuration."""

    timeout: float = 30.0
    """Seconds for connect, read, write and pool each."""
    verify: bool | str = True
    """True, or a CA bundle to trust instead of the system store (SPEC `ca_file`)."""
    retry: RetrySettings = field(default_factory=RetrySettings)
    max_concurrency: int = 4
    """Group member lists fetched at once: bounded so that a directory with thousands of
    groups stays well inside vendor rate limits, parallel so it does not take minutes."""
    interrupt: ReadInterrupt | None = None
    """Set when orgsync is told to stop: the read ends at once (see the module doc)."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")


# --------------------------------------------------------------------------- default hooks


def retry_after_header(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3), else None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds):
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC for HTTP dates
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def default_is_transient(response: httpx.Response) -> bool:
    status = response.status_code
    return status in (408, 429) or status >= 500


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fallback_message(response: httpx.Response) -> str:
    text = " ".join(response.text.split())[:_BODY_SNIPPET]
    reason = response.reason_phrase or "error"
    return f"{reason}: {text}" if text else reason


# --------------------------------------------------------------------------- credentials


class Credential(Protocol):
    """What goes into the `Authorization` header, and how to renew it after a 401."""

    def header(self, http: SourceHttp) -> str:
        """The header value to send now (may fetch a token through `http`)."""
        ...

    def renew(self, stale: str) -> bool:
        """Forget `stale` after the API refused it; True if another value can be fetched."""
        ...


class StaticHeader:
    """A fixed header value, e.g. Okta's `SSWS <token>`: nothing to renew."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def header(self, http: SourceHttp) -> str:
        del http
        return self._value

    def renew(self, stale: str) -> bool:
        del stale
        return False

    def __repr__(self) -> str:
        return "StaticHeader('***')"


TokenFetcher = Callable[["SourceHttp"], tuple[str, float]]
"""Fetches a new access token: returns the token and its lifetime in seconds."""


class BearerToken:
    """An OAuth access token, fetched on first use and cached until shortly before expiry.

    Thread-safe: concurrent member-list workers wait for one fetch instead of each asking
    the token endpoint. `fetches` counts the tokens obtained (tests check the caching).
    """

    def __init__(self, fetch: TokenFetcher, *, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.fetches = 0

    def header(self, http: SourceHttp) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires:
                token, lifetime = self._fetch(http)
                http.add_secret(token)
                self._token = token
                # Short-lived tokens (tests) are still used for half their life.
                self._expires = self._clock() + max(lifetime - _TOKEN_MARGIN, lifetime / 2)
                self.fetches += 1
            return f"Bearer {self._token}"

    def renew(self, stale: str) -> bool:
        with self._lock:
            if self._token is not None and f"Bearer {self._token}" == stale:
                self._token = None
            return True

    def __repr__(self) -> str:
        return f"BearerToken(fetches={self.fetches})"


# --------------------------------------------------------------------------- the client


class SourceHttp:
    """One identity provider's HTTP session: auth, error mapping, retries, link checks.

    Args:
        base_url: the API root; relative paths are resolved against it, and absolute URLs
            (next links) must share its scheme, host, port and path prefix.
        system: the name in messages and logs ("okta", "entra", "google", "scim").
        credential_key: the configuration key of the credential ("source.token"), named
            when the server refuses it.
        credential: an `Authorization` header source that can renew itself (OAuth).
        auth: an httpx auth flow instead (HTTP basic).
        headers: extra headers on every request (a fixed `Authorization` among them).
        secrets: values scrubbed from every message (tokens, passwords).
        timeout: seconds for connect, read, write and pool each.
        verify: True, or the path of a CA bundle (SPEC `ca_file`).
        retry: the retry budget of every call.
        error_message, retry_after, is_transient: the vendor's dialect.
        max_connections: the connection pool size (at least the member-list workers).
        transport: an httpx transport (tests); None for the network.
        sleep: how to wait between retries; tests pass a fake.
        interrupt: when set (shutdown), the call in flight ends and no other is sent.

    `stop`, once set, makes the next request raise instead of being sent: a sibling worker
    failed, and finishing this one's pages would only spend rate limit.
    """

    def __init__(
        self,
        base_url: str,
        *,
        system: str,
        retry: RetrySettings,
        credential_key: str | None = None,
        credential: Credential | None = None,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        timeout: float = 30.0,
        verify: bool | str = True,
        error_message: ErrorMessage = lambda _response: None,
        retry_after: RetryAfter = retry_after_header,
        is_transient: IsTransient = default_is_transient,
        max_connections: int = 10,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        interrupt: ReadInterrupt | None = None,
    ) -> None:
        self.system = system
        self._base = httpx.URL(base_url.rstrip("/") + "/")
        self._retry = retry
        self._credential_key = credential_key
        self._credential = credential
        self._error_message = error_message
        self._retry_after = retry_after
        self._is_transient = is_transient
        self._interrupt = interrupt or ReadInterrupt()
        self._sleep = self._interrupt.sleep if sleep is time.sleep else sleep
        self._secrets = {s for s in secrets if s}
        self._secrets_lock = threading.Lock()
        self.stop = threading.Event()
        # httpx 0.28 deprecates `verify=<path>`; a context from the CA file still checks
        # host names.
        trust = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        limits = httpx.Limits(max_connections=max_connections)
        if transport is None and interrupt is not None:
            transport = interruptible_transport(interrupt, verify=trust, limits=limits)
        self._http = httpx.Client(
            headers={"User-Agent": "orgsync", "Accept": "application/json", **(headers or {})},
            auth=auth,
            timeout=httpx.Timeout(timeout),
            verify=trust,
            transport=transport,
            follow_redirects=False,
            limits=limits,
        )

    def __enter__(self) -> SourceHttp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"SourceHttp(system={self.system!r}, base_url={str(self._base)!r})"

    def add_secret(self, value: str) -> None:
        """Scrub `value` from every message this session produces from now on."""
        if value:
            with self._secrets_lock:
                self._secrets.add(value)

    def url(self, path_or_url: str) -> httpx.URL:
        """Resolve a path under the API root, or check that an absolute URL stays on it.

        A next link naming another host would receive our credential: refused.
        """
        if "://" not in path_or_url:
            return self._base.join(path_or_url.lstrip("/"))
        url = httpx.URL(path_or_url)
        same_origin = (url.scheme, url.host, url.port) == (
            self._base.scheme,
            self._base.host,
            self._base.port,
        )
        if not same_origin or not url.path.startswith(self._base.path):
            raise SourceError(
                f"{self.system}: the server's next-page link {self._scrub(str(url))} leaves "
                f"the API at {self._base}; refusing to send the credential there"
            )
        return url

    def get_json(self, path_or_url: str, params: Mapping[str, object] | None = None) -> Any:
        """GET one page and return its parsed JSON body."""
        body, _ = self.get_page(path_or_url, params)
        return body

    def get_page(
        self, path_or_url: str, params: Mapping[str, object] | None = None
    ) -> tuple[Any, httpx.Response]:
        """GET one page; return its parsed JSON body and the response (for its headers).

        `params` are added to (or replace those of) the URL's query; None values are left
        out, booleans are sent as `true`/`false`.
        """
        url = self.url(path_or_url)
        if params:
            url = url.copy_merge_params(
                {k: _query_value(v) for k, v in params.items() if v is not None}
            )
        return self._call("GET", url, authenticated=True)

    def post_form(self, url: str, form: Mapping[str, str]) -> Any:
        """POST a form without the API credential (OAuth token endpoints); return its JSON.

        Retried like a read: asking for a token twice has no side effect.
        """
        body, _ = self._call("POST", httpx.URL(url), authenticated=False, form=form)
        return body

    # ------------------------------------------------------------------ internals

    def _call(
        self,
        method: str,
        url: httpx.URL,
        *,
        authenticated: bool,
        form: Mapping[str, str] | None = None,
    ) -> tuple[Any, httpx.Response]:
        context = f"{method} {url.path}"

        def attempt() -> tuple[Any, httpx.Response]:
            self._interrupt.check(f"{self.system}: {context}")
            if self.stop.is_set():
                raise SourceError(f"{self.system}: {context}: read abandoned (another call failed)")
            response = self._send(method, url, context, authenticated=authenticated, form=form)
            return self._parse(response, context), response

        retrying = self._retry.policy(sleep=self._sleep).copy(
            before_sleep=lambda state: self._log_retry(context, state)
        )
        try:
            return retrying(attempt)
        except TransientError as error:
            raise SourceError(
                f"{self.system}: {error} (gave up after retrying; nothing will be planned)"
            ) from error

    def _send(
        self,
        method: str,
        url: httpx.URL,
        context: str,
        *,
        authenticated: bool,
        form: Mapping[str, str] | None,
    ) -> httpx.Response:
        renewed = False
        while True:
            headers: dict[str, str] = {}
            if authenticated and self._credential is not None:
                headers["Authorization"] = self._credential.header(self)
            started = time.perf_counter()
            try:
                response = self._http.request(
                    method,
                    url,
                    headers=headers,
                    data=dict(form) if form else None,
                    # Token endpoints get no API credential, basic auth included.
                    auth=httpx.USE_CLIENT_DEFAULT if authenticated else None,
                )
            except httpx.RequestError as exc:
                raise self._transport_error(exc, context) from exc
            log.debug(
                "source.http",
                system=self.system,
                method=method,
                path=url.path,
                status=response.status_code,
                duration_ms=round((time.perf_counter() - started) * 1000.0, 1),
            )
            if (
                response.status_code == 401
                and authenticated
                and self._credential is not None
                and not renewed
                and self._credential.renew(headers["Authorization"])
            ):
                # The token may have been revoked or expired early: one fresh token, once.
                renewed = True
                continue
            self._raise_for_status(response, context)
            return response

    def _raise_for_status(self, response: httpx.Response, context: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (401, 403):
            # A refused credential's body is never quoted raw (servers echo what they were
            # sent): the vendor's parsed message, scrubbed and cut to one short line.
            parsed = self._error_message(response) or response.reason_phrase or "refused"
            detail = auth_failure_detail(self._scrub(parsed))
        else:
            detail = self._scrub(self._error_message(response) or _fallback_message(response))
        if self._is_transient(response):
            # TransientError's str() puts "HTTP <status>:" in front by itself.
            raise TransientError(
                f"{context}: {detail}", status=status, retry_after=self._retry_after(response)
            )
        message = f"{context}: HTTP {status}: {detail}"
        if status in (401, 403):
            which = f" ({self._credential_key})" if self._credential_key else ""
            raise SourceError(
                f"{self.system}: {message} (the credential{which} was refused or lacks permission)"
            )
        if 300 <= status < 400:
            message += " (a redirect: is the API URL right?)"
        raise SourceError(f"{self.system}: {message}")

    def _parse(self, response: httpx.Response, context: str) -> Any:
        try:
            return json.loads(response.content)
        except ValueError as exc:
            # A truncated transfer or a proxy's HTML page: another attempt may well succeed.
            raise TransientError(
                f"{context}: HTTP {response.status_code} body is not JSON",
                status=response.status_code,
            ) from exc

    def _transport_error(self, error: httpx.RequestError, context: str) -> Exception:
        detail = self._scrub(str(error) or type(error).__name__)
        message = f"{context}: {type(error).__name__}: {detail}"
        if isinstance(error, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
            return SourceError(f"{self.system}: {message}")
        return TransientError(message)

    def _scrub(self, text: str) -> str:
        with self._secrets_lock:
            secrets = list(self._secrets)
        return scrub(text, secrets)

    def _log_retry(self, context: str, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "source.http.retry",
            system=self.system,
            call=context,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            error=self._scrub(str(error)),
        )


# --------------------------------------------------------------------------- pagination


class PageGuard:
    """Checks that a page sequence moves forward: no cursor twice, no endless empty pages.

    A cursor seen again means the server sent us back to a page we already have: following
    it would loop forever or read people twice while missing others.
    """

    def __init__(self, system: str, listing: str) -> None:
        self._system = system
        self._listing = listing
        self._seen: set[str] = set()
        self._empty_run = 0
        self.pages = 0

    def page(self, items: int, next_cursor: str | None) -> None:
        """Record one page of `items` objects and the cursor it points to (None: last)."""
        self.pages += 1
        if next_cursor is None:
            return
        if next_cursor in self._seen:
            raise SourceError(
                f"{self._system}: {self._listing}: page {self.pages} points back to a page "
                "already read (inconsistent pagination); nothing will be planned"
            )
        self._seen.add(next_cursor)
        self._empty_run = self._empty_run + 1 if items == 0 else 0
        if self._empty_run > _MAX_EMPTY_PAGES:
            raise SourceError(
                f"{self._system}: {self._listing}: {self._empty_run} empty pages in a row that "
                "each point to another page (inconsistent pagination)"
            )


def require_list(value: Any, *, system: str, where: str) -> list[Any]:
    """`value` if it is a JSON array of objects, else `SourceDataError` naming `where`."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise SourceDataError(f"{system}: {where}: expected a list of objects")
    return value


# --------------------------------------------------------------------------- workers


def parallel_map(
    fn: Callable[[_T], _R], items: Iterable[_T], *, workers: int, stop: threading.Event
) -> Iterator[tuple[_T, _R]]:
    """`(item, fn(item))` for every item, `workers` at a time, in input order.

    On the first failure `stop` is set (so the other workers' next request raises instead
    of being sent), unstarted items are cancelled, and that first failure is raised.
    """
    todo = list(items)
    if workers <= 1 or len(todo) <= 1:
        for item in todo:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orgsync-source") as pool:
        futures: list[Future[_R]] = [pool.submit(fn, item) for item in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            stop.set()
            for future in futures:
                future.cancel()
            error = failed.exception()
            assert error is not None
            raise error
        for item, future in zip(todo, futures, strict=True):
            yield item, future.result()
