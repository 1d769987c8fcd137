"""The file source: a JSON export of people and groups (SPEC "The file source").

Read completely or refused: any malformed record raises `SourceDataError` naming the file,
the record (index and id) and the field, so a broken export can never read as "these
people left".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orgsync.core.errors import SourceDataError, SourceError
from orgsync.core.model import SourceGroup, SourceId, SourcePerson, SourceSnapshot

_PERSON_FIELDS = {"id", "email", "name", "active"}
_GROUP_FIELDS = {"id", "name", "members"}


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
    people = tuple(
        _person(doc, f"{origin}: people[{index}]", ids) for index, doc in enumerate(people_docs)
    )
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
    return SourceSnapshot(people=people, groups=groups)


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


def _person(doc: Any, where: str, ids: dict[str, str]) -> SourcePerson:
    if not isinstance(doc, dict):
        raise SourceDataError(f"{where}: must be an object")
    record_id = _record_id(doc, where, ids)
    where = f"{where} (id {record_id!r})"
    email = doc.get("email")
    if not isinstance(email, str) or not email.strip():
        raise SourceDataError(f"{where}: 'email' is missing or empty")
    if "@" not in email:
        raise SourceDataError(f"{where}: 'email' {email!r} is not an email address")
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise SourceDataError(f"{where}: 'name' must be a string")
    active = doc.get("active", True)
    if not isinstance(active, bool):
        raise SourceDataError(f"{where}: 'active' must be true or false")
    extra = {k: v for k, v in doc.items() if k not in _PERSON_FIELDS}
    return SourcePerson(
        id=SourceId(record_id),
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
        id=SourceId(record_id), name=name, members=tuple(SourceId(m) for m in members)
    )
