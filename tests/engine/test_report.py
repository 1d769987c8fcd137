"""The plan and run tables as a person reads them: aligned, complete, colour only on a
terminal, never an escape code in piped output, and no name ever cut short."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import IO

import pytest

from orgsync.core.plan import (
    AddGroupMember,
    AssignGroupRole,
    CreateGroup,
    HeldOperation,
    Invite,
    Plan,
    RemoveGroupMember,
    RemoveMember,
    SetRole,
    Waiting,
)
from orgsync.report import (
    HEADINGS,
    LEGEND,
    RUN_HEADINGS,
    Style,
    render_plan,
    render_result,
    render_runs,
    sync_json,
)
from orgsync.results import TargetResult
from orgsync.store import RunRecord
from tests.output_schema import assert_sync_output

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
LONG = "a.very.long.name.that.goes.on.and.on@subsidiary.example-corporation.com"


def plan(*, long_name: bool = False) -> Plan:
    """A plan with every section: people, a group's changes, held, waiting, warnings."""
    ada = LONG if long_name else "ada@example.com"
    return Plan.build(
        target="openai-prod",
        generated_at=NOW,
        operations=[
            Invite(email=ada, role="reader", source_id="p1", reason="member of openai-users"),
            SetRole(
                email="grace@example.com",
                user_id="u2",
                role="owner",
                previous_role="reader",
                raise_=True,
                reason="member of openai-owners",
            ),
            RemoveMember(email="ken@example.com", user_id="u3", reason="inactive in the source"),
            CreateGroup(group="team-ml", source_group_id="t1", reason="IdP group 'team-ml'"),
            AddGroupMember(
                group="team-ml",
                source_group_id="t1",
                email="grace@example.com",
                user_id="u2",
                reason="member of IdP group 'team-ml'",
            ),
            AssignGroupRole(
                group="team-ml",
                source_group_id="t1",
                role="ml-engineer",
                role_id="r1",
                reason="rule targets.groups[0]",
            ),
            RemoveGroupMember(
                group="team-data",
                group_id="g9",
                email="ken@example.com",
                user_id="u3",
                reason="no longer in IdP group 'team-data'",
            ),
        ],
        held=[
            HeldOperation(
                operation=RemoveMember(email=f"p{i}@example.com", user_id=f"u{i}", reason="gone"),
                guard="3 removals exceed safety.max_removals = 2",
            )
            for i in (4, 5, 6)
        ],
        waiting=[
            Waiting(
                op="add_group_member",
                email="alan@example.com",
                group="team-ml",
                reason="not a member yet (invited)",
            ),
            Waiting(
                op="remove_member",
                email="bob@example.com",
                until=NOW + timedelta(days=3),
                reason="missing from the source, within removal_grace",
            ),
        ],
        warnings=["2 source people share the email 'dup@example.com'"],
    )


def rows(text: str) -> list[str]:
    """The table's rows (marked operation lines), headings and notes left out."""
    marks = "".join(re.escape(mark) for mark in LEGEND)
    return [line for line in text.splitlines() if re.match(rf"^    [{marks}] [a-z_]+ ", line)]


def header(text: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith("OPERATION"))


def test_every_column_starts_where_its_heading_does() -> None:
    text = render_plan(plan())
    top = header(text)
    starts = [top.index(heading) for heading in HEADINGS]
    assert len(rows(text)) == 7 + 3 + 2
    for row in rows(text):
        for start in starts[1:]:
            assert row[start - 2 : start] == "  ", (row, start)  # a gap before each column
        assert row[starts[0] :].split()[0] in LEGEND


def test_a_role_change_shows_old_and_new() -> None:
    text = render_plan(plan())
    role_at = header(text).index("ROLE")
    by_kind = {tuple(row.split()[1:3]): row for row in rows(text)}
    assert by_kind["set_role", "grace@example.com"][role_at:].startswith("reader -> owner  ")
    assert by_kind["invite", "ada@example.com"][role_at:].startswith("none -> reader  ")
    assert by_kind["assign_group_role", "team-ml"][role_at:].startswith("none -> ml-engineer  ")
    reason_at = header(text).index("REASON")
    member = by_kind["add_group_member", "grace@example.com"]
    assert member[role_at:reason_at].strip() == "" and member[reason_at:].startswith("member of")


