"""The client every target adapter talks through: `orgsync.http` with the target's rules.

What the targets add to the shared HTTP layer (`orgsync.http`, which owns TLS, auth
flows, error mapping, Retry-After, scrubbing, metrics and retries):

* paths only, relative to the API root: an absolute URL would send the credential to
  whatever host it names;
* `request_model` parses the body into a pydantic model inside the retry loop: a 2xx body
  that is not JSON (a truncated transfer, a proxy's page) is transient, JSON of the wrong
  shape a plain `TargetError` naming the fields, never their values;
* the caller says whether a call is idempotent: only those are retried (a create may have
  happened despite a lost answer; the applier looks it up);
* the OpenAI error body (`error.message [code]`) is the default dialect.

This module imports only httpx, pydantic, the standard library, `orgsync.core`,
`orgsync.retrying` and `orgsync.http`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, Unpack

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import from_json

from orgsync.core.errors import TargetError, TransientError
from orgsync.http.auth import HeaderAuth
from orgsync.http.client import ClientOptions, HttpClient, QueryParams
from orgsync.retrying import RetrySettings

__all__ = ["ApiClient", "json_body", "openai_error_message"]

M = TypeVar("M", bound=BaseModel)
_T = TypeVar("_T")


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


class ApiClient:
    """One target's HTTP client.

    Args:
        base_url: the API root, e.g. "https://api.openai.com/v1"; paths are relative to it.
        system: the `system` label of metrics and logs (the target's name).
        retry: the retry budget of idempotent calls.
        bearer_token: sent as `Authorization: Bearer ...`; never logged. Or:
        auth: a credential flow (`orgsync.http.auth`), e.g. OAuth client credentials.
        more_secrets: credentials besides the token to scrub from every message.
        options: as `orgsync.http.client.HttpClient` (the error parser is OpenAI's unless
            given).
    """

    def __init__(
        self,
        base_url: str,
        *,
        system: str,
        retry: RetrySettings,
        bearer_token: str | None = None,
        auth: httpx.Auth | None = None,
        more_secrets: Iterable[str] = (),
        identity_header: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        # The first 2xx answer's value of this header (`header_seen`): which organization
        # answered, read once, so the lean path's lazy headers are built for one answer only.
        self._identity_header = identity_header
        self._header_seen: str | None = None
        if (bearer_token is None) == (auth is None):
            raise ValueError("give a bearer_token or an auth flow")
        options.setdefault("error_parser", openai_error_message)
        self._http = HttpClient(
            base_url,
            system=system,
            retry=retry,
            auth=HeaderAuth.bearer(bearer_token) if bearer_token is not None else auth,
            secrets=more_secrets,
            **options,
        )

    @property
    def system(self) -> str:
        return self._http.system

    @property
    def header_seen(self) -> str | None:
        """`identity_header`'s value in the first successful answer (None before one, or
        when it had none)."""
        return self._header_seen

    def _watch(self, parse: Callable[[httpx.Response], _T]) -> Callable[[httpx.Response], _T]:
        name = self._identity_header
        if name is None:
            return parse

        def watched(response: httpx.Response) -> _T:
            result = parse(response)
            if self._identity_header is not None:
                self._identity_header = None
                self._header_seen = response.headers.get(name) or None
            return result

        return watched

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r}, system={self.system!r})"

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
        _check_relative(path)
        return self._http.send(
            method,
            path,
            params=params,
            json=json,
            idempotent=idempotent,
            parse=self._watch(_identity),
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
        """Like `request`, then parse the body into `model`, inside the same retry loop."""
        _check_relative(path)

        def parse(response: httpx.Response) -> M:
            return _parse_model(response, model.model_validate_json, context=f"{method} {path}")

        return self._http.send(
            method, path, params=params, json=json, idempotent=idempotent, parse=self._watch(parse)
        )

    def request_adapted(
        self,
        method: str,
        path: str,
        adapter: TypeAdapter[_T],
        *,
        params: QueryParams | None = None,
        idempotent: bool,
    ) -> _T:
        """Like `request_model`, validating the body with `adapter` (plain dictionaries
        for a high-volume list, where a model per item would cost more than it gives)."""
        _check_relative(path)

        def parse(response: httpx.Response) -> _T:
            return _parse_model(response, adapter.validate_json, context=f"{method} {path}")

        return self._http.send(
            method, path, params=params, idempotent=idempotent, parse=self._watch(parse)
        )

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json: object = None,
        idempotent: bool,
    ) -> Any:
        """Like `request`, then the body's JSON (`json_body`), inside the same retry loop:
        for callers that validate it themselves (SCIM's models)."""
        _check_relative(path)

        def parse(response: httpx.Response) -> Any:
            return json_body(response, f"{method} {path}")

        return self._http.send(
            method, path, params=params, json=json, idempotent=idempotent, parse=self._watch(parse)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _identity(response: httpx.Response) -> httpx.Response:
    return response


def _parse_model(response: httpx.Response, validate: Callable[[bytes], _T], *, context: str) -> _T:
    try:
        return validate(response.content)
    except ValidationError as exc:
        # Looked up on failure only: a lean answer's headers are built when first read.
        request_id = response.headers.get("x-request-id")
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


def json_body(response: httpx.Response, context: str) -> Any:
    """The JSON of an answer. A body that is not JSON (a truncated transfer, a proxy's
    page) or is nested beyond the parser's depth limit (a hostile server: the standard
    library's parser raises RecursionError there) is a `TransientError` naming the call,
    never an exception the run does not expect."""
    try:
        return from_json(response.content)
    except ValueError as exc:
        raise TransientError(
            f"{context}: response body is not JSON ({exc})",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from exc


def _check_relative(path: str) -> None:
    # An absolute URL would make httpx send the bearer token to whatever host it names.
    if not path.startswith("/") or path.startswith("//") or "://" in path:
        raise ValueError(f"path must be relative to base_url and start with '/': {path!r}")
