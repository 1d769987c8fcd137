"""Whatever the plan, `sync --json` output and plan files validate against the documented
schema (docs/plan-output.schema.json), and colour never changes what the table says."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orgsync.applier import ApplyReport, Outcome
from orgsync.core.plan import Plan
from orgsync.core.plan_file import plan_file_text, read_plan_file
from orgsync.core.ports import OperationStatus
from orgsync.core.safety import SafetyLimits
from orgsync.report import Style, render_result, sync_json
from orgsync.results import TargetResult
from tests.core.test_planner_properties import gated_plan, limits_strategy, worlds
from tests.output_schema import assert_plan_file, assert_sync_output, schema

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@st.composite
def results(draw: st.DrawFn, target: str) -> TargetResult:
    """A target's result as the engine gives it: a plan (maybe applied), or an error."""
    if draw(st.integers(0, 5)) == 0:
        error = draw(st.sampled_from(["HTTP 401 from target", "source unreachable", "stopped"]))
        return TargetResult(
            target, 1, draw(st.sampled_from(["failed", "interrupted"])), error=error
        )
    world = draw(worlds())
    limits: SafetyLimits = draw(limits_strategy)
    _, planned, _ = gated_plan(world, world[2], world[1], limits)
    plan: Plan = planned.model_copy(update={"target": target})
    applied = draw(st.booleans())
    report = None
    if applied:
        report = ApplyReport(
            outcomes=[
                Outcome(
                    seq,
                    op,
                    draw(st.sampled_from(list(OperationStatus))),
                    detail=draw(st.sampled_from([None, "HTTP 400: bad role"])),
                    object_id=draw(st.sampled_from([None, "user-1"])),
                )
                for seq, op in enumerate(plan.operations)
            ]
        )
    code, status = (3, "held") if plan.held else (2, "changes-pending")
    if not plan.held and (applied or not plan.operations):
        code, status = 0, "ok"
    if report is not None and report.failed:
        code, status = 1, "failed"
    return TargetResult(target, code, status, run_id=f"run-{target}", plan=plan, report=report)


@st.composite
def runs(draw: st.DrawFn) -> list[TargetResult]:
    count = draw(st.integers(1, 3))
    return [draw(results(f"target-{index}")) for index in range(count)]


@PROPERTY
@given(runs(), st.booleans())
def test_sync_json_always_validates_and_has_one_shape(found: list[TargetResult], dry: bool) -> None:
    document = sync_json(found, dry_run=dry)
    assert_sync_output(json.loads(json.dumps(document)))
    assert [t["target"] for t in document["targets"]] == [r.target for r in found]


@PROPERTY
@given(runs())
def test_plan_files_validate_and_read_back(found: list[TargetResult]) -> None:
    plans = [r.plan for r in found if r.plan is not None]
    if not plans:
        return
    text = plan_file_text(plans)
    assert_plan_file(json.loads(text))
    assert {t: p.checksum for t, p in read_plan_file(text).items()} == {
        p.target: p.checksum for p in plans
    }


@PROPERTY
@given(runs(), st.booleans())
def test_colour_changes_nothing_but_the_escape_codes(found: list[TargetResult], dry: bool) -> None:
    for result in found:
        plain = render_result(result, dry_run=dry)
        assert "\x1b" not in plain
        assert ESCAPE.sub("", render_result(result, dry_run=dry, style=Style(colour=True))) == plain


def test_the_schema_knows_every_operation_kind_and_nothing_else() -> None:
    """A new kind of operation cannot reach `--json` undocumented."""
    from dataclasses import fields
    from typing import get_args

    from orgsync.core.plan import GroupOperation, MemberOperation

    def default_op(kind: type) -> object:
        return next(f.default for f in fields(kind) if f.name == "op")

    kinds = {default_op(model) for model in (*get_args(MemberOperation), *get_args(GroupOperation))}
    assert set(schema()["$defs"]["operationKind"]["enum"]) == kinds
    for kind in kinds:
        model = next(
            m
            for m in (*get_args(MemberOperation), *get_args(GroupOperation))
            if default_op(m) == kind
        )
        wire = {"raise" if f.name == "raise_" else f.name for f in fields(model)}
        assert set(schema()["$defs"][f"op_{kind}"]["properties"]) == wire, kind
