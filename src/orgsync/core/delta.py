"""Incremental passes: what changed at the source since the last reconciled snapshot.

An incremental pass plans only the people a change touches, so it must know, for every
person, whether anything the rules can see about them changed. The state database keeps
one compact fingerprint per source record (never the record, never a secret): a digest
of the normalized person record together with every group the person is in, directly or
through nesting, by id and name, and the ids of any other records holding the same
address (a shared address is acted on for nobody, so its other holders are touched
when one of them leaves it). A group change therefore changes the digest of each
person it concerns, and the targeted path can plan them alone. Groups also get their own
digests, because a target that mirrors groups plans them over whole groups, which only a
full pass does.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from orgsync.core.model import SourceGroup, SourceId, SourceSnapshot, normalize_email

DIGEST_VERSION = "1"
"""Part of every fingerprint: a change of what a digest covers makes old baselines unusable."""

PERSON, GROUP = "person", "group"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Per kind ("person", "group"), source id -> digest of what the rules can see."""

    people: Mapping[str, str]
    groups: Mapping[str, str]

    def of(self, kind: str) -> Mapping[str, str]:
        return self.people if kind == PERSON else self.groups


@dataclass(frozen=True, slots=True)
class Delta:
    """Source ids whose digest differs from the baseline's."""

    added: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()

    @property
    def touched(self) -> frozenset[str]:
        return self.added | self.changed | self.removed

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def _digest(material: object) -> str:
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    # 128 bits: collisions are not a concern at directory sizes, and rows stay small.
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _ancestors(groups: tuple[SourceGroup, ...]) -> dict[str, frozenset[str]]:
    """For each group id, itself and every group it is nested in (cycle-safe)."""
    parents: dict[str, set[str]] = {}
    ids = {g.id for g in groups}
    for group in groups:
        for child in (*group.subgroups, *(m for m in group.members if m in ids)):
            parents.setdefault(child, set()).add(group.id)
    memo: dict[str, frozenset[str]] = {}

    def up(start: str) -> frozenset[str]:
        if start in memo:
            return memo[start]
        seen = {start}
        stack = [start]
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        memo[start] = frozenset(seen)
        return memo[start]

    return {g.id: up(g.id) for g in groups}


def fingerprint(snapshot: SourceSnapshot) -> Fingerprint:
    """The digests of a whole source snapshot (rejected records included, by id: a record
    fixed at the source must be planned again)."""
    names: dict[str, str] = {g.id: g.name for g in snapshot.groups}
    ancestors = _ancestors(snapshot.groups)
    direct: dict[str, set[str]] = {}
    group_ids = set(names)
    for group in snapshot.groups:
        for member in group.members:
            if member not in group_ids:
                direct.setdefault(member, set()).add(group.id)
    # Who holds each address: records sharing one are none of them acted on, so a record
    # leaving an address (deleted, rejected, moved to another) changes what the rules
    # decide for the others still holding it, which must then be touched too.
    keys = [normalize_email(person.email) for person in snapshot.people]
    distinct = set(keys)
    rejected = [
        (normalize_email(r.email), r.source_id)
        for r in snapshot.rejected
        if r.email and r.email.strip()
    ]
    shared: dict[str, list[str]] = {}
    # Nearly always every address is held once: then nothing is built per person.
    if len(distinct) != len(keys) or any(key in distinct for key, _ in rejected):
        holders: dict[str, list[str]] = {}
        for person, key in zip(snapshot.people, keys, strict=True):
            holders.setdefault(key, []).append(person.id)
        for key, source_id in rejected:
            holders.setdefault(key, []).append(source_id)
        shared = {key: ids for key, ids in holders.items() if len(ids) > 1}
    people: dict[str, str] = {}
    for person, key in zip(snapshot.people, keys, strict=True):
        effective: set[str] = set()
        for group_id in direct.get(person.id, ()):
            effective |= ancestors[group_id]
        material: list[object] = [
            DIGEST_VERSION,
            person.id,
            person.email.strip(),
            key,
            person.name,
            person.active,
            {str(k): v for k, v in person.attributes.items()},
            sorted([g, names[g]] for g in effective),
        ]
        if key in shared:
            # Only then: the digest of everyone else is what it was before this was kept.
            material.append(sorted(shared[key]))
        people[person.id] = _digest(material)
    for record in snapshot.rejected:
        people[record.source_id] = _digest(
            [DIGEST_VERSION, "rejected", record.source_id, record.reason, record.email]
        )
    groups: dict[str, str] = {
        g.id: _digest([DIGEST_VERSION, g.id, g.name, sorted(g.members), sorted(g.subgroups)])
        for g in snapshot.groups
    }
    return Fingerprint(people=people, groups=groups)


def diff(before: Mapping[str, str], after: Mapping[str, str]) -> Delta:
    return Delta(
        added=frozenset(k for k in after if k not in before),
        changed=frozenset(k for k, v in after.items() if k in before and before[k] != v),
        removed=frozenset(k for k in before if k not in after),
    )


def touched_source_ids(before: Fingerprint, after: Fingerprint) -> frozenset[SourceId]:
    return frozenset(SourceId(s) for s in diff(before.people, after.people).touched)


def config_fingerprint(material: object) -> str:
    """A digest of the configuration a baseline was reconciled under (the caller chooses
    what is relevant and leaves secrets out: the configuration holds only their names)."""
    return _digest([DIGEST_VERSION, material])
