"""`orgsync explain`: its read-only wiring, and how it looks to people and to scripts.

`explain` reads as a dry run reads (the engine's source read, `orgsync.planning` for each
target) and plans from the same inputs; the explanation itself is decided in the pure
core (`orgsync.core.explain`). The rest of this module lays it out: one block per target,
the source record and the rules that matched, what is wanted and what the target holds,
the person's operations (the dry run's own), and every guard with its reason, closed by
the outcome and its exit code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from orgsync.config import Config
from orgsync.core.explain import ExplainInput, Explanation, MemberView
from orgsync.core.explain import explain as explain_one
from orgsync.core.model import Memory
from orgsync.core.plan import PHASE_MARKS, Operation, SetRole
from orgsync.core.ports import LearnsForms
from orgsync.core.text import visible
from orgsync.engine import Engine
from orgsync.factories import open_state_store
from orgsync.policy import safety_limits
from orgsync.results import RunOptions
from orgsync.store import NoStateDatabase, StateStore
from orgsync.store.identity import seen as seen_identity

log = structlog.get_logger(__name__)

EXIT_NOT_FOUND = 1

_VERDICTS = {0: "nothing to do", 2: "changes pending", 3: "held by the safety gate"}
_LABEL = 10


def explain(engine: Engine, person: str, *, target: str | None = None) -> list[Explanation]:
    """One person in each selected target, as a dry run plans it.

    Read-only: the same reads, rules, planner and safety gate as a dry run, but no
    writer lock, no run recorded, no pruning, nothing learned stored, and a missing
    state database is not created (orgsync then manages nobody yet).
    """
    from orgsync.interrupt import ReadInterrupt

    targets = engine.selected_targets(RunOptions(target=target))
    store = _read_only_store(engine.config, engine.environ)
    try:
        snapshot = engine.read_source()
        planning = engine.planning
        explanations: list[Explanation] = []
        for config in targets:
            connector = engine.target_factory(
                config, engine.environ, interrupt=ReadInterrupt(engine.stop)
            )
            learned = store.learned_forms(config.name) if store is not None else []
            if isinstance(connector, LearnsForms):
                connector.use_learned_forms(learned, lambda form: None)
            try:
                observed, desired, rules = planning.read_target(config, snapshot, connector)
                if store is not None:  # as a dry run: another organization's memory is refused
                    store.check_identity(
                        config.name,
                        seen_identity(config.type, config.base_url, connector),
                        record=False,
                    )
                memory = store.memory(config.name) if store is not None else Memory()
                # Grace is counted on the clock the missing-since times were written on.
                now = store.clock() if store is not None else engine.clock()
                given = planning.plan_input(config, desired, observed, connector, memory, now=now)
                inputs = ExplainInput(
                    given=given,
                    snapshot=snapshot,
                    rules=rules,
                    population=planning.population(observed, memory, desired),
                    limits=safety_limits(engine.config),
                )
                explanations.append(explain_one(person, inputs))
            finally:
                connector.close()
        return explanations
    finally:
        if store is not None:
            store.close()


def _read_only_store(config: Config, environ: Mapping[str, str]) -> StateStore | None:
    """The state database as it is (`[state] path` or `url`), or None when there is none
    yet (never created)."""
    try:
        store = open_state_store(config.state, environ, create=False)
    except NoStateDatabase as absent:
        log.info("state.absent", reason=str(absent))
        return None
    behind = store.behind()
    if behind is not None:
        log.warning("state.behind", note=behind.summary)
    return store


def found_anywhere(explanations: Sequence[Explanation]) -> bool:
    return any(e.found for e in explanations)


def exit_code(explanations: Sequence[Explanation]) -> int:
    """As a dry run: the worst of the targets (3 held > 2 pending > 0); 1 when the person
    is found nowhere (a typo must not read as "nothing to do")."""
    if not found_anywhere(explanations):
        return EXIT_NOT_FOUND
    codes = {e.exit_code for e in explanations}
    return 3 if 3 in codes else 2 if 2 in codes else 0


def not_found_message(lookup: str, explanations: Sequence[Explanation]) -> str:
    targets = ", ".join(e.target for e in explanations)
    return (
        f"nobody matches {lookup.strip()!r}: no source record has this id or email, no "
        f"member or invitation of {targets} has this email, and the state database "
        "remembers no one by it (check the spelling, or give the source id)"
    )


def explanations_json(lookup: str, explanations: Sequence[Explanation]) -> dict[str, Any]:
    """Always one shape: `{"lookup", "found", "exit_code", "targets": [...]}`."""
    return {
        "lookup": lookup.strip(),
        "found": found_anywhere(explanations),
        "exit_code": exit_code(explanations),
        "targets": [e.to_json() for e in explanations],
    }


def render_explanations(explanations: Sequence[Explanation]) -> str:
    return "\n\n".join(render_explanation(e) for e in explanations)


def render_explanation(item: Explanation) -> str:
    lines = [f"Target {item.target}: {item.lookup}"]

    def block(label: str, texts: Sequence[str]) -> None:
        for index, text in enumerate(texts):
            lines.append(f"  {label if index == 0 else '':<{_LABEL}}  {text}")

    block("source", _source_lines(item) or ["no record in the source"])
    matches = [
        f"{m.describe()}{'  <- decides' if m.decides else ''}"
        for record in item.sources
        for m in record.matches
    ]
    if item.sources:
        block("rules", matches or ["no rule matches any of their groups"])
    desired = item.desired
    if desired.wanted:
        role = f" as {desired.role}" if desired.role else ""
        groups = f", in groups {', '.join(desired.groups)}" if desired.groups else ""
        block("wanted", [f"member{role}{groups}", f"because: {desired.reason}"])
    else:
        block("wanted", [f"not wanted: {desired.reason}"])
    block("target", _current_lines(item))
    block("plan", [_operation(op) for op in item.operations] or ["nothing for this person"])
    if item.held:
        block("held", [f"! {_operation(h.operation)[2:]}" for h in item.held])
    if item.waiting:
        block("waiting", [_waiting(w.op, w.email, w.group, w.reason) for w in item.waiting])
    if item.guards:
        block("guards", [f"{g.kind}: {g.reason}" for g in item.guards])
    if item.warnings:
        block("warnings", [f"! {w}" for w in item.warnings])
    if item.found:
        verdict = _VERDICTS[item.exit_code]
        lines.append(f"=> {item.target}: {verdict} for this person (exit {item.exit_code})")
    else:
        lines.append(f"=> {item.target}: not found here")
    # Records, names and group names come from the directory and the organization.
    return "\n".join(visible(line) for line in lines)


def _source_lines(item: Explanation) -> list[str]:
    lines: list[str] = []
    for record in item.sources:
        name = f" {record.name!r}" if record.name else ""
        state = "active" if record.active else "inactive"
        line = f"{record.source_id}  {record.email or '(no email)'}{name}, {state}"
        if record.rejected:
            line += f"; REJECTED: {record.rejected}"
        lines.append(line)
    return lines


def _current_lines(item: Explanation) -> list[str]:
    current = item.current
    lines = [current.state + (", managed by orgsync" if current.managed else "")]
    lines.extend(_member(m) for m in current.members)
    for invite in current.invites:
        expires = f", expires {invite.expires_at:%Y-%m-%d}" if invite.expires_at else ""
        lines.append(
            f"invitation {invite.id} {invite.email} as {invite.role or '-'} "
            f"({invite.status}{expires})"
        )
    if current.missing_since is not None:
        lines.append(f"missing from the source since {current.missing_since:%Y-%m-%d %H:%M}Z")
    return lines


def _member(member: MemberView) -> str:
    status = "" if member.active else " (suspended)"
    role = f", role {member.role}" if member.role else ""
    groups = ", ".join(f"{g.name} ({g.owner})" for g in member.groups) or "none"
    return f"member {member.id} {member.email or '(no email)'}{status}{role}; groups: {groups}"


def _operation(op: Operation) -> str:
    mark = PHASE_MARKS[op.phase]
    if isinstance(op, SetRole):
        what = f"{op.email} {op.previous_role or '-'} -> {op.role}"
    else:
        group = getattr(op, "group", None)
        role = getattr(op, "role", None)
        what = op.subject if group is None else f"{getattr(op, 'email', '')} in group {group!r}"
        what += f" as {role}" if role and group is None else ""
    return f"{mark} {op.op} {what}: {op.reason}"


def _waiting(op: str, email: str, group: str | None, reason: str) -> str:
    where = f" in group {group!r}" if group else ""
    return f". {op} {email}{where}: {reason}"