def test_sections_counts_legend_and_checksum() -> None:
    current = plan()
    text = render_plan(current)
    lines = text.splitlines()
    assert lines[0] == ("Target openai-prod: 7 operations to apply, 3 held, 2 waiting, 1 warning")
    counted = {
        kind: int(n)
        for n, kind in re.findall(r"(\d+) (\w+)", lines[1].removeprefix("  to apply: "))
    }
    assert counted == current.summary
    assert "  held: 3 remove_member" in lines
    legend = next(line for line in lines if line.startswith("  legend: "))
    for mark in ("+", "^", "-", "!", "."):
        assert f"{mark} {LEGEND[mark]}" in legend
    assert "v " + LEGEND["v"] not in legend, "only marks the plan uses"
    assert "  Held by the safety gate: 3 removals exceed safety.max_removals = 2" in lines
    assert "    to apply what is held after checking it: orgsync sync --allow-removals 5" in lines
    assert "  Waiting: cannot happen yet" in lines
    assert any("bob@example.com" in r and "(until 2026-01-04 12:00Z)" in r for r in rows(text))
    assert any("alan@example.com in team-ml" in r for r in rows(text))
    assert f"  checksum {current.checksum}" in lines
    note = lines[lines.index(f"  checksum {current.checksum}") + 1]
    assert "--plan-out FILE" in note and "--plan FILE" in note and "not the time" in note
    assert "    2 source people share the email 'dup@example.com'" in lines


def test_group_operations_stay_under_their_group() -> None:
    text = render_plan(plan())
    lines = text.splitlines()
    start = lines.index("  Group team-ml (new)")
    section = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        section.append(line.split()[1])
    assert section == ["create_group", "add_group_member", "assign_group_role"]
    data = lines.index("  Group team-data (id g9)")
    assert lines[data + 1].split()[:3] == ["-", "remove_group_member", "ken@example.com"]


def test_a_long_name_is_shown_whole_and_the_other_rows_stay_aligned() -> None:
    long_text = render_plan(plan(long_name=True))
    short_text = render_plan(plan())
    (long_row,) = [r for r in rows(long_text) if LONG in r]
    assert long_row.endswith("member of openai-users")
    assert "none -> reader" in long_row
    top = header(long_text)
    # One long name does not push every row right: the column stops at its cap.
    assert top.index("ROLE") - top.index("PERSON OR GROUP") == 40 + 2
    others = [r for r in rows(long_text) if LONG not in r]
    assert len(others) == len(rows(short_text)) - 1
    for row in others:
        for heading in HEADINGS[1:]:
            start = top.index(heading)
            assert row[start - 2 : start] == "  ", (row, heading)
    assert all(
        r.split()[2:] == s.split()[2:] for r, s in zip(others, rows(short_text)[1:], strict=True)
    )


def test_plain_output_has_no_escape_codes_and_colour_changes_nothing_else() -> None:
    current = plan()
    plain = render_plan(current, Style(colour=False))
    coloured = render_plan(current, Style(colour=True))
    assert "\x1b" not in plain
    assert ESCAPE.search(coloured)
    assert ESCAPE.sub("", coloured) == plain
    result = TargetResult("openai-prod", 3, "held", run_id="r1", plan=current)
    assert "\x1b" not in render_result(result, dry_run=True)
    assert ESCAPE.sub("", render_result(result, dry_run=True, style=Style(colour=True))) == (
        render_result(result, dry_run=True)
    )


@pytest.fixture
def terminal() -> Iterator[IO[str]]:
    """A real pseudo-terminal, as an administrator's shell has."""
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as stream:
        yield stream
    os.close(leader)


