"""One target's side of a run: reading its organization and planning against it.

`Planning` reads what a target holds (the whole organization, or for a targeted run the
named people only where the target can), checks the configuration against it, applies the
rules, and builds the planner's input, plans and gates. A dry run, a sync and `orgsync
explain` all plan through it, so they plan from the same inputs. After a sync's plan is
recorded, `remember` keeps the links and missing-since clocks it decided.

The engine owns the run (source read, lease, apply, run history); this module owns what
is read from the target and what the planner is given.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog

from orgsync.config import Config, TargetConfig
from orgsync.core.model import EmailKey, Memory, SourceSnapshot, TargetSnapshot, normalize_email
from orgsync.core.plan import Plan, RemoveMember, RevokeInvite, SuspendMember
from orgsync.core.planner import PlanInput, plan
from orgsync.core.ports import READ_TARGET, ReadsPeople, RunProgress, Target
from orgsync.core.rules import DesiredState, MembershipRules, Wanted, desired_state
from orgsync.core.safety import (
    Allowances,
    Population,
    SafetyLimits,
    check_target_read,
    gate,
    managed_people,
)
from orgsync.core.scope import Scoped, Subjects, restrict, whole_plan_needed
from orgsync.policy import (
    check_capabilities,
    check_roles,
    check_rule_groups,
    membership_rules,
    removal_policy,
    safety_limits,
)
from orgsync.results import RunOptions
from orgsync.store import LinkRow, StateStore

log = structlog.get_logger(__name__)

_PERSON_REMOVALS = (RemoveMember, SuspendMember, RevokeInvite)
_GRACE_OPS = frozenset({"remove_member", "revoke_invite"})
"""The waiting items `removal_grace` makes (the planner's `in_grace`)."""


class Planning:
    """Reads a target's organization and plans against it, for one engine's runs."""

    def __init__(
        self, config: Config, clock: Callable[[], datetime], progress: RunProgress
    ) -> None:
        self.config = config
        self.clock = clock
        self.progress = progress
        # The target being read, so that its HTTP responses count as that read's progress.
        self.reading: str | None = None
        # Per target: why its last whole read looks truncated (`check_target_read`), for
        # the plan made from it to hold what it would add again.
        self.suspect_reads: dict[str, str | None] = {}

    def read_target(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot,
        target: Target,
        *,
        memory: Memory | None = None,
        subjects: Subjects | None = None,
    ) -> tuple[TargetSnapshot, DesiredState, MembershipRules]:
        """Read the organization (for a targeted run only the named people, where the
        target can: `read_org`), check the configuration against it, and apply the rules.

        Given `memory`, a whole read is also checked against it (`check_target_read`):
        the plan made from one lacking what orgsync put there holds every addition."""
        self.progress.begin(READ_TARGET, config.name, None)
        self.reading = config.name
        try:
            if subjects and memory is not None:
                observed = read_org(target, snapshot, memory, subjects)
            else:
                observed = target.read()
        finally:
            self.reading = None
        self.progress.end(
            READ_TARGET,
            config.name,
            len(observed.members) + len(observed.invites),
            "members and invitations",
        )
        check_capabilities(config, target.capabilities)
        check_roles(config, observed.roles)
        rules = membership_rules(config, target.capabilities)
        desired = desired_state(snapshot, rules, observed.roles)
        check_rule_groups(config, snapshot, observed, desired)
        self.suspect_reads[config.name] = (
            check_target_read(observed, memory, desired, safety_limits(self.config))
            if memory is not None and not (subjects and isinstance(target, ReadsPeople))
            else None
        )
        return observed, desired, rules

    def make_plan(
        self,
        config: TargetConfig,
        desired: DesiredState,
        observed: TargetSnapshot,
        target: Target,
        options: RunOptions,
        *,
        memory: Memory,
        population: Population | None = None,
    ) -> Plan:
        """Plan and gate; `population` defaults to the people orgsync manages in
        `observed` (and how many of them `desired` no longer reports).

        A targeted plan passes the whole organization's `population`: the ratios are
        measured against everyone orgsync manages, not against the few people in the slice.
        """
        draft = plan(self.plan_input(config, desired, observed, target, memory))
        return gate(
            draft,
            population=(
                population if population is not None else self.population(observed, memory, desired)
            ),
            limits=safety_limits(self.config),
            allowances=Allowances(
                removals=options.allow_removals, additions=options.allow_additions
            ),
            privileged=observed.roles.privileged,
            target_read=self.suspect_reads.get(config.name),
        )

    def plan_input(
        self,
        config: TargetConfig,
        desired: DesiredState,
        observed: TargetSnapshot,
        target: Target,
        memory: Memory,
        *,
        now: datetime | None = None,
    ) -> PlanInput:
        """What the planner plans from, with the target's `[safety]` removal policy: built
        here only, so a dry run, a sync and `explain` plan from the same inputs. `now`:
        the time of the store `memory` came from (default this planning's clock)."""
        return PlanInput(
            target=config.name,
            desired=desired,
            observed=observed,
            memory=memory,
            policy=removal_policy(self.config, config),
            capabilities=target.capabilities,
            now=now if now is not None else self.clock(),
        )

    def population(
        self, observed: TargetSnapshot, memory: Memory, desired: DesiredState
    ) -> Population:
        return managed_people(
            observed, memory, desired, remove_unmanaged=self.config.safety.remove_unmanaged
        )

    def remember(
        self,
        store: StateStore,
        target: str,
        desired: DesiredState,
        observed: TargetSnapshot,
        fresh: Plan,
        *,
        memory: Memory,
        scope: frozenset[EmailKey] | None = None,
        groups_read: bool = True,
    ) -> None:
        """Link wanted people to the members they matched, and track who went missing.

        `memory`: the target's, as read for this plan (the writer lock is held, so it is
        still what the database holds). `scope`: a targeted plan decided about these people
        only; everybody else's missing-since clock is kept as it is. `groups_read`: False
        when the organization was read for a few people only, so an owned group absent from
        `observed` was simply not read, not deleted by someone else.
        """
        # The member the planner matched each person to, never whichever member carries
        # their address: a person kept on their linked account while another account holds
        # their new address, or a newcomer waiting for a reused address, must not be linked
        # to that other account (the next run would hand it to them).
        matches = fresh.matches
        # Nor is an address another member carries recorded as this person's: a link row's
        # address is one orgsync manages, and whoever holds it would be removed as a
        # managed leaver once the person moved on (their own rows keep their link).
        holder: dict[EmailKey, str | None] = {}
        for member in observed.members:
            key = member.email_key
            if key is not None:
                # An address on two accounts is nobody's alone (None): no row is written.
                holder[key] = member.id if key not in holder else None

        own_address: dict[str, EmailKey | None] = {}

        def linked_row(key: EmailKey, wanted: Wanted) -> LinkRow | None:
            member_id = matches.get(key)
            if key in holder and (holder[key] is None or holder[key] != member_id):
                if member_id is None:
                    return None
                # Linked under the address their own account carries instead: the row of
                # their old address may go to whoever is renamed into it during this apply
                # (two people who swapped addresses), and the person must stay linked.
                if not own_address:
                    own_address.update((m.id, m.email_key) for m in observed.members)
                own = own_address.get(member_id)
                if own is None or holder.get(own) != member_id:
                    return None
                return LinkRow(email_key=own, source_id=wanted.source_id, member_id=member_id)
            if member_id is None and (
                key not in memory.managed or memory.linked_sources.get(key) == wanted.source_id
            ):
                return None
            return LinkRow(email_key=key, source_id=wanted.source_id, member_id=member_id)

        # One transaction writing only the links that change: a quiet pass costs no fsync.
        # An address orgsync invited that another source record holds now (two people
        # swapped addresses, an address given to someone else) is relinked too: an
        # incremental pass finds a changed person's old address through this link, and a
        # stale one would leave that address's invitation pending until the next full pass.
        store.record_links(
            target,
            [
                row
                for key, wanted in desired.wanted.items()
                if (row := linked_row(key, wanted)) is not None
            ],
        )
        leaving = [op for op in fresh.operations if isinstance(op, _PERSON_REMOVALS)]
        leaving += [h.operation for h in fresh.held if isinstance(h.operation, _PERSON_REMOVALS)]
        # Held removals keep their clock: the grace must not restart while a person waits
        # for a human to lift the guard.
        # Only a removal waiting out its grace is someone missing: a rename or a newcomer
        # waiting for an address is not (the address may be another account's, whose
        # grace would start counting, and `explain` showed them missing).
        missing = [
            normalize_email(w.email)
            for w in fresh.waiting
            if w.group is None and w.op in _GRACE_OPS
        ]
        missing += [normalize_email(op.email) for op in leaving]
        store.mark_missing(target, missing, self.clock())
        if scope is not None:
            missing += [k for k in memory.missing_since if k not in scope]
        store.clear_missing(target, keep_only=missing)
        if not groups_read or self.suspect_reads.get(target) is not None:
            # A read that looks truncated may lack owned groups that still exist: they
            # stay owned (their re-creation is held, `check_target_read`).
            return
        present = {group.id for group in observed.groups}
        for group_id in store.owned_groups(target):
            if group_id not in present:
                store.disown_group(target, group_id)  # deleted by someone else


def read_org(
    target: Target, snapshot: SourceSnapshot, memory: Memory, subjects: Subjects
) -> TargetSnapshot:
    """The whole organization, or for a targeted run only the named people where the
    target can read people (`ReadsPeople`).

    Asked for: the named emails and those the source gives the named ids, and the
    members earlier runs linked to either (a person whose email changed since).
    """
    if not subjects or not isinstance(target, ReadsPeople):  # the engine's `narrow` repeats
        return target.read()
    emails = set(subjects.emails)
    source_ids = set(subjects.source_ids)
    for person in snapshot.people:
        key = person.email_key
        if person.id in subjects.source_ids:
            emails.add(key)
        elif key in subjects.emails:
            source_ids.add(person.id)
    source_ids.update(
        memory.linked_sources[k] for k in subjects.emails if k in memory.linked_sources
    )
    member_ids = frozenset(memory.links[s] for s in source_ids if s in memory.links)
    return target.read_people(frozenset(emails), member_ids)


def scope(
    target: str,
    desired: DesiredState,
    observed: TargetSnapshot,
    memory: Memory,
    options: RunOptions,
    *,
    limits: SafetyLimits | None = None,
) -> Scoped | None:
    """The slice of a targeted reconcile, or None to plan the whole organization."""
    subjects = options.subjects
    if not subjects:
        return None
    scoped = restrict(desired, observed, memory, subjects)
    if scoped is None:
        log.info("run.widened", target=target, reason="a named person is an owner")
        return None
    # An incremental pass names every change: its slice holds all of a pass's removals
    # and additions, and the gate judges them as a full pass's.
    if limits is not None and not options.incremental:
        reason = whole_plan_needed(
            scoped,
            memory,
            desired,
            limits,
            judge_removals=options.allow_removals is None,
            judge_additions=options.allow_additions is None,
        )
        if reason is not None:
            log.info("run.widened", target=target, reason=reason)
            return None
    return scoped
