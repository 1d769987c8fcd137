"""The file source: a JSON export of people and groups (docs/reference.md, `[source]`
`type = "file"`).

A person record with an id but a bad field (no email, a name that is not text) becomes a
`RejectedRecord` naming the record and the field: reported on every run, never acted on,
and never taken for an absence, while everybody else syncs. Anything that cannot be tied
to one person refuses the whole read with a `SourceDataError` naming the record: a
record without an id, a repeated id, a malformed group (its members decide who is in
scope, so skipping it would read as "these people left"), or a broken document.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from orgsync.core.collector import paused
from orgsync.core.errors import SourceDataError, SourceError
from orgsync.core.model import (
    RejectedRecord,
    SourceGroup,
    SourceId,
    SourcePerson,
    SourceSnapshot,
)

# The file source is read by `validate --offline`, which never asks for a probe's status:
# it does not pay for the ports' import (tests/cli/test_startup_imports.py).
if TYPE_CHECKING:
    from orgsync.core.ports import ProbeStatus

_PERSON_FIELDS = {"id", "email", "name", "active"}


class FileSource:
    """Reads `{"people": [...], "groups": [...]}` from a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> SourceSnapshot:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise SourceError(
                f"{self.path}: cannot read the directory file: {error.strerror}"
            ) from error
        except UnicodeDecodeError as error:
            raise SourceDataError(f"{self.path}: not UTF-8 text ({error.reason})") from error
        return _snapshot(text, origin=str(self.path))

    def change_probe_status(self, people: int, groups: int) -> ProbeStatus:
        """Nothing to probe: an incremental pass reads the file and compares it."""
        from orgsync.core.ports import ProbeState, ProbeStatus

        return ProbeStatus(
            ProbeState.NOT_APPLICABLE,
            cost=(
                "each pass reads the file and compares it with the last one "
                "(snapshot diff, 0 calls)"
            ),
        )


@paused
def _snapshot(text: str, *, origin: str) -> SourceSnapshot:
    # Parsing and building allocate a few objects per person and membership, all alive
    # until the snapshot is built, and no garbage cycles: the collector's passes over
    # them (and everything else alive) would find nothing (see `orgsync.core.collector`).
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceDataError(
            f"{origin}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from error
    except RecursionError:  # Python's parser stops near a thousand levels deep
        raise SourceDataError(f"{origin}: the JSON nests too deeply to be a directory") from None
    return parse_directory(document, origin=origin)


def parse_directory(document: Any, *, origin: str) -> SourceSnapshot:
    """Validate a parsed directory document and build the snapshot."""
    if not isinstance(document, dict):
        raise SourceDataError(f"{origin}: the top level must be an object with 'people'")
    unknown = sorted(set(document) - {"people", "groups"})
    if unknown:
        raise SourceDataError(f"{origin}: unknown top-level key(s): {', '.join(unknown)}")
    people_docs = document.get("people")
    if not isinstance(people_docs, list):
        raise SourceDataError(f"{origin}: 'people' must be a list")
    group_docs = document.get("groups", [])
    if not isinstance(group_docs, list):
        raise SourceDataError(f"{origin}: 'groups' must be a list")

    # Where each id was first used, for the duplicate message: a person's index, or for
    # a group -1 - its index (a string per record would cost memory at 100k people).
    ids: dict[str, int] = {}
    people: list[SourcePerson] = []
    rejected: list[RejectedRecord] = []
    for index, doc in enumerate(people_docs):
        person = _person(doc, index, ids, origin)
        if isinstance(person, SourcePerson):
            people.append(person)
        else:
            rejected.append(person)
    groups = tuple(_group(doc, index, ids, origin) for index, doc in enumerate(group_docs))
    known = ids.__contains__
    for index, group in enumerate(groups):
        # `all(map(...))` runs at C speed: a million memberships are checked in
        # milliseconds; the message then looks for the first unknown member.
        if not all(map(known, group.members)):
            member = next(m for m in group.members if m not in ids)
            raise SourceDataError(
                f"{origin}: groups[{index}] (id {group.id!r}): member {member!r} is neither "
                "a person id nor a group id"
            )
    return SourceSnapshot(people=tuple(people), groups=groups, rejected=tuple(rejected))


def _where(position: int) -> str:
    return f"people[{position}]" if position >= 0 else f"groups[{-1 - position}]"


def _record_id(doc: Mapping[str, Any], position: int, ids: dict[str, int], origin: str) -> str:
    record_id = doc.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        raise SourceDataError(f"{origin}: {_where(position)}: 'id' must be a non-empty string")
    first = ids.setdefault(record_id, position)
    if first != position:
        raise SourceDataError(
            f"{origin}: {_where(position)}: duplicate id {record_id!r} "
            f"(first used by {_where(first)})"
        )
    return record_id


_NO_ATTRIBUTES: Mapping[str, object] = MappingProxyType({})


def _person(
    doc: Any, index: int, ids: dict[str, int], origin: str
) -> SourcePerson | RejectedRecord:
    if not isinstance(doc, dict):
        raise SourceDataError(f"{origin}: people[{index}]: must be an object")
    # Interned, as group members are: one object per id however many groups list it
    # (memory), and the rules' look-ups compare by identity.
    record_id = SourceId(sys.intern(_record_id(doc, index, ids, origin)))
    email = doc.get("email")
    shown = email if isinstance(email, str) else None
    if not isinstance(email, str) or not email.strip():
        return RejectedRecord(record_id, f"people[{index}]: 'email' is missing or empty", shown)
    name = doc.get("name", "")
    if not isinstance(name, str):
        return RejectedRecord(record_id, f"people[{index}]: 'name' must be a string", email)
    active = doc.get("active", True)
    if not isinstance(active, bool):
        return RejectedRecord(record_id, f"people[{index}]: 'active' must be true or false", email)
    # Most records carry only the known fields: they share one empty mapping.
    extra = (
        _NO_ATTRIBUTES
        if doc.keys() <= _PERSON_FIELDS
        else MappingProxyType({k: v for k, v in doc.items() if k not in _PERSON_FIELDS})
    )
    return SourcePerson(id=record_id, email=email, name=name, active=active, attributes=extra)


def _group(doc: Any, index: int, ids: dict[str, int], origin: str) -> SourceGroup:
    where = f"{origin}: groups[{index}]"
    if not isinstance(doc, dict):
        raise SourceDataError(f"{where}: must be an object")
    record_id = _record_id(doc, -1 - index, ids, origin)
    where = f"{where} (id {record_id!r})"
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SourceDataError(f"{where}: 'name' is missing or empty")
    members = doc.get("members", [])
    # The kinds of the members, at C speed (a million memberships at 100k people).
    if not isinstance(members, list) or not all(
        issubclass(kind, str) for kind in set(map(type, members))
    ):
        raise SourceDataError(f"{where}: 'members' must be a list of id strings")
    # Interned: each person's id is then one object however many groups list it.
    # `SourceId` is a NewType (the identity at run time), so the strings are the ids.
    interned = cast("tuple[SourceId, ...]", tuple(map(sys.intern, members)))
    return SourceGroup(id=SourceId(record_id), name=name, members=interned)