def test_colour_only_on_a_terminal_and_never_with_no_color(
    terminal: IO[str], tmp_path: os.PathLike[str]
) -> None:
    assert Style.for_stream(terminal, {"TERM": "xterm"}).colour
    assert not Style.for_stream(terminal, {"TERM": "xterm", "NO_COLOR": "1"}).colour
    assert not Style.for_stream(terminal, {"TERM": "dumb"}).colour
    assert Style.for_stream(terminal, {"NO_COLOR": ""}).colour, "an empty NO_COLOR is unset"
    with open(os.path.join(tmp_path, "out.txt"), "w") as redirected:
        assert not Style.for_stream(redirected, {"TERM": "xterm"}).colour
    read, write = os.pipe()
    with os.fdopen(write, "w") as piped:
        assert not Style.for_stream(piped, {"TERM": "xterm"}).colour
    os.close(read)


def test_an_empty_plan_says_so_and_still_shows_its_checksum() -> None:
    empty = Plan.build(target="t", generated_at=NOW, operations=[])
    text = render_plan(empty)
    assert text.splitlines()[0] == "Target t: no changes, 0 held, 0 waiting, 0 warnings"
    assert "legend" not in text and "OPERATION" not in text
    assert f"  checksum {empty.checksum}" in text


def test_json_has_one_shape_for_one_target_and_for_several() -> None:
    one = TargetResult("openai-prod", 2, "changes-pending", run_id="r1", plan=plan())
    failed = TargetResult("keycard", 1, "failed", run_id="r2", error="HTTP 401 from keycard")
    single = sync_json([one], dry_run=True)
    several = sync_json([one, failed], dry_run=True)
    assert single["targets"] == several["targets"][:1]
    assert (single["exit_code"], several["exit_code"]) == (2, 1)
    assert several["targets"][1] == {
        "target": "keycard",
        "run": {"id": "r2", "status": "failed", "exit_code": 1, "error": "HTTP 401 from keycard"},
    }
    assert_sync_output(single)
    assert_sync_output(several)


def record(run_id: str, target: str, status: str, exit_code: int | None) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        target=target,
        mode="dry-run",
        trigger="manual",
        status=status,
        exit_code=exit_code,
        started_at=NOW,
        finished_at=None,
        summary={"invite": 3} if exit_code == 2 else {},
        checksum=None,
        error=None,
        held=0,
        failed=0,
        waiting=0,
        pid=1,
        host="h",
    )


def test_runs_have_a_header_and_aligned_columns() -> None:
    records = [
        record("0001-long-run-id", "openai-production-eu", "changes-pending", 2),
        record("2", "kc", "running", None),
    ]
    text = render_runs(records)
    lines = text.splitlines()
    starts = [lines[0].index(heading) for heading in RUN_HEADINGS]
    assert starts == sorted(starts) and starts[0] == 0
    for line in lines[1:]:
        for start in starts[1:]:
            assert line[start - 2 : start] == "  " and line[start] != " ", (line, start)
    assert lines[1].endswith("  3 invite")
    assert lines[2].split()[-2:] == ["-", "-"]  # no exit code yet, no changes
    assert "\x1b" not in text
    assert ESCAPE.sub("", render_runs(records, Style(colour=True))) == text
    assert render_runs([]) == "no runs recorded yet"


def test_an_applied_run_says_what_failed_and_why() -> None:
    from orgsync.applier import ApplyReport, Outcome
    from orgsync.core.ports import OperationStatus

    applied = Plan.build(target="t", generated_at=NOW, operations=list(plan().operations[:2]))
    first, second = applied.operations
    report = ApplyReport(
        outcomes=[
            Outcome(0, first, OperationStatus.DONE),
            Outcome(1, second, OperationStatus.FAILED, detail="HTTP 400: unknown role"),
        ]
    )
    text = render_result(TargetResult("t", 1, "failed", plan=applied, report=report), dry_run=False)
    lines = text.splitlines()
    assert "Applied 1 of 2; failed 1; held 0." in lines
    assert f"  failed: {second.op} {second.subject}: HTTP 400: unknown role" in lines
    assert lines[-1] == "=> t: error (exit 1)"
