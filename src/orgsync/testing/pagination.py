"""The two list pagination styles vendor admin APIs use, for the emulators.

Owns paging only, not ordering: callers pass rows already in list order (an
`orgsync.testing.tables.Table` keeps it between requests). A page costs O(log N + limit):
the start is found by bisection, never by scanning or copying the rows.

* *By id* (OpenAI users, invites, admin keys): ``after`` is the id of the last object
  seen; the page reports ``first_id``, ``last_id``, ``has_more``.
* *By opaque cursor* (OpenAI roles, groups, group users/roles): ``after`` is the ``next``
  of the previous page; the cursor encodes the creation sequence number of the last object
  returned, so it stays valid when that object is deleted between pages.

The directories (Okta, Entra ID, Google) share the `PageFailure` test switch, and Entra ID
and Google an opaque *offset* page token (`offset_token`, `next_offset_token`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

_CURSOR_PREFIX = "seq:"


class InvalidCursorError(ValueError):
    """The ``after`` cursor was not produced by `page_by_cursor`."""


class Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


class Identified(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=Sequenced)
R = TypeVar("R", bound=Identified)


def page_by_id(
    rows: Sequence[R],
    after: str | None,
    limit: int,
    render: Callable[[R], dict[str, Any]],
    *,
    id_sorted: bool = True,
) -> dict[str, Any]:
    """One page of ``rows`` after the object whose id is ``after``; only it is rendered.

    When the list order is by id, an ``after`` that is no longer present (deleted between
    pages) still works: everything sorting after it follows. Otherwise an unknown ``after``
    yields an empty page.
    """
    if after is None:
        start = 0
    elif id_sorted:
        start = bisect.bisect_right(rows, after, key=_id)
    else:
        ids = [r.id for r in rows]
        start = ids.index(after) + 1 if after in ids else len(ids)
    page = [render(r) for r in rows[start : start + limit]]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + len(page) < len(rows),
    }


def _id(row: Identified) -> str:
    return row.id


def _seq(row: Sequenced) -> int:
    return row.seq


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The sequence number inside ``cursor``; raises `InvalidCursorError`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursorError(cursor) from exc
    number = raw.removeprefix(_CURSOR_PREFIX)
    if number == raw or not number.isdigit():
        raise InvalidCursorError(cursor)
    return int(number)


def page_by_cursor(
    rows: Sequence[T],
    after: str | None,
    limit: int,
    order: str,
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``rows`` (ascending by ``seq``) in ``order``, after cursor ``after``.

    Raises `InvalidCursorError` for a cursor this module did not make.
    """
    pos = None if after is None else decode_cursor(after)
    if order == "asc":
        start = 0 if pos is None else bisect.bisect_right(rows, pos, key=_seq)
        page = list(rows[start : start + limit])
        remaining = len(rows) - start
    else:
        end = len(rows) if pos is None else bisect.bisect_left(rows, pos, key=_seq)
        page = list(rows[max(0, end - limit) : end])[::-1]
        remaining = end
    has_more = remaining > len(page)
    if page:
        cursor_seq = page[-1].seq
    elif pos is not None:
        cursor_seq = pos
    else:
        # limit=0 on the first page: a cursor that starts from the beginning.
        cursor_seq = 0 if order == "asc" else (rows[-1].seq + 1 if rows else 0)
    return {
        "object": "list",
        "data": [render(r) for r in page],
        "has_more": has_more,
        "next": encode_cursor(cursor_seq) if has_more else None,
    }


# ------------------------------------------------------------------ directories

Listing = Literal["users", "groups", "members"]


@dataclass
class PageFailure:
    """Page `page` (1-based) of `listing` cannot be had.

    `mode`: "error" answers it with a server error forever (Okta and Graph 500, Google
    503); "bad_cursor" makes the link to it carry a cursor the server rejects (as an
    expired one); "loop" makes the link to it point back to the page before (an
    inconsistent sequence). For "members", `group` names the group (None: every group
    with that many pages).
    """

    listing: Listing
    page: int
    mode: Literal["error", "bad_cursor", "loop"] = "error"
    group: str | None = None


def failure_for(
    failure: PageFailure | None, listing: Listing, group: str | None
) -> PageFailure | None:
    """`failure` when it concerns this listing (and group), else None."""
    if failure is None or failure.listing != listing:
        return None
    if failure.group is not None and failure.group != group:
        return None
    return failure


def offset_token(listing: str, group: str | None, offset: int) -> str:
    """An opaque page token for `offset` into one listing (of one group's members)."""
    raw = f"{listing}:{group or ''}:{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_offset(token: str, listing: str, group: str | None) -> int | None:
    """The offset `offset_token` put in `token`, or None if it is not one of this listing's."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    name, _, rest = raw.partition(":")
    owner, _, offset = rest.rpartition(":")
    if name != listing or owner != (group or "") or not offset.isdigit():
        return None
    return int(offset)


def next_offset_token(
    failure: PageFailure | None,
    listing: str,
    group: str | None,
    *,
    offset: int,
    taken: int,
    page_no: int,
) -> str:
    """The token of the page after page `page_no` (at `offset`, holding `taken` rows),
    spoilt as `failure` asks when that next page is the failing one."""
    if failure is not None and page_no + 1 == failure.page:
        if failure.mode == "bad_cursor":
            return offset_token(listing, "expired", offset + taken)
        if failure.mode == "loop":
            return offset_token(listing, group, offset)
    return offset_token(listing, group, offset + taken)
