"""Red team of targeted runs (issue 13: `sync --only`, webhooks naming people) as a
careless operator and as an attacker who can send webhooks would try them.

How it could hurt an administrator: a removal applied one person at a time that a full
pass would hold by the mass-removal gate (a truncated directory, webhooks arriving for
each "leaver"); a duplicate invitation when one person is named twice or under a case or
full-width variant of their address; a stranger (someone outside the source) removed or
invited because a webhook named them; a name that looks like a filter (`*`, `" or "`,
LDAP metacharacters) matching somebody.

The property: a targeted plan never does anything the full plan does not (same
operations, or fewer), and does what the full plan does about the people it names.
Real file source, real SQLite, the OpenAI emulator over loopback; the engine in-process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import Config, parse_config
from orgsync.core.model import normalize_email
from orgsync.core.plan import Plan, operation_json
from orgsync.core.safety import Allowances, Population, SafetyLimits, gate
from orgsync.engine import Engine
from orgsync.results import RunOptions
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, directory, holdings, pending_invites_per_email
from tests.cli.test_only import without
from tests.coremodels import group, make_plan, member, org, person, snapshot
from tests.engine.differential import one, openai_target


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


def config(folder: Path, emulator: OpenAIEmulator, **safety: Any) -> Config:
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [openai_target(emulator)],
        "safety": {"max_removals": 10, "max_removal_ratio": 1.0, **safety},
        "state": {"path": "state.db"},
    }
    return parse_config(document, origin="test", base_dir=folder)


def write(folder: Path, document: dict[str, Any]) -> None:
    (folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")


def ops(plan: Plan | None) -> set[str]:
    assert plan is not None
    return {json.dumps(operation_json(o), sort_keys=True) for o in plan.operations}


def held(plan: Plan | None) -> set[str]:
    assert plan is not None
    return {json.dumps(operation_json(h.operation), sort_keys=True) for h in plan.held}


@pytest.fixture
def synced(tmp_path: Path, emulator: OpenAIEmulator) -> Iterator[tuple[Engine, dict[str, Any]]]:
    document = directory(30)
    write(tmp_path, document)
    engine = Engine(config(tmp_path, emulator), environ={KEY_ENV: API_KEY})
    try:
        assert one(engine.run(RunOptions(dry_run=False))).status == "ok"
        yield engine, document
    finally:
        engine.close()


def test_a_leaver_named_while_the_directory_is_truncated_is_held_as_a_full_pass_holds_them(
    tmp_path: Path, emulator: OpenAIEmulator, synced: tuple[Engine, dict[str, Any]]
) -> None:
    """Bug found: 20 of 30 people vanish (a truncated read); a full pass holds all 20
    removals (max_removals = 10). A webhook naming one of them (or `--only`) planned one
    removal, under the limit, and applied it: one webhook per "leaver" and the gate
    never holds. Now a targeted run holds removals while the source has lost more
    managed people than the removal limits allow."""
    engine, document = synced
    write(tmp_path, without(document, *(f"p{i}" for i in range(10, 30))))
    full = one(engine.run(RunOptions(dry_run=True)))
    assert len(full.plan.held if full.plan else ()) == 20
    for name in ("person12@example.com", "p13"):
        targeted = one(
            engine.run(
                RunOptions(
                    dry_run=False,
                    only_emails=frozenset({name} if "@" in name else set()),
                    only_source_ids=frozenset(set() if "@" in name else {name}),
                    trigger="webhook",
                )
            )
        )
        assert targeted.status == "held", targeted
        assert ops(targeted.plan) == set()
    assert "person12@example.com" in holdings(emulator)
    assert "person13@example.com" in holdings(emulator)


def test_a_leaver_named_alone_is_still_removed_when_the_source_looks_sound(
    tmp_path: Path, emulator: OpenAIEmulator, synced: tuple[Engine, dict[str, Any]]
) -> None:
    engine, document = synced
    write(tmp_path, without(document, "p7", "p8"))
    targeted = one(
        engine.run(RunOptions(dry_run=False, only_emails=frozenset({"person7@example.com"})))
    )
    assert targeted.status == "ok", targeted
    assert "person7@example.com" not in holdings(emulator)
    assert "person8@example.com" in holdings(emulator), "not named: the next pass's"


HOSTILE = [
    # case, full-width and padded variants of one person, and the person named twice
    ["PERSON3@EXAMPLE.COM"],
    ["ｐｅｒｓｏｎ３@ｅｘａｍｐｌｅ.ｃｏｍ"],
    ["  person3@example.com  ", "Person3@Example.com", "p3"],
    # names that look like filters: they must match nobody
    ["*"],
    ["p*"],
    ['p1" or "1" eq "1'],
    ["*)(uid=*"],
    ["(|(uid=*))"],
    ["\\2a"],
    ['person1@example.com" or emails pr'],
    ["person1@example.com&emails=person2@example.com"],
    ["person1@example.com,person2@example.com"],
    # a stranger (outside the source and the organization)
    ["stranger@elsewhere.example"],
]


@pytest.mark.parametrize("names", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_plan_nothing_a_full_pass_would_not(
    tmp_path: Path,
    emulator: OpenAIEmulator,
    synced: tuple[Engine, dict[str, Any]],
    names: list[str],
) -> None:
    """Changes are pending for several people (a joiner, a leaver, a role change, an
    email change); a run naming `names` plans a subset of the full plan, and what it
    plans concerns the person the names resolve to (person3 or nobody)."""
    engine, document = synced
    changed = without(document, "p4")  # a leaver
    changed["people"].append({"id": "p99", "email": "joiner@example.com", "name": "J"})
    changed["groups"][0]["members"].append("p99")  # a joiner
    changed["people"][3]["email"] = "person3.new@example.com"  # person3 moves address
    changed["groups"][1]["members"].append("p5")  # a promotion
    write(tmp_path, changed)
    full = one(engine.run(RunOptions(dry_run=True)))
    before = holdings(emulator)
    emails = frozenset(n for n in names if "@" in n)
    ids = frozenset(n for n in names if "@" not in n)
    targeted = one(
        engine.run(
            RunOptions(dry_run=False, only_emails=emails, only_source_ids=ids, trigger="webhook")
        )
    )
    assert targeted.status in ("ok", "held"), targeted
    assert ops(targeted.plan) <= ops(full.plan)
    assert held(targeted.plan) <= held(full.plan)
    subjects = {
        normalize_email(str(json.loads(o).get("email", ""))) for o in ops(targeted.plan)
    } - {""}
    assert subjects <= {"person3@example.com", "person3.new@example.com"}, subjects
    person3 = any(normalize_email(n) == "person3@example.com" for n in names) or "p3" in names
    if person3:
        # Named, however spelt: moved to the new address exactly once.
        assert pending_invites_per_email(emulator).get("person3.new@example.com") == 1
        assert "person3@example.com" not in holdings(emulator)
    else:
        assert holdings(emulator) == before
    assert all(n == 1 for n in pending_invites_per_email(emulator).values())


def test_very_many_names_are_read_in_bounded_requests_and_plan_nothing(
    emulator: OpenAIEmulator, synced: tuple[Engine, dict[str, Any]]
) -> None:
    """A careless `--only $(cat everyone.txt)` or a webhook flood: 3000 strangers cost
    the users list filtered 100 at a time, and change nothing."""
    engine, _ = synced
    before = holdings(emulator)
    mark = len(emulator.requests)
    names = frozenset(f"stranger{i}@elsewhere.example" for i in range(3000))
    targeted = one(engine.run(RunOptions(dry_run=False, only_emails=names, trigger="webhook")))
    assert targeted.status == "ok", targeted
    assert ops(targeted.plan) == set()
    assert holdings(emulator) == before
    assert len(emulator.requests) - mark <= 3000 // 100 + 10


def test_the_gate_holds_a_named_run_s_few_removals_while_many_are_missing() -> None:
    """The pure rule under the engine test above: the same one-removal plan is applied
    when it is the whole plan's, held when it names people while 20 are missing, and
    `--allow-removals` lifts that as it lifts any removal guard."""
    source = snapshot(
        person("0", "p0@x.com", active=False), groups=(group("g", "openai-users", "0"),)
    )
    plan = make_plan(source, org(member("u0", "p0@x.com")))
    assert len(plan.operations) == 1
    limits = SafetyLimits(max_removals=10, max_removal_ratio=1.0)
    assert not gate(plan, population=Population(30, missing=20), limits=limits).held
    named = Population(30, missing=20, named=True)
    (held_,) = gate(plan, population=named, limits=limits).held
    assert "20 managed people missing from the source" in held_.guard
    assert not gate(plan, population=Population(30, missing=5, named=True), limits=limits).held
    lifted = gate(plan, population=named, limits=limits, allowances=Allowances(removals=1))
    assert not lifted.held
