#!/usr/bin/env python3
"""Cut the parts of Keycard's partial OpenAPI spec that orgsync's contract tests check.

Keycard publishes no spec for the organization users/invitations/roles endpoints; the only
spec in reach is the Terraform provider's partial one (`api/openapi.yaml`, zones and
organizations). What it does fix for every endpoint is the shape of an error (`Error`:
`message`, `code`, `status`), of a list's page information (`PageInfo`), and the bearer
(JWT) scheme. This script copies those three entries unchanged, plus every
`#/components/...` entry they reference (followed transitively), and writes
`tests/data/keycard-subset.yaml`, which the Keycard emulator's contract tests validate its
answers against.

Usage (from the repository root):

    .venv/bin/python scripts/extract_keycard_spec.py [SOURCE_YAML] [--out OUT_YAML]

SOURCE_YAML defaults to `../shared/specs/keycard-openapi-terraform-subset.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

SCHEMAS: tuple[str, ...] = ("Error", "PageInfo")
SECURITY_SCHEMES: tuple[str, ...] = ("bearerAuth",)
SOURCE_NAME = "keycardai/terraform-provider-keycard api/openapi.yaml"
SOURCE_COMMIT = "0c4a2adeea7153edcacbab538b93eb3e7d6c22b4"
SOURCE_DATE = "2025-12-18"
SOURCE_LICENSE = "MPL-2.0"
DEFAULT_SOURCE = Path("../shared/specs/keycard-openapi-terraform-subset.yaml")
DEFAULT_OUT = Path("tests/data/keycard-subset.yaml")
PREFIX = "#/components/schemas/"


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    wanted: dict[str, Any] = {}
    queue = list(SCHEMAS)
    while queue:
        name = queue.pop()
        if name in wanted:
            continue
        if name not in schemas:
            raise SystemExit(f"schema {name!r} is not in the source spec")
        wanted[name] = schemas[name]
        for ref in _refs(schemas[name]):
            if not ref.startswith(PREFIX):
                raise SystemExit(f"unsupported $ref {ref!r} under {name}")
            queue.append(ref[len(PREFIX) :])
    security = spec["components"]["securitySchemes"]
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "paths": {},
        "components": {
            "schemas": {name: wanted[name] for name in sorted(wanted)},
            "securitySchemes": {name: security[name] for name in SECURITY_SCHEMES},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.source.read_text(encoding="utf-8"))
    subset = extract(spec)
    header = (
        f"# Subset of {SOURCE_NAME} @ {SOURCE_COMMIT} ({SOURCE_DATE}), licence {SOURCE_LICENSE}.\n"
        f"# Components {', '.join(SCHEMAS)} and the security scheme(s) "
        f"{', '.join(SECURITY_SCHEMES)}, copied unchanged;\n"
        "# regenerate with: .venv/bin/python scripts/extract_keycard_spec.py\n"
    )
    args.out.write_text(
        header + yaml.safe_dump(subset, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    print(f"wrote {args.out}: {len(subset['components']['schemas'])} schemas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
