"""The one HTTP client of orgsync's sources and targets (httpx, synchronous, thread-safe).

`new_client` builds every `httpx.Client` orgsync opens: TLS verification on unless the
configuration gives a CA file instead of the system store, one timeout for connect, read,
write and pool, the `User-Agent`, redirects never followed (a next link or a redirect
must not carry a credential to another host), and, when a stop request can come, the
transport that ends a read in flight (`orgsync.interrupt`).

`HttpClient` sends one call and returns what `parse` makes of its 2xx answer, or raises
the `ApiError` the answer stands for (`orgsync.http.responses`), with every credential
scrubbed from the message. Around each attempt, in this order: the stop request, the
shared rate limit, the call (its credential set by an `httpx.Auth` flow, see
`orgsync.http.auth`), a debug line, and the `(system, status)` report to the metrics
(every response on the wire, token requests and refused attempts included; 0 for a
transport failure). Idempotent calls are retried with `orgsync.retrying`; the others never
are, because only the applier can tell, after a lookup, whether a create already happened.

This module imports only httpx, structlog, tenacity, the standard library,
`orgsync.core`, `orgsync.retrying` and `orgsync.interrupt`.
"""

from __future__ import annotations

import json as jsonlib
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict, TypeVar, cast, runtime_checkable
from urllib.parse import unquote, urlencode, urlsplit

import httpx
import structlog
import tenacity

from orgsync.core.errors import ApiError, ConfigError, TransientError
from orgsync.core.redaction import scrub
from orgsync.http import lean
from orgsync.http.lean import (
    ANSWER_WITHIN_READ_TIMEOUTS,
    Exchange,
    LeanPool,
    body_too_large,
    decode_body,
)
from orgsync.http.ratelimit import TokenBucket
from orgsync.http.responses import (
    ErrorParser,
    FormRefusal,
    IsTransient,
    RetryAfter,
    default_is_transient,
    error_for_response,
    error_for_transport,
    no_form_refusal,
    no_message,
    redact,
    retry_after,
)
from orgsync.interrupt import ReadInterrupt, answer_within, interruptible_transport
from orgsync.retrying import RetrySettings

