"""The change cursor of the sources that probe by time with an overlap (Okta, Google).

A cursor is a time (on the earlier of orgsync's clock and the provider's) less an
overlap, and the versions of what was already seen inside that overlap, so that a change
stamped late is still found and a change is reported once. Both providers write times in
milliseconds; the cursor is JSON, as the state database keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from orgsync.core.errors import CursorExpired


def iso_millis(moment: datetime) -> str:
    """`moment` in UTC as the providers write times: `2026-12-03T09:00:00.000Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def earlier(ours: datetime, theirs: datetime | None) -> datetime:
    """The earlier of orgsync's clock and the provider's (its `Date`): a cursor on it never
    lies after a change the provider stamps from then on."""
    return ours if theirs is None or ours <= theirs else theirs


def dump_cursor(since: datetime, seen: Mapping[str, str]) -> str:
    return json.dumps({"since": iso_millis(since), "seen": dict(seen)})


def load_cursor(cursor: str, *, system: str) -> tuple[datetime, dict[str, str]]:
    """The time and the versions seen of a cursor `dump_cursor` wrote; anything else is
    `CursorExpired` (the pass reads the source whole)."""
    try:
        value = json.loads(cursor)
        since = datetime.fromisoformat(str(value["since"]).replace("Z", "+00:00"))
        seen = {str(k): str(v) for k, v in dict(value["seen"]).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CursorExpired(
            f"{system}: the change cursor is not one this source wrote ({error})"
        ) from None
    if since.tzinfo is None:
        raise CursorExpired(f"{system}: the change cursor's time has no time zone")
    return since, seen
