"""Which of a target's group patterns match no group of the source (a typo, or a group
the source does not have yet): `validate` names each, and a sync refuses one that would
take something away (`orgsync.policy.check_rule_groups`). Light enough for `validate
--offline` of a file source, which reads the groups.
"""

from __future__ import annotations

from dataclasses import dataclass

from orgsync.config import TargetConfig
from orgsync.core.globs import name_matcher


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A group pattern of a target that matches no group of the source."""

    kind: str
    """`scope`, `role` or `groups` (a `[[targets.groups]]` rule)."""
    role: str | None
    """The role a `role` rule grants."""
    message: str


def unmatched_rules(target: TargetConfig, group_names: list[str]) -> list[Unmatched]:
    """Each of `target`'s group patterns that matches no group of the source, and why that
    is wrong: a typo in `scope_groups` puts everyone out of scope (the whole organization
    planned for removal), one in a role rule hands its people `default_role` (owners
    demoted), one in a `[[targets.groups]]` rule mirrors nothing. The source has the final
    word on a group's name, so the nearest names it has are offered."""
    named = {n.casefold(): n for n in group_names}

    def missing(kind: str, key: str, pattern: str, harm: str, role: str | None = None) -> None:
        matches = name_matcher([pattern])
        if any(matches(name) for name in group_names):
            return
        from difflib import get_close_matches  # only for a rule that is wrong

        near = get_close_matches(pattern.casefold(), list(named), n=3)
        hint = f" (nearest: {', '.join(named[n] for n in near)})" if near else ""
        found.append(
            Unmatched(
                kind,
                role,
                f"targets.{target.name}.{key} = {pattern!r} matches no group of the source"
                f"{hint}: {harm}; fix the name, or drop the rule while the group does not "
                "exist",
            )
        )

    found: list[Unmatched] = []
    for i, pattern in enumerate(target.scope_groups):
        missing("scope", f"scope_groups[{i}]", pattern, "nobody is in scope through it")
    fallback = (
        f"default_role {target.default_role!r}" if target.default_role else "no role (out of scope)"
    )
    for i, rule in enumerate(target.roles):
        harm = f"nobody gets role {rule.role!r} through it; its people get {fallback}"
        missing("role", f"roles[{i}].group", rule.group, harm, rule.role)
    for i, group_rule in enumerate(target.groups):
        missing("groups", f"groups[{i}].source", group_rule.source, "no group is mirrored by it")
    return found
