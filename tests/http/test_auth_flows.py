"""`orgsync.http.auth` against a real OAuth server on loopback: the token is fetched once
and shared, renewed once after a 401 and never in a loop, and a refused client stops at
once without its secret in any message or log line."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from orgsync.core.errors import AuthError, TransientError
from orgsync.http.auth import ClientCredentials, JwtBearer, TokenEndpoint
from orgsync.http.client import HttpClient
from orgsync.retrying import RetrySettings
from orgsync.testing._server import BackgroundServer

CLIENT_ID = "svc-orgsync"
SECRET = "client-secret-0123456789abcdef"
RETRY = RetrySettings(max_attempts=3, base=0.0, cap=0.0)


class OAuthServer:
    """A token endpoint (client credentials with Basic, or a JWT bearer grant) and one API
    resource that accepts the tokens it issued and has not revoked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.grants = 0
        self.api_calls = 0
        self.valid: set[str] = set()
        self.refuse_all = False
        self.token_delay = 0.0
        self.assertions: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/api/things", self._things, methods=["GET", "POST"]),
            ]
        )
        self._server = BackgroundServer(self.app, name="oauth")
        self.url = ""

    def __enter__(self) -> OAuthServer:
        self.url = f"http://127.0.0.1:{self._server.start()}"
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop()

    def revoke(self) -> None:
        with self.lock:
            self.valid.clear()

    async def _token(self, request: Request) -> Response:
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self.assertions.append(form.get("assertion", ""))
        else:
            expected = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
            if request.headers.get("authorization") != f"Basic {expected}":
                return JSONResponse(
                    {
                        "error": "invalid_client",
                        "error_description": f"bad credentials {request.headers}",
                    },
                    status_code=401,
                )
        with self.lock:
            self.grants += 1
            token = f"tok-{self.grants}"
            self.valid.add(token)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def _things(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.api_calls += 1
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            ok = token in self.valid and not self.refuse_all
        if not ok:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"ok": True, "echo": body.decode()})


@pytest.fixture
def server() -> Iterator[OAuthServer]:
    with OAuthServer() as running:
        yield running


def client_credentials(server: OAuthServer, **kwargs: object) -> ClientCredentials:
    endpoint = TokenEndpoint(
        f"{server.url}/token",
        system="test",
        hint=" (check client_id and the client secret)",
        **kwargs,  # type: ignore[arg-type]
    )
    return ClientCredentials(endpoint, client_id=CLIENT_ID, client_secret=SECRET)


def api(server: OAuthServer, auth: object, **kwargs: object) -> HttpClient:
    return HttpClient(
        f"{server.url}/api",
        system="test",
        retry=RETRY,
        auth=auth,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def get(client: HttpClient) -> object:
    return client.send("GET", "/things", idempotent=True, parse=lambda r: r.json())


def test_the_token_is_cached_across_requests(server: OAuthServer) -> None:
    auth = client_credentials(server)
    with api(server, auth) as client:
        for _ in range(5):
            assert get(client) == {"ok": True, "echo": ""}
    assert server.grants == 1
    assert auth.fetches == 1
    assert server.api_calls == 5


def test_concurrent_requests_fetch_one_token(server: OAuthServer) -> None:
    server.token_delay = 0.3  # every worker finds the cache empty while the fetch runs
    auth = client_credentials(server)
    with api(server, auth) as client, ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: get(client), range(8)))
    assert results == [{"ok": True, "echo": ""}] * 8
    assert server.grants == 1


def test_a_revoked_token_is_renewed_once_and_the_call_succeeds(server: OAuthServer) -> None:
    auth = client_credentials(server)
    statuses: list[int] = []
    with api(server, auth, on_response=lambda _s, status: statuses.append(status)) as client:
        get(client)
        server.revoke()
        # A body is sent again as is with the fresh token.
        echoed = client.send(
            "POST", "/things", json={"n": 1}, idempotent=False, parse=lambda r: r.json()
        )
    assert echoed == {"ok": True, "echo": '{"n":1}'}
    assert server.grants == 2
    assert statuses == [200, 401, 200], "every response on the wire is counted"


def test_a_token_refused_again_is_renewed_once_then_an_auth_error(server: OAuthServer) -> None:
    server.refuse_all = True
    auth = client_credentials(server)
    with api(server, auth) as client, pytest.raises(AuthError) as caught:
        get(client)
    assert caught.value.status == 401
    assert server.grants == 2, "the first token and exactly one renewal, no loop"
    assert server.api_calls == 2, "an auth error is not retried"


def test_token_requests_are_counted_with_the_api_calls(server: OAuthServer) -> None:
    statuses: list[tuple[str, int]] = []

    def count(system: str, status: int) -> None:
        statuses.append((system, status))

    auth = client_credentials(server, on_response=count)
    with api(server, auth, on_response=count) as client:
        get(client)
    assert statuses == [("test", 200), ("test", 200)]


def test_a_refused_client_is_an_auth_error_without_its_secret(server: OAuthServer) -> None:
    endpoint = TokenEndpoint(f"{server.url}/token", system="test", hint=" (check the secret)")
    auth = ClientCredentials(endpoint, client_id=CLIENT_ID, client_secret="wrong-secret-value")
    with capture_logs() as logs, api(server, auth) as client, pytest.raises(AuthError) as caught:
        get(client)
    message = str(caught.value)
    assert caught.value.status == 401
    assert "invalid_client" in message
    assert message.endswith("(check the secret)")
    assert "wrong-secret-value" not in message
    # Basic auth carries the secret base64-encoded; the server quoted our headers back.
    assert base64.b64encode(f"{CLIENT_ID}:wrong-secret-value".encode()).decode() not in message
    assert "wrong-secret-value" not in repr(logs)
    assert "wrong-secret-value" not in repr(auth)
    assert server.api_calls == 0


def test_a_token_endpoint_that_is_down_is_transient_and_retried_with_the_call() -> None:
    # Nothing listens on this port: a connection refused on every attempt.
    attempts: list[int] = []
    endpoint = TokenEndpoint(
        "http://127.0.0.1:9/token",
        system="test",
        on_response=lambda _s, status: attempts.append(status),
    )
    auth = ClientCredentials(endpoint, client_id=CLIENT_ID, client_secret=SECRET)
    client = HttpClient("http://127.0.0.1:9/api", system="test", retry=RETRY, auth=auth)
    with client, pytest.raises(TransientError):
        get(client)
    assert attempts == [0] * RETRY.max_attempts, "the API call's retries cover its token"


def test_a_jwt_bearer_grant_signs_a_fresh_assertion_per_token(server: OAuthServer) -> None:
    made: list[str] = []

    def assertion() -> str:
        made.append(f"signed.jwt.{len(made)}")
        return made[-1]

    auth = JwtBearer(TokenEndpoint(f"{server.url}/token", system="test"), assertion=assertion)
    with api(server, auth) as client:
        get(client)
        server.revoke()
        get(client)
    assert server.assertions == ["signed.jwt.0", "signed.jwt.1"]
    assert server.grants == 2


def test_a_proxy_password_from_the_environment_is_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A proxy's error page, or an error naming the proxy URL, must not print it.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://egress:proxy-pass-5678@proxy.example:3128")
    client = HttpClient("https://api.example", system="test", retry=RETRY)
    try:
        assert "proxy-pass-5678" in list(client.secrets)
        assert client.scrubbed("refused by http://egress:proxy-pass-5678@proxy") == (
            "refused by http://egress:[redacted]@proxy"
        )
    finally:
        client.close()
