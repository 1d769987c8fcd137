"""Arbitrary and mutated configuration files: never a traceback, always a `ConfigError`
that names a key or a line, in the operator's words, never repeating a secret."""

from __future__ import annotations

import math
import re
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orgsync.config import load_config
from orgsync.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")
SECRET = "sk-SECRET-0123456789abcdef"

_KEY = r'("(\\.|[^"\\\n])*"|[A-Za-z0-9_-]+)'
_PATH = rf"(\(top level\)|{_KEY}(\[\d+\]|\.{_KEY})*)"
NAMES_A_PLACE = re.compile(
    r"^\S+: (line \d+, column \d+: not valid TOML|not UTF-8 text)"
    rf"|^\S+: invalid configuration(\n  (line \d+: )?{_PATH}: [^\n]+)+$"
)
PYDANTIC_WORDS = re.compile(r"Input should|Value error|Extra inputs|validation error|type=")

SOURCES: list[dict[str, Any]] = [
    {"type": "file", "path": "directory.json"},
    {"type": "scim", "url": "https://idp.example.com/scim/v2", "token_env": "T"},
    {
        "type": "ldap",
        "url": "ldaps://ldap.example.com",
        "bind_dn": "cn=o",
        "bind_password_env": "P",
        "users_base": "ou=p",
        "groups_base": "ou=g",
    },
    {"type": "okta", "url": "https://x.okta.com", "token_env": "T"},
    {"type": "entra", "tenant_id": "t", "client_id": "c", "client_secret_env": "S"},
    {"type": "google", "subject": "a@example.com", "credentials_file": "g.json"},
]
TARGETS: list[dict[str, Any]] = [
    {
        "name": "openai-prod",
        "type": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "K",
        "default_role": "reader",
        "scope_groups": ["openai-*"],
        "roles": [{"group": "openai-owners", "role": "owner"}],
    },
    {
        "name": "kc",
        "type": "keycard",
        "base_url": "https://api.keycard.ai",
        "client_id": "c",
        "client_secret_env": "S",
        "organization_id": "acme",
    },
    {
        "name": "scim",
        "type": "scim",
        "base_url": "https://scim.example.com",
        "api_key_env": "K",
        "groups": [{"source": "eng-*", "name": "{source}"}],
    },
]
SECTIONS: dict[str, dict[str, Any]] = {
    "safety": {"max_removals": 10, "max_removal_ratio": 0.05, "removal_grace": "1d"},
    "state": {"path": "orgsync.db", "lease_ttl": "10m"},
    "schedule": {"interval": "15m", "jitter": "30s"},
    "server": {"listen": "127.0.0.1:8080", "webhook_secret_env": "W"},
}

scalars = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "30s", "-1s", "1e400s", "99999999999999999d", "http://x", SECRET]),
    st.sampled_from(["https://user:pw@x.example.com", "ftp://x", "https://", "[", "eng-[", "{x}"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=3),
    ),
    max_leaves=6,
)
keys = st.one_of(
    st.sampled_from(
        [
            "type",
            "name",
            "path",
            "url",
            "api_key",
            "api_key_env",
            "token",
            "scope_groups",
            "roles",
            "groups",
            "max_removals",
            "max_removal",
            "interval",
            "listen",
            "typ",
            "base_url",
            "default_role",
            "protected",
            "on_removal",
            "timeout",
            "page_size",
        ]
    ),
    st.text(min_size=1, max_size=12),
)


def toml_string(text: str) -> str:
    escaped = "".join(
        f"\\{c}" if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or c == "\x7f" else c
        for c in text
    )
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    """Top-level tables one per line as inline values; valid TOML for any of our shapes."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in document.items())


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {
        "source": dict(draw(st.sampled_from(SOURCES))),
        "targets": [dict(t) for t in draw(st.lists(st.sampled_from(TARGETS), max_size=2))],
    }
    for name in draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True)):
        document[name] = dict(SECTIONS[name])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        tables = [document, *(v for v in document.values() if isinstance(v, dict))]
        targets = document.get("targets")
        if isinstance(targets, list):
            tables += [t for t in targets if isinstance(t, dict)]
        table = draw(st.sampled_from(tables))
        action = draw(st.sampled_from(["set", "delete", "rename"]))
        if action == "set" or not table:
            table[draw(keys)] = draw(values)
        elif action == "delete":
            del table[draw(st.sampled_from(sorted(table)))]
        else:
            old = draw(st.sampled_from(sorted(table)))
            typo = draw(st.sampled_from([old + "s", old[:-1] or "k", old.replace("_", "")]))
            table[typo] = table.pop(old)
    return document


def check(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "orgsync.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as error:
        message = str(error)
        assert NAMES_A_PLACE.match(message), message
        assert not PYDANTIC_WORDS.search(message), message
        assert SECRET not in message, message


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=mutated_documents())
def test_a_mutated_document_is_loaded_or_refused_by_key(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    text = toml_document(document)
    tomllib.loads(text)  # the generator itself writes valid TOML
    check(tmp_path, text)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=len(EXAMPLE)),
    drop=st.integers(min_value=0, max_value=20),
    insert=st.text(max_size=12),
)
def test_an_edited_example_file_is_loaded_or_refused_by_line_or_key(
    tmp_path: Path, cut: int, drop: int, insert: str
) -> None:
    check(tmp_path, EXAMPLE[:cut] + insert + EXAMPLE[cut + drop :])


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_by_line(tmp_path: Path, data: bytes) -> None:
    check(tmp_path, data)
