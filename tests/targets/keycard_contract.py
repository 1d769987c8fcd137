"""The Keycard spec subset (`tests/data/keycard-subset.yaml`) as JSON-schema checks.

Keycard publishes no spec for the organization endpoints, so what can be checked against
the vendor's own document is what its partial spec fixes for every endpoint: the `Error`
body and the `PageInfo` of a list. `check_error` and `check_page` validate those parts of
any answer, from the emulator or seen by the client, with the OpenAPI 3.0 schema dialect.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml
from openapi_schema_validator import OAS30Validator

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "keycard-subset.yaml"


@cache
def _schemas() -> dict[str, Any]:
    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return dict(spec["components"]["schemas"])


def _validator(name: str) -> OAS30Validator:
    return OAS30Validator(_schemas()[name])


def check_error(response: httpx.Response) -> dict[str, Any]:
    """The body of an error answer, validated against the spec's `Error`; its `status`
    must also be the HTTP status."""
    assert response.status_code >= 400, response.status_code
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    _validator("Error").validate(body)
    assert body["status"] == response.status_code, body
    return dict(body)


def check_page(response: httpx.Response) -> dict[str, Any]:
    """A list answer: `items` and a `page_info` valid against the spec's `PageInfo`."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["items"], list)
    _validator("PageInfo").validate(body["page_info"])
    return dict(body)
