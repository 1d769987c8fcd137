"""SCIM 2.0 on the wire: scim2-models for every payload, and the transport details.

Payloads are built and parsed with scim2-models (RFC 7643/7644 models; no schema here is
hand-written). Parsing is tolerant: attributes a server adds that the core models do not
declare (vendor extensions) are dropped, never fatal. Two wrinkles of scim2-models are
worked around, each in one subclass:

* its `Email.value` is an `EmailStr`, which refuses special-use domains (`.test`,
  `.internal`, `.local`) real directories use: `_Email` reads it as text;
* nothing else.

`ScimTransport` wraps the HTTP transport of the target's `ApiClient`, which sends JSON as
`application/json` and has no per-call headers: it relabels request bodies as
`application/scim+json` (RFC 7644 §3.1; strict servers want it) and adds `If-Match` to the
one call made inside `if_match(etag)` (optimistic locking of the PUT fallback).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import httpx
from pydantic import ValidationError
from pydantic_core import from_json
from scim2_models import (
    Context,
    Email,
    Error,
    Group,
    ListResponse,
    Name,
    PatchOp,
    PatchOperation,
    Resource,
    ScimPolicy,
    ServiceProviderConfig,
    User,
)

from orgsync.core.errors import TargetError

__all__ = [
    "SCIM_JSON",
    "ScimTransport",
    "ScimUser",
    "error_message",
    "group_patch",
    "if_match",
    "members_filter",
    "new_group",
    "new_user",
    "parse",
    "parse_list",
    "pick_email",
    "refuses_form",
    "user_patch",
]

SCIM_JSON: Final = "application/scim+json"
TOLERANT: Final = ScimPolicy(unknown=ScimPolicy.Unknown.ignore)
"""Vendor extensions and attributes we did not ask for are dropped, never fatal."""

FORM_SCIM_TYPES: Final = frozenset(
    {"invalidPath", "invalidFilter", "noTarget", "invalidSyntax", "mutability"}
)
"""400 `scimType`s that refuse how a request asks, not what it asks for (RFC 7644 §3.12):
the same change may succeed in another form."""

_IF_MATCH: contextvars.ContextVar[str | None] = contextvars.ContextVar("if_match", default=None)

R = TypeVar("R", bound=Resource[Any])


class _Email(Email):
    """scim2-models' Email with `value` read as text (see the module docstring)."""

    value: str | None = None


class ScimUser(User[Any]):
    """The core User, emails read as `_Email`; extensions are ignored (we set none)."""

    emails: list[_Email] | None = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- building


def new_user(*, email: str, name: str, external_id: str) -> dict[str, Any]:
    """The POST /Users body of a person: `userName` = email, one primary work email."""
    given, _, family = name.strip().partition(" ")
    user = ScimUser(
        user_name=email,
        external_id=external_id,
        display_name=name or email,
        # Some providers (AWS IAM Identity Center) require givenName and familyName.
        name=Name(
            formatted=name or email,
            given_name=given or email,
            family_name=family or given or email,
        ),
        emails=[_Email(value=email, type="work", primary=True)],
        active=True,
    )
    return user.model_dump(scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def new_group(*, name: str, external_id: str | None) -> dict[str, Any]:
    group = Group(display_name=name, external_id=external_id)
    return group.model_dump(scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def members_filter(user_id: str) -> str:
    """`members[value eq "ID"]`: the RFC 7644 §3.5.2.2 path selecting one member."""
    # Filter strings are JSON strings (RFC 7644 §3.4.2.2), so json.dumps escapes them.
    return f"members[value eq {json.dumps(user_id)}]"


def group_patch(operations: list[PatchOperation[Group]]) -> dict[str, Any]:
    return PatchOp[Group](operations=operations).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


def user_patch(operations: list[PatchOperation[ScimUser]]) -> dict[str, Any]:
    return PatchOp[ScimUser](operations=operations).model_dump(
        scim_ctx=Context.RESOURCE_PATCH_REQUEST
    )


# --------------------------------------------------------------------------- parsing


def parse(model: type[R], body: object, where: str) -> R:
    """A resource answer, or a `TargetError` naming the fields (not values) that failed."""
    try:
        return model.model_validate(
            body, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=TOLERANT
        )
    except ValidationError as error:
        raise TargetError(
            f"{where}: not a valid SCIM {model.__name__}: {_fields(error)}"
        ) from error


def parse_list(model: type[R], body: object, where: str) -> ListResponse[R]:
    try:
        return ListResponse[model].model_validate(  # type: ignore[valid-type]
            body, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=TOLERANT
        )
    except ValidationError as error:
        raise TargetError(f"{where}: not a valid SCIM ListResponse: {_fields(error)}") from error


def parse_config(body: object, where: str) -> ServiceProviderConfig:
    try:
        return ServiceProviderConfig.model_validate(
            body, scim_ctx=Context.RESOURCE_QUERY_RESPONSE, scim_policy=TOLERANT
        )
    except ValidationError as error:
        raise TargetError(
            f"{where}: not a valid ServiceProviderConfig: {_fields(error)}"
        ) from error


def _fields(error: ValidationError) -> str:
    # Name fields and positions, not values: a body holds personal data.
    problems = sorted(
        {".".join(str(p) for p in e["loc"]) + f" ({e['type']})" for e in error.errors()}
    )
    return "; ".join(problems[:5])


def pick_email(user: User[Any]) -> str | None:
    """`emails[primary]`, else `userName` if it is an address, else the first email."""
    emails = [e for e in user.emails or [] if e.value]
    for email in emails:
        if email.primary:
            return str(email.value)
    if user.user_name and "@" in user.user_name:
        return user.user_name
    return str(emails[0].value) if emails else None


def error_message(response: httpx.Response) -> str | None:
    """`detail [scimType]` of a SCIM Error body (RFC 7644 §3.12), else None."""
    try:
        body = from_json(response.content)
        error = Error.model_validate(body, scim_policy=TOLERANT)
    except (ValueError, ValidationError):
        return None
    detail = (error.detail or "").strip() or f"SCIM error {error.status}"
    return f"{detail} [{error.scim_type}]" if error.scim_type else detail


def refuses_form(response: httpx.Response) -> bool:
    """Whether a 400 refuses the request's form: its `scimType` is one of `FORM_SCIM_TYPES`."""
    if response.status_code != 400:
        return False
    try:
        body = from_json(response.content)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("scimType") in FORM_SCIM_TYPES


# --------------------------------------------------------------------------- transport


@contextmanager
def if_match(etag: str | None) -> Iterator[None]:
    """Send `If-Match: etag` on the calls made inside (nothing when `etag` is None)."""
    token = _IF_MATCH.set(etag)
    try:
        yield
    finally:
        _IF_MATCH.reset(token)


class ScimTransport(httpx.BaseTransport):
    """SCIM media types and `If-Match` on top of another transport (see module docstring)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept"] = f"{SCIM_JSON}, application/json"
        if request.headers.get("content-type", "").startswith("application/json"):
            request.headers["Content-Type"] = SCIM_JSON
        etag = _IF_MATCH.get()
        if etag is not None:
            request.headers["If-Match"] = etag
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
