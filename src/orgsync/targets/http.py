"""The HTTP client every target adapter talks through (httpx, synchronous, thread-safe).

It owns the boundary between the wire and orgsync's error taxonomy, in one place:

* transport failures (timeouts, refused or reset connections, broken responses) become
  `TransientError` with no status; misconfiguration that no retry can fix (an unsupported
  scheme, a redirect loop) becomes a plain `TargetError`;
* 429, 408 and 5xx but 501 become `TransientError` carrying the server's `Retry-After`;
  501 (not implemented: permanent for the request as sent) and a 4xx the adapter's
  `FormRefusal` recognises become `UnsupportedRequest`; 401/403 `AuthError`; 404
  `NotFoundError`; 409 `ConflictError`; any other 4xx `RequestRejected`; the message is
  the server's own (see `ErrorParser`) and the `x-request-id` rides along;
* idempotent calls are retried with `orgsync.retrying`; non-idempotent ones never are,
  because only the applier can tell, after a lookup, whether a create already happened;
* an optional client-side token bucket keeps us under vendor rate limits that are not
  documented, shared by every thread using the client; it halves its rate on a 429 (or a
  503 with Retry-After) and creeps back on success (AIMD), so a client configured above
  the server's limit settles just below it;
* the bearer token is sent in a header and appears in no log line, message or repr;
* a stop request (`interrupt`, set on SIGTERM while the engine reads the organization)
  ends the call in flight within a fraction of a second and sends nothing more, retries
  included (`orgsync.interrupt`); the engine pauses it for the apply phase, whose calls
  in flight always finish.

Adapters build one `ApiClient` per target. This module imports only httpx, pydantic,
structlog, the standard library, `orgsync.core`, `orgsync.retrying` and `orgsync.interrupt`.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import httpx
import structlog
import tenacity
from pydantic import BaseModel, ConfigDict, ValidationError

from orgsync.core.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RequestRejected,
    TargetError,
    TransientError,
    UnsupportedRequest,
)
from orgsync.core.redaction import auth_failure_detail, scrub
from orgsync.interrupt import ReadInterrupt, interruptible_transport
from orgsync.retrying import RetrySettings

__all__ = [
    "ApiClient",
    "ErrorParser",
    "FormRefusal",
    "QueryParams",
    "TokenBucket",
    "error_for_response",
    "error_for_transport",
    "network_transport",
    "openai_error_message",
    "parse_retry_after",
]

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
_T = TypeVar("_T")

QueryValue = str | int | float | bool | None
QueryParams = Mapping[str, QueryValue | Sequence[QueryValue]]

ErrorParser = Callable[[httpx.Response], str | None]
"""Extracts the human message from an error response body, or None if it has no known shape."""

FormRefusal = Callable[[httpx.Response], bool]
"""Whether a 4xx answer refuses the request's form rather than its content (an API's own
error code for it, such as SCIM's `invalidPath`): it becomes `UnsupportedRequest`."""


def _no_form_refusal(response: httpx.Response) -> bool:
    return False


_BODY_SNIPPET: Final = 200
"""Characters of an unparseable error body quoted in the message (enough to recognise an
HTML error page from a proxy, short enough to keep log lines readable)."""

# Transport errors no retry can fix: they mean a wrong base_url or a bug, not a flaky network.
_PERMANENT_TRANSPORT: Final[tuple[type[httpx.RequestError], ...]] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.DecodingError,
    httpx.TooManyRedirects,
)


# --------------------------------------------------------------------------- error bodies


class _OpenAIErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None


class _OpenAIErrorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error: _OpenAIErrorDetail


def openai_error_message(response: httpx.Response) -> str | None:
    """The `error.message` of an OpenAI-shaped error body (`ErrorResponse`), else None."""
    try:
        body = _OpenAIErrorBody.model_validate_json(response.content)
    except ValidationError:
        return None
    message = body.error.message.strip()
    if body.error.code and body.error.code not in message:
        message = f"{message} [{body.error.code}]"
    return message or None


