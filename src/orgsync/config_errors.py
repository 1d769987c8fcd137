"""Configuration mistakes in the operator's words, never the validation library's.

Owns the translation of pydantic's validation errors into one line per mistake: the key
path (`targets[0].scope_groups`), the line of the file where the key (or its table)
is, and what to write instead: the valid values of a choice, the nearest known key for
a typo ("did you mean max_removals?"), the table a key belongs in, and for a secret
written into the file, the `*_env`/`*_file` keys to use. A value is quoted only for
keys whose values are choices or names; a secret's value is never repeated.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from orgsync.core.errors import ConfigError

Location = tuple[str | int, ...]

_ARRAY_HEADER = re.compile(r"^\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(
    r"""^((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)

_NOT_TARGETS = {
    "nirvana": (
        "Nirvana Labs has no target type: its API cannot invite, change or remove members "
        '(see README, "Supported targets": configure the organization\'s SCIM endpoint as '
        'type = "scim" where SCIM is enabled)'
    ),
    "archera": (
        "Archera has no target type: its API cannot list, invite or remove members "
        '(see README, "Supported targets": members are managed in Archera\'s web UI)'
    ),
}

_LISTS = {
    "scope_groups": 'a list of group patterns, e.g. scope_groups = ["openai-*"]',
    "protected": 'a list of email addresses, e.g. protected = ["admin@example.com"]',
    "roles": 'a list of role names, e.g. roles = ["reader"]',
    "targets": "[[targets]] tables, one per organization",
    "invite_projects": 'a list of projects, e.g. invite_projects = [{ id = "proj_abc" }]',
}
_TABLE_LISTS = {"roles": "[[targets.roles]]", "groups": "[[targets.groups]]"}

_QUOTABLE = re.compile(r"^[\w .:/@*?\[\]{}-]{0,60}\Z")
"""Values short and plain enough to repeat back (choices, names); anything else is not."""
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9]{16,}")
"""A run no choice or name has, and most credentials do (`sk-proj-…`, `ghp_…`, AWS keys):
such a value pasted into `type` is not repeated either."""


_TLS_OFF = re.compile(r"(?i)verif|insecure|^(tls|ssl)$|no_?(tls|ssl)|disable_?(tls|ssl)")
"""Keys an administrator writes to switch certificate checks off (`verify = false`,
`insecure = true`, `tls_verify`, `ssl_verify`); `start_tls` is LDAP's own key."""


def key_lines(text: str) -> dict[Location, int]:
    """Where each table and key of a TOML document starts, by key path.

    Array-of-tables entries get their index (`("targets", 1, "name")`), as in pydantic's
    error locations. A best-effort scan: keys inside inline tables and multi-line values
    are not seen (their enclosing key is).
    """
    lines: dict[Location, int] = {}
    arrays: dict[Location, int] = {}
    table: Location = ()
    in_multiline = False

    def resolve(parts: Iterable[str]) -> Location:
        path: list[str | int] = []
        for part in parts:
            path.append(part)
            index = arrays.get(tuple(path))
            if index is not None:
                path.append(index)
        return tuple(path)

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        toggles = line.count('"""') + line.count("'''")
        if in_multiline:
            in_multiline = toggles % 2 == 0
            continue
        if match := _ARRAY_HEADER.match(line):
            parts = _split_key(match.group(1))
            path = (*resolve(parts[:-1]), *parts[-1:])
            index = arrays.get(path, -1) + 1
            arrays[path] = index
            table = (*path, index)
            lines.setdefault(table, number)
        elif match := _TABLE_HEADER.match(line):
            table = resolve(_split_key(match.group(1)))
            lines.setdefault(table, number)
        elif match := _KEY.match(line):
            lines.setdefault((*table, *_split_key(match.group(1))), number)
        in_multiline = toggles % 2 == 1
    return lines


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", dotted)
    return [part.strip("\"'") for part in parts]


@dataclass(frozen=True, slots=True)
class Schema:
    """The configuration's models, as the explanation needs them."""

    root: type[BaseModel]
    sources: Mapping[str, type[BaseModel]]
    """`[source] type` → its model, for the types loaded."""
    notify: Mapping[str, type[BaseModel]]
    """`[[notify]] type` → its model (the other discriminated union)."""
    sections: Mapping[str, type[BaseModel]]
    """Table name → model, to say in which table a misplaced key belongs."""
    source_types: Sequence[str] = ()
    """Every `[source] type` installed, in the order errors list them."""
    source: type[BaseModel] | None = None
    """The model of this document's `[source]` table (None: its type is unknown)."""
    targets: Sequence[type[BaseModel] | None] = ()
    """The model of each `[[targets]]` table, by index (None: its type is unknown)."""
    target_types: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    """`[[targets]] type` → its model, for the types loaded (to say which type a key
    belongs to)."""


