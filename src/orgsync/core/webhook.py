"""A webhook delivery, read: what it asks for, and the bounded JSON every reader shares.

Pure (no I/O): the daemon's receivers (`orgsync.daemon.webhooks`) verify and answer; the
identity providers' connectors (`okta`, `entra`) read their vendor's deliveries with
`parse_json` and return a `WebhookEvent`, or raise `Refused` with the HTTP status the
daemon answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

UNNAMED: Final = "unnamed:"
"""Prefix of a key that names no event: a notification the vendor sent without an id (Graph
omits it on directory objects), keyed by its body. The same body is also what the next
change to that person sends, so such a key is remembered for a minute, never a vendor's
day: a copy seen after that costs one more targeted run (idempotent),
while a longer memory would drop a real change (a leaver disabled after an earlier edit
that day) until the next scheduled pass."""

MAX_DEPTH: Final = 32
"""Deepest JSON nesting a webhook body may have (Okta's and Graph's nest about six)."""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """What a verified delivery asks for: whom to reconcile (nobody named: everybody)."""

    kind: str
    emails: frozenset[str] = frozenset()
    source_ids: frozenset[str] = frozenset()
    targets: tuple[str, ...] | None = None
    """Target names the event is for; None for every target."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What makes a delivery the same one sent again: its `keys` (an event id, Okta's
    event uuids, Graph notification digests), remembered for `window` seconds."""

    kind: str
    keys: tuple[str, ...]
    window: float


class Refused(Exception):
    """A delivery refused with `status`; `result` is the metric label."""

    def __init__(self, status: int, result: str, message: str) -> None:
        super().__init__(message)
        self.status, self.result, self.message = status, result, message


WebhookParser = Callable[[bytes, str], tuple[list[str], WebhookEvent]]
"""`(body, secret)` → (the delivery's event keys for de-duplication, the event); the
secret is what the vendor puts in the body (Graph's `clientState`), else empty."""


def is_text(value: object) -> TypeGuard[str]:
    """A string that can be stored and logged: JSON's `\\ud800` gives a lone surrogate."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# JSON's structure, outside strings, reduced to brackets: escapes first (`\\` pairs, then
# `\"`), so that every `"` left opens or closes a string; `{}` count as `[]`, since only
# the depth matters. A body whose brackets do not fullmatch `_NESTED` (at most MAX_DEPTH
# levels, balanced) is refused before the recursive `json.loads` sees it. Each step is a
# C-level pass (bytes.replace, translate, split, one possessive regex): linear, no stack.
_STRUCTURE: Final = b'"[]{}'
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in _STRUCTURE)
_ONE_BRACKET_KIND: Final = bytes.maketrans(b"{}", b"[]")


def _nested_pattern(depth: int) -> re.Pattern[bytes]:
    pattern = ""
    for _ in range(depth):
        pattern = r"(?:\[" + pattern + r"\])*+"
    return re.compile(pattern.encode())


_NESTED: Final = _nested_pattern(MAX_DEPTH)


def nesting_problem(body: bytes) -> str | None:
    """Why `body`'s JSON brackets cannot be parsed safely (too deep, or not balanced), or
    None when they are balanced and at most `MAX_DEPTH` deep."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = unescaped.translate(_ONE_BRACKET_KIND, _NOT_STRUCTURE).replace(b'""', b"")
    # Between the 2k-th and (2k+1)-th quote is string content: keep the even pieces.
    # (Dropping a `""` pair above moves no character to the other side of a quote.)
    outside = b"".join(marks.split(b'"')[::2])
    if _NESTED.fullmatch(outside) is not None:
        return None
    if outside.count(b"[") != outside.count(b"]"):
        return "its brackets do not balance"
    return f"it is nested deeper than {MAX_DEPTH} levels"


def parse_json(body: bytes) -> Any:
    """The JSON document in `body`; `Refused` (400, `malformed`) for anything else.

    UTF-8 only (RFC 8259), nested at most `MAX_DEPTH` deep, numbers of at most 4300
    digits (Python's int limit): never an exception other than `Refused`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Refused(
            400, "malformed", f"body is not UTF-8 (invalid byte at offset {error.start})"
        ) from None
    problem = nesting_problem(body)
    if problem is not None:
        raise Refused(400, "malformed", f"body is not JSON this daemon reads: {problem}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise Refused(400, "malformed", f"body is not JSON: {error}") from None
    except (ValueError, RecursionError):  # past int's digit limit; depth is checked above
        raise Refused(
            400, "malformed", "body is not JSON this daemon reads: a number is too long"
        ) from None


def first_string_member(body: bytes, name: str) -> str | None:
    """The string value of the first member `name` in `body`'s raw bytes, found without
    parsing the document (None: none found, or not a valid string). For a secret a
    vendor puts in the body (Graph's `clientState`): a forgery is refused before the
    whole body is parsed (a search stopping at the first match, rather than a parse of
    up to a mebibyte).

    A quick look, not a parser: a member name spelled with escapes is not found, and a
    crafted name ending in `\\"name` is taken for it. So it may only refuse early, never
    accept: the caller still checks the parsed document, every item of it.
    """
    pattern = b'"' + re.escape(name.encode()) + rb'"[ \t\n\r]*+:[ \t\n\r]*+"((?:[^"\\]|\\.)*+)"'
    match = re.search(pattern, body)
    if match is None:
        return None
    try:
        value = json.loads(b'"' + match.group(1) + b'"')
    except (ValueError, UnicodeDecodeError):
        return None
    return value if is_text(value) else None
