"""Where the configuration becomes core policy: rules, limits, removal policy, checks.

Every mapping from `orgsync.config` models to `orgsync.core` values lives here, so that a
dry run, a sync, `explain` and `validate` read the configuration the same way.
"""

from __future__ import annotations

from orgsync.config import Config, TargetConfig
from orgsync.core.errors import ConfigError
from orgsync.core.model import Capabilities, RoleCatalog, normalize_email
from orgsync.core.planner import RemovalPolicy
from orgsync.core.rules import GroupRule, MembershipRules, RoleRule
from orgsync.core.safety import SafetyLimits


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


def safety_limits(config: Config) -> SafetyLimits:
    """The `[safety]` limits, taken from the configuration here and nowhere else."""
    safety = config.safety
    return SafetyLimits(
        max_removals=safety.max_removals,
        max_removal_ratio=safety.max_removal_ratio,
        min_managed_for_ratio=safety.min_managed_for_ratio,
        max_group_member_removals=safety.max_group_member_removals,
        max_additions=safety.max_additions,
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
