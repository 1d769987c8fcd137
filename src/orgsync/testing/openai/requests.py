"""Request parsing shared by the OpenAI Admin API emulator's route modules.

Owns how query parameters and JSON bodies are read and refused: every refusal is an
`ApiError` in the spec's error shape, naming the parameter, as the real API answers.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from orgsync.testing.openai.records import ApiError

LEGACY_MAX_LIMIT = 100
LEGACY_DEFAULT_LIMIT = 20
CURSOR_MAX_LIMIT = 1000


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, f"Invalid '{name}': expected an integer, got '{raw}'.", param=name
        ) from None
    if not low <= value <= high:
        raise ApiError(
            400,
            f"Invalid '{name}': {value} is out of range, it must be between {low} and {high}.",
            param=name,
            code="integer_out_of_range",
        )
    return value


def order_param(request: Request, default: str) -> str:
    order = request.query_params.get("order", default)
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid 'order': '{order}', must be 'asc' or 'desc'.", param="order")
    return order


def cursor_listing(request: Request, *, default_limit: int, default_order: str) -> dict[str, Any]:
    """``limit`` (0-1000), ``after`` and ``order`` of an opaque-cursor list, as keywords."""
    return {
        "limit": int_param(request, "limit", default_limit, 0, CURSOR_MAX_LIMIT),
        "after": request.query_params.get("after"),
        "order": order_param(request, default_order),
    }


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body
