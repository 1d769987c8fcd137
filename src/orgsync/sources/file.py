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
from typing import Any

from orgsync.core.errors import SourceDataError, SourceError
from orgsync.core.model import (
    RejectedRecord,
    SourceGroup,
    SourceId,
    SourcePerson,
    SourceSnapshot,
)

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
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise SourceDataError(
                f"{self.path}: invalid JSON at line {error.lineno} "
                f"column {error.colno}: {error.msg}"
            ) from error
        return parse_directory(document, origin=str(self.path))


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

    ids: dict[str, str] = {}
    people: list[SourcePerson] = []
    rejected: list[RejectedRecord] = []
    for index, doc in enumerate(people_docs):
        person = _person(doc, f"people[{index}]", ids, origin)
        if isinstance(person, SourcePerson):
            people.append(person)
        else:
            rejected.append(person)
    groups = tuple(
        _group(doc, f"{origin}: groups[{index}]", ids) for index, doc in enumerate(group_docs)
    )
    for index, group in enumerate(groups):
        for member in group.members:
            if member not in ids:
                raise SourceDataError(
                    f"{origin}: groups[{index}] (id {group.id!r}): member {member!r} is neither "
                    "a person id nor a group id"
                )
    return SourceSnapshot(people=tuple(people), groups=groups, rejected=tuple(rejected))


def _record_id(doc: Mapping[str, Any], where: str, ids: dict[str, str]) -> str:
    record_id = doc.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        raise SourceDataError(f"{where}: 'id' must be a non-empty string")
    if record_id in ids:
        raise SourceDataError(
            f"{where}: duplicate id {record_id!r} (first used by {ids[record_id]})"
        )
    ids[record_id] = where.split(": ", 1)[-1]
    return record_id


def _person(
    doc: Any, where: str, ids: dict[str, str], origin: str
) -> SourcePerson | RejectedRecord:
    if not isinstance(doc, dict):
        raise SourceDataError(f"{origin}: {where}: must be an object")
    # Interned, as group members are: one object per id however many groups list it
    # (memory), and the rules' look-ups compare by identity.
    record_id = SourceId(sys.intern(_record_id(doc, f"{origin}: {where}", ids)))
    email = doc.get("email")
    shown = email if isinstance(email, str) else None
    if not isinstance(email, str) or not email.strip():
        return RejectedRecord(record_id, f"{where}: 'email' is missing or empty", shown)
    name = doc.get("name", "")
    if not isinstance(name, str):
        return RejectedRecord(record_id, f"{where}: 'name' must be a string", email)
    active = doc.get("active", True)
    if not isinstance(active, bool):
        return RejectedRecord(record_id, f"{where}: 'active' must be true or false", email)
    extra = {k: v for k, v in doc.items() if k not in _PERSON_FIELDS}
    return SourcePerson(
        id=record_id,
        email=email,
        name=name,
        active=active,
        attributes=MappingProxyType(extra),
    )


def _group(doc: Any, where: str, ids: dict[str, str]) -> SourceGroup:
    if not isinstance(doc, dict):
        raise SourceDataError(f"{where}: must be an object")
    record_id = _record_id(doc, where, ids)
    where = f"{where} (id {record_id!r})"
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SourceDataError(f"{where}: 'name' is missing or empty")
    members = doc.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise SourceDataError(f"{where}: 'members' must be a list of id strings")
    return SourceGroup(
        id=SourceId(record_id), name=name, members=tuple(SourceId(sys.intern(m)) for m in members)
    )
