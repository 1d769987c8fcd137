"""What an HTTP answer means to orgsync: the error it stands for, and how long to wait.

One classification for sources and targets (`orgsync.core.errors` documents the tree):

* a transport failure (timeout, refused or reset connection, broken response) is a
  `TransientError` with no status; one no retry can fix (an unsupported scheme, a
  redirect loop, an undecodable body) is a plain `ApiError`;
* 501 (not implemented: permanent for the request as sent, RFC 9110 §15.6.2) and a 4xx
  the adapter's `FormRefusal` recognises are `UnsupportedRequest`, never retried;
* 429, 408 and 5xx, plus whatever else the vendor's `IsTransient` says (Google answers
  a rate limit with 403), are `TransientError` carrying the server's requested delay;
* 401/403 `AuthError`, 404 `NotFoundError`, 409 `ConflictError`, any other 4xx
  `RequestRejected`, a 3xx (redirects are never followed) a plain `ApiError`.

The message is `<context>: <the server's own message>` (see `ErrorParser`), and the
`x-request-id` rides along. Credentials are scrubbed from it by `redact`.

This module imports only httpx, the standard library and `orgsync.core`.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from orgsync.core.errors import (
    ApiError,
    AuthError,
    ConflictError,
    NotFoundError,
    RequestRejected,
    TransientError,
    UnsupportedRequest,
)
from orgsync.core.redaction import auth_failure_detail, scrub

__all__ = [
    "ErrorParser",
    "FormRefusal",
    "IsTransient",
    "RetryAfter",
    "certificate_failure",
    "default_is_transient",
    "error_for_response",
    "error_for_transport",
    "http_date",
    "no_form_refusal",
    "no_message",
    "parse_retry_after",
    "redact",
    "retry_after",
]

ErrorParser = Callable[[httpx.Response], str | None]
"""Extracts the human message from an error response body, or None if it has no known shape."""
FormRefusal = Callable[[httpx.Response], bool]
"""Whether a 4xx answer refuses the request's form rather than its content (an API's own
error code for it, such as SCIM's `invalidPath`): it becomes `UnsupportedRequest`."""
IsTransient = Callable[[httpx.Response], bool]
"""Whether a non-2xx answer is worth retrying (501 never is, whatever this says)."""
RetryAfter = Callable[[httpx.Response], float | None]
"""Seconds the server asks the client to wait before trying again, or None."""

BODY_SNIPPET: Final = 200
"""Characters of an unparseable error body quoted in a message: enough to recognise a
proxy's HTML page, short enough for a log line."""

PERMANENT_TRANSPORT: Final[tuple[type[httpx.RequestError], ...]] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.DecodingError,
    httpx.TooManyRedirects,
)
"""Transport errors no retry can fix: a wrong URL or a bug, not a flaky network."""


def no_message(response: httpx.Response) -> str | None:
    """An `ErrorParser` that knows no body shape (the body is then quoted briefly)."""
    del response
    return None


def no_form_refusal(response: httpx.Response) -> bool:
    """A `FormRefusal` that recognises none (every 4xx refuses the content)."""
    del response
    return False


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
    when = http_date(value)
    if when is None:
        return None
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def http_date(value: str) -> datetime | None:
    """An HTTP date (`Date`, `Retry-After`; RFC 9110 §5.6.7) as an aware datetime; None
    when it does not parse."""
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 5322 "-0000": UTC by definition of HTTP dates
        when = when.replace(tzinfo=UTC)
    return when


def server_time(response: httpx.Response) -> datetime | None:
    """The server's clock, from the response's `Date` (whole seconds); None without one."""
    date = response.headers.get("date")
    return None if date is None else http_date(date)


def retry_after(response: httpx.Response) -> float | None:
    """The default `RetryAfter`: `parse_retry_after` of the response's headers."""
    return parse_retry_after(response.headers)


def _finite_float(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- classification


def default_is_transient(response: httpx.Response) -> bool:
    """408, 429 and 5xx but 501."""
    status = response.status_code
    # 408 is the server timing out on our request: the same event as a client-side
    # timeout, which is transient, so it is classified alike.
    return status in (408, 429) or (status >= 500 and status != 501)


def fallback_message(response: httpx.Response) -> str:
    """The reason phrase and the start of the body, on one line."""
    text = " ".join(response.text.split())[:BODY_SNIPPET]
    reason = response.reason_phrase or "error"
    return f"{reason}: {text}" if text else reason


def error_for_response(
    response: httpx.Response,
    *,
    context: str,
    error_parser: ErrorParser = no_message,
    is_transient: IsTransient = default_is_transient,
    retry_after: RetryAfter | None = None,
    form_refusal: FormRefusal = no_form_refusal,
    now: datetime | None = None,
) -> ApiError | None:
    """The orgsync error a response stands for, or None for a success (2xx).

    `context` (for example "DELETE /organization/invites/inv_1") prefixes the message so a
    failure in a long log names its call. `retry_after` defaults to `parse_retry_after`
    at `now`.
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    request_id = response.headers.get("x-request-id")
    try:
        parsed = error_parser(response)
    except RecursionError:  # a body nested past the JSON parser's depth: no message in it
        parsed = None
    if status in (401, 403):
        # A refused credential's body is never quoted raw: servers echo what they were
        # sent. The vendor's parsed message (scrubbed and capped by `redact`) or nothing.
        detail = parsed or response.reason_phrase or "refused"
    else:
        detail = parsed or fallback_message(response)
    message = f"{context}: {detail}"
    if status == 501:
        # Not Implemented: the same request will be refused again, whoever sends it.
        return UnsupportedRequest(message, status=status, request_id=request_id)
    if is_transient(response):
        delay = (
            retry_after(response)
            if retry_after is not None
            else parse_retry_after(response.headers, now=now)
        )
        return TransientError(message, status=status, request_id=request_id, retry_after=delay)
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
    # 1xx cannot reach us and redirects are never followed: a 3xx means the URL points
    # somewhere else (often http:// redirected to https://).
    why = "; a redirect: is the URL right?" if 300 <= status < 400 else ""
    return ApiError(
        f"{message} (unexpected HTTP {status}{why})", status=status, request_id=request_id
    )


def error_for_transport(error: httpx.RequestError, *, context: str) -> ApiError:
    """The orgsync error an httpx transport failure stands for (status None)."""
    detail = str(error) or type(error).__name__
    message = f"{context}: {type(error).__name__}: {detail}"
    if isinstance(error, PERMANENT_TRANSPORT):
        return ApiError(message)
    # Timeouts, connect/read/write/close errors, resets and proxy failures: the request may
    # or may not have reached the server, and trying again later may well succeed.
    return TransientError(message)


def certificate_failure(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate refusal behind a transport error, however deep httpx wrapped it
    (httpx.ConnectError <- httpcore.ConnectError <- ssl), or None: for a caller that
    must tell an untrusted server (no retry helps) from one that is down."""
    seen: BaseException | None = error
    for _ in range(10):  # a cycle of causes is possible; ten levels is far beyond httpx's
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def redact(error: ApiError, secrets: Iterable[str]) -> ApiError:
    """`error` with `secrets` scrubbed from its message (`orgsync.core.redaction`); a
    refused credential's message (401/403) is also cut to one short line. Changed in
    place, returned for `raise`."""
    clean = scrub(error.message, secrets)
    if isinstance(error, AuthError):
        clean = auth_failure_detail(clean)
    if clean != error.message:
        error.message = clean
        error.args = (clean,)
    return error
