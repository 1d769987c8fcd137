"""The planner: desired state + what the target holds + memory → an ordered plan.

Pure and linear: every member, invitation and wanted person is looked at once, through
dictionaries built once. It decides *what* to change under the rules of ownership
(docs/reference.md "Ownership": unknown people are touched only when orgsync managed them,
or `remove_unmanaged`), untouchables (protected people, the last owner, the key's owner,
service accounts, members another provisioner manages) and `removal_grace`. The safety gate
that holds mass removals runs afterwards (`orgsync.core.safety`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Literal, cast

from orgsync.core.collector import paused
from orgsync.core.group_planner import GroupPlanner, NotAMember
from orgsync.core.model import (
    Capabilities,
    EmailKey,
    InviteStatus,
    Memory,
    SourceId,
    TargetInvite,
    TargetMember,
    TargetSnapshot,
    mixed_scripts,
    normalize_email,
)
from orgsync.core.plan import (
    CreateUser,
    Invite,
    Operation,
    Plan,
    RemoveMember,
    RevokeInvite,
    SetRole,
    SuspendMember,
    UpdateUser,
    Waiting,
)
from orgsync.core.rules import DesiredState, Wanted


@dataclass(frozen=True, slots=True)
class RemovalPolicy:
    """How a target treats people who should no longer be there."""

    on_removal: Literal["remove", "suspend"] = "remove"
    remove_unmanaged: bool = False
    protected: frozenset[EmailKey] = frozenset()
    removal_grace: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class PlanInput:
    """Everything one plan depends on; equal inputs give equal plans."""

    target: str
    desired: DesiredState
    observed: TargetSnapshot
    memory: Memory
    policy: RemovalPolicy
    capabilities: Capabilities
    now: datetime


class _Planner:
    def __init__(self, given: PlanInput) -> None:
        self.given = given
        self.operations: list[Operation] = []
        self.waiting: list[Waiting] = []
        self.warnings: list[str] = list(given.desired.warnings)
        observed = given.observed
        self.catalog = observed.roles
        self.members_by_id = {m.id: m for m in observed.members}
        self.members_by_email: dict[EmailKey, TargetMember] = {}
        # Some targets let two accounts carry one address (SCIM providers, suspended
        # duplicates): each is a candidate when the first is another person's. Only
        # those addresses get a list (not one per member).
        self.more_with_email: dict[EmailKey, list[TargetMember]] = defaultdict(list)
        self.members_in_id_order = sorted(observed.members, key=attrgetter("id"))
        # Each member's email key, normalized once here and read again by id (a linked
        # person is compared with their member's address).
        self.member_keys: dict[str, EmailKey | None] = {}
        for member in self.members_in_id_order:
            key = member.email_key
            self.member_keys[member.id] = key
            if key is not None and self.members_by_email.setdefault(key, member) is not member:
                self.more_with_email[key].append(member)
        self.live_invites: dict[EmailKey, list[TargetInvite]] = defaultdict(list)
        self.expired_invites: dict[EmailKey, list[TargetInvite]] = defaultdict(list)
        for invite in sorted(observed.invites, key=lambda i: i.id):
            if invite.is_live(given.now):
                self.live_invites[invite.email_key].append(invite)
            elif invite.status is not InviteStatus.ACCEPTED:
                self.expired_invites[invite.email_key].append(invite)
        self.links = given.memory.links
        # Wanted people by email key, sorted with their records: looking each one up
        # again by key afterwards was a dictionary miss per person at 100k people.
        self.wanted_order: list[Wanted] = [
            wanted for _, wanted in sorted(given.desired.wanted.items(), key=itemgetter(0))
        ]
        self.link_claimant = self._link_claimants()
        # Source id -> the addresses orgsync linked it under (built when first asked), and
        # the people refused an unmanaged account by email this plan (`find_member`).
        self.addresses_of: dict[SourceId, list[EmailKey]] | None = None
        self.not_adopted: set[SourceId] = set()
        owner_roles = self.catalog.owner_roles
        # A suspended owner administers nothing: only active owners keep the organization
        # in someone's hands, so only they count towards the last-owner rule.
        self.owners_left = sum(1 for m in observed.members if m.role in owner_roles and m.active)
        self.linked_member_ids = frozenset(given.memory.links.values())
        self.member_ids: dict[EmailKey, str] = {}
        # The same matches indexed the ways the group planner reads them; a member is
        # matched (taken by a wanted person) when it is in `key_of_user`.
        self.key_of_user: dict[str, EmailKey] = {}
        self.user_of_source: dict[SourceId, object] = {}
        # Whoever a rejected source record stands for: the member linked to its id, the
        # emails linked to its id before, and the email it carries now. A bad record is
        # not an absence: removing them (or their invitation, role or groups) would turn
        # a typo in the directory into lost access.
        # The same holds for people whose email another source person shares: they are
        # still in the source, and a typo giving one of them the other's address must not
        # remove the account or invitation orgsync linked to them.
        rejected = given.desired.rejected
        ambiguous = given.desired.ambiguous_ids
        memory = given.memory
        self.held_back_ids = frozenset(
            memory.links[s] for s in (*rejected, *ambiguous) if s in memory.links
        )
        self.held_back_keys = given.desired.rejected_emails | {
            key
            for key, source_id in memory.linked_sources.items()
            if source_id in rejected or source_id in ambiguous
        }

    # ------------------------------------------------------------------ classification

    def untouchable(self, member: TargetMember) -> str | None:
        """Why a member is never changed, or None."""
        if member.is_service_account:
            return "a service account"
        if member.is_scim_managed:
            return "managed by another provisioner (is_scim_managed)"
        if member.id == self.given.observed.key_owner_id:
            return "the owner of orgsync's API key"
        if member.id in self.held_back_ids or (
            self.held_back_keys and member.email_key in self.held_back_keys
        ):
            return "the person of a rejected source record or a shared email (see its warning)"
        return None

    def is_protected(self, key: EmailKey | None) -> bool:
        return key is not None and key in self.given.policy.protected

    def removal_reason(self, key: EmailKey | None, member_id: str | None) -> str | None:
        """Why an unwanted person should go, or None when orgsync must leave them alone."""
        desired, memory = self.given.desired, self.given.memory
        if key is not None and key in desired.ambiguous:
            return None
        if key is not None and key in desired.out_of_scope:
            return desired.out_of_scope[key]
        if key is not None and key in desired.known:
            return None  # wanted: handled by the wanted pass
        if (key is not None and key in memory.managed) or (
            member_id is not None and member_id in self.linked_member_ids
        ):
            return "no longer in the source (orgsync managed them)"
        if self.given.policy.remove_unmanaged:
            return "not in the source (remove_unmanaged = true)"
        return None

    # ------------------------------------------------------------------ wanted people

    def _link_claimants(self) -> dict[str, SourceId]:
        """Which wanted person each linked member stands for.

        Several source ids can be linked to one member (stale links of people whose
        addresses moved around). The one whose email the member still carries wins, else
        the first by email; everybody else's link to it is stale. Decided before anyone
        is matched, so the plan does not depend on the order people are looked at.
        """
        links = self.given.memory.links
        claimants: dict[str, Wanted] = {}
        if not links:
            return {}
        for person in self.wanted_order:
            linked_id = links.get(person.source_id)
            member = self.members_by_id.get(linked_id) if linked_id else None
            if member is None:
                continue
            current = claimants.get(member.id)
            if current is None or (
                member.email_key == person.email_key and member.email_key != current.email_key
            ):
                claimants[member.id] = person
        return {member_id: person.source_id for member_id, person in claimants.items()}

    def free_for(self, member: TargetMember, wanted: Wanted) -> bool:
        """Whether `wanted` may be matched to `member`: nobody has it yet, and no other
        wanted person's link claims it (an address reused by a newcomer must not inherit
        the account of the person it belonged to)."""
        return member.id not in self.key_of_user and self.link_claimant.get(
            member.id, wanted.source_id
        ) == (wanted.source_id)

    def find_member(self, wanted: Wanted) -> TargetMember | None:
        linked_id = self.links.get(wanted.source_id)
        member = self.members_by_id.get(linked_id) if linked_id else None
        if member is not None and not self.free_for(member, wanted):
            member = None  # one member stands for one person; a stale link loses
        if member is None:
            found = self.free_by_email(wanted)
            if found is None:
                return None
            if found.id in self.linked_member_ids:
                self.note_adoption(found, wanted)
            elif self.member_keys[
                found.id
            ] not in self.given.memory.managed and self.known_elsewhere(wanted):
                # Adoption by email is for a person orgsync meets for the first time. One
                # it invited or linked under another address who now carries the address
                # of an account orgsync never managed (an owner's) is not given it: the
                # address is the only thing tying them to it, and it is theirs to edit.
                self.not_adopted.add(wanted.source_id)
                return None
            return found
        if self.member_keys[member.id] != wanted.email_key:
            # A linked person stays on the account they are linked to, whatever address
            # the IdP gives them now: another account already carrying the new address
            # is never taken instead (reference "Matching"). Taking it let anyone who can
            # edit their IdP email (self-service, a SCIM client) become another person's
            # account, an owner's included: its role set by their rules, and removed
            # with them when they leave.
            holder = self.address_holder(member, wanted)
            if holder is not None:
                self.waiting.append(
                    Waiting(
                        op="update_user",
                        email=wanted.email,
                        reason=f"the IdP changed this person's email from {member.email}, "
                        f"but member {holder.id} already carries the new address: member "
                        f"{member.id} is kept as {member.email}, linked by source id, and "
                        f"member {holder.id} is not taken for them (resolve it by hand)",
                    )
                )
            elif not self.given.capabilities.change_emails:
                self.waiting.append(
                    Waiting(
                        op="update_user",
                        email=wanted.email,
                        reason=f"the IdP changed this person's email from {member.email}; "
                        "this target cannot change emails, so member "
                        f"{member.id} is kept as {member.email}, linked by source id",
                    )
                )
        return member

    def known_elsewhere(self, wanted: Wanted) -> bool:
        """Whether orgsync linked or invited `wanted`'s source id under another address."""
        if self.addresses_of is None:
            self.addresses_of = defaultdict(list)
            for key, source_id in self.given.memory.linked_sources.items():
                self.addresses_of[source_id].append(key)
        keys = self.addresses_of.get(wanted.source_id)
        return keys is not None and (len(keys) > 1 or keys[0] != wanted.email_key)

    def note_adoption(self, member: TargetMember, wanted: Wanted) -> None:
        """Say so when a person is matched by email to a member orgsync linked to another
        source id, which the source no longer reports (that person would claim it).

        It is the same person re-created (a re-hire, an IdP whose ids changed), or the
        address given to someone else, who gets the account of whoever had it (its
        history, its groups): nothing in the data tells them apart, so the operator is
        told which it took for which."""
        previous = sorted(s for s, m in self.links.items() if m == member.id)
        if not previous or wanted.source_id in previous:
            return
        self.warnings.append(
            f"{wanted.email}: member {member.id} was linked to source id "
            f"{', '.join(map(repr, previous))}, which the source no longer reports; source "
            f"id {wanted.source_id!r} now has its address and takes it over (a re-created "
            "person keeps their account; if the address was given to someone else, remove "
            "that account first)"
        )

    def address_holder(self, member: TargetMember, wanted: Wanted) -> TargetMember | None:
        """Another member carrying `wanted`'s new address that keeps it this run (none
        that another wanted person's link claims: that one is renamed away or kept by its
        person, as a swap of addresses between two people is).

        `member` (linked to `wanted`) is then neither renamed into the address, which
        the target would refuse as taken, nor swapped for the holder."""
        first = self.members_by_email.get(wanted.email_key)
        if first is None:
            return None
        holders: list[TargetMember] = [first, *self.more_with_email.get(wanted.email_key, ())]
        for holder in holders:
            if holder.id == member.id:
                continue
            claimant = self.link_claimant.get(holder.id)
            if claimant is None or claimant == wanted.source_id:
                return holder
        return None

    def rename_is_free(self, member: TargetMember, wanted: Wanted) -> bool:
        """Whether no other member carries `wanted`'s new address, so that `member` can be
        renamed into it now; else the rename waits (one is already listed when the
        holder is nobody's, `address_holder`).

        A target refuses a second account with one address (SCIM `userName` is unique,
        409): two people who swapped addresses were renamed into each other's and both
        failed on every run, and a chain (one person taking the address another leaves)
        depended on the order the calls ran in. The holder renamed away this run, the
        rename follows on the next."""
        first = self.members_by_email.get(wanted.email_key)
        if first is None or (
            first.id == member.id and wanted.email_key not in self.more_with_email
        ):
            return True
        holders: list[TargetMember] = [first, *self.more_with_email.get(wanted.email_key, ())]
        for holder in holders:
            if holder.id == member.id:
                continue
            claimant = self.link_claimant.get(holder.id)
            if claimant is not None and claimant != wanted.source_id:
                self.waiting.append(
                    Waiting(
                        op="update_user",
                        email=wanted.email,
                        reason=f"the IdP changed this person's email from {member.email}, "
                        f"but member {holder.id}, another person's account, still carries "
                        f"the new address: member {member.id} is renamed once it no longer "
                        "does (two people who swapped addresses wait for each other: "
                        "rename one of them by hand to a free address)",
                    )
                )
            return False
        return True

    def free_by_email(self, wanted: Wanted) -> TargetMember | None:
        """The first member (by id) carrying `wanted`'s address that may be theirs."""
        first = self.members_by_email.get(wanted.email_key)
        if first is None or (
            first.id not in self.key_of_user
            and self.link_claimant.get(first.id, wanted.source_id) == wanted.source_id
        ):
            return first  # (free_for, inlined: once per wanted person)
        for member in self.more_with_email.get(wanted.email_key, ()):
            if self.free_for(member, wanted):
                return member
        return None

    def plan_wanted(self, wanted: Wanted) -> None:
        member = self.find_member(wanted)
        if member is None:
            self.user_of_source[wanted.source_id] = NotAMember(wanted.email_key)
        else:
            self.member_ids[wanted.email_key] = member.id
            self.key_of_user[member.id] = wanted.email_key
            self.user_of_source[wanted.source_id] = member.id
            renamed = (
                self.given.capabilities.change_emails
                and member.email_key != wanted.email_key
                and self.rename_is_free(member, wanted)
            )
            if (renamed or not member.active) and self.untouchable(member) is None:
                why = [] if member.active else ["suspended member returns: re-enabled"]
                if renamed:
                    why.append(
                        f"email changed in the IdP from {member.email or 'no email'} "
                        "(same source id)"
                    )
                self.operations.append(
                    UpdateUser(
                        email=wanted.email,
                        user_id=member.id,
                        active=True,
                        previous_email=(member.email or "") if renamed else None,
                        source_id=wanted.source_id,
                        reason=f"{wanted.reason}; {'; '.join(why)}",
                    )
                )
                if not member.active:
                    # Re-enabling comes before lowerings and removals (phase order), so a
                    # returning owner already counts, as a raised one does.
                    member = replace(member, active=True)
                    self.owners_left += member.role in self.catalog.owner_roles
            self.plan_role(wanted, member)
            return
        holder = self.members_by_email.get(wanted.email_key)
        if holder is not None and wanted.source_id in self.not_adopted:
            self.waiting.append(
                Waiting(
                    op="invite" if self.given.capabilities.invites else "create_user",
                    email=wanted.email,
                    reason=f"the IdP changed this person's email to the address of member "
                    f"{holder.id}, which orgsync does not manage: it is not taken for "
                    "them (orgsync knows them under another address); resolve it by hand",
                )
            )
            return
        if holder is not None:
            # The address is still on a member another person's link claims (being renamed
            # away, or kept): a newcomer with a reused address neither inherits that
            # account nor collides with it; they are added once the address is free.
            self.waiting.append(
                Waiting(
                    op="invite" if self.given.capabilities.invites else "create_user",
                    email=wanted.email,
                    reason=f"the address is still on member {holder.id}, which stands for "
                    "another person (linked by source id); added once it no longer carries it",
                )
            )
            return
        if not self.given.capabilities.invites:
            self.plan_creation(wanted)
            return
        live = self.live_invites.get(wanted.email_key, [])
        keep = next((i for i in live if i.role == wanted.role), None)
        for extra in live:
            if extra is keep:
                continue
            if keep is None:
                keep = extra  # replaced below
                continue
            self.operations.append(
                RevokeInvite(
                    email=extra.email,
                    invite_id=extra.id,
                    reason="duplicate pending invitation for the same person",
                )
            )
        if keep is not None and keep.role == wanted.role:
            return
        if not self.catalog.can_invite_as(wanted.role):
            self.warnings.append(
                f"{wanted.email}: role {wanted.role!r} cannot be given in an invitation "
                "on this target; not invited"
            )
            return
        if keep is not None:
            self.operations.append(
                Invite(
                    email=wanted.email,
                    role=wanted.role,
                    source_id=wanted.source_id,
                    replaces_invite_id=keep.id,
                    reason=f"{wanted.reason}; pending invitation has role {keep.role}",
                )
            )
            return
        expired = self.expired_invites.get(wanted.email_key)
        if expired:
            self.operations.append(
                Invite(
                    email=wanted.email,
                    role=wanted.role,
                    source_id=wanted.source_id,
                    replaces_invite_id=expired[-1].id,
                    reason=f"{wanted.reason}; invitation expired, renewing",
                )
            )
            return
        self.operations.append(
            Invite(
                email=wanted.email,
                role=wanted.role,
                source_id=wanted.source_id,
                reason=wanted.reason,
            )
        )

    def plan_creation(self, wanted: Wanted) -> None:
        """Targets without invitations create the user directly."""
        if not self.given.capabilities.create_users:
            self.warnings.append(f"{wanted.email}: this target can neither invite nor create users")
            return
        self.operations.append(
            CreateUser(
                email=wanted.email,
                name=wanted.name,
                role=wanted.role if self.given.capabilities.roles else None,
                source_id=wanted.source_id,
                reason=wanted.reason,
            )
        )

    def plan_role(self, wanted: Wanted, member: TargetMember) -> None:
        if not self.given.capabilities.roles or member.role == wanted.role:
            return
        if self.catalog.rank(member.role) < 0:
            # A role the catalog does not rank (added or renamed by the vendor, or missing
            # from the read) would rank below all: a demotion planned as a raise, past the
            # removal gate and the last-owner rule.
            self.warnings.append(
                f"{wanted.email}: has role {member.role!r}, which this target's role "
                f"catalog does not rank; not changed to {wanted.role}"
            )
            return
        raising = self.catalog.rank(wanted.role) > self.catalog.rank(member.role)
        blocked = self.untouchable(member)
        if not raising and blocked is None:
            # Either address counts: a member linked by source id may still carry the
            # old email while the IdP (and the protected list) has the new one.
            protected = self.is_protected(member.email_key) or self.is_protected(wanted.email_key)
            blocked = "protected" if protected else None
            if blocked is None and self.would_drop_last_owner(member):
                blocked = "the last owner"
        if blocked is not None:
            self.warnings.append(
                f"{wanted.email}: would change role {member.role} to {wanted.role}, "
                f"but they are {blocked}; left as they are"
            )
            return
        # Raises apply before lowerings and removals (phase order), so an owner made
        # here already counts when the last-owner rule looks at later operations.
        owners = self.catalog.owner_roles
        if member.active:
            self.owners_left += (wanted.role in owners) - (member.role in owners)
        self.operations.append(
            SetRole(
                email=wanted.email,
                user_id=member.id,
                role=wanted.role,
                previous_role=member.role,
                raise_=raising,
                reason=f"{wanted.reason}; has role {member.role}",
            )
        )

    def would_drop_last_owner(self, member: TargetMember) -> bool:
        return member.active and member.role in self.catalog.owner_roles and self.owners_left <= 1

    # ------------------------------------------------------------------ everybody else

    def plan_member_removal(self, member: TargetMember) -> None:
        key = member.email_key
        reason = self.removal_reason(key, member.id)
        if reason is None:
            return
        label = member.email or member.id
        blocked = self.untouchable(member) or ("protected" if self.is_protected(key) else None)
        if blocked is None and self.would_drop_last_owner(member):
            blocked = "the last owner"
        if blocked is not None:
            self.warnings.append(f"{label}: {reason}, but they are {blocked}; left alone")
            return
        if self.in_grace(key, member.email or member.id, "remove_member", reason):
            return
        if member.active and member.role in self.catalog.owner_roles:
            self.owners_left -= 1
        suspend = self.given.policy.on_removal == "suspend" and self.given.capabilities.suspend
        if suspend and not member.active:
            return  # already suspended
        kind = SuspendMember if suspend else RemoveMember
        self.operations.append(kind(email=label, user_id=member.id, reason=reason))

    def plan_invite_removal(self, key: EmailKey, invites: list[TargetInvite]) -> None:
        if key in self.given.desired.wanted:
            return
        reason = self.removal_reason(key, None)
        if reason is None:
            return
        if key in self.held_back_keys:
            self.warnings.append(
                f"{invites[0].email}: {reason}, but the person of a rejected source record "
                "or a shared email; invitation kept"
            )
            return
        if self.is_protected(key):
            self.warnings.append(f"{invites[0].email}: {reason}, but protected; invitation kept")
            return
        if self.in_grace(key, invites[0].email, "revoke_invite", reason):
            return
        for invite in invites:
            self.operations.append(
                RevokeInvite(email=invite.email, invite_id=invite.id, reason=reason)
            )

    def in_grace(self, key: EmailKey | None, label: str, op: str, reason: str) -> bool:
        """Keep someone missing from the source for less than `removal_grace`."""
        grace = self.given.policy.removal_grace
        if key is None or not grace or key in self.given.desired.known:
            return False  # out of scope is a decision of the source, not an absence
        since = self.given.memory.missing_since.get(key, self.given.now)
        until = since + grace
        if self.given.now >= until:
            return False
        self.waiting.append(
            Waiting(op=op, email=label, reason=f"{reason}; pending removal", until=until)
        )
        return True

    def plan_groups(self) -> None:
        given = self.given
        if not given.desired.groups and not given.memory.owned_groups:
            return
        if not given.capabilities.groups:
            self.warnings.append("group rules are configured, but this target has no groups")
            return
        created = frozenset(
            normalize_email(op.email) for op in self.operations if isinstance(op, CreateUser)
        )
        groups = GroupPlanner(
            given.observed,
            given.memory.owned_groups,
            self.member_ids,
            self.untouchable,
            created,
            members_by_id=self.members_by_id,
            key_of_user=self.key_of_user,
            user_of_source=self.user_of_source,
        )
        groups.plan(given.desired.groups)
        self.operations.extend(groups.operations)
        self.waiting.extend(groups.waiting)
        self.warnings.extend(groups.warnings)

    def run(self) -> Plan:
        for wanted in self.wanted_order:
            self.plan_wanted(wanted)
        for operation in self.operations:
            if isinstance(operation, Invite | CreateUser):
                scripts = mixed_scripts(operation.email)
                if scripts:
                    self.warnings.append(
                        f"{operation.email}: mixes scripts ({', '.join(scripts)}) within one "
                        "part, so it can read as another address: check it is this person's "
                        "own before the invitation or account goes out"
                    )
        for member in self.members_in_id_order:
            if member.id not in self.key_of_user:
                self.plan_member_removal(member)
        for key in sorted(self.live_invites):
            self.plan_invite_removal(key, self.live_invites[key])
        self.plan_groups()
        return Plan.build(
            target=self.given.target,
            generated_at=self.given.now,
            operations=self.operations,
            waiting=self.waiting,
            warnings=self.warnings,
            # Email keys are strings; the plan module names no core type.
            matches=cast("dict[str, str]", self.member_ids),
        )


@paused
def plan(given: PlanInput) -> Plan:
    """Compute the plan for one target (before the safety gate)."""
    return _Planner(given).run()