def _fallback_message(response: httpx.Response) -> str:
    text = " ".join(response.text.split())[:_BODY_SNIPPET]
    reason = response.reason_phrase or "error"
    return f"{reason}: {text}" if text else reason


# --------------------------------------------------------------------------- Retry-After


def parse_retry_after(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait, from `retry-after-ms` or `Retry-After`.

    `Retry-After` may be delay-seconds or an HTTP date (RFC 9110 §10.2.3); OpenAI's own
    SDK also honours the millisecond variant first, so we do too. Anything unparseable,
    negative or non-finite counts as absent, and a date in the past as zero.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _finite_float(millis)
        if seconds is not None and seconds >= 0:
            return seconds / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite_float(value)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 5322 "-0000": UTC by definition of HTTP dates
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _finite_float(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- classification


def error_for_response(
    response: httpx.Response,
    *,
    context: str,
    error_parser: ErrorParser = openai_error_message,
    form_refusal: FormRefusal = _no_form_refusal,
    now: datetime | None = None,
) -> TargetError | None:
    """The orgsync error a response stands for, or None for a success (2xx).

    `context` (for example "DELETE /organization/invites/inv_1") prefixes the message so a
    failure in a long log names its call.
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    request_id = response.headers.get("x-request-id")
    if status in (401, 403):
        # A refused credential's body is never quoted raw: servers echo what they were
        # sent. The vendor's parsed message (scrubbed and capped by `redact`) or nothing.
        detail = error_parser(response) or response.reason_phrase or "refused"
    else:
        detail = error_parser(response) or _fallback_message(response)
    message = f"{context}: {detail}"
    if status == 501:
        # Not Implemented: the server does not support what this request asks for; the
        # same request will be refused again, so it is no transient 5xx (RFC 9110 §15.6.2).
        return UnsupportedRequest(message, status=status, request_id=request_id)
    if status in {408, 429} or status >= 500:
        # 408 is the server timing out on our request: the same event as a client-side
        # timeout, which is transient, so it is classified alike.
        return TransientError(
            message,
            status=status,
            request_id=request_id,
            retry_after=parse_retry_after(response.headers, now=now),
        )
    if status in (401, 403):
        return AuthError(message, status=status, request_id=request_id)
    if status == 404:
        return NotFoundError(message, status=status, request_id=request_id)
    if status == 409:
        return ConflictError(message, status=status, request_id=request_id)
    if 400 <= status < 500:
        if form_refusal(response):
            return UnsupportedRequest(message, status=status, request_id=request_id)
        return RequestRejected(message, status=status, request_id=request_id)
    # 1xx cannot reach us and httpx does not follow redirects unless told to: a 3xx means
    # base_url points somewhere else (often http:// redirected to https://).
    return TargetError(
        f"{message} (unexpected HTTP {status})", status=status, request_id=request_id
    )


def error_for_transport(error: httpx.RequestError, *, context: str) -> TargetError:
    """The orgsync error an httpx transport failure stands for (status None)."""
    detail = str(error) or type(error).__name__
    message = f"{context}: {type(error).__name__}: {detail}"
    if isinstance(error, _PERMANENT_TRANSPORT):
        return TargetError(message)
    # Timeouts, connect/read/write/close errors, resets and proxy failures: the request may
    # or may not have reached the server, and trying again later may well succeed.
    return TransientError(message)


def redact(error: TargetError, secrets: Iterable[str]) -> TargetError:
    """`error` with `secrets` scrubbed from its message; a refused credential's message
    (401/403) is also cut to one short line. Changed in place, returned for `raise`."""
    clean = scrub(error.message, secrets)
    if isinstance(error, AuthError):
        clean = auth_failure_detail(clean)
    if clean != error.message:
        error.message = clean
        error.args = (clean,)
    return error


# --------------------------------------------------------------------------- rate limiting


class TokenBucket:
    """A thread-safe token bucket: `rate` requests per second, bursts up to `burst`, whose
    rate adapts to the server's (AIMD).

    A caller takes a token even when the bucket is empty, driving it negative, and then
    sleeps off its own debt outside the lock; so waiting threads are served in arrival
    order and nobody sleeps while holding the lock.

    The configured rate is a ceiling, not a promise the server keeps: `limited` (a 429, or
    a 503 with Retry-After) halves the rate and holds every caller off for the server's
    Retry-After; `succeeded` brings it back, quickly up to just below the rate that was
    refused (or the rate the server was seen to let through, if lower), then creeping, so
    that a client configured above the server's limit settles just under it instead of
    paying a refusal, and a wait, every few requests.
    """

    RECOVER = 1.05
    """Multiplicative step per success while well below the rate last refused."""
    BELOW = 0.95
    """Where the quick recovery stops, as a share of the rate last refused."""
    CREEP = 0.0002
    """Additive step per success, as a share of the ceiling, from there on: at 50 requests
    a second toward a ceiling of 60, the rate grows by 0.6 a second, so a server bucket
    holding a second's worth lasts about 13 s of overshoot before the next refusal."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number of requests per second")
        self._ceiling = rate
        self._rate = rate
        self._floor = rate / 64
        self._capacity = burst if burst is not None else max(1.0, rate)
        if self._capacity < 1:
            raise ValueError("burst must allow at least one request")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self._capacity
        self._updated = clock()
        self._refused_at = math.inf  # the rate the server last refused
        self._calm_after = -math.inf  # refusals before this are of requests sent too fast
        self._passed = 0  # requests through since `_counting_from`
        self._counting_from = self._updated

    @property
    def rate(self) -> float:
        """The rate in force now (requests per second)."""
        return self._rate

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; return the seconds slept."""
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def limited(self, retry_after: float | None) -> None:
        """The server refused a request for its rate: halve ours, and let nobody send
        before `retry_after` seconds (when given) have passed."""
        with self._lock:
            now = self._refill()
            # Requests already in flight when the first refusal came back were sent at
            # the old rate: their refusals must not halve it again and again.
            if now < self._calm_after:
                return
            # What the server let through since the last refusal bounds its limit better
            # than the rate we asked for (slightly above it: its burst counts too).
            spent = now - self._counting_from
            passed = self._passed / spent if spent > 0 and self._passed else math.inf
            self._refused_at = min(self._rate, passed)
            self._rate = max(self._floor, min(self._rate / 2, self._refused_at * self.BELOW))
            pause = max(0.0, retry_after or 0.0)
            self._tokens = min(self._tokens, 0.0) - pause * self._rate
            self._calm_after = now + max(pause, 1.0)
            self._passed, self._counting_from = 0, now + pause

    def succeeded(self) -> None:
        """A request went through: raise the rate a step, up to the configured one."""
        with self._lock:
            self._passed += 1
            if self._rate >= self._ceiling:
                return
            self._refill()
            if self._rate * self.RECOVER < self._refused_at * self.BELOW:
                self._rate *= self.RECOVER
            else:
                self._rate += self._ceiling * self.CREEP
            self._rate = min(self._rate, self._ceiling)

    def _refill(self) -> float:
        """Credit the tokens earned since the last update, at the rate in force."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        return now


# --------------------------------------------------------------------------- the client


class _Secret:
    """Holds a credential so that no repr, traceback local or log line shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return scrub(text, [self._value])

    def __repr__(self) -> str:
        return "_Secret('***')"


class ApiClient:
    """One target's HTTP client: auth, rate limit, error mapping, retries and metrics.

    Args:
        base_url: the API root, e.g. "https://api.openai.com/v1"; paths are relative to it.
        bearer_token: sent as `Authorization: Bearer ...`; never logged.
        system: the `system` label of metrics and logs (e.g. the target's name).
        timeout: seconds for connect, read, write and pool each.
        verify: True, or the path of a CA bundle (SPEC `ca_file`); False only when the
            configuration explicitly allows it.
        requests_per_second: client-side rate limit shared by all threads; None for none.
        retry: the retry knobs for idempotent calls.
        user_agent: the `User-Agent` header.
        transport: an httpx transport (tests); None for the real network.
        on_response: called as `(system, status)` after every attempt, 0 for transport
            errors, so metrics count retries too.
        error_parser: extracts the server's message from an error body (OpenAI's by default).
        form_refusal: recognises a 4xx that refuses the request's form (none by default).
        sleep: how to wait for backoff and the rate limit; tests pass a fake.
        interrupt: when set (shutdown during a read), the call in flight ends with
            `Interrupted` and no other is sent; with `transport`, that transport must be
            an `interruptible_transport` for the call in flight to end early.
        more_secrets: credentials besides the bearer token to scrub from every message
            (an OAuth client secret and the tokens fetched with it).
    """

    def __init__(
        self,
        base_url: str,
        *,
        bearer_token: str,
        system: str,
        timeout: float = 30.0,
        verify: bool | str = True,
        requests_per_second: float | None = None,
        retry: RetrySettings,
        user_agent: str,
        transport: httpx.BaseTransport | None = None,
        on_response: Callable[[str, int], None] | None = None,
        error_parser: ErrorParser = openai_error_message,
        form_refusal: FormRefusal = _no_form_refusal,
        sleep: Callable[[float], None] = time.sleep,
        interrupt: ReadInterrupt | None = None,
        more_secrets: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self._token = _Secret(bearer_token)
        self._more_secrets = more_secrets
        self._interrupt = interrupt or ReadInterrupt()
        if sleep is time.sleep:
            sleep = self._interrupt.sleep
        if transport is None and interrupt is not None:
            transport = interruptible_transport(interrupt, verify=_ssl_verify(verify))
        self._system = system
        self._retry = retry
        self._on_response = on_response
        self._error_parser = error_parser
        self._form_refusal = form_refusal
        self._sleep = sleep
        self._bucket = (
            TokenBucket(requests_per_second, sleep=sleep)
            if requests_per_second is not None
            else None
        )
        self._http = httpx.Client(
            base_url=base_url,
            headers={
                "Authorization": f"Bearer {bearer_token}",
                "User-Agent": user_agent,
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout),
            verify=_ssl_verify(verify),
            transport=transport,
            follow_redirects=False,
        )

    @property
    def system(self) -> str:
        return self._system

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r}, system={self._system!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json: object = None,
        idempotent: bool,
    ) -> httpx.Response:
        """Send one call and return its 2xx response, or raise a `TargetError` subclass.

        `path` is relative to base_url ("/organization/users"). With `idempotent=True`,
        transient failures are retried per `RetrySettings`; otherwise the first failure
        is raised and the caller decides (a create may have happened despite a timeout).
        """
        return self._call(
            method, path, params=params, json_body=json, idempotent=idempotent, parse=_identity
        )

    def request_model(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        params: QueryParams | None = None,
        json: object = None,
        idempotent: bool,
    ) -> M:
        """Like `request`, then parse the body into `model`, inside the same retry loop.

        A 2xx body that is not JSON at all (a truncated transfer, a proxy's HTML page) is
        transient; JSON of the wrong shape is a `TargetError` (the API changed: retrying
        will not help).
        """

        def parse(response: httpx.Response) -> M:
            return _parse_model(response, model, context=f"{method} {path}")

        return self._call(
            method, path, params=params, json_body=json, idempotent=idempotent, parse=parse
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None,
        json_body: object,
        idempotent: bool,
        parse: Callable[[httpx.Response], _T],
    ) -> _T:
        _check_relative(path)

        def attempt() -> _T:
            return parse(self._send(method, path, params, json_body))

        if not idempotent:
            return attempt()
        retrying = self._retry.policy(sleep=self._sleep).copy(
            before_sleep=lambda state: self._log_retry(method, path, state)
        )
        return retrying(attempt)

    def _send(
        self, method: str, path: str, params: QueryParams | None, json_body: object
    ) -> httpx.Response:
        if self._bucket is not None:
            self._bucket.acquire()
        context = f"{method} {path}"
        self._interrupt.check(f"{self._system}: {context}")
        started = time.perf_counter()
        try:
            response = self._http.request(
                method,
                path,
                params=_query(params),
                json=json_body,
            )
        except httpx.RequestError as exc:
            self._report(0)
            log.debug(
                "http.request",
                system=self._system,
                method=method,
                path=path,
                status=0,
                error=type(exc).__name__,
                duration_ms=_millis(started),
            )
            raise self._scrubbed(error_for_transport(exc, context=context)) from exc
        self._report(response.status_code)
        log.debug(
            "http.request",
            system=self._system,
            method=method,
            path=path,
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
            duration_ms=_millis(started),
        )
        error = error_for_response(
            response,
            context=context,
            error_parser=self._error_parser,
            form_refusal=self._form_refusal,
        )
        if self._bucket is not None:
            if isinstance(error, TransientError) and error.not_processed:
                self._bucket.limited(error.retry_after)
            elif error is None:
                self._bucket.succeeded()
        if error is not None:
            raise self._scrubbed(error)
        return response

    def _report(self, status: int) -> None:
        if self._on_response is not None:
            self._on_response(self._system, status)

    def _secrets(self) -> list[str]:
        return [self._token.reveal(), *(self._more_secrets() if self._more_secrets else ())]

    def _scrubbed(self, error: TargetError) -> TargetError:
        """Remove the credentials from an error's message, should a server or httpx echo
        them, in any form (`orgsync.core.redaction`)."""
        return redact(error, self._secrets())

    def _log_retry(self, method: str, path: str, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "http.retry",
            system=self._system,
            method=method,
            path=path,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            status=getattr(error, "status", None),
            error=scrub(str(error), self._secrets()),
        )


def _identity(response: httpx.Response) -> httpx.Response:
    return response


def _parse_model(response: httpx.Response, model: type[M], *, context: str) -> M:
    request_id = response.headers.get("x-request-id")
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise TransientError(
                f"{context}: response body is not JSON",
                status=response.status_code,
                request_id=request_id,
            ) from exc
        # Name the fields, not their values: a body may hold personal data.
        fields = sorted({".".join(str(p) for p in e["loc"]) or "<root>" for e in exc.errors()})
        raise TargetError(
            f"{context}: unexpected response shape ({', '.join(fields[:5])})",
            status=response.status_code,
            request_id=request_id,
        ) from exc


def _check_relative(path: str) -> None:
    # An absolute URL would make httpx send the bearer token to whatever host it names.
    if not path.startswith("/") or path.startswith("//") or "://" in path:
        raise ValueError(f"path must be relative to base_url and start with '/': {path!r}")


def _query(params: QueryParams | None) -> httpx.QueryParams | None:
    if params is None:
        return None
    items: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in params.items():
        if value is None:
            continue  # an absent cursor is simply not sent
        if isinstance(value, str | int | float | bool):
            items.append((key, value))
        else:
            items.extend((key, v) for v in value if v is not None)
    return httpx.QueryParams(items)


def network_transport(
    verify: ssl.SSLContext | bool, interrupt: ReadInterrupt | None
) -> httpx.BaseTransport:
    """The transport to the network for adapters that wrap it (auth, media types): one a
    stop request can interrupt when `interrupt` is given."""
    if interrupt is None:
        return httpx.HTTPTransport(verify=verify)
    return interruptible_transport(interrupt, verify=verify)


def _ssl_verify(verify: bool | str) -> ssl.SSLContext | bool:
    # httpx 0.28 deprecates `verify=<path>`; a context built from the CA file is the
    # supported spelling and still checks host names.
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


def _millis(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)
