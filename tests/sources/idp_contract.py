"""Offline contract checks of recorded httpx exchanges with the Okta, Graph and Google APIs.

Owns the loading of the three vendor subsets in ``tests/data/`` (cut by
``scripts/extract_idp_specs.py``) and three checks per exchange: the request against the
operation (path, query parameters, auth), the response against the declared schema, and a
*strict keys* rule the vendor schemas alone do not give: every key of every object in a
listing must be a property the schema declares (OData `@odata.*` annotations excepted), so
a misspelt or invented field in an emulator fails here.

Two documented adjustments, made when loading, not in the data files:

* Graph: Microsoft's generator renders OData's open types as
  ``additionalProperties: {type: object}`` on every entity, and every entity is an
  ``allOf`` of its base types. Under JSON Schema that makes any real answer invalid (each
  string property of `user` is an "additional" non-object for `entity`, and so is
  `@odata.context`). Those entries are dropped; the strict-keys rule takes their place.
* Google: the discovery document is not JSON Schema; `discovery_schema` converts the
  parts the listings use (`type`, `properties`, `items`, `$ref`, `additionalProperties`,
  `format: int64` strings) into Draft 2020-12, with `additionalProperties: false` where
  the document declares none, so undeclared keys fail.

The httpx → openapi-core adapters come from ``tests/openapi_contract.py`` (reused, not
changed).
"""

from __future__ import annotations

import copy
import json
import warnings
from functools import cache
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev set
import yaml
from openapi_core import OpenAPI
from openapi_core.configurations import Config
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.responses.exceptions import ResponseNotFound

from tests.openapi_contract import ContractViolation, HttpxOpenAPIRequest, HttpxOpenAPIResponse

DATA = Path(__file__).parent.parent / "data"
OKTA_SPEC = DATA / "okta-idp-subset.yaml"
GRAPH_SPEC = DATA / "msgraph-idp-subset.yaml"
GOOGLE_DISCOVERY = DATA / "google-directory-subset.json"

Vendor = Literal["okta", "graph"]

__all__ = ["ContractViolation", "check_google", "check_openapi", "discovery_schema"]


