"""A local fake of the Keycard API: service-account tokens and one organization.

This module owns the HTTP face: the OAuth 2.0 client-credentials token endpoint
(`POST /service-account-token`, client authenticated with HTTP Basic as the TS and Python
SDKs do, or with form fields as the Terraform provider does), bearer-token checking with
expiry (so a client's refresh-on-401 path can be exercised: `token_lifetime` is seconds and
may be tiny), the organization routes the SDKs' `api.md` lists (users, invitations,
roles), the spec's `Error` shape for every failure, and the uvicorn lifecycle. The
organization itself is `orgsync.testing.keycard.state`; transport faults and request
recording come from the shared `orgsync.testing.faults.FaultInjector`.

Like the other emulators it imports nothing from orgsync outside `orgsync.testing`, so it
stays a fake of the vendor rather than a mirror of our own client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from orgsync.testing._server import LoopbackEmulator
from orgsync.testing.faults import FaultInjector, Faults
from orgsync.testing.keycard.state import DEFAULT_LIMIT, MAX_LIMIT, KeycardError, KeycardState

__all__ = ["TOKEN_PATH", "Faults", "KeycardEmulator", "KeycardError", "KeycardState"]

TOKEN_PATH = "/service-account-token"  # noqa: S105 - a path, not a secret


def _error_response(error: KeycardError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _fault_body(kind: str) -> bytes:
    if kind in ("429", "rate_limit"):
        error = KeycardError(429, "rate_limited", "Too many requests.")
    elif kind == "timeout":
        error = KeycardError(504, "gateway_timeout", "Upstream request timed out.")
    else:
        error = KeycardError(500, "internal_error", "Internal server error.")
    return json.dumps(error.body()).encode()


class _Tokens:
    """Issued access tokens and their expiry (monotonic seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self.grants = 0
        """Tokens issued so far (tests assert the client caches them)."""

    def issue(self, lifetime: float) -> str:
        # Shaped like a JWT (three base64url parts) since the spec declares bearerFormat
        # JWT; clients must treat it as opaque anyway.
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
        token = f"{header}.{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(16)}"
        with self._lock:
            self._expiry[token] = time.monotonic() + lifetime
            self.grants += 1
        return token

    def check(self, token: str) -> str | None:
        """None when valid, else why not."""
        with self._lock:
            expiry = self._expiry.get(token)
        if expiry is None:
            return "Invalid access token."
        if expiry <= time.monotonic():
            return "Access token expired."
        return None

    def expire_all(self) -> None:
        with self._lock:
            self._expiry = dict.fromkeys(self._expiry, 0.0)


class _BearerAuth:
    """Every route but the token endpoint needs a live bearer token (checked before
    routing: an unknown path with a bad token is a 401, not a 404)."""

    def __init__(self, app: ASGIApp, tokens: _Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == TOKEN_PATH:
            await self.app(scope, receive, send)
            return
        header = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), ""
        )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            problem: str | None = "Missing bearer token."
        else:
            problem = self.tokens.check(token.strip())
        if problem is None:
            await self.app(scope, receive, send)
            return
        response = _error_response(
            KeycardError(401, "unauthorized", problem),
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
        await response(scope, receive, send)


class KeycardEmulator(LoopbackEmulator):
    """The emulated Keycard API. ``with KeycardEmulator() as kc: url = kc.start()`` …

    ``state`` is the organization (seed and assert on it directly), ``faults`` can be
    reassigned at any time, ``requests`` lists every request seen, ``token_grants`` counts
    issued tokens, ``expire_tokens()`` makes every issued token expire now.
    """

    def __init__(
        self,
        *,
        client_id: str = "sa_orgsync",
        client_secret: str = "keycard-emulator-secret",  # noqa: S107 - a local fake's secret
        token_lifetime: float = 3600.0,
        faults: Faults | None = None,
        allow_duplicate_invitations: bool = False,
        state: KeycardState | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        #: Seconds an issued token lives (`expires_in` rounds it up to whole seconds).
        self.token_lifetime = token_lifetime
        #: Seconds the token endpoint alone takes to answer (a slow identity service while
        #: the API answers at once), on top of any `faults` latency.
        self.token_delay = 0.0
        #: On: a second pending invitation for one email is created, so fault tests see
        #: whether a client's blind retry would duplicate it.
        self.allow_duplicate_invitations = allow_duplicate_invitations
        self.state = state or KeycardState()
        self._tokens = _Tokens()
        injector = FaultInjector(
            _BearerAuth(self._build_app(), self._tokens), error_body=_fault_body, faults=faults
        )
        super().__init__(injector, name="keycard-emulator")

    # -- public surface --------------------------------------------------------------

    @property
    def token_grants(self) -> int:
        return self._tokens.grants

    def expire_tokens(self) -> None:
        self._tokens.expire_all()

    @property
    def base_url(self) -> str:
        return self.origin

    # -- routes ----------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        org = "/organizations/{organization_id}"
        routes = [
            Route(TOKEN_PATH, self._token, methods=["POST"]),
            Route(f"{org}/users", self._list_users, methods=["GET"]),
            Route(f"{org}/users/{{user_id}}", self._get_user, methods=["GET"]),
            Route(f"{org}/users/{{user_id}}", self._update_user, methods=["PATCH"]),
            Route(f"{org}/users/{{user_id}}", self._delete_user, methods=["DELETE"]),
            Route(f"{org}/invitations", self._list_invitations, methods=["GET"]),
            Route(f"{org}/invitations", self._create_invitation, methods=["POST"]),
            Route(
                f"{org}/invitations/{{invitation_id}}", self._delete_invitation, methods=["DELETE"]
            ),
            Route(f"{org}/roles", self._list_roles, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={
                KeycardError: self._on_error,
                HTTPException: self._on_http_exception,
                Exception: self._on_crash,
            },
        )

    @staticmethod
    async def _on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KeycardError)
        return _error_response(exc)

    @staticmethod
    async def _on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        error = KeycardError(
            exc.status_code, code, f"No route for {request.method} {request.url.path}."
        )
        return _error_response(error)

    @staticmethod
    async def _on_crash(request: Request, exc: Exception) -> Response:
        return _error_response(
            KeycardError(500, "internal_error", f"Emulator error: {type(exc).__name__}: {exc}")
        )

    def _organization(self, request: Request) -> KeycardState:
        organization = request.path_params["organization_id"]
        if not self.state.matches(organization):
            raise KeycardError(404, "not_found", f"Organization {organization} not found.")
        return self.state

    async def _token(self, request: Request) -> Response:
        if self.token_delay > 0:
            await asyncio.sleep(self.token_delay)
        form = await _form(request)
        client_id, secret = _basic_credentials(request.headers.get("authorization", ""))
        if client_id is None:  # the Terraform provider's style: credentials in the form
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if form.get("grant_type") != "client_credentials":
            raise KeycardError(
                400, "unsupported_grant_type", "grant_type must be client_credentials."
            )
        valid = (
            client_id is not None
            and secret is not None
            and hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(secret.encode(), self.client_secret.encode())
        )
        if not valid:
            raise KeycardError(401, "invalid_client", "Client authentication failed.")
        token = self._tokens.issue(self.token_lifetime)
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": max(1, int(-(-self.token_lifetime // 1))),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _list_users(self, request: Request) -> Response:
        state = self._organization(request)
        after, before, limit = _listing(request)
        role = request.query_params.get("role")
        return JSONResponse(
            state.api_list_users(after=after, before=before, limit=limit, role=role)
        )

    async def _get_user(self, request: Request) -> Response:
        state = self._organization(request)
        return JSONResponse(state.api_get_user(request.path_params["user_id"]))

    async def _update_user(self, request: Request) -> Response:
        state = self._organization(request)
        body = await _json_body(request)
        return JSONResponse(state.api_update_user(request.path_params["user_id"], body))

    async def _delete_user(self, request: Request) -> Response:
        self._organization(request).api_delete_user(request.path_params["user_id"])
        return Response(status_code=204)

    async def _list_invitations(self, request: Request) -> Response:
        state = self._organization(request)
        after, before, limit = _listing(request)
        return JSONResponse(state.api_list_invitations(after=after, before=before, limit=limit))

    async def _create_invitation(self, request: Request) -> Response:
        state = self._organization(request)
        body = await _json_body(request)
        created = state.api_create_invitation(
            body, created_by=self.client_id, allow_duplicates=self.allow_duplicate_invitations
        )
        return JSONResponse(created, status_code=201)

    async def _delete_invitation(self, request: Request) -> Response:
        self._organization(request).api_delete_invitation(request.path_params["invitation_id"])
        return Response(status_code=204)

    async def _list_roles(self, request: Request) -> Response:
        state = self._organization(request)
        return JSONResponse(state.api_list_roles(scope=request.query_params.get("scope")))


def _listing(request: Request) -> tuple[str | None, str | None, int]:
    raw = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise KeycardError(400, "invalid_request", "'limit' must be an integer.") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise KeycardError(
                400, "invalid_request", f"'limit' must be between 1 and {MAX_LIMIT}."
            )
    return request.query_params.get("after"), request.query_params.get("before"), limit


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise KeycardError(400, "invalid_request", "The body must be a JSON object.")
    return body


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


async def _form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (parsed here: Starlette's own form
    parser needs python-multipart, which nothing else in orgsync uses)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise KeycardError(400, "invalid_request", "The token request must be form-encoded.")
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True).items()}
