"""The JSON output's documented shape (docs/plan-output.schema.json), for tests to check
real output against: `sync --json`, plan files (`--plan-out`) and `runs --json`."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "plan-output.schema.json"


@cache
def schema() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    return document


def _validator(definition: str | None) -> Draft202012Validator:
    whole = schema()
    target = (
        whole if definition is None else {"$defs": whole["$defs"], "$ref": f"#/$defs/{definition}"}
    )
    return Draft202012Validator(target, format_checker=FormatChecker())


def problems(document: object, definition: str | None = None) -> list[str]:
    """Every way `document` departs from the schema (or one of its `$defs`), one line each."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(_validator(definition).iter_errors(document), key=str)
    ]


def assert_sync_output(document: object) -> None:
    assert problems(document) == [], json.dumps(document, indent=1)[:3000]


def assert_plan_file(document: object) -> None:
    assert problems(document, "planFile") == [], json.dumps(document, indent=1)[:3000]


def assert_runs_output(document: object) -> None:
    assert problems(document, "runsOutput") == [], json.dumps(document, indent=1)[:3000]


def assert_status_output(document: object) -> None:
    assert problems(document, "statusOutput") == [], json.dumps(document, indent=1)[:3000]
