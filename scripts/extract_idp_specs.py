#!/usr/bin/env python3
"""Cut the Okta, Microsoft Graph and Google Directory API subsets the IdP contract tests use.

The vendor descriptions are megabytes each and live outside the repository (the shared
spec folder, see its ``SOURCES.md``); the tests only need the three list operations each
source calls. This script copies, unchanged:

* Okta (``okta/okta-management-openapi-spec`` ``dist/current/management-minimal.yaml``
  @ 5ef70f7, 2026-06-29, Apache-2.0): the ``get`` operations (and path-level parameters)
  of ``/api/v1/users``, ``/api/v1/groups``, ``/api/v1/groups/{groupId}/users`` and
  ``/api/v1/logs`` (the System Log, for the change probe);
* Microsoft Graph v1.0 (the users/groups subset cut from
  ``microsoftgraph/msgraph-sdk-powershell`` ``openApiDocs/v1.0/{Users,Groups}.yml``
  @ 297822a, 2024-10-01, MIT): the ``get`` operations of ``/users``, ``/groups`` and
  ``/groups/{group-id}/members``;

each with every ``#/components/...`` entry they reference, followed transitively, and the
security schemes they name; and, from the Google Admin SDK Directory v1 discovery document
(``google/googleapis.dart`` ``discovery/googleapis/admin__directory_v1.json`` @ de252e6,
2026-04-29, revision 20260421, BSD-3-Clause), the ``users.list``, ``groups.list`` and
``members.list`` methods, the global ``parameters``, and the schemas ``Users``, ``Groups``,
``Members`` with every schema they reference. Only a relative server is prepended to the
OpenAPI subsets (``/`` for Okta, ``/v1.0`` for Graph) so that requests to any host
(127.0.0.1:PORT) match the paths.

Usage (from the repository root):

    .venv/bin/python scripts/extract_idp_specs.py [--specs DIR] [--out DIR]

DIR defaults to ``../shared/specs`` and ``tests/data``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

COMPONENT_PREFIX = "#/components/"

OKTA_FILE = "okta-management-openapi.yaml"
OKTA_PATHS = (
    "/api/v1/users",
    "/api/v1/groups",
    "/api/v1/groups/{groupId}/users",
    "/api/v1/logs",
)
OKTA_OUT = "okta-idp-subset.yaml"
OKTA_SOURCE = (
    "okta/okta-management-openapi-spec dist/current/management-minimal.yaml, commit "
    "5ef70f744c9db8260c4f8e867a99459a3651fed6 (2026-06-29), git blob "
    "edcc106f7e57994726fe05f3694f57e89e633c89, licence Apache-2.0"
)

GRAPH_FILE = "msgraph-v1.0-users-groups-subset.yaml"
GRAPH_PATHS = ("/users", "/groups", "/groups/{group-id}/members")
GRAPH_OUT = "msgraph-idp-subset.yaml"
GRAPH_SOURCE = (
    "microsoftgraph/msgraph-sdk-powershell openApiDocs/v1.0/Users.yml and Groups.yml, commit "
    "297822afd2b4740504dcb2bead122623ef941b44 (2024-10-01), licence MIT, by way of the "
    "shared users/groups subset (git blob cb7c964cb47fe8a512ec550486464b04de45cb28)"
)

GOOGLE_FILE = "google-admin-directory-v1.json"
GOOGLE_METHODS = (("users", "list"), ("groups", "list"), ("members", "list"))
GOOGLE_SCHEMAS = ("Users", "Groups", "Members")
GOOGLE_OUT = "google-directory-subset.json"
GOOGLE_SOURCE = (
    "google/googleapis.dart discovery/googleapis/admin__directory_v1.json, commit "
    "de252e68517832d106e2521c33c884cfa43edea7 (2026-04-29), git blob "
    "86ce510ad8ea7b0908abfea0f0edddf636444c78, licence BSD-3-Clause"
)


def _walk(node: Any) -> list[Any]:
    """Every dict and list under ``node`` (iterative: the Graph schemas nest deeply)."""
    found: list[Any] = []
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            found.append(cur)
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return found


def _component_refs(node: Any) -> set[tuple[str, str]]:
    refs: set[tuple[str, str]] = set()
    for cur in _walk(node):
        if not isinstance(cur, dict):
            continue
        targets = [cur.get("$ref")]
        mapping = cur.get("discriminator", {}).get("mapping") if "discriminator" in cur else None
        if isinstance(mapping, dict):
            targets.extend(mapping.values())
        for ref in targets:
            if not isinstance(ref, str):
                continue
            if not ref.startswith(COMPONENT_PREFIX):
                raise ValueError(f"non-component $ref {ref!r} cannot be carried into a subset")
            parts = ref[len(COMPONENT_PREFIX) :].replace("~1", "/").replace("~0", "~").split("/")
            refs.add((parts[0], parts[1]))
    return refs


def _security_names(node: Any) -> set[str]:
    names: set[str] = set()
    for cur in _walk(node):
        if isinstance(cur, dict) and isinstance(cur.get("security"), list):
            for requirement in cur["security"]:
                names.update(str(k) for k in requirement)
    return names


def cut_openapi(spec: dict[str, Any], paths: tuple[str, ...], server: str) -> dict[str, Any]:
    """The GET operations of ``paths`` with their transitive components, copied unchanged."""
    items: dict[str, Any] = {}
    for path in paths:
        source = spec["paths"][path]
        items[path] = {k: v for k, v in source.items() if k in ("get", "parameters")}
    components = spec.get("components", {})
    wanted: set[tuple[str, str]] = set()
    queue = list(_component_refs(items))
    while queue:
        key = queue.pop()
        if key in wanted:
            continue
        section, name = key
        if name not in components.get(section, {}):
            raise KeyError(f"dangling reference to components/{section}/{name}")
        wanted.add(key)
        queue.extend(_component_refs(components[section][name]) - wanted)
    for name in _security_names(items) | _security_names({"security": spec.get("security")}):
        wanted.add(("securitySchemes", name))
    kept: dict[str, Any] = {}
    for section, entries in components.items():
        chosen = {n: e for n, e in entries.items() if (section, n) in wanted}
        if chosen:
            kept[section] = chosen
    out: dict[str, Any] = {"openapi": spec["openapi"], "info": spec["info"]}
    out["servers"] = [{"url": server}, *spec.get("servers", [])]
    if spec.get("security") is not None:
        out["security"] = spec["security"]
    out["paths"] = items
    out["components"] = kept
    return out


def cut_discovery(doc: dict[str, Any]) -> dict[str, Any]:
    """The three list methods, the global parameters and the schemas they return."""
    resources: dict[str, Any] = {}
    for resource, method in GOOGLE_METHODS:
        entry = doc["resources"][resource]["methods"][method]
        resources.setdefault(resource, {"methods": {}})["methods"][method] = entry
    schemas: dict[str, Any] = {}
    queue = list(GOOGLE_SCHEMAS)
    while queue:
        name = queue.pop()
        if name in schemas:
            continue
        schemas[name] = doc["schemas"][name]
        queue.extend(
            cur["$ref"]
            for cur in _walk(schemas[name])
            if isinstance(cur, dict) and isinstance(cur.get("$ref"), str)
        )
    keep = ("id", "name", "version", "revision", "rootUrl", "servicePath", "baseUrl")
    out = {k: doc[k] for k in keep}
    out["parameters"] = doc["parameters"]
    out["resources"] = resources
    out["schemas"] = {name: schemas[name] for name in sorted(schemas)}
    return out


def _yaml_header(what: str, source: str, out: Path) -> str:
    return (
        f"# Subset of the {what} (the list operations orgsync's IdP source calls).\n"
        f"# Source: {source}.\n"
        "# GET operations and referenced #/components entries are copied unchanged\n"
        "# (re-serialised); only a relative server is prepended so any host matches.\n"
        "# GENERATED FILE, do not edit. Regenerate from the repository root with:\n"
        f"#   .venv/bin/python scripts/extract_idp_specs.py --out {out.parent}\n"
    )


def _write_yaml(subset: dict[str, Any], out: Path, header: str) -> None:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body = yaml.dump(subset, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)
    if yaml.load(body, Loader=loader) != subset:
        raise RuntimeError(f"YAML round trip changed {out}")
    out.write_text(header + body, encoding="utf-8")
    counts = ", ".join(f"{len(v)} {k}" for k, v in subset["components"].items())
    print(f"wrote {out}: {len(subset['paths'])} paths; components: {counts}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=Path, default=Path("../shared/specs"))
    parser.add_argument("--out", type=Path, default=Path("tests/data"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    with (args.specs / OKTA_FILE).open(encoding="utf-8") as fh:
        okta = yaml.load(fh, Loader=loader)
    out = args.out / OKTA_OUT
    _write_yaml(
        cut_openapi(okta, OKTA_PATHS, "/"),
        out,
        _yaml_header("Okta Admin Management API", OKTA_SOURCE, out),
    )

    with (args.specs / GRAPH_FILE).open(encoding="utf-8") as fh:
        graph = yaml.load(fh, Loader=loader)
    out = args.out / GRAPH_OUT
    _write_yaml(
        cut_openapi(graph, GRAPH_PATHS, "/v1.0"),
        out,
        _yaml_header("Microsoft Graph v1.0 API", GRAPH_SOURCE, out),
    )

    discovery = json.loads((args.specs / GOOGLE_FILE).read_text(encoding="utf-8"))
    subset = cut_discovery(discovery)
    subset["x-orgsync-source"] = (
        f"Subset of the Google Admin SDK Directory v1 discovery document. Source: "
        f"{GOOGLE_SOURCE}. Entries copied unchanged. GENERATED FILE, do not edit; "
        "regenerate with .venv/bin/python scripts/extract_idp_specs.py"
    )
    out = args.out / GOOGLE_OUT
    out.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(subset['schemas'])} schemas", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