def _load_yaml(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as fh:
        document: dict[str, Any] = yaml.load(fh, Loader=loader)
    return document


def _drop_open_type_markers(node: Any) -> None:
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            if cur.get("additionalProperties") == {"type": "object"}:
                del cur["additionalProperties"]
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


@cache
def _spec(vendor: Vendor) -> dict[str, Any]:
    if vendor == "okta":
        return _load_yaml(OKTA_SPEC)
    document = _load_yaml(GRAPH_SPEC)
    _drop_open_type_markers(document)
    return document


@cache
def _api(vendor: Vendor) -> OpenAPI:
    # Okta's full spec has known example/default mismatches (see SOURCES.md); validating
    # traffic does not need the spec itself validated.
    return OpenAPI.from_dict(copy.deepcopy(_spec(vendor)), config=Config(spec_validator_cls=None))


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        parts = schema["$ref"].removeprefix("#/").split("/")
        target: Any = document
        for part in parts:
            target = target[part]
        schema = target
    return schema


def declared_properties(document: dict[str, Any], schema: dict[str, Any]) -> set[str] | None:
    """Property names a schema declares through refs and allOf/anyOf/oneOf; None = open."""
    names: set[str] = set()
    stack = [schema]
    seen: set[int] = set()
    while stack:
        cur = _resolve(document, stack.pop())
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        names.update(cur.get("properties", {}))
        for key in ("allOf", "anyOf", "oneOf"):
            stack.extend(cur.get(key, []))
    return names


def _strict_keys(
    document: dict[str, Any], schema: dict[str, Any], value: Any, where: str, *, odata: bool
) -> None:
    """Every key of `value` (recursively into declared object/array properties) is declared."""
    schema = _resolve(document, schema)
    if isinstance(value, list):
        items = schema.get("items")
        if items is not None:
            for index, item in enumerate(value):
                _strict_keys(document, items, item, f"{where}[{index}]", odata=odata)
        return
    if not isinstance(value, dict):
        return
    kind = value.get("@odata.type") if odata else None
    if isinstance(kind, str):
        derived = document["components"]["schemas"].get(kind.removeprefix("#"))
        if derived is not None:
            schema = derived
    declared = declared_properties(document, schema) or set()
    if not declared:
        return  # a free-form object (e.g. Okta's UserProfile extensions, _embedded)
    for key, item in value.items():
        if odata and key.startswith("@odata."):
            continue
        if key not in declared:
            raise ContractViolation(f"{where}: key {key!r} is not declared by the schema")
        sub = _property_schema(document, schema, key)
        if sub is not None:
            _strict_keys(document, sub, item, f"{where}.{key}", odata=odata)


def _property_schema(
    document: dict[str, Any], schema: dict[str, Any], key: str
) -> dict[str, Any] | None:
    stack = [schema]
    while stack:
        cur = _resolve(document, stack.pop())
        if key in cur.get("properties", {}):
            found: dict[str, Any] = cur["properties"][key]
            return found
        for combinator in ("allOf", "anyOf", "oneOf"):
            stack.extend(cur.get(combinator, []))
    return None


def _matches(template: str, path: str) -> bool:
    """Whether `path` is an instance of the path template (`{name}` matches one segment)."""
    pattern, parts = template.split("/"), path.split("/")
    return len(pattern) == len(parts) and all(
        p == q or (p.startswith("{") and p.endswith("}"))
        for p, q in zip(pattern, parts, strict=True)
    )


def _response_schema(vendor: Vendor, response: httpx.Response) -> dict[str, Any] | None:
    """The declared 2xx body schema of the response's operation."""
    document = _spec(vendor)
    server = "/v1.0" if vendor == "graph" else ""
    path = response.request.url.path.removeprefix(server)
    for template, item in document["paths"].items():
        if _matches(template, path):
            responses = item["get"]["responses"]
            declared = responses.get("200") or responses.get("2XX")
            declared = _resolve(document, declared)
            schema: dict[str, Any] = declared["content"]["application/json"]["schema"]
            return schema
    return None


def check_openapi(vendor: Vendor, response: httpx.Response) -> None:
    """Validate request, response and strict keys of one exchange with Okta or Graph."""
    api = _api(vendor)
    label = f"{response.request.method} {response.request.url}"
    request = HttpxOpenAPIRequest(response.request)
    try:
        with warnings.catch_warnings():
            # Graph declares only an oauth2 scheme, which openapi-core cannot check (it
            # warns and passes); the bearer header is checked below instead.
            warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)
            api.validate_request(request)
    except OpenAPIError as exc:
        raise ContractViolation(f"{vendor} request {label}: {exc}") from exc
    if vendor == "graph" and not response.request.headers.get("authorization", "").startswith(
        "Bearer "
    ):
        raise ContractViolation(f"graph request {label}: no bearer token")
    try:
        api.validate_response(request, HttpxOpenAPIResponse(response))
    except ResponseNotFound as exc:
        if response.status_code < 400:
            raise ContractViolation(f"{vendor} {label}: undeclared {response.status_code}") from exc
        _check_undeclared_error(vendor, response)
    except OpenAPIError as exc:
        detail = "; ".join(
            str(getattr(e, "message", e))
            for cause in (exc.__cause__,)
            for e in (getattr(cause, "schema_errors", None) or [cause])
        )
        # The exception's own text quotes the whole body; the schema errors say what is wrong.
        raise ContractViolation(
            f"{vendor} {label} {response.status_code}: {type(exc).__name__}: {detail[:2000]}"
        ) from exc
    if 200 <= response.status_code < 300:
        schema = _response_schema(vendor, response)
        assert schema is not None, f"no declared schema for {label}"
        _strict_keys(_spec(vendor), schema, response.json(), label, odata=vendor == "graph")


def _check_undeclared_error(vendor: Vendor, response: httpx.Response) -> None:
    """An error status the operation does not declare: the vendor's error schema."""
    document = _spec(vendor)
    name = "Error" if vendor == "okta" else "microsoft.graph.ODataErrors.ODataError"
    schema = {"$ref": f"#/components/schemas/{name}"}
    body = response.json()
    validator = _openapi_validator(vendor, name)
    try:
        validator.validate(body)
    except OpenAPIError as exc:
        raise ContractViolation(f"{vendor} error body {body}: {exc}") from exc
    _strict_keys(document, schema, body, f"{vendor} error", odata=vendor == "graph")


