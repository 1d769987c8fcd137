"""Whether a group member is a user or a nested group.

RFC 7643 §3.1 makes `id` unique across all of a server's resources, but providers backed
by SQL tables number users and groups from separate sequences (user 2 and group 2 are both
`"2"`), and many leave the optional `type` out of a member. A member is therefore a user
or a group by, in this order:

1. its `type` (`User` or `Group`, any case);
2. its `$ref` (the resource URI: `…/Users/{id}` or `…/Groups/{id}`);
3. only then its `value`, looked up among the user ids and the group ids read; a value
   found among both (or neither) is a user: orgsync creates no nested groups, and taking
   a user for a group would keep that person in the group for good (issue 11: a suspended
   person kept group access).

Pure, and shared by the SCIM target (whose snapshot lists user members only) and the SCIM
source (which puts nested groups in `SourceGroup.subgroups`, never among the people).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["MemberKind", "member_kind", "user_ids_of"]

MemberKind = Literal["User", "Group"]


def member_kind(
    value: str,
    *,
    type_: str | None,
    ref: str | None,
    user_ids: Set[str],
    group_ids: Set[str],
) -> MemberKind:
    if type_:
        folded = type_.strip().casefold()
        if folded == "user":
            return "User"
        if folded == "group":
            return "Group"
    by_ref = _kind_of_ref(ref)
    if by_ref is not None:
        return by_ref
    if value in group_ids and value not in user_ids:
        return "Group"
    return "User"


def user_ids_of(
    members: Iterable[tuple[str | None, str | None, str | None]],
    *,
    user_ids: Set[str],
    group_ids: Set[str],
) -> frozenset[str]:
    """The values of the user members among `(value, type, $ref)` triples."""
    return frozenset(
        value
        for value, type_, ref in members
        if value
        and member_kind(value, type_=type_, ref=ref, user_ids=user_ids, group_ids=group_ids)
        == "User"
    )


def _kind_of_ref(ref: str | None) -> MemberKind | None:
    """`User` for `…/Users/{id}`, `Group` for `…/Groups/{id}`; None for anything else."""
    if not ref:
        return None
    segments = [s for s in urlsplit(ref.strip()).path.split("/") if s]
    if len(segments) < 2:
        return None
    collection = segments[-2]
    if collection == "Users":
        return "User"
    if collection == "Groups":
        return "Group"
    return None
