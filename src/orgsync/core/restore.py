"""What a restored state database may have forgotten: people to review by hand.

A state database restored from an older backup does not know whom orgsync invited or
linked after the backup was taken; those people are "unmanaged" to it, and the planner
leaves them alone (it must: an unmanaged person may be someone an administrator added by
hand). Among them, those the source no longer reports as active are the leavers orgsync
would have removed. They cannot be told from people added by hand, so they are listed for
the operator, never removed by orgsync on its own.
"""

from __future__ import annotations

from orgsync.core.model import (
    EmailKey,
    InviteStatus,
    Memory,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
)

LISTED = 20
"""How many addresses a warning names (the count is always complete)."""


def forgotten_leavers(
    snapshot: SourceSnapshot, observed: TargetSnapshot, memory: Memory
) -> list[str]:
    """The addresses of members and open invitations that the state database does not
    know (unmanaged) and that the source does not report as active, sorted; the identity
    behind the API key, service accounts and members another provisioner manages are
    never listed."""
    active: set[EmailKey] = set()
    for person in snapshot.people:
        if person.active and person.email:
            active.add(normalize_email(person.email))
    found: dict[EmailKey, str] = {}
    for member in observed.members:
        if (
            member.email is None
            or member.is_service_account
            or member.is_scim_managed
            or member.id == observed.key_owner_id
        ):
            continue
        found.setdefault(normalize_email(member.email), member.email)
    for invite in observed.invites:
        if invite.status is InviteStatus.ACCEPTED:
            continue
        found.setdefault(invite.email_key, invite.email)
    return sorted(
        email for key, email in found.items() if key not in memory.managed and key not in active
    )


def review_warning(emails: list[str]) -> str | None:
    """The plan warning naming `emails` (None when there are none)."""
    if not emails:
        return None
    shown = ", ".join(emails[:LISTED])
    more = f" and {len(emails) - LISTED} more" if len(emails) > LISTED else ""
    return (
        f"restored state database: {len(emails)} member(s) or invitation(s) it does not "
        f"know are not active in the source: {shown}{more}. orgsync may have invited or "
        "linked them after the backup was taken; it leaves them alone as unmanaged: "
        "review them and remove leavers by hand"
    )
