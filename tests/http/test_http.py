"""The shared HTTP client: status and transport classification, Retry-After, retries,
rate limiting, and the bearer token staying secret."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import certifi
import httpx
import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from orgsync.core.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    RequestRejected,
    TargetError,
    TransientError,
    UnsupportedRequest,
)
from orgsync.http.client import ssl_verify
from orgsync.http.ratelimit import TokenBucket
from orgsync.http.responses import error_for_transport, parse_retry_after
from orgsync.retrying import RetrySettings
from orgsync.targets.http import ApiClient

TOKEN = "sk-admin-TOPSECRET0123456789abcdef"
BASE_URL = "https://api.example.test/v1"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Collects what the client reports: sleeps, metric callbacks and requests seen."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.statuses: list[tuple[str, int]] = []
        self.requests: list[httpx.Request] = []

    def on_response(self, system: str, status: int) -> None:
        self.statuses.append((system, status))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_client(recorder: Recorder) -> Iterator[Callable[..., ApiClient]]:
    clients: list[ApiClient] = []

    def make(
        handler: Handler,
        *,
        retry: RetrySettings | None = None,
        requests_per_second: float | None = None,
        **kwargs: object,
    ) -> ApiClient:
        def recording(request: httpx.Request) -> httpx.Response:
            recorder.requests.append(request)
            return handler(request)

        client = ApiClient(
            BASE_URL,
            bearer_token=TOKEN,
            system="openai-test",
            retry=retry or RetrySettings(max_attempts=4, base=0.0, cap=0.0),
            requests_per_second=requests_per_second,
            user_agent="orgsync-test/1.0",
            transport=httpx.MockTransport(recording),
            on_response=recorder.on_response,
            sleep=recorder.sleeps.append,
            **kwargs,  # type: ignore[arg-type]
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def openai_error(status: int, message: str = "nope", **headers: str) -> httpx.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }
    return httpx.Response(status, json=body, headers={"x-request-id": "req_123", **headers})


def expected_class(status: int) -> type[TargetError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 501:
        return UnsupportedRequest
    if status in (408, 429) or status >= 500:
        return TransientError
    return RequestRejected


class TestStatusClassification:
    @pytest.mark.parametrize("status", range(400, 600))
    def test_every_error_status_maps_to_exactly_one_class(
        self, status: int, make_client: Callable[..., ApiClient]
    ) -> None:
        """Each status in 400-599 raises its class (and not a sibling), with status,
        the server's message and the request id."""
        client = make_client(lambda _: openai_error(status, "the server says no"))
        with pytest.raises(TargetError) as raised:
            client.request("GET", "/organization/users", idempotent=False)
        error = raised.value
        assert type(error) is expected_class(status)
        assert error.status == status
        assert error.request_id == "req_123"
        assert error.message == "GET /organization/users: the server says no"
        assert str(error) == (
            f"HTTP {status}: GET /organization/users: the server says no (request id req_123)"
        )

    @pytest.mark.parametrize("status", [200, 201, 204])
    def test_success_returns_the_response(
        self, status: int, make_client: Callable[..., ApiClient]
    ) -> None:
        client = make_client(lambda _: httpx.Response(status, json={}))
        assert client.request("GET", "/x", idempotent=True).status_code == status

    @pytest.mark.parametrize("status", [301, 302, 307, 308])
    def test_redirects_are_not_followed_and_fail(
        self, status: int, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """A redirect means a wrong base_url; following it could carry the token elsewhere."""
        client = make_client(
            lambda _: httpx.Response(status, headers={"location": "https://elsewhere.test/"})
        )
        with pytest.raises(TargetError) as raised:
            client.request("GET", "/x", idempotent=True)
        assert type(raised.value) is TargetError
        assert len(recorder.requests) == 1

    def test_error_code_joins_the_message(self, make_client: Callable[..., ApiClient]) -> None:
        body = {"error": {"message": "Invite exists", "type": "x", "param": None, "code": "dup"}}
        client = make_client(lambda _: httpx.Response(409, json=body))
        with pytest.raises(ConflictError, match=r"Invite exists \[dup\]"):
            client.request("POST", "/organization/invites", json={}, idempotent=False)

    def test_a_body_of_unknown_shape_is_quoted_briefly(
        self, make_client: Callable[..., ApiClient]
    ) -> None:
        """Non-OpenAI bodies (a proxy's HTML page) are quoted, whitespace folded, cut short."""
        html = "<html>\n  <body>Bad   gateway " + "x" * 1000 + "</body></html>"
        client = make_client(lambda _: httpx.Response(400, text=html))
        with pytest.raises(RequestRejected) as raised:
            client.request("GET", "/x", idempotent=False)
        assert "Bad Request: <html> <body>Bad gateway xxx" in raised.value.message
        assert len(raised.value.message) < 300

    def test_the_error_parser_is_pluggable(self, make_client: Callable[..., ApiClient]) -> None:
        """Another vendor's error shape fits by passing its parser."""

        def scim_detail(response: httpx.Response) -> str | None:
            detail = response.json().get("detail")
            return str(detail) if detail else None

        client = make_client(
            lambda _: httpx.Response(400, json={"detail": "uniqueness"}), error_parser=scim_detail
        )
        with pytest.raises(RequestRejected, match="GET /Users: uniqueness"):
            client.request("GET", "/Users", idempotent=False)


def _request_error_leaves() -> list[type[httpx.RequestError]]:
    leaves: list[type[httpx.RequestError]] = []
    pending: list[type[httpx.RequestError]] = [httpx.RequestError]
    while pending:
        cls = pending.pop()
        subclasses = cls.__subclasses__()
        if subclasses:
            pending.extend(subclasses)
        else:
            leaves.append(cls)
    return sorted(leaves, key=lambda c: c.__name__)


TRANSIENT_TRANSPORT = {
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.PoolTimeout,
    httpx.ConnectError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.CloseError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
}
PERMANENT_TRANSPORT = {
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.DecodingError,
    httpx.TooManyRedirects,
}


class TestTransportClassification:
    def test_the_table_covers_every_httpx_request_error(self) -> None:
        """A new httpx exception class fails this test until it is classified."""
        assert set(_request_error_leaves()) == TRANSIENT_TRANSPORT | PERMANENT_TRANSPORT
        assert not TRANSIENT_TRANSPORT & PERMANENT_TRANSPORT

    @pytest.mark.parametrize("exc_class", _request_error_leaves(), ids=lambda c: c.__name__)
    def test_transport_errors_map_and_report_status_zero(
        self,
        exc_class: type[httpx.RequestError],
        make_client: Callable[..., ApiClient],
        recorder: Recorder,
    ) -> None:
        """Timeouts, resets and connection failures are transient; misconfiguration is not.
        Either way the metric hears status 0 and the error has no status."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise exc_class("connection went away", request=request)

        client = make_client(fail)
        with pytest.raises(TargetError) as raised:
            client.request("GET", "/organization/users", idempotent=False)
        error = raised.value
        wanted = TransientError if exc_class in TRANSIENT_TRANSPORT else TargetError
        assert type(error) is wanted
        assert error.status is None
        assert isinstance(error.__cause__, exc_class)
        assert error.message == (
            f"GET /organization/users: {exc_class.__name__}: connection went away"
        )
        assert recorder.statuses == [("openai-test", 0)]

    def test_transient_transport_errors_are_retried_when_idempotent(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        calls = iter([httpx.ReadTimeout, httpx.RemoteProtocolError, None])

        def flaky(request: httpx.Request) -> httpx.Response:
            exc = next(calls)
            if exc is not None:
                raise exc("reset", request=request)
            return httpx.Response(200, json={"ok": True})

        client = make_client(flaky)
        assert client.request("DELETE", "/x", idempotent=True).json() == {"ok": True}
        assert [s for _, s in recorder.statuses] == [0, 0, 200]

    def test_error_for_transport_without_message_names_the_class(self) -> None:
        error = error_for_transport(httpx.ConnectError(""), context="GET /x")
        assert error.message == "GET /x: ConnectError: ConnectError"


class TestRetryAfter:
    NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("headers", "seconds"),
        [
            ({"retry-after": "3"}, 3.0),
            ({"retry-after": " 1.5 "}, 1.5),
            ({"retry-after": "0"}, 0.0),
            ({"retry-after": "-4"}, None),
            ({"retry-after": "inf"}, None),
            ({"retry-after": "nan"}, None),
            ({"retry-after": "soon"}, None),
            ({"retry-after": ""}, None),
            ({}, None),
            ({"retry-after-ms": "250"}, 0.25),
            ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
            ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
            ({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, 30.0),
            ({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, 0.0),
            ({"retry-after": "Thu, 01 Jan 2026 12:01:00 -0000"}, 60.0),
            ({"retry-after": "Thu, 32 Foo 2026 99:00:00 GMT"}, None),
        ],
    )
    def test_both_forms_parse(self, headers: dict[str, str], seconds: float | None) -> None:
        """Delay-seconds and HTTP dates both work; junk, negatives and infinities are absent."""
        assert parse_retry_after(httpx.Headers(headers), now=self.NOW) == seconds

    def test_http_date_is_measured_from_now_by_default(self) -> None:
        later = datetime.now(UTC) + timedelta(seconds=120)
        parsed = parse_retry_after(httpx.Headers({"retry-after": format_datetime(later, True)}))
        assert parsed is not None
        assert 110 <= parsed <= 121

    def test_retry_after_reaches_the_error_and_the_sleep(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """A 429 with Retry-After is waited out exactly, then the call goes through."""
        answers = iter([openai_error(429, "slow down", **{"retry-after": "7"}), None])

        def limited(_: httpx.Request) -> httpx.Response:
            answer = next(answers)
            return answer if answer is not None else httpx.Response(200, json={})

        client = make_client(limited)
        client.request("GET", "/organization/users", idempotent=True)
        assert recorder.sleeps == [7.0]

    def test_transient_error_carries_retry_after(
        self, make_client: Callable[..., ApiClient]
    ) -> None:
        client = make_client(lambda _: openai_error(503, "busy", **{"retry-after": "2"}))
        with pytest.raises(TransientError) as raised:
            client.request("GET", "/x", idempotent=False)
        assert raised.value.retry_after == 2.0


class TestRetries:
    @pytest.mark.parametrize(("attempts", "status"), [(1, 500), (3, 503), (5, 429), (2, 408)])
    def test_idempotent_calls_are_retried_up_to_max_attempts(
        self,
        attempts: int,
        status: int,
        make_client: Callable[..., ApiClient],
        recorder: Recorder,
    ) -> None:
        client = make_client(
            lambda _: openai_error(status),
            retry=RetrySettings(max_attempts=attempts, base=0.0, cap=0.0),
        )
        with capture_logs() as logs, pytest.raises(TransientError):
            client.request("DELETE", "/organization/users/u1", idempotent=True)
        assert len(recorder.requests) == attempts
        assert recorder.statuses == [("openai-test", status)] * attempts
        retries = [e for e in logs if e["event"] == "http.retry"]
        assert len(retries) == attempts - 1
        assert all(e["log_level"] == "warning" for e in retries)
        assert [e["attempt"] for e in retries] == list(range(1, attempts))

    def test_the_first_attempt_counts_in_the_budget(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """The first attempt runs before the retry loop starts (it nearly always succeeds),
        yet its time is spent budget: one that took longer than `max_delay` is not retried."""

        def slow_then_busy(_: httpx.Request) -> httpx.Response:
            time.sleep(0.3)
            return openai_error(503)

        client = make_client(
            slow_then_busy, retry=RetrySettings(max_attempts=4, max_delay=0.2, base=0.0, cap=0.0)
        )
        with pytest.raises(TransientError):
            client.request("GET", "/organization/users", idempotent=True)
        assert len(recorder.requests) == 1
        assert recorder.sleeps == []

    def test_a_retried_call_returns_the_attempt_that_succeeded(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """Failures first, then success: the parsed success comes back, each failure
        waited for and logged once."""
        answers = iter([openai_error(500), openai_error(503, **{"retry-after": "1.5"})])

        def recovering(_: httpx.Request) -> httpx.Response:
            return next(answers, None) or httpx.Response(200, json={"n": len(recorder.requests)})

        client = make_client(recovering)
        with capture_logs() as logs:
            response = client.request("GET", "/organization/users", idempotent=True)
        assert response.json() == {"n": 3}
        assert recorder.sleeps == [0.0, 1.5]
        assert [e["attempt"] for e in logs if e["event"] == "http.retry"] == [1, 2]

    def test_non_idempotent_calls_are_never_retried(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """A create may have happened despite the error: the applier decides, not the client."""
        client = make_client(lambda _: openai_error(503))
        with pytest.raises(TransientError):
            client.request("POST", "/organization/invites", json={}, idempotent=False)
        assert len(recorder.requests) == 1
        assert recorder.sleeps == []

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
    def test_permanent_errors_are_not_retried(
        self, status: int, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        client = make_client(lambda _: openai_error(status))
        with pytest.raises(expected_class(status)):
            client.request("DELETE", "/x", idempotent=True)
        assert len(recorder.requests) == 1

    def test_a_refusal_of_the_form_is_unsupported_and_not_retried(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """The adapter's `form_refusal` turns a 4xx naming the request's form (SCIM's
        `invalidPath`) into `UnsupportedRequest`; other 4xx stay `RequestRejected`."""

        def answer(request: httpx.Request) -> httpx.Response:
            code = "invalidPath" if request.url.path.endswith("/form") else "invalidValue"
            return httpx.Response(400, json={"scimType": code, "detail": "no"})

        client = make_client(
            answer, form_refusal=lambda r: r.json().get("scimType") == "invalidPath"
        )
        with pytest.raises(UnsupportedRequest):
            client.request("PATCH", "/form", json={}, idempotent=True)
        with pytest.raises(RequestRejected) as rejected:
            client.request("PATCH", "/value", json={}, idempotent=True)
        assert type(rejected.value) is RequestRejected
        assert len(recorder.requests) == 2

    def test_success_after_failures_returns_the_response(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        answers = iter([openai_error(502), openai_error(500), httpx.Response(200, json={"n": 1})])
        client = make_client(lambda _: next(answers))
        assert client.request("GET", "/x", idempotent=True).json() == {"n": 1}
        assert [s for _, s in recorder.statuses] == [502, 500, 200]


class Page(BaseModel):
    data: list[int]


class TestRequestModel:
    def test_parses_the_body(self, make_client: Callable[..., ApiClient]) -> None:
        client = make_client(lambda _: httpx.Response(200, json={"data": [1, 2], "extra": 1}))
        assert client.request_model("GET", "/x", Page, idempotent=True).data == [1, 2]

    def test_a_body_that_is_not_json_is_transient_and_retried(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """A truncated or foreign body is a glitch of the transfer, worth another try."""
        answers = iter(
            [httpx.Response(200, text='{"data": [1,'), httpx.Response(200, json={"data": []})]
        )
        client = make_client(lambda _: next(answers))
        assert client.request_model("GET", "/x", Page, idempotent=True).data == []
        assert len(recorder.requests) == 2

    def test_json_of_the_wrong_shape_is_a_target_error(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """The API changed: no retry, and the message names the field, not the values."""
        client = make_client(
            lambda _: httpx.Response(
                200, json={"data": ["ada@example.com"]}, headers={"x-request-id": "r9"}
            )
        )
        with pytest.raises(TargetError) as raised:
            client.request_model("GET", "/x", Page, idempotent=True)
        assert type(raised.value) is TargetError
        assert raised.value.request_id == "r9"
        assert "data.0" in raised.value.message
        assert "ada@example.com" not in raised.value.message
        assert len(recorder.requests) == 1


class TestRequestShape:
    def test_headers_params_and_body(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """Bearer auth, user agent, the base path kept, None params dropped, lists repeated."""
        client = make_client(lambda _: httpx.Response(200, json={}))
        client.request(
            "POST",
            "/organization/users",
            params={"limit": 100, "after": None, "emails": ["a@x", "b@x"]},
            json={"role": "reader"},
            idempotent=True,
        )
        (request,) = recorder.requests
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["user-agent"] == "orgsync-test/1.0"
        assert request.url.path == "/v1/organization/users"
        assert request.url.params.multi_items() == [
            ("limit", "100"),
            ("emails", "a@x"),
            ("emails", "b@x"),
        ]
        assert request.read() == b'{"role":"reader"}'

    @pytest.mark.parametrize(
        "path", ["https://evil.test/steal", "//evil.test/steal", "organization/users"]
    )
    def test_paths_must_be_relative(
        self, path: str, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """An absolute URL would send the bearer token to another host."""
        client = make_client(lambda _: httpx.Response(200))
        with pytest.raises(ValueError, match="relative"):
            client.request("GET", path, idempotent=True)
        assert recorder.requests == []

    def test_debug_line_per_request(self, make_client: Callable[..., ApiClient]) -> None:
        client = make_client(lambda _: httpx.Response(204, headers={"x-request-id": "req_9"}))
        with capture_logs() as logs:
            client.request("DELETE", "/organization/invites/i1", idempotent=True)
        (line,) = logs
        assert line["event"] == "http.request"
        assert line["log_level"] == "debug"
        assert line["method"] == "DELETE"
        assert line["path"] == "/organization/invites/i1"
        assert line["status"] == 204
        assert line["request_id"] == "req_9"
        assert line["system"] == "openai-test"
        assert isinstance(line["duration_ms"], float)

    def test_a_ca_file_is_accepted_as_verify(self) -> None:
        """`ca_file`: a path builds a verifying SSL context (no deprecated str verify)."""
        client = ApiClient(
            BASE_URL,
            bearer_token=TOKEN,
            system="s",
            verify=certifi.where(),
            retry=RetrySettings(),
            user_agent="ua",
        )
        client.close()


class TestSecrecy:
    def test_the_token_never_appears_in_errors_logs_or_repr(
        self, make_client: Callable[..., ApiClient]
    ) -> None:
        """Even when a server (or a transport error) echoes the token back."""
        answers = iter(
            [
                openai_error(500, f"invalid key {TOKEN}"),
                openai_error(401, f"Incorrect API key provided: {TOKEN}"),
            ]
        )
        client = make_client(lambda _: next(answers))
        with capture_logs() as logs, pytest.raises(AuthError) as raised:
            client.request("GET", "/organization/users", idempotent=True)
        error = raised.value
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
        assert TOKEN not in error.message
        assert all(TOKEN not in str(arg) for arg in error.args)
        assert "[redacted]" in error.message
        assert logs
        assert TOKEN not in repr(logs)
        assert TOKEN not in repr(client)
        assert TOKEN not in repr(vars(client))

    def test_the_token_is_scrubbed_from_transport_errors(
        self, make_client: Callable[..., ApiClient]
    ) -> None:
        def leak(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError(f"proxy said {TOKEN}", request=request)

        client = make_client(leak)
        with capture_logs() as logs, pytest.raises(TransientError) as raised:
            client.request("GET", "/x", idempotent=True)
        assert TOKEN not in str(raised.value)
        assert TOKEN not in repr(logs)


class TestRateLimit:
    def test_bucket_spaces_requests_after_the_burst(self) -> None:
        """At 2/s with a burst of 1: the first call is free, the next owe 0.5 s each."""
        sleeps: list[float] = []
        bucket = TokenBucket(2.0, burst=1, clock=lambda: 100.0, sleep=sleeps.append)
        assert [bucket.acquire() for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]
        assert sleeps == [0.5, 1.0, 1.5]

    def test_default_burst_is_one_second_of_requests(self) -> None:
        bucket = TokenBucket(3.0, clock=lambda: 0.0, sleep=lambda _: None)
        assert [bucket.acquire() for _ in range(4)] == pytest.approx([0, 0, 0, 1 / 3])

    def test_bucket_refills_with_time(self) -> None:
        now = [0.0]
        bucket = TokenBucket(10.0, burst=2, clock=lambda: now[0], sleep=lambda _: None)
        assert [bucket.acquire(), bucket.acquire()] == [0.0, 0.0]
        assert bucket.acquire() == pytest.approx(0.1)
        now[0] = 10.0  # long idle: refills to the burst, no further
        assert [bucket.acquire(), bucket.acquire()] == [0.0, 0.0]
        assert bucket.acquire() == pytest.approx(0.1)

    def test_bucket_is_shared_fairly_by_threads(self) -> None:
        """Twenty threads at once each get a distinct slot: no two go together."""
        lock = threading.Lock()
        waits: list[float] = []
        bucket = TokenBucket(4.0, burst=1, clock=lambda: 0.0, sleep=lambda _: None)

        def take() -> None:
            wait = bucket.acquire()
            with lock:
                waits.append(wait)

        threads = [threading.Thread(target=take) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(waits) == pytest.approx([i * 0.25 for i in range(20)])

    @pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
    def test_bucket_refuses_nonsense_rates(self, rate: float) -> None:
        with pytest.raises(ValueError, match="rate"):
            TokenBucket(rate)

    def test_client_waits_on_the_bucket(
        self, make_client: Callable[..., ApiClient], recorder: Recorder
    ) -> None:
        """Every attempt takes a token: a burst of 5 at 5/s, then 0.2 s apart."""
        # The bucket's clock stands still (as the fake sleep returns at once), so what the
        # client is told to wait does not depend on how fast a loaded machine runs this.
        client = make_client(
            lambda _: httpx.Response(200, json={}), requests_per_second=5.0, clock=lambda: 50.0
        )
        for _ in range(10):
            client.request("GET", "/x", idempotent=True)
        # Each caller after the burst owes 0.2 s more than the one before.
        assert recorder.sleeps == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
        assert len(recorder.requests) == 10


@pytest.mark.parametrize(
    ("base_url", "path", "expected"),
    [
        # A bare origin (a test server, a proxy at the root): httpx's text of it has no
        # slash, and the join once sent "http://127.0.0.1:45407organizations".
        (
            "http://127.0.0.1:45407",
            "/organizations/o1/users",
            "http://127.0.0.1:45407/organizations/o1/users",
        ),
        ("http://127.0.0.1:45407/", "/organizations", "http://127.0.0.1:45407/organizations"),
        (
            "https://api.example.test/v1",
            "/organization/users",
            "https://api.example.test/v1/organization/users",
        ),
        (
            "https://api.example.test/v1/",
            "/organization/users",
            "https://api.example.test/v1/organization/users",
        ),
    ],
)
def test_paths_join_the_base_url_as_httpx_would(base_url: str, path: str, expected: str) -> None:
    sent: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url)
        return httpx.Response(200, json={})

    client = ApiClient(
        base_url,
        bearer_token=TOKEN,
        system="join-test",
        retry=RetrySettings(max_attempts=1, base=0.0, cap=0.0),
        transport=httpx.MockTransport(answer),
    )
    try:
        client.request("GET", path, params={"limit": 2}, idempotent=True)
    finally:
        client.close()
    assert [str(url) for url in sent] == [f"{expected}?limit=2"]


def test_the_default_tls_contexts_are_built_once_and_a_ca_file_is_read_each_time(
    tmp_path: Path,
) -> None:
    """Building a context reads the whole CA bundle (20-70 ms) and a daemon builds clients
    every pass: the defaults are shared; a private CA file is read anew, so a rotated CA
    is picked up without a restart."""
    assert ssl_verify(True) is ssl_verify(True)
    assert ssl_verify(False) is ssl_verify(False)
    assert ssl_verify(True) is not ssl_verify(False)
    assert ssl_verify(True).verify_mode == ssl.CERT_REQUIRED and ssl_verify(True).check_hostname
    assert ssl_verify(False).verify_mode == ssl.CERT_NONE
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())
    assert ssl_verify(str(bundle)) is not ssl_verify(str(bundle))


@pytest.mark.parametrize("change", ["removed", "garbled"])
def test_a_ca_file_gone_since_the_configuration_was_loaded_is_named(
    tmp_path: Path, change: str
) -> None:
    """The configuration checks `ca_file` when it is loaded; a daemon builds its clients
    again every pass, and a rotation half done (the file removed, or replaced by a file
    without a certificate) ended each pass in a raw FileNotFoundError or SSLError
    traceback. It is a configuration error naming the file and what to do."""
    bundle = tmp_path / "ca.pem"
    if change == "garbled":
        bundle.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"ca_file .*ca\.pem: cannot be used any more") as error:
        ssl_verify(str(bundle))
    assert "put the CA file back" in str(error.value)
