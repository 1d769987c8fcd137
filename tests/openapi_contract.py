"""Offline OpenAPI contract checks of recorded httpx exchanges with the OpenAI Admin API.

Owns the bridge between httpx and openapi-core (which ships adapters for requests,
werkzeug, starlette… but not httpx) and the project's copy of the spec subset
(``tests/data/openai-admin-subset.yaml``, cut by ``scripts/extract_openai_spec.py``).

The upstream spec declares only ``200`` for users and invites and ``429`` for a few newer
endpoints; errors the API certainly returns (400/401/404/409/5xx) are undeclared there.
Rather than skip those, `check_response` validates any undeclared 4xx/5xx against the
spec's ``ErrorResponse`` schema (and a 429's ``Retry-After`` against the spec's
``TooManyRequests`` header), so every response an emulator or a client sees is checked.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema_path import SchemaPath
from openapi_core import OpenAPI
from openapi_core.configurations import Config
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.schemas import oas31_schema_validators_factory
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path(__file__).parent / "data" / "openai-admin-subset.yaml"

__all__ = [
    "SPEC_PATH",
    "ContractViolation",
    "check_exchange",
    "check_request",
    "check_response",
    "openai_admin_api",
]


class ContractViolation(AssertionError):
    """A request or response that breaks the spec. The openapi-core error is the cause."""


@cache
def openai_admin_api() -> OpenAPI:
    """The parsed spec subset, loaded once per process."""
    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    # The full upstream spec fails openapi-spec-validator (duplicate names in a `required`
    # list); the subset passes today, but a regeneration may pull such an entry in, and
    # validating traffic works regardless. Skipping the check also saves load time.
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


class HttpxOpenAPIRequest:
    """openapi-core `Request` protocol over an `httpx.Request`."""

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.multi_items())),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        url = self.request.url
        return f"{url.scheme}://{url.netloc.decode('ascii')}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        # A streamed request body must be read before it can be validated.
        return self.request.read() or None

    @property
    def content_type(self) -> str:
        return str(self.request.headers.get("content-type", "")).lower()


class HttpxOpenAPIResponse:
    """openapi-core `Response` protocol over an `httpx.Response`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    @property
    def data(self) -> bytes:
        return self.response.content

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return str(self.response.headers.get("content-type", "")).lower()

    @property
    def headers(self) -> Headers:
        return Headers(list(self.response.headers.multi_items()))


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        details = getattr(cause, "schema_errors", None)
        if details:
            parts.extend(f"  - {e.message} (at {list(e.absolute_path)})" for e in details)
        else:
            parts.append(f"  caused by {type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return "\n".join(parts)


def _label(request: httpx.Request) -> str:
    return f"{request.method} {request.url}"


def check_request(request: httpx.Request) -> None:
    """Raise `ContractViolation` if ``request`` breaks the spec (path, params, auth, body)."""
    try:
        openai_admin_api().validate_request(HttpxOpenAPIRequest(request))
    except OpenAPIError as exc:
        raise ContractViolation(f"request {_label(request)}\n{_describe(exc)}") from exc


def _validate_schema(component: tuple[str, ...], value: Any, what: str) -> None:
    spec: SchemaPath = openai_admin_api().spec
    schema = spec
    for part in component:
        schema = schema / part
    validator = oas31_schema_validators_factory.create(spec, schema)
    try:
        validator.validate(value)
    except OpenAPIError as exc:
        raise ContractViolation(f"{what}\n{_describe(exc)}") from exc


def _check_undeclared_error(response: httpx.Response) -> None:
    """Fallback for 4xx/5xx the operation does not declare: the spec's ErrorResponse."""
    label = f"response {response.status_code} to {_label(response.request)} (undeclared status)"
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ContractViolation(f"{label}: content-type {ctype!r}, expected application/json")
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise ContractViolation(f"{label}: body is not JSON: {response.content[:200]!r}") from exc
    _validate_schema(("components", "schemas", "ErrorResponse"), body, f"{label}: ErrorResponse")
    if response.status_code == 429 and "retry-after" in response.headers:
        raw = response.headers["retry-after"]
        try:
            seconds: Any = int(raw)
        except ValueError:
            seconds = raw
        _validate_schema(
            ("components", "responses", "TooManyRequests", "headers", "Retry-After", "schema"),
            seconds,
            f"{label}: Retry-After {raw!r}",
        )


def check_response(response: httpx.Response) -> None:
    """Raise `ContractViolation` if ``response`` breaks the spec for its request's operation.

    The request itself is not validated (see `check_request`); use this alone only for
    exchanges whose request is deliberately invalid.
    """
    api = openai_admin_api()
    try:
        api.validate_response(HttpxOpenAPIRequest(response.request), HttpxOpenAPIResponse(response))
    except ResponseNotFound as exc:
        if response.status_code < 400:
            raise ContractViolation(
                f"response {response.status_code} to {_label(response.request)}\n{_describe(exc)}"
            ) from exc
        _check_undeclared_error(response)
    except OpenAPIError as exc:
        raise ContractViolation(
            f"response {response.status_code} to {_label(response.request)}\n{_describe(exc)}"
        ) from exc


def check_exchange(response: httpx.Response) -> None:
    """Validate both halves of a recorded exchange: the request, then the response."""
    check_request(response.request)
    check_response(response)
