"""Where the configuration becomes core policy: rules, limits, removal policy, checks.

Every mapping from `orgsync.config` models to `orgsync.core` values lives here, so that a
dry run, a sync, `explain` and `validate` read the configuration the same way.
"""

from __future__ import annotations

from orgsync.config import Config, TargetConfig
from orgsync.core.errors import ConfigError
from orgsync.core.model import (
    Capabilities,
    EmailKey,
    RoleCatalog,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.planner import RemovalPolicy
from orgsync.core.rules import DesiredState, GroupRule, MembershipRules, RoleRule
from orgsync.core.safety import SafetyLimits
from orgsync.rule_groups import unmatched_rules


def membership_rules(config: TargetConfig, capabilities: Capabilities) -> MembershipRules:
    return MembershipRules(
        roleless=not capabilities.roles,
        scope_groups=config.scope_groups,
        roles=tuple(RoleRule(r.group, r.role) for r in config.roles),
        default_role=config.default_role,
        groups=tuple(GroupRule(g.source, g.name, g.roles) for g in config.groups),
    )


def check_capabilities(config: TargetConfig, capabilities: Capabilities) -> None:
    """A configuration asking a target for more than it can do is refused, by rule."""
    if config.groups and not capabilities.groups:
        raise ConfigError(
            f"targets.{config.name}.groups[0]: group rules need a target with groups, "
            f"and {config.type} targets have none"
        )


def check_roles(config: TargetConfig, catalog: RoleCatalog) -> None:
    """Every role the configuration names must exist in the target's catalog."""
    named = [(f"targets.{config.name}.roles[{i}].role", r.role) for i, r in enumerate(config.roles)]
    if config.default_role is not None:
        named.append((f"targets.{config.name}.default_role", config.default_role))
    for key, role in named:
        if role not in catalog.order:
            raise ConfigError(
                f"{key}: role {role!r} is not in the target's role catalog "
                f"({', '.join(catalog.order)})"
            )
    for index, rule in enumerate(config.groups):
        for role in rule.roles:
            if role not in catalog.assignable:
                known = ", ".join(sorted(catalog.assignable)) or "none"
                raise ConfigError(
                    f"targets.{config.name}.groups[{index}].roles: role {role!r} is not in "
                    f"the target's role catalog (roles a group can hold: {known})"
                )


def check_rule_groups(
    config: TargetConfig, snapshot: SourceSnapshot, observed: TargetSnapshot, desired: DesiredState
) -> None:
    """A scope or role rule that matches no group of a complete source read, and would
    take something from someone the organization holds, is refused before anything is
    planned: a typo takes access or a role from everyone it was meant for, and the safety
    gate lets up to `max_removals` of them through (a handful of owners demoted is within
    any limit; in a small organization, everyone). A rule matching nothing that takes
    nothing (a group not created yet, a first sync) goes on; `validate` names it anyway.
    A `[[targets.groups]]` rule matching nothing is never refused: a mirrored team the
    source deleted is emptied and deleted on purpose."""
    unmatched = [
        u for u in unmatched_rules(config, [g.name for g in snapshot.groups]) if u.kind != "groups"
    ]
    if not unmatched:
        return
    held: dict[EmailKey, str] = {}
    for invite in observed.invites:
        if invite.status.value == "pending" and invite.email and invite.role:
            held[normalize_email(invite.email)] = invite.role
    for member in observed.members:
        if member.email and member.role:
            held[normalize_email(member.email)] = member.role
    problems: list[str] = []
    for rule in unmatched:
        if rule.kind == "role":
            harmed = sorted(
                key
                for key, role in held.items()
                if role == rule.role
                and (wanted := desired.wanted.get(key)) is not None
                and wanted.role != role
            )
            loses = f"role {rule.role!r}"
        else:
            harmed = sorted(k for k in held if desired.out_of_scope.get(k) == "in no scope group")
            loses = "their access"
        if harmed:
            shown = ", ".join(harmed[:3]) + (
                f" and {len(harmed) - 3} more" if len(harmed) > 3 else ""
            )
            problems.append(f"{rule.message}; planned as written, {shown} would lose {loses}")
    if problems:
        raise ConfigError("; ".join(problems) + "; nothing was planned or changed")


def safety_limits(config: Config) -> SafetyLimits:
    """The `[safety]` limits, taken from the configuration here and nowhere else."""
    safety = config.safety
    return SafetyLimits(
        max_removals=safety.max_removals,
        max_removal_ratio=safety.max_removal_ratio,
        min_managed_for_ratio=safety.min_managed_for_ratio,
        max_group_member_removals=safety.max_group_member_removals,
        max_additions=safety.max_additions,
        max_privilege_grants=safety.max_privilege_grants,
        max_addition_ratio=safety.max_addition_ratio,
        min_source_users=safety.min_source_users,
    )


def removal_policy(config: Config, target: TargetConfig) -> RemovalPolicy:
    """The target's removal policy from `[safety]` and its `on_removal`: built here only, so a
    dry run, a sync and `explain` plan from the same inputs."""
    safety = config.safety
    return RemovalPolicy(
        on_removal=target.on_removal,
        remove_unmanaged=safety.remove_unmanaged,
        protected=frozenset(normalize_email(e) for e in safety.protected),
        removal_grace=safety.removal_grace,
    )
