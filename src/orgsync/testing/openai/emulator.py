"""A faithful local fake of the OpenAI Admin API (users, invites, roles, groups, keys).

This module owns the HTTP face of the emulator: routes under ``/v1/organization/...``,
bearer authentication, query/body parsing, the spec's error shape for every failure, and
the lifecycle of the uvicorn server that serves it on 127.0.0.1. Group and role-assignment
routes are in `orgsync.testing.openai.group_routes`, request parsing in
`orgsync.testing.openai.requests`. The organization itself and its rules live in
`orgsync.testing.openai.state` (and the modules it names); transport faults and request
recording in `orgsync.testing.faults`. Used by the contract/e2e tests and by
``orgsync demo``; it deliberately imports nothing from orgsync outside ``orgsync.testing``,
so it stays an independent fake of the vendor rather than a mirror of our own client.

Shapes follow ``openai/openai-openapi`` ``openapi.yaml`` @ f85dbe2 (2026-08-21).
Error ``code`` values and role permissions are emulator choices: the spec does not list them.
"""

from __future__ import annotations

import hmac
import json

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orgsync.testing._server import LoopbackEmulator
from orgsync.testing.faults import FaultInjector, Faults, RecordedRequest
from orgsync.testing.openai.group_routes import group_routes
from orgsync.testing.openai.records import ApiError
from orgsync.testing.openai.requests import (
    CURSOR_MAX_LIMIT,
    LEGACY_DEFAULT_LIMIT,
    LEGACY_MAX_LIMIT,
    int_param,
    json_body,
    order_param,
)
from orgsync.testing.openai.state import OrgState

__all__ = ["ApiError", "Faults", "OpenAIEmulator", "OrgState", "RecordedRequest", "redact_key"]