__all__ = [
    "ClientOptions",
    "FixedHeader",
    "HasSecrets",
    "HttpClient",
    "QueryParams",
    "SecretSet",
    "network_transport",
    "new_client",
    "read_capped",
    "request_id",
    "send_capped",
    "ssl_verify",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

QueryValue = str | int | float | bool | None
QueryParams = Mapping[str, QueryValue | Sequence[QueryValue]]
OnResponse = Callable[[str, int], None]
"""Told `(system, status)` of every response (0: the transport failed); the metrics."""


# --------------------------------------------------------------------------- secrets


class SecretSet:
    """Credentials to scrub from every message: a thread-safe set that only grows.

    Its own lock, never held while anything is sent: a token fetch in progress (under
    the token cache's lock) can still have its failure scrubbed.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values = {v for v in values if v}

    def add(self, value: str | None) -> None:
        if value:
            with self._lock:
                self._values.add(value)

    def discard(self, value: str | None) -> None:
        with self._lock:
            self._values.discard(value or "")

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._values))

    def __repr__(self) -> str:
        return f"SecretSet({len(self._values)} hidden)"


@runtime_checkable
class HasSecrets(Protocol):
    """An auth flow that knows credentials besides those given to the client."""

    def secrets(self) -> Iterable[str]: ...


@runtime_checkable
class FixedHeader(Protocol):
    """An auth flow that only sets one header, the same on every request: the client may
    then send its calls without httpx (`orgsync.http.lean`)."""

    def fixed_header(self) -> tuple[str, str]: ...


# --------------------------------------------------------------------------- the factory


_DEFAULT_CONTEXTS: dict[bool, ssl.SSLContext] = {}
_DEFAULT_CONTEXTS_LOCK = threading.Lock()


def ssl_verify(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext:
    """The TLS context for a `ca_file` key (a path) or True/False.

    The default contexts (True: the CA bundle; False: no verification) are built once
    per process and shared: building one reads and parses the whole CA bundle (20-70 ms),
    and a daemon builds clients on every pass, a CLI run several. httpx and httpcore only
    read a context, apart from setting ALPN, which is the same HTTP/1.1 for every orgsync
    client. A `ca_file` is read anew each time, so a rotated private CA is picked up at
    the next pass without a restart."""
    # httpx 0.28 deprecates `verify=<path>`; a context built from the CA file is the
    # supported spelling and still checks host names.
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as error:
            # Checked when the configuration was loaded: removed or replaced since (a
            # rotation half done). Named, as a configuration error, not a traceback.
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise ConfigError(
                f"ca_file {verify}: cannot be used any more ({reason}); it was when the "
                "configuration was loaded: put the CA file back, then run again"
            ) from None
    if isinstance(verify, ssl.SSLContext):
        return verify
    with _DEFAULT_CONTEXTS_LOCK:
        context = _DEFAULT_CONTEXTS.get(verify)
        if context is None:
            context = _DEFAULT_CONTEXTS[verify] = httpx.create_ssl_context(verify=verify)
        return context


def environment_proxies() -> dict[str, str | None]:
    """The proxies the environment names, as httpx mount patterns: `HTTPS_PROXY`,
    `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case), read as curl and httpx read
    them; a None value is a host `NO_PROXY` sends direct."""
    # httpx reads these itself only when it builds its own transports; orgsync gives it
    # one (to interrupt reads), so it asks httpx's reader (pinned in requirements.lock;
    # tests/http/test_proxy.py fails if it moves).
    from httpx._utils import get_environment_proxies

    return dict(get_environment_proxies())


def network_transport(
    verify: ssl.SSLContext | bool,
    interrupt: ReadInterrupt | None,
    *,
    limits: httpx.Limits | None = None,
    proxy: str | None = None,
) -> httpx.BaseTransport:
    """The transport to the network (through `proxy` when given), one a stop request can
    interrupt when `interrupt` is given; for adapters that wrap it (media types)."""
    limits = limits or httpx.Limits()
    if interrupt is None:
        return httpx.HTTPTransport(verify=verify, limits=limits, proxy=proxy)
    return interruptible_transport(interrupt, verify=verify, limits=limits, proxy=proxy)


def proxy_mounts(
    verify: ssl.SSLContext | bool,
    interrupt: ReadInterrupt | None,
    proxies: Mapping[str, str | None],
    *,
    limits: httpx.Limits | None = None,
) -> dict[str, httpx.BaseTransport | None]:
    """A transport through each proxy, by the URL pattern it serves (`proxies`, as
    `environment_proxies` gives them); None for the patterns `NO_PROXY` sends direct."""
    return {
        pattern: None
        if proxy is None
        else network_transport(verify, interrupt, limits=limits, proxy=proxy)
        for pattern, proxy in proxies.items()
    }


def new_client(
    *,
    base_url: str = "",
    timeout: float = 30.0,
    verify: bool | str | ssl.SSLContext = True,
    user_agent: str = "orgsync",
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    transport: httpx.BaseTransport | None = None,
    interrupt: ReadInterrupt | None = None,
    max_connections: int | None = None,
    on_response: Callable[[httpx.Response], None] | None = None,
    proxies: Mapping[str, str | None] | None = None,
) -> httpx.Client:
    """An `httpx.Client` configured the one way orgsync talks HTTP (see the module doc).

    `transport` replaces the network (tests, or an adapter's wrapper around
    `network_transport`); `on_response` sees every response, before any auth flow does;
    `proxies` are the environment's (`environment_proxies`, read here when not given).
    """
    trust = ssl_verify(verify)
    limits = httpx.Limits(max_connections=max_connections) if max_connections else httpx.Limits()
    mounts: dict[str, httpx.BaseTransport | None] = {}
    if transport is None:
        transport = network_transport(trust, interrupt, limits=limits)
        # An egress proxy from the environment, as every HTTP tool honours it; a transport
        # given by an adapter or a test is its whole network.
        if proxies is None:
            proxies = environment_proxies()
        mounts = proxy_mounts(trust, interrupt, proxies, limits=limits)
    hooks: dict[str, list[Callable[..., Any]]] = {"response": [on_response]} if on_response else {}
    return httpx.Client(
        base_url=base_url,
        # Only the encodings `read_capped` decodes within its limit (httpx would also
        # offer br and zstd when their packages are installed).
        headers={
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            **(headers or {}),
        },
        auth=auth,
        timeout=httpx.Timeout(timeout),
        verify=trust,
        transport=transport,
        mounts=mounts,
        follow_redirects=False,
        limits=limits,
        event_hooks=hooks,
    )


# --------------------------------------------------------------------------- the client


class ClientOptions(TypedDict, total=False):
    """`HttpClient`'s optional settings, for the clients built on it to pass through."""

    timeout: float
    verify: bool | str
    user_agent: str
    headers: Mapping[str, str] | None
    max_connections: int | None
    transport: httpx.BaseTransport | None
    interrupt: ReadInterrupt | None
    error_parser: ErrorParser
    is_transient: IsTransient
    retry_after: RetryAfter
    form_refusal: FormRefusal
    requests_per_second: float | None
    on_response: OnResponse | None
    sleep: Callable[[float], None]
    clock: Callable[[], float]


class HttpClient:
    """One system's HTTP session: auth, rate limit, error mapping, retries and metrics.

    Args:
        base_url: the root relative URLs are resolved against ("" for absolute URLs only).
        system: the `system` label of metrics and logs (a target's name, a source's type).
        retry: the retry budget of idempotent calls.
        auth: the credential flow (`orgsync.http.auth`); its `secrets()` are scrubbed too.
        secrets: credentials to scrub from every message (the set is shared, not copied,
            when a `SecretSet` is given).
        timeout, verify, user_agent, headers, max_connections, transport, interrupt: as
            `new_client`; `interrupt`, when set, also ends retries and sends nothing more.
        error_parser, is_transient, retry_after, form_refusal: the vendor's dialect
            (`orgsync.http.responses`).
        requests_per_second: a client-side rate limit shared by all threads; None for none.
        on_response: told `(system, status)` of every response (0: transport failure).
        sleep: how to wait for backoff and the rate limit; tests pass a fake.
        clock: the rate limit's monotonic clock; tests pass a fake with a fake `sleep`,
            so the waits they see do not depend on how fast the machine runs the test.

    `stop`, once set, makes the next attempt raise instead of being sent (a sibling worker
    failed, and finishing this one's pages would only spend rate limit).
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        system: str,
        retry: RetrySettings,
        auth: httpx.Auth | None = None,
        secrets: Iterable[str] = (),
        timeout: float = 30.0,
        verify: bool | str = True,
        user_agent: str = "orgsync",
        headers: Mapping[str, str] | None = None,
        max_connections: int | None = None,
        transport: httpx.BaseTransport | None = None,
        interrupt: ReadInterrupt | None = None,
        error_parser: ErrorParser = no_message,
        is_transient: IsTransient = default_is_transient,
        retry_after: RetryAfter = retry_after,
        form_refusal: FormRefusal = no_form_refusal,
        requests_per_second: float | None = None,
        on_response: OnResponse | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.system = system
        self._retry = retry
        self._auth = auth
        self._answer_within = ANSWER_WITHIN_READ_TIMEOUTS * timeout
        self.secrets = secrets if isinstance(secrets, SecretSet) else SecretSet(secrets)
        proxies = environment_proxies()
        for proxy in proxies.values():  # a proxy's password, if its URL has one
            if proxy:
                self.secrets.add(urlsplit(proxy).password)
        self._error_parser = error_parser
        self._is_transient = is_transient
        self._retry_after = retry_after
        self._form_refusal = form_refusal
        self._on_response = on_response
        self._interrupt = interrupt or ReadInterrupt()
        self._sleep = self._interrupt.sleep if sleep is time.sleep else sleep
        self._bucket = (
            TokenBucket(
                requests_per_second, clock=clock, sleep=self._sleep, max_pause=retry.max_delay
            )
            if requests_per_second is not None
            else None
        )
        self.stop = threading.Event()
        # Built once: its stop and wait keep no state between calls, and `copy` per call
        # costs one construction instead of two.
        self._policy = retry.policy(sleep=self._sleep)
        # One TLS context for both ways of sending (building one reads the CA bundle).
        trust = ssl_verify(verify)
        self._http = new_client(
            base_url=base_url,
            timeout=timeout,
            verify=trust,
            user_agent=user_agent,
            headers=headers,
            auth=auth,
            transport=transport,
            interrupt=interrupt,
            max_connections=max_connections,
            on_response=self._count if on_response is not None else None,
            proxies=proxies,
        )

        base = self._http.base_url
        # Only a plain base (no query or fragment) is joined by `_resolve`.
        plain = base.is_absolute_url and not base.query and not base.fragment
        text = str(base)
        # httpx keeps a bare origin's path "/" out of its text ("http://host:8080"), so the
        # join below would glue the path to the port: the slash is put back here.
        if plain and not text.endswith("/"):
            text += "/"
        self._base_text = text if plain else ""
        self._lean: LeanPool | None = None
        self._lean_prefix = ""
        self._lean_origin = ""
        self._lean_head = b""
        # A proxy from the environment: httpx takes the calls through it.
        if plain and transport is None and not any(proxies.values()):
            self._lean_setup(base, trust, timeout, max_connections, interrupt)

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    def __repr__(self) -> str:
        return f"HttpClient(system={self.system!r}, base_url={self.base_url!r})"

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if self._lean is not None:
            self._lean.close()
        closer = getattr(self._auth, "close", None)
        if callable(closer):
            closer()

    def send(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        parse: Callable[[httpx.Response], _T],
        idempotent: bool,
        params: QueryParams | None = None,
        json: object = None,
        data: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> _T:
        """Send one call; return `parse` of its 2xx answer or raise an `ApiError`.

        `parse` runs inside the retry loop: a body it finds truncated (`TransientError`)
        is fetched again. With `idempotent=False` the first failure is raised. `auth`
        replaces the client's credential for this call (a token request's client
        authentication).
        """
        path = _path_of(url)

        def attempt() -> _T:
            return parse(
                self._send(method, url, path, params=params, json_body=json, data=data, auth=auth)
            )

        if not idempotent:
            return attempt()
        # The first attempt runs outside tenacity: nearly every call succeeds at once, and
        # a tenacity loop per call (a policy copy, its actions, their reference cycles for
        # the garbage collector) cost more CPU than the lean exchange itself in a read of
        # tens of thousands of pages. A failure goes on in `_retrying`, as if tenacity had
        # made that attempt.
        started = time.monotonic()
        try:
            return attempt()
        except Exception as error:  # noqa: BLE001 - the policy decides, as it would have
            return self._retrying(method, path, attempt, started, error)

    def _retrying(
        self,
        method: str,
        path: str,
        attempt: Callable[[], _T],
        started: float,
        error: Exception,
    ) -> _T:
        """Go on after a first attempt that raised `error`, under the retry policy.

        The loop is tenacity's own (`Retrying.__call__`) entered after its first attempt:
        the state starts when that attempt did (the budget counts its time) and holds its
        outcome, so what is retried, how long is waited, when it stops and what is raised
        are the policy's, exactly as when tenacity made every attempt.
        """
        retrying = self._policy.copy(
            before_sleep=lambda state: self._log_retry(method, path, state)
        )
        retrying.begin()
        state = tenacity.RetryCallState(retrying, attempt, (), {})
        state.start_time = started
        state.set_exception((type(error), error, error.__traceback__))
        while True:
            action = retrying.iter(state)
            if isinstance(action, tenacity.DoAttempt):
                try:
                    result = attempt()
                except BaseException as failure:  # noqa: BLE001 - the policy decides
                    state.set_exception((type(failure), failure, failure.__traceback__))
                else:
                    state.set_result(result)
            elif isinstance(action, tenacity.DoSleep):
                state.prepare_for_next_attempt()
                retrying.sleep(action)
            else:
                return cast("_T", action)

    def scrubbed(self, text: str) -> str:
        """`text` without any credential this client knows."""
        return scrub(text, self._all_secrets())

    # ------------------------------------------------------------------ internals

    def _send(
        self,
        method: str,
        url: httpx.URL | str,
        path: str,
        *,
        params: QueryParams | None,
        json_body: object,
        data: Mapping[str, str] | None,
        auth: httpx.Auth | None,
    ) -> httpx.Response:
        context = f"{method} {path}"
        self._interrupt.check(f"{self.system}: {context}")
        if self.stop.is_set():
            raise ApiError(f"{context}: abandoned (another call failed)")
        if self._bucket is not None:
            self._bucket.acquire()
        started = time.perf_counter()
        line = {"system": self.system, "method": method, "path": path}
        try:
            lean = self._lean_request(
                method, url, params=params, json_body=json_body, data=data, auth=auth
            )
            if lean is not None and self._lean is not None:
                exchange = self._lean.exchange(lean[1], head=method == "HEAD")
                response: httpx.Response = _LeanResponse(
                    exchange, method, self._lean_origin + lean[0]
                )
                self._count(response)
            else:
                target, query = self._resolve(url, params)
                request = self._http.build_request(
                    method, target, params=query, json=json_body, data=data
                )
                # The whole answer (an auth flow's token call included) within four read
                # timeouts, as the lean way: see `interrupt.answer_within`.
                response = send_capped(
                    self._http,
                    request,
                    within=self._answer_within,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                )
        except httpx.RequestError as exc:
            if self._on_response is not None:
                self._on_response(self.system, 0)
            log.debug(
                "http.request",
                **line,
                status=0,
                error=type(exc).__name__,
                duration_ms=_millis(started),
            )
            raise redact(error_for_transport(exc, context=context), self._all_secrets()) from exc
        log.debug(
            "http.request",
            **line,
            status=response.status_code,
            request_id=request_id(response),
            duration_ms=_millis(started),
        )
        error = error_for_response(
            response,
            context=context,
            error_parser=self._error_parser,
            is_transient=self._is_transient,
            retry_after=self._retry_after,
            form_refusal=self._form_refusal,
        )
        if self._bucket is not None:
            if isinstance(error, TransientError) and error.not_processed:
                self._bucket.limited(error.retry_after)
            elif error is None:
                self._bucket.succeeded()
        if error is not None:
            raise redact(error, self._all_secrets())
        return response

    def _resolve(
        self, url: httpx.URL | str, params: QueryParams | None
    ) -> tuple[httpx.URL | str, httpx.QueryParams | None]:
        """The URL to send to and the parameters left for httpx to merge.

        A relative path without query of its own is joined to the base URL and its
        parameters here, and parsed once: httpx would parse it four times (the path, the
        join, the request, the parameters' merge), a measurable part of a request's CPU
        in a read of tens of thousands of pages. The text is the one httpx builds (its
        join appends the path, stripped of leading slashes, to a base ending in a slash;
        its parameters' encoding is `str(QueryParams)`). Anything else goes to httpx as is.
        """
        base = self._base_text
        if not base or not isinstance(url, str) or not _PLAIN_PATH.fullmatch(url):
            return url, _query(params)
        text = base + url.lstrip("/")
        query = _query_text(params)
        if query:
            text = f"{text}?{query}"
        return httpx.URL(text), None

    # ------------------------------------------------------------------ the lean way

    def _lean_setup(
        self,
        base: httpx.URL,
        trust: ssl.SSLContext | bool,
        timeout: float,
        max_connections: int | None,
        interrupt: ReadInterrupt | None,
    ) -> None:
        """Prepare `orgsync.http.lean` for this client's plain calls, when nothing it
        does not do is asked of them: a proxy from the environment, an auth flow beyond
        a fixed header, header values httpx would refuse."""
        if base.scheme not in ("http", "https"):
            return
        # The headers httpx sends, in its order: Host, the client's (its defaults, with
        # Accept-Encoding limited to what `lean` decodes, and the configured ones), then
        # the credential.
        headers = [
            (
                name.decode("latin-1"),
                "gzip, deflate" if name.lower() == b"accept-encoding" else value.decode("latin-1"),
            )
            for name, value in self._http.headers.raw
        ]
        if self._auth is not None:
            if not isinstance(self._auth, FixedHeader):
                return
            headers.append(self._auth.fixed_header())
        if not all(_HEADER_NAME.fullmatch(n) and _HEADER_VALUE.fullmatch(v) for n, v in headers):
            return  # httpx refuses them, or encodes them its own way: leave them to it
        lines = [f"Host: {base.netloc.decode('ascii')}", *(f"{n}: {v}" for n, v in headers)]
        self._lean_head = ("\r\n".join(lines) + "\r\n").encode("ascii")
        tls = trust if isinstance(trust, ssl.SSLContext) else None
        if base.scheme == "https":
            if tls is None:
                return
            tls.set_alpn_protocols(["http/1.1"])
        self._lean_prefix = base.raw_path.decode("ascii").rstrip("/") + "/"
        self._lean_origin = f"{base.scheme}://{base.netloc.decode('ascii')}"
        self._lean = LeanPool(
            scheme=base.scheme,
            host=base.raw_host.decode("ascii"),
            port=base.port or (443 if base.scheme == "https" else 80),
            tls=tls,
            timeout=httpx.Timeout(timeout),
            max_connections=max_connections or _DEFAULT_MAX_CONNECTIONS,
            interrupt=interrupt,
        )

    def _lean_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        params: QueryParams | None,
        json_body: object,
        data: Mapping[str, str] | None,
        auth: httpx.Auth | None,
    ) -> tuple[str, bytes] | None:
        """The target and the bytes of the request, when it can go the lean way."""
        if (
            self._lean is None
            or auth is not None
            or data is not None
            or not isinstance(url, str)
            or not _PLAIN_PATH.fullmatch(url)
        ):
            return None
        target = self._lean_prefix + url.lstrip("/")
        query = _query_text(params)
        if query:
            target = f"{target}?{query}"
        if not _SAFE_TARGET.fullmatch(target) or not _TOKEN.fullmatch(method):
            return None  # httpx would percent-encode it: its text is the one to send
        head = f"{method} {target} HTTP/1.1\r\n".encode("ascii") + self._lean_head
        if json_body is not None:
            body = jsonlib.dumps(
                json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            head += b"Content-Length: %d\r\nContent-Type: application/json\r\n\r\n" % len(body)
            return target, head + body
        if method in ("POST", "PUT", "PATCH"):
            return target, head + b"Content-Length: 0\r\n\r\n"
        return target, head + b"\r\n"

    def _count(self, response: httpx.Response) -> None:
        if self._on_response is not None:
            self._on_response(self.system, response.status_code)

    def _all_secrets(self) -> list[str]:
        extra = self._auth.secrets() if isinstance(self._auth, HasSecrets) else ()
        return [*self.secrets, *extra]

    def _log_retry(self, method: str, path: str, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "http.retry",
            system=self.system,
            method=method,
            path=path,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            status=getattr(error, "status", None),
            error=self.scrubbed(str(error)),
        )


# A relative path: no scheme or authority, no query, no fragment.
_PLAIN_PATH = re.compile(r"(?![A-Za-z][A-Za-z0-9+.-]*:)(?!//)[^?#]*")
# A request target httpx would send as it is (RFC 3986 path and query characters, with
# percent escapes): anything else is left to httpx's own encoding.
_SAFE_TARGET = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_TOKEN = re.compile(r"[A-Z]+")
_UNRESERVED = re.compile(r"[A-Za-z0-9_.\-~]*")
"""What `urllib.parse.quote_plus` never escapes."""
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
"""Printable ASCII only: no line break to inject a header, nothing httpx would encode."""
_DEFAULT_MAX_CONNECTIONS = 100
"""httpx's default `max_connections`, kept for the lean way."""


BeyondLimit = Literal["refuse", "cut"]
"""What `read_capped` does with a body longer than its limit: refuse it (`body_too_large`,
for an answer that is parsed) or keep its start (for an error message quoting one)."""


def send_capped(
    client: httpx.Client,
    request: httpx.Request,
    *,
    within: float | None,
    limit: int | None = None,
    beyond: BeyondLimit = "refuse",
    auth: httpx.Auth | httpx._client.UseClientDefault | None = httpx.USE_CLIENT_DEFAULT,
) -> httpx.Response:
    """`client.send(request)` with its answer read by `read_capped(limit, beyond)`, the
    whole answer (head and body, every read) within `within` seconds of the call: a read
    timeout bounds one wait for bytes, and a server sending a byte within each would hold
    the call for ever. The bound ends it as `httpx.ReadTimeout`. It holds for a client
    whose transport reads through `orgsync.interrupt` (`new_client` with an `interrupt`);
    connecting, and a TLS handshake, are bounded by the client's own timeout."""
    with answer_within(within):
        response = client.send(request, auth=auth, stream=True)
        read_capped(response, limit, beyond=beyond)
    return response


def read_capped(
    response: httpx.Response, limit: int | None = None, *, beyond: BeyondLimit = "refuse"
) -> None:
    """Read a streamed answer's body into it, as `Response.read` does, at most `limit`
    bytes as sent or once decoded (an endless body, a decompression bomb): read raw,
    then decoded the lean way, since httpx inflates a whole chunk at once (64 KiB of gzip
    is 64 MiB in one piece). Beyond `limit`, `beyond="refuse"` raises `body_too_large`;
    `beyond="cut"` keeps the first `limit` bytes as sent (a compressed prefix, or an
    encoding `decode_body` does not know, is kept undecoded) and reads no further.
    `limit` None: `lean.MAX_BODY`, read at each call."""
    if response.is_stream_consumed:
        return  # built from bytes already in memory (a test's transport): nothing to read
    if limit is None:
        limit = lean.MAX_BODY
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > limit:
                if beyond == "refuse":
                    raise body_too_large(limit)
                parts.append(chunk[: len(chunk) - (size - limit)])
                response._content = b"".join(parts)  # what `Response.read` keeps
                return
            parts.append(chunk)
    finally:
        response.close()
    encodings = [
        token.strip().lower().encode("latin-1")
        for token in response.headers.get("content-encoding", "").split(",")
        if token.strip()
    ]
    raw = b"".join(parts)
    if beyond == "refuse":
        response._content = decode_body(raw, encodings)  # what `Response.read` keeps
        return
    try:
        response._content = decode_body(raw, encodings)[:limit]
    except httpx.DecodingError:  # only quoted, never parsed: as sent is good enough
        response._content = raw


def _path_of(url: httpx.URL | str) -> str:
    """`httpx.URL(url).path` (decoded), without parsing a plain relative path: its path
    is itself, percent escapes decoded as httpx decodes them."""
    if isinstance(url, str) and url.startswith("/") and _PLAIN_PATH.fullmatch(url):
        return unquote(url) if "%" in url else url
    return httpx.URL(url).path


def _items(params: QueryParams) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue  # an absent cursor is simply not sent
        if isinstance(value, str | int | float | bool):
            items.append((key, _text(value)))
        else:
            items.extend((key, _text(v)) for v in value if v is not None)
    return items


def _text(value: str | int | float | bool) -> str:
    # httpx's `primitive_value_to_str`: JSON-style booleans.
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _query(params: QueryParams | None) -> httpx.QueryParams | None:
    return None if params is None else httpx.QueryParams(tuple(_items(params)))


def _query_text(params: QueryParams | None) -> str:
    """`str(_query(params))` without building the `QueryParams`: the same encoding
    (`urllib.parse.urlencode`, which httpx's `QueryParams` uses)."""
    if not params:
        return ""
    items = _items(params)
    # Limits, cursors and ids are unreserved text, which `urlencode` leaves as it is:
    # joined here without its per-character quoting.
    if all(_UNRESERVED.fullmatch(key) and _UNRESERVED.fullmatch(value) for key, value in items):
        return "&".join([f"{key}={value}" for key, value in items])
    return urlencode(items)


class _LeanResponse(httpx.Response):
    """An `httpx.Response` for an answer received the lean way, built without httpx's
    per-response work: parsers and the error mapping read it as any other (status,
    headers, content, text, json); its `request` is made only if asked for."""

    def __init__(self, exchange: Exchange, method: str, url: str) -> None:
        # Not `super().__init__`: that re-encodes the body into a stream and reads it back.
        self.status_code = exchange.status
        self._raw_headers = exchange.headers
        self._headers: httpx.Headers | None = None
        self._request = None
        self._method_url = (method, url)
        self.next_request = None
        self.extensions = {"http_version": b"HTTP/1.1", "reason_phrase": exchange.reason}
        self.history = []
        self.is_closed = True
        self.is_stream_consumed = True
        self.default_encoding = "utf-8"
        self.stream = httpx.ByteStream(exchange.body)
        self._content = exchange.body
        self._num_bytes_downloaded = len(exchange.body)

    @property
    def headers(self) -> httpx.Headers:
        # Built when first read: a success is parsed from its body alone, and building
        # `httpx.Headers` for each of tens of thousands of pages was a measurable cost.
        if self._headers is None:
            self._headers = httpx.Headers(self._raw_headers)
        return self._headers

    @headers.setter
    def headers(self, value: httpx.Headers) -> None:
        self._headers = value

    def header(self, name: bytes) -> str | None:
        """The first value of the header `name` (lower case), as `headers.get` gives it,
        read from the raw headers without building `headers`."""
        values = [value for key, value in self._raw_headers if key.lower() == name]
        if not values:
            return None
        joined = b", ".join(values)  # several occurrences: joined, as httpx joins them
        if joined.isascii():  # the same text whatever encoding httpx would pick
            return joined.decode("ascii")
        found: str | None = self.headers.get(name.decode("ascii"))
        return found

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            self._request = httpx.Request(*self._method_url)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


def request_id(response: httpx.Response) -> str | None:
    """The response's `x-request-id`, without building the headers of a lean answer."""
    if isinstance(response, _LeanResponse):
        return response.header(b"x-request-id")
    found: str | None = response.headers.get("x-request-id")
    return found


def _millis(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)
