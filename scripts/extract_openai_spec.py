#!/usr/bin/env python3
"""Cut the OpenAI Admin API subset that orgsync's contract tests validate against.

The full upstream spec is ~3 MB and is not shipped with the repository; the tests only need
the organization users/invites/roles/groups/admin-key paths. This script copies those path
items unchanged, plus every ``#/components/...`` entry they reference (followed transitively,
also unchanged), and writes ``tests/data/openai-admin-subset.yaml``.

Usage (from the repository root):

    .venv/bin/python scripts/extract_openai_spec.py [SOURCE_YAML] [--out OUT_YAML]

SOURCE_YAML defaults to ``../shared/specs/openai-openapi.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

PATHS: tuple[str, ...] = (
    "/organization/users",
    "/organization/users/{user_id}",
    "/organization/users/{user_id}/roles",
    "/organization/users/{user_id}/roles/{role_id}",
    "/organization/invites",
    "/organization/invites/{invite_id}",
    "/organization/roles",
    "/organization/roles/{role_id}",
    "/organization/groups",
    "/organization/groups/{group_id}",
    "/organization/groups/{group_id}/users",
    "/organization/groups/{group_id}/users/{user_id}",
    "/organization/groups/{group_id}/roles",
    "/organization/groups/{group_id}/roles/{role_id}",
    "/organization/admin_api_keys",
    "/organization/admin_api_keys/{key_id}",
)

SOURCE_NAME = "openai/openai-openapi openapi.yaml"
SOURCE_COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
SOURCE_DATE = "2026-08-21"
SOURCE_LICENSE = "MIT"
DEFAULT_SOURCE = Path("../shared/specs/openai-openapi.yaml")
DEFAULT_OUT = Path("tests/data/openai-admin-subset.yaml")
COMPONENT_PREFIX = "#/components/"


def _unescape(token: str) -> str:
    # JSON pointer escapes (RFC 6901): order matters, ~1 first.
    return token.replace("~1", "/").replace("~0", "~")


def _component_key(ref: str) -> tuple[str, str]:
    """Map a ``#/components/<section>/<name>[/...]`` ref to the entry that must be copied."""
    parts = [_unescape(p) for p in ref[len(COMPONENT_PREFIX) :].split("/")]
    if len(parts) < 2:
        raise ValueError(f"unsupported $ref {ref!r}")
    return parts[0], parts[1]


def _refs_in(node: Any) -> list[str]:
    """Every local ``$ref`` (and discriminator mapping target) anywhere under ``node``."""
    found: list[str] = []
    stack: list[Any] = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            ref = cur.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            disc = cur.get("discriminator")
            if isinstance(disc, dict) and isinstance(disc.get("mapping"), dict):
                # Mapping values are refs written as plain strings; a validator follows them.
                found.extend(v for v in disc["mapping"].values() if isinstance(v, str))
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return found


def _security_names(node: Any) -> set[str]:
    """Security scheme names used by ``security`` requirement lists under ``node``."""
    names: set[str] = set()
    stack: list[Any] = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            sec = cur.get("security")
            if isinstance(sec, list):
                for req in sec:
                    if isinstance(req, dict):
                        names.update(str(k) for k in req)
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return names


def extract(spec: dict[str, Any], paths: tuple[str, ...] = PATHS) -> dict[str, Any]:
    """Return the subset document: chosen paths + transitive components, copied unchanged."""
    src_paths: dict[str, Any] = spec["paths"]
    missing = [p for p in paths if p not in src_paths]
    if missing:
        raise KeyError(f"paths not in source spec: {missing}")
    components: dict[str, Any] = spec.get("components", {})

    wanted: set[tuple[str, str]] = set()
    queue: list[str] = []
    for p in paths:
        queue.extend(_refs_in(src_paths[p]))
    while queue:
        ref = queue.pop()
        if not ref.startswith(COMPONENT_PREFIX):
            # A ref into #/paths or an external file would silently break once cut out.
            raise ValueError(f"non-component $ref {ref!r} cannot be carried into the subset")
        key = _component_key(ref)
        if key in wanted:
            continue
        section, name = key
        try:
            entry = components[section][name]
        except KeyError as exc:
            raise KeyError(f"dangling $ref {ref!r}") from exc
        wanted.add(key)
        queue.extend(_refs_in(entry))

    scheme_names = _security_names({"paths": {p: src_paths[p] for p in paths}})
    top_security = spec.get("security")
    if top_security is not None:
        scheme_names |= _security_names({"security": top_security})
    for name in scheme_names:
        if name not in components.get("securitySchemes", {}):
            raise KeyError(f"security scheme {name!r} not defined in source spec")
        wanted.add(("securitySchemes", name))

    # Keep the source's section and entry order so diffs against upstream stay readable.
    out_components: dict[str, Any] = {}
    for section, entries in components.items():
        if not isinstance(entries, dict):
            continue
        kept = {n: e for n, e in entries.items() if (section, n) in wanted}
        if kept:
            out_components[section] = kept

    out: dict[str, Any] = {"openapi": spec["openapi"], "info": spec["info"]}
    # A relative server first, so requests to any host (127.0.0.1:PORT too) match the paths.
    out["servers"] = [{"url": "/v1"}, *spec.get("servers", [])]
    if top_security is not None:
        out["security"] = top_security
    out["paths"] = {p: src_paths[p] for p in paths}
    out["components"] = out_components
    return out


def header(source: Path, out: Path) -> str:
    return (
        "# Subset of the OpenAI REST API description (OpenAI Admin API organization endpoints).\n"
        f"# Source: {SOURCE_NAME}, commit {SOURCE_COMMIT} ({SOURCE_DATE}),"
        f" licence {SOURCE_LICENSE}.\n"
        "# Path items and referenced #/components entries are copied unchanged (re-serialised);\n"
        '# only a relative server {"url": "/v1"} is prepended so any host matches.\n'
        "# GENERATED FILE, do not edit. Regenerate from the repository root with:\n"
        f"#   .venv/bin/python scripts/extract_openai_spec.py {source} --out {out}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with args.source.open(encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=loader)
    subset = extract(spec)

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body = yaml.dump(
        subset,
        Dumper=dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
    # Round-trip check: the written document must reload to exactly what was extracted.
    if yaml.load(body, Loader=loader) != subset:
        raise RuntimeError("YAML round trip changed the subset")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header(args.source, args.out) + body, encoding="utf-8")
    counts = ", ".join(f"{len(v)} {k}" for k, v in subset["components"].items())
    print(f"wrote {args.out}: {len(subset['paths'])} paths; components: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