def redact_key(api_key: str) -> str:
    """``redacted_value`` as the API shows it: visible prefix, ``...``, visible suffix.

    The spec's examples read ``sk-admin...def`` (8 characters, then 3); short keys keep
    at most a third of their characters on each side so the value is never fully shown.
    """
    prefix, suffix = 8, 3
    if len(api_key) < prefix + suffix + 4:
        prefix = suffix = max(1, len(api_key) // 3)
    return f"{api_key[:prefix]}...{api_key[-suffix:]}"


def _error_json(status: int, message: str, type_: str, code: str | None) -> bytes:
    return json.dumps(ApiError(status, message, type=type_, code=code).body()).encode()


def _fault_body(kind: str) -> bytes:
    # Messages and types as OpenAI's API answers them for these conditions.
    if kind in ("429", "rate_limit"):
        return _error_json(
            429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded"
        )
    if kind == "timeout":
        return _error_json(504, "Gateway timeout.", "server_error", "timeout")
    return _error_json(
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    )


def _error_response(err: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


EMULATED_ORGANIZATION = "org-emulated0000000000000000"


class _BearerAuth:
    """Rejects any request under /v1 without the configured admin key (before routing, as
    the real API does: an unknown path with a bad key is a 401, not a 404)."""

    def __init__(self, app: ASGIApp, emulator: OpenAIEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, token = header.partition(" ")
        if not header:
            err = ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        elif scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.emulator.api_key.encode()
        ):
            err = ApiError(
                401,
                f"Incorrect API key provided: {redact_key(token.strip() or header)}.",
                code="invalid_api_key",
            )
        else:
            self.emulator.state.touch_admin_key(self.emulator.admin_key_id)
            organization = self.emulator.organization_id.encode()

            async def send_with_organization(message: Message) -> None:
                # Which organization the key is bound to, on every answer to it (the API
                # reference's "Debugging requests": `openai-organization`).
                if message["type"] == "http.response.start":
                    headers = [*message.get("headers", []), (b"openai-organization", organization)]
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_organization)
            return
        await _error_response(err)(scope, receive, send)


class OpenAIEmulator(LoopbackEmulator):
    """The emulated OpenAI Admin API. ``with OpenAIEmulator() as emu: emu.start()`` …

    ``state`` is the organization (seed and assert on it directly), ``faults`` can be
    reassigned at any time (a new ``Faults`` restarts the seeded draw), ``requests`` lists
    every request seen.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk-admin-emulator",
        faults: Faults | None = None,
        allow_duplicate_invites: bool = False,
        allow_duplicate_group_names: bool = False,
        key_owner_email: str = "key-owner@example.com",
        organization_id: str = EMULATED_ORGANIZATION,
    ) -> None:
        self.api_key = api_key
        #: Sent as the `openai-organization` header of every authenticated answer. The same
        #: by default, so that a rehearsal's emulator restarted on its state database is
        #: the organization it was; give another to emulate another organization.
        self.organization_id = organization_id
        self.allow_duplicate_invites = allow_duplicate_invites
        #: Off: a group name already taken answers 409. On: a second group of that name is
        #: created, so fault tests can see a blind retry of a create duplicate a group.
        self.allow_duplicate_group_names = allow_duplicate_group_names
        self.state = OrgState(key_owner_email=key_owner_email)
        self.admin_key_id = self.state.add_admin_key(
            redact_key(api_key), self.state.key_owner_id, name="orgsync emulator key"
        )
        injector = FaultInjector(
            _BearerAuth(self._build_app(), self), error_body=_fault_body, faults=faults
        )
        super().__init__(injector, name="openai-emulator")

    # -- public surface --------------------------------------------------------------

    def _public_url(self, origin: str) -> str:
        return f"{origin}/v1"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` while serving."""
        return self._public_url(self.origin)

    # -- routes ----------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        prefix = "/v1/organization"
        routes = [
            Route(f"{prefix}/users", self._list_users, methods=["GET"]),
            Route(f"{prefix}/users/{{user_id}}", self._get_user, methods=["GET"]),
            Route(f"{prefix}/users/{{user_id}}", self._update_user, methods=["POST"]),
            Route(f"{prefix}/users/{{user_id}}", self._delete_user, methods=["DELETE"]),
            Route(f"{prefix}/invites", self._list_invites, methods=["GET"]),
            Route(f"{prefix}/invites", self._create_invite, methods=["POST"]),
            Route(f"{prefix}/invites/{{invite_id}}", self._get_invite, methods=["GET"]),
            Route(f"{prefix}/invites/{{invite_id}}", self._delete_invite, methods=["DELETE"]),
            Route(f"{prefix}/roles", self._list_roles, methods=["GET"]),
            Route(f"{prefix}/admin_api_keys", self._list_admin_keys, methods=["GET"]),
            Route(f"{prefix}/admin_api_keys/{{key_id}}", self._get_admin_key, methods=["GET"]),
            *group_routes(
                prefix,
                lambda: self.state,
                allow_duplicate_names=lambda: self.allow_duplicate_group_names,
            ),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={
                ApiError: self._on_api_error,
                HTTPException: self._on_http_exception,
                Exception: self._on_crash,
            },
        )

    @staticmethod
    async def _on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    @staticmethod
    async def _on_http_exception(request: Request, exc: Exception) -> Response:
        # Starlette's own 404/405 are plain text; the API answers in its error shape.
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            err = ApiError(
                405,
                f"Method {request.method} is not allowed on {request.url.path} (or not emulated).",
                code="method_not_allowed",
            )
        else:
            err = ApiError(
                exc.status_code,
                f"Invalid URL ({request.method} {request.url.path}).",
                code="unknown_url" if exc.status_code == 404 else None,
            )
        return _error_response(err, dict(exc.headers) if exc.headers else None)

    @staticmethod
    async def _on_crash(request: Request, exc: Exception) -> Response:
        # An emulator bug: answer in the API's shape; Starlette still re-raises, so uvicorn
        # logs the traceback and the test run shows it.
        return _error_response(
            ApiError(500, f"Emulator error: {type(exc).__name__}: {exc}", type="server_error")
        )

    async def _list_users(self, request: Request) -> Response:
        limit = int_param(request, "limit", LEGACY_DEFAULT_LIMIT, 1, LEGACY_MAX_LIMIT)
        # The spec names the parameter `emails`; the official SDK sends `emails[]`.
        emails = request.query_params.getlist("emails") + request.query_params.getlist("emails[]")
        after = request.query_params.get("after")
        return JSONResponse(self.state.api_list_users(limit=limit, after=after, emails=emails))

    async def _get_user(self, request: Request) -> Response:
        return JSONResponse(self.state.api_get_user(request.path_params["user_id"]))

    async def _update_user(self, request: Request) -> Response:
        body = await json_body(request)
        return JSONResponse(self.state.api_update_user(request.path_params["user_id"], body))

    async def _delete_user(self, request: Request) -> Response:
        return JSONResponse(self.state.api_delete_user(request.path_params["user_id"]))

    async def _list_invites(self, request: Request) -> Response:
        limit = int_param(request, "limit", LEGACY_DEFAULT_LIMIT, 1, LEGACY_MAX_LIMIT)
        after = request.query_params.get("after")
        return JSONResponse(self.state.api_list_invites(limit=limit, after=after))

    async def _create_invite(self, request: Request) -> Response:
        body = await json_body(request)
        invite = self.state.api_create_invite(body, allow_duplicates=self.allow_duplicate_invites)
        return JSONResponse(invite)

    async def _get_invite(self, request: Request) -> Response:
        return JSONResponse(self.state.api_get_invite(request.path_params["invite_id"]))

    async def _delete_invite(self, request: Request) -> Response:
        return JSONResponse(self.state.api_delete_invite(request.path_params["invite_id"]))

    async def _list_roles(self, request: Request) -> Response:
        limit = int_param(request, "limit", CURSOR_MAX_LIMIT, 0, CURSOR_MAX_LIMIT)
        order = order_param(request, "asc")
        after = request.query_params.get("after")
        return JSONResponse(self.state.api_list_roles(limit=limit, after=after, order=order))

    async def _list_admin_keys(self, request: Request) -> Response:
        limit = int_param(request, "limit", LEGACY_DEFAULT_LIMIT, 1, LEGACY_MAX_LIMIT)
        order = order_param(request, "asc")
        after = request.query_params.get("after")
        return JSONResponse(self.state.api_list_admin_keys(limit=limit, after=after, order=order))

    async def _get_admin_key(self, request: Request) -> Response:
        return JSONResponse(self.state.api_get_admin_key(request.path_params["key_id"]))
