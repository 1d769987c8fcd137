"""The check every "incremental equals full" red-team test makes after each step of source
changes, whatever the source (file, slapd, a SCIM provider, the Okta, Entra and Google
emulators): a full dry run plans F, the incremental sync then plans I, I must be F
(operations and held), a full dry run afterwards plans nothing, and no address holds two
pending invitations."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Protocol

from orgsync.core.plan import Plan, operation_json
from orgsync.engine import Engine
from orgsync.results import RunOptions, TargetResult
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import KEY_ENV, holdings, pending_invites_per_email


def shape(plan: Plan | None) -> dict[str, list[Any]]:
    """What a plan does, without its times (generated_at, a grace's `until`)."""
    assert plan is not None
    return {
        "operations": sorted(
            json.dumps(operation_json(o), sort_keys=True) for o in plan.operations
        ),
        "held": sorted(
            json.dumps([operation_json(h.operation), h.guard], sort_keys=True) for h in plan.held
        ),
        "waiting": sorted((w.op, w.email, w.reason) for w in plan.waiting if w.group is None),
    }


def one(results: list[TargetResult]) -> TargetResult:
    (result,) = results
    return result


def openai_target(emulator: OpenAIEmulator) -> dict[str, Any]:
    """The one target these tests sync: scope and owner role by group."""
    return {
        "name": "t",
        "type": "openai",
        "base_url": emulator.start(),
        "api_key_env": KEY_ENV,
        "allow_plaintext": True,
        "default_role": "reader",
        "scope_groups": ["openai-*"],
        "roles": [{"group": "openai-owners", "role": "owner"}],
    }


def check_step(
    engine: Engine, emulator: OpenAIEmulator, replay: str, kinds: dict[str, int]
) -> None:
    """One step's check; `replay` says how to reproduce it, `kinds` counts the passes."""
    full = one(engine.run(RunOptions(dry_run=True)))
    assert full.status != "failed", (replay, full.error)
    incremental = one(engine.run(RunOptions(dry_run=False, incremental=True)))
    assert incremental.status != "failed", (replay, incremental.error)
    kind = str(incremental.pass_kind)
    kinds[kind] = kinds.get(kind, 0) + 1
    got, wanted = shape(incremental.plan), shape(full.plan)
    message = f"{replay}\n{kind}: {got}\nfull: {wanted}"
    assert got["operations"] == wanted["operations"], message
    assert got["held"] == wanted["held"], message
    after = one(engine.run(RunOptions(dry_run=True)))
    assert shape(after.plan)["operations"] == [], (replay, holdings(emulator))
    assert all(n == 1 for n in pending_invites_per_email(emulator).values())


class RandomChanges(Protocol):
    """Random changes made to a source as an administrator makes them: `step` makes one
    and says what in `log`."""

    rng: random.Random
    log: list[str]

    def step(self) -> None: ...


def run_sequence(
    engine: Engine,
    emulator: OpenAIEmulator,
    changes: RandomChanges,
    *,
    steps: int,
    label: str = "",
    after_changes: Callable[[int], None] = lambda step: None,
) -> dict[str, int]:
    """A first sync, then `steps` steps of one to three random changes, each followed by
    `check_step`; returns how many passes of each kind the incremental syncs were."""
    kinds: dict[str, int] = {}
    assert one(engine.run(RunOptions(dry_run=False))).status == "ok"
    for step in range(steps):
        for _ in range(changes.rng.choice([1, 1, 2, 3])):
            changes.step()
        after_changes(step)
        replay = f"{label}step {step}: " + "; ".join(changes.log)
        check_step(engine, emulator, replay, kinds)
    return kinds
