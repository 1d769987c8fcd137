"""`orgsync.sources._http` on `orgsync.http`: what a source makes of errors, retries,
credentials and page checks, in-process."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from orgsync.core.errors import SourceError
from orgsync.http.auth import (
    AccessToken,
    ClientCredentials,
    RenewingBearerAuth,
    TokenCache,
    TokenEndpoint,
)
from orgsync.retrying import RetrySettings
from orgsync.sources._http import SourceHttp, page_guard, parallel_map
from orgsync.sources.google import google_is_transient
from tests.sources.idp import Sleeps

RETRY = RetrySettings(max_attempts=3, max_delay=10.0, base=0.01, cap=0.02)


def session(
    handler: httpx.MockTransport | None = None,
    *,
    base_url: str = "https://idp.example/api/v1",
    **kwargs: object,
) -> SourceHttp:
    return SourceHttp(
        base_url,
        system="test",
        retry=RETRY,
        transport=handler,
        sleep=Sleeps(),
        **kwargs,  # type: ignore[arg-type]
    )


class TestPageGuard:
    def test_a_cursor_seen_twice_is_inconsistent(self) -> None:
        guard = page_guard("okta", "GET /users")
        guard.page(5, "a")
        guard.page(5, "b")
        with pytest.raises(SourceError, match="page 3 points back"):
            guard.page(5, "a")

    def test_endless_empty_pages_are_inconsistent(self) -> None:
        guard = page_guard("google", "GET /users")
        for n in range(20):
            guard.page(0, f"cursor-{n}")
        with pytest.raises(SourceError, match="empty pages in a row"):
            guard.page(0, "cursor-20")

    def test_a_normal_sequence_passes(self) -> None:
        guard = page_guard("entra", "GET /users")
        for n in range(50):
            guard.page(0 if n % 5 else 3, f"c{n}")
        guard.page(2, None)
        assert guard.pages == 51


class TestParallelMap:
    def test_results_come_back_in_input_order(self) -> None:
        def slow_square(n: int) -> int:
            time.sleep(0.001 * (10 - n))
            return n * n

        stop = threading.Event()
        pairs = list(parallel_map(slow_square, range(10), workers=4, stop=stop))
        assert pairs == [(n, n * n) for n in range(10)]
        assert not stop.is_set()

    def test_the_first_failure_stops_everyone_and_is_raised(self) -> None:
        stop = threading.Event()
        started: list[int] = []

        def work(n: int) -> int:
            started.append(n)
            if n == 2:
                raise SourceError("page 3 of group 2 failed")
            stop.wait(2)  # a sibling in the middle of its pages, told to stop
            return n

        with pytest.raises(SourceError, match="group 2"):
            list(parallel_map(work, range(100), workers=3, stop=stop))
        assert stop.is_set()
        assert len(started) < 100, "unstarted work was cancelled"


class TestSourceHttp:
    def test_transient_answers_are_retried_then_become_source_errors(self) -> None:
        calls: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            return httpx.Response(503, text="<html>busy</html>")

        with (
            session(httpx.MockTransport(handler)) as http,
            pytest.raises(SourceError, match=r"HTTP 503.*busy.*gave up"),
        ):
            http.get_json("/users")
        assert len(calls) == RETRY.max_attempts

    def test_a_2xx_body_that_is_not_json_is_retried(self) -> None:
        answers = iter(
            [httpx.Response(200, text="<html>proxy</html>"), httpx.Response(200, json=[1])]
        )
        with session(httpx.MockTransport(lambda request: next(answers))) as http:
            assert http.get_json("/users") == [1]

    def test_timeouts_are_retried(self) -> None:
        attempts: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            attempts.append(1)
            if len(attempts) < 3:
                raise httpx.ReadTimeout("slow", request=request)
            return httpx.Response(200, json={})

        with session(httpx.MockTransport(handler)) as http:
            assert http.get_json("/users") == {}
        assert len(attempts) == 3

    def test_a_redirect_is_an_error_that_says_so(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(301, headers={"Location": "https://elsewhere/"})

        with (
            session(httpx.MockTransport(handler)) as http,
            pytest.raises(SourceError, match="redirect"),
        ):
            http.get_json("/users")

    def test_secrets_never_reach_a_message(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(400, text=f"bad header {request.headers['authorization']}")

        with (
            session(
                httpx.MockTransport(handler),
                headers={"Authorization": "SSWS s3cr3t-t0ken"},
                secrets=("s3cr3t-t0ken",),
            ) as http,
            pytest.raises(SourceError) as caught,
        ):
            http.get_json("/users")
        assert "s3cr3t-t0ken" not in str(caught.value)
        assert "[redacted]" in str(caught.value)

    @pytest.mark.parametrize(
        "link",
        [
            "https://evil.example/api/v1/users?after=x",
            "http://idp.example/api/v1/users?after=x",
            "https://idp.example:8443/api/v1/users",
            "https://idp.example/other/users",
        ],
    )
    def test_next_links_must_stay_on_the_api(self, link: str) -> None:
        with session() as http, pytest.raises(SourceError, match="leaves the API"):
            http.url(link)

    def test_paths_resolve_under_the_api_root(self) -> None:
        with session() as http:
            assert str(http.url("/users")) == "https://idp.example/api/v1/users"
            assert str(http.url("https://idp.example/api/v1/users?after=x")).endswith("after=x")

    def test_a_stopped_session_sends_nothing(self) -> None:
        sent: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(1)
            return httpx.Response(200, json=[])

        with session(httpx.MockTransport(handler)) as http:
            http.stop.set()
            with pytest.raises(SourceError, match="abandoned"):
                http.get_json("/users")
        assert sent == []


class TestTokens:
    def test_a_refused_token_is_replaced_once(self) -> None:
        issued: list[str] = []

        def fetch() -> AccessToken:
            issued.append(f"token-{len(issued)}")
            return AccessToken(issued[-1], 3600.0)

        def handler(request: httpx.Request) -> httpx.Response:
            ok = request.headers["authorization"] == "Bearer token-1"
            return httpx.Response(200 if ok else 401, json={})

        token = RenewingBearerAuth(fetch)
        with session(httpx.MockTransport(handler), auth=token) as http:
            assert http.get_json("/users") == {}
            assert http.get_json("/groups") == {}
        assert issued == ["token-0", "token-1"]

    def test_a_token_is_replaced_shortly_before_it_expires(self) -> None:
        now = [1000.0]
        issued: list[str] = []

        def fetch() -> AccessToken:
            issued.append(f"t{len(issued)}")
            return AccessToken(issued[-1], 3600.0)

        tokens = TokenCache(fetch, clock=lambda: now[0])
        assert tokens.get() == "t0"
        now[0] += 3500
        assert tokens.get() == "t0"
        now[0] += 60  # within the last minute of its life
        assert tokens.get() == "t1"

    def test_the_token_endpoint_gets_no_api_credential(self) -> None:
        seen: list[str | None] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers.get("authorization"))
            if request.url.path == "/token":
                return httpx.Response(200, json={"access_token": "x", "expires_in": 60})
            return httpx.Response(200, json={})

        transport = httpx.MockTransport(handler)
        endpoint = TokenEndpoint("https://login.example/token", system="t", transport=transport)
        auth = ClientCredentials(endpoint, client_id="u", client_secret="p")
        with session(transport, auth=auth) as http:
            http.get_json("/users")
        assert seen == ["Basic dTpw", "Bearer x"]


class TestStatuses:
    def test_501_is_never_retried(self) -> None:
        """Not Implemented is permanent for the request as sent: asking again is refused
        again, so the read fails at once instead of spending the retry budget."""
        calls: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            return httpx.Response(501, text="filter not implemented")

        with (
            session(httpx.MockTransport(handler)) as http,
            pytest.raises(SourceError, match=r"HTTP 501: .*not implemented") as caught,
        ):
            http.get_json("/users")
        assert calls == [1]
        assert "gave up after retrying" not in str(caught.value)

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
    def test_other_server_errors_are_retried(self, status: int) -> None:
        calls: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            return httpx.Response(status)

        with session(httpx.MockTransport(handler)) as http, pytest.raises(SourceError):
            http.get_json("/users")
        assert len(calls) == RETRY.max_attempts


@pytest.mark.parametrize(
    ("status", "reason", "transient"),
    [
        (403, "userRateLimitExceeded", True),
        (403, "rateLimitExceeded", True),
        (403, "insufficientPermissions", False),
        (403, "forbidden", False),
        (429, "rateLimitExceeded", True),
        (503, "backendError", True),
        (400, "invalid", False),
    ],
)
def test_google_rate_limits_hide_behind_403(status: int, reason: str, transient: bool) -> None:
    body = {"error": {"code": status, "message": "m", "errors": [{"reason": reason}]}}
    assert google_is_transient(httpx.Response(status, json=body)) is transient