def explain(error: ValidationError, *, origin: str, text: str, schema: Schema) -> ConfigError:
    """One line per mistake, each naming its key path, its line, and what to write."""
    lines = key_lines(text)
    found = []
    for problem in error.errors(include_url=False):
        raw = tuple(problem["loc"])
        path = _strip_tags(raw)
        where = _location(path) or "(top level)"
        line = _line_of(_anchor(problem, raw, path, schema), lines)
        at = f"line {line}: " if line is not None else ""
        found.append(f"  {at}{where}: {_message(problem, raw, path, schema)}")
    return ConfigError(f"{origin}: invalid configuration\n" + "\n".join(found))


def located(problems: Sequence[tuple[Location, str]], *, origin: str, text: str) -> ConfigError:
    """A refusal in `explain`'s form for mistakes found after validation (a `ca_file`
    that is not a CA bundle): each by its key path and line."""
    lines = key_lines(text)
    found = []
    for path, message in problems:
        line = _line_of(path, lines)
        at = f"line {line}: " if line is not None else ""
        found.append(f"  {at}{_location(path)}: {message}")
    return ConfigError(f"{origin}: invalid configuration\n" + "\n".join(found))


def _anchor(problem: ErrorDetails, raw: Location, path: Location, schema: Schema) -> Location:
    """The key whose line a message points at: a model-wide check (`jitter must be
    shorter than interval`) points at the first key it names."""
    if problem["type"].startswith("union_tag"):
        return (*path, "type")
    if problem["type"] == "value_error":
        model = _model_at(raw, schema)
        first = re.match(r"[a-z_]+", str(problem["msg"]).removeprefix("Value error, "))
        if model is not None and first is not None and first.group(0) in model.model_fields:
            return (*path, first.group(0))
    return path


def _strip_tags(loc: Location) -> Location:
    """Drop the discriminator tag pydantic puts after a `[[notify]]` entry's index
    (`notify[0].slack.url`); `[source]` and `[[targets]]` tables are validated by their
    type's model, with no tag in the location."""
    if len(loc) >= 3 and loc[0] == "notify" and isinstance(loc[1], int) and isinstance(loc[2], str):
        return (*loc[:2], *loc[3:])
    return loc


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,60}\Z")


def _location(path: Location) -> str:
    """`targets[0].roles[1].role`; a key that is not a bare TOML key is quoted (and cut)."""
    parts: list[str] = []
    for item in path:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        name = item if _BARE_KEY.match(item) else json.dumps(item[:40])
        parts.append(("." if parts else "") + name)
    return "".join(parts)