def _openapi_validator(vendor: Vendor, name: str) -> Any:
    from openapi_core.validation.schemas import oas30_read_schema_validators_factory

    spec = _api(vendor).spec
    return oas30_read_schema_validators_factory.create(spec, spec / "components" / "schemas" / name)


# --------------------------------------------------------------------------- Google


@cache
def _discovery() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(GOOGLE_DISCOVERY.read_text(encoding="utf-8"))
    return document


def _convert(node: dict[str, Any]) -> dict[str, Any]:
    """One discovery schema node as JSON Schema (Draft 2020-12)."""
    if "$ref" in node:
        return {"$ref": f"#/$defs/{node['$ref']}"}
    out: dict[str, Any] = {}
    kind = node.get("type")
    if kind == "any":
        return {}
    if kind == "integer" and node.get("format") in ("int64", "uint64"):
        kind = "string"  # discovery: 64-bit integers travel as JSON strings
    if kind == "string" and node.get("format") in ("int64", "uint64"):
        out["pattern"] = r"^-?\d+$"
    if kind is not None:
        out["type"] = kind
    if "enum" in node:
        out["enum"] = node["enum"]
    if kind == "object" or "properties" in node:
        out["properties"] = {k: _convert(v) for k, v in node.get("properties", {}).items()}
        extra = node.get("additionalProperties")
        out["additionalProperties"] = _convert(extra) if isinstance(extra, dict) else False
    if kind == "array":
        out["items"] = _convert(node.get("items", {}))
    return out


@cache
def discovery_schema(name: str) -> dict[str, Any]:
    """The discovery schema `name` with every schema it references, as JSON Schema."""
    schemas = _discovery()["schemas"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {key: _convert(value) for key, value in schemas.items()},
        "$ref": f"#/$defs/{name}",
    }


def _method_for(request: httpx.Request) -> tuple[str, dict[str, Any]]:
    path = request.url.path.removeprefix("/admin/directory/v1/")
    for resource, entry in _discovery()["resources"].items():
        for method in entry["methods"].values():
            if _matches(method["path"].removeprefix("admin/directory/v1/"), path):
                return resource, method
    raise ContractViolation(f"google: {request.method} {request.url.path} is no listed method")


def _check_google_request(request: httpx.Request) -> dict[str, Any]:
    _, method = _method_for(request)
    if request.method != method["httpMethod"]:
        raise ContractViolation(f"google: {request.method} {request.url.path}: wrong method")
    allowed = {**_discovery()["parameters"], **method["parameters"]}
    for name, value in request.url.params.multi_items():
        spec = allowed.get(name)
        if spec is None or spec.get("location") != "query":
            raise ContractViolation(f"google: query parameter {name!r} is not declared")
        if spec.get("type") == "integer":
            if not value.isdigit():
                raise ContractViolation(f"google: {name}={value!r} is not an integer")
            low, high = spec.get("minimum"), spec.get("maximum")
            if (low is not None and int(value) < int(low)) or (
                high is not None and int(value) > int(high)
            ):
                raise ContractViolation(f"google: {name}={value} outside [{low}, {high}]")
        if "enum" in spec and value not in spec["enum"]:
            raise ContractViolation(f"google: {name}={value!r} not in {spec['enum']}")
    if "users" in request.url.path or request.url.path.endswith("/groups"):
        # users.list and groups.list: "You must provide either the customer or the domain".
        params = request.url.params
        if "customer" not in params and "domain" not in params:
            raise ContractViolation("google: customer or domain is required")
    return method


def check_google(response: httpx.Response) -> None:
    """Validate one exchange with the Directory API against the discovery document."""
    method = _check_google_request(response.request)
    if response.status_code >= 400:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if not (
            isinstance(error, dict)
            and isinstance(error.get("code"), int)
            and isinstance(error.get("message"), str)
        ):
            raise ContractViolation(f"google: error body {body} has no error.code/message")
        return
    schema = discovery_schema(method["response"]["$ref"])
    try:
        jsonschema.validate(response.json(), schema)
    except jsonschema.ValidationError as exc:
        raise ContractViolation(
            f"google: {response.request.url.path}: {exc.message} at {list(exc.absolute_path)}"
        ) from exc
