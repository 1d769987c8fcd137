"""Pieces the built-in targets share: path segments, the clock, listed items, invitations."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol, TypeVar
from urllib.parse import quote

from orgsync.core.errors import TargetError
from orgsync.core.model import TargetInvite, normalize_email
from orgsync.core.plan import Invite, Operation


class HasId(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=HasId)
"""An object of a listing, kept by id while its pages are walked."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def segment(identifier: str) -> str:
    """An id as one path segment: ids come from the server, but a '/' must not escape."""
    return quote(identifier, safe="")


def newest_live_invite(
    invites: Iterable[TargetInvite], email: str, now: datetime
) -> TargetInvite | None:
    """The live invitation of `email` (matched on the normalized email), the newest if the
    organization somehow holds several; one without expiry outlives any that has one."""
    key = normalize_email(email)
    live = [invite for invite in invites if invite.email_key == key and invite.is_live(now)]
    if not live:
        return None
    return max(live, key=lambda i: i.expires_at or datetime.max.replace(tzinfo=UTC))


def invite_to_adopt(
    find_invite: Callable[[str], TargetInvite | None], operation: Operation
) -> str | None:
    """For an invitation: the id of a live one for that email with the same role."""
    if not isinstance(operation, Invite):
        return None
    invite = find_invite(operation.email)
    if invite is not None and invite.role == operation.role:
        return invite.id
    return None


def check_created(where: str, what: str, asked: str, answered: str | None) -> None:
    """Refuse a create's 2xx answer that describes another resource than the one asked for.

    `asked` and `answered` are compared as the planner matches them (emails normalized,
    names case-folded); an answer that leaves the attribute out is taken as it is. The
    id of such an answer must not be recorded: a link to another person's account or
    invitation (added to the newcomer's groups, removed when the newcomer leaves) or a
    hand-made group owned (its members reconciled away). The operation fails instead;
    what the server did make is found by the next run's read.
    """
    if answered is None:
        return
    same = (
        normalize_email(answered) == normalize_email(asked)
        if what == "email"
        else answered.casefold() == asked.casefold()
    )
    if not same:
        raise TargetError(
            f"{where}: the answer describes another resource ({what} {answered!r}, not "
            f"{asked!r}); its id is not recorded"
        )


def check_changed(
    where: str,
    asked_id: str,
    answered_id: str,
    changes: Mapping[str, tuple[object, object | None]],
) -> None:
    """Refuse an update's 2xx answer that shows another resource, or this one without the
    change: `changes` maps each attribute to (the value asked for, the value the answer
    holds); an answer that leaves the attribute out (None) is taken as it is.

    A server that answers 200 and ignores a role lowering or a suspension would otherwise
    be journaled done on every run while the person keeps their access."""
    if answered_id != asked_id:
        raise TargetError(
            f"{where}: the answer describes another resource ({answered_id!r}, not {asked_id!r})"
        )
    missed = [
        f"{name} is {held!r}, not {asked!r}"
        for name, (asked, held) in sorted(changes.items())
        if held is not None and held != asked
    ]
    if missed:
        raise TargetError(
            f"{where}: the server answered but did not make the change ({'; '.join(missed)})"
        )