def _line_of(path: Location, lines: Mapping[Location, int]) -> int | None:
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _message(problem: ErrorDetails, raw: Location, path: Location, schema: Schema) -> str:
    kind = problem["type"]
    ctx = problem.get("ctx") or {}
    key = next((p for p in reversed(path) if isinstance(p, str)), "")
    value = problem.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(key, raw, schema)
    if kind == "missing":
        return _missing(key, path)
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        what, tags = (
            ("notification", list(schema.notify))
            if path[:1] == ("notify",)
            else ("source", list(schema.source_types or schema.sources))
        )
        if kind == "union_tag_not_found":
            return f"type is required: one of {', '.join(tags)}"
        return (
            f"type = {_quote(ctx.get('tag'))} is not a {what} type; use one of: {', '.join(tags)}"
        )
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        if key == "type" and path[:1] == ("targets",):
            special = _NOT_TARGETS.get(str(value).strip().casefold())
            if special is not None:
                return f"{special}; the supported target types are: {choices}"
            return f"type = {_quote(value)} is not a target type; use one of: {choices}"
        return f"{_quote(value)} is not allowed; use one of: {choices}"
    if kind in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
        bound = next(iter(ctx.values()), "?")
        words = {
            "greater_than_equal": "at least",
            "greater_than": "more than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }[kind]
        return f"must be {words} {bound}"
    if kind in {"string_too_short", "too_short"}:
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        if key == "name":
            return (
                "a target name is letters, digits, '.', '_' and '-', starting with a letter "
                "or digit (it is used by --target and in the state database)"
            )
        return f"does not have the expected form ({ctx.get('pattern')})"
    if kind == "value_error":
        return str(problem["msg"]).removeprefix("Value error, ")
    return _wrong_type(kind, key, path)


def _quote(value: object) -> str:
    """A value repeated back only when it is short and plain (a choice, not a secret)."""
    if isinstance(value, str) and _QUOTABLE.match(value) and not _TOKEN_LIKE.search(value):
        return repr(value)
    if isinstance(value, bool | int | float) and len(repr(value)) <= 20:
        return repr(value).lower() if isinstance(value, bool) else repr(value)
    return "the value given"


def _wrong_type(kind: str, key: str, path: Location) -> str:
    if kind in {"tuple_type", "list_type", "iterable_type"}:
        if key in _TABLE_LISTS and len(path) >= 2 and path[0] == "targets":
            return f"must be {_TABLE_LISTS[key]} tables"
        return f"must be {_LISTS.get(key, 'a list')}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return "must be a whole number"
    if kind in {"float_type", "float_parsing", "finite_number"}:
        return "must be a number"
    if kind in {"bool_type", "bool_parsing"}:
        return "must be true or false (without quotes)"
    if kind in {"string_type", "string_sub_type"}:
        return "must be text in quotes"
    if kind in {"path_type", "path_parsing"}:
        return 'must be a file path in quotes, e.g. "directory.json"'
    if kind in {"time_delta_type", "time_delta_parsing"}:
        return 'must be a duration such as "30s", "15m", "1h" or "7d"'
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        if len(path) >= 2 and isinstance(path[-1], int):
            return "must be a table"
        return f"must be a [{_location(path)}] table, not a single value"
    if kind == "union_tag_not_found":
        return "type is required"
    return "has a value of the wrong kind"


def _missing(key: str, path: Location) -> str:
    if path == ("source",):
        return "required: add a [source] table (the identity provider)"
    if path == ("targets",):
        return "required: add at least one [[targets]] table"
    return f"required key {key} is missing"


def _unknown_key(key: str, raw: Location, schema: Schema) -> str:
    model = _model_at(raw[:-1], schema)
    known = set(model.model_fields) if model is not None else set()
    if f"{key}_env" in known or f"{key}_file" in known:
        # The value is not repeated: it is likely the secret itself.
        return (
            f"a secret never sits in the configuration file: put it in an environment "
            f"variable and give its name as {key}_env, or put it in a file and give the "
            f"path as {key}_file (the value written here is not shown)"
        )
    if _TLS_OFF.search(key) and "ca_file" in known:
        return (
            "unknown key: TLS verification cannot be turned off; to trust a private CA "
            "give its certificate as ca_file, and for a plain http:// or ldap:// test rig "
            "set allow_plaintext = true"
        )
    if raw[:1] == ("targets",) and len(raw) == 3:
        owners = [tag for tag, m in schema.target_types.items() if key in m.model_fields]
        if owners:
            return f"unknown key here; {key} is a key of type = {' or '.join(owners)} targets"
    home = [name for name, section in schema.sections.items() if key in section.model_fields] + [
        f"source (type = {tag})" for tag, m in schema.sources.items() if key in m.model_fields
    ]
    here = _location(_strip_tags(raw[:-1]))
    home = [h for h in home if h != here and not (here == "source" and h.startswith("source"))]
    if home:
        return f"unknown key here; {key} belongs in [{home[0]}]"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return "unknown key"


def _model_at(loc: Location, schema: Schema) -> type[BaseModel] | None:
    """The model whose fields are valid at `loc` (a pydantic location, tags included)."""
    model: type[BaseModel] | None = schema.root
    items = list(loc)
    while items and model is not None:
        item = items.pop(0)
        if isinstance(item, int):
            continue
        declared = model.model_fields.get(item)
        if declared is None:
            return None
        if model is schema.root and item == "source" and schema.source is not None:
            model = schema.source
            continue
        if model is schema.root and item == "targets" and items and isinstance(items[0], int):
            index = items.pop(0)
            assert isinstance(index, int)
            chosen = schema.targets[index] if index < len(schema.targets) else None
            if chosen is not None:
                model = chosen
                continue
        candidates = list(_models_in(declared.annotation))
        if len(candidates) > 1:
            if item == "notify" and items and isinstance(items[0], int):
                items.pop(0)  # the entry's index, then its tag
            tag = items.pop(0) if items and isinstance(items[0], str) else None
            union = schema.notify if item == "notify" else schema.sources
            model = union.get(str(tag)) if tag is not None else None
        else:
            model = candidates[0] if candidates else None
    return model


def _models_in(annotation: Any) -> Iterable[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if annotation in (None, str, int, float, bool, Path, timedelta):
        return
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


def toml_error(origin: str, error: Exception, text: str) -> ConfigError:
    """`orgsync.toml: line 3, column 7: not valid TOML: …` from tomllib's message."""
    message = str(error)
    match = _TOML_POSITION.search(message)
    if match is None:
        return ConfigError(f"{origin}: not valid TOML: {message}")
    if match.group(1) is not None:
        line, column = int(match.group(1)), int(match.group(2))
    else:  # "at end of document": the position just after the last character
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    reason = message[: match.start()]
    return ConfigError(f"{origin}: line {line}, column {column}: not valid TOML: {reason}")
