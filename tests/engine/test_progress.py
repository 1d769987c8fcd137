"""orgsync.progress on its own: the ticker of a phase that reports nothing, log lines kept
while bars show and given back after, the plan shown between the bars, and --quiet's
replay. (What a person sees through the real command: tests/cli/test_operator_output.py.)
"""

from __future__ import annotations

import io
import sys
import time

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from orgsync.core.plan import Plan
from orgsync.core.ports import APPLY, READ_SOURCE, READ_TARGET
from orgsync.progress import ProgressBars, ProgressEvents, quiet_stdout


def test_a_silent_phase_still_reports_every_interval() -> None:
    """A slow read calls nothing back; the ticker says it is still running."""
    with capture_logs() as logs, ProgressEvents(interval=0.05) as events:
        events.begin(READ_SOURCE, None, None)
        time.sleep(1.3)  # the ticker looks once a second at most
        events.end(READ_SOURCE, None, 7, "people")
    states = [(e["phase"], e["state"]) for e in logs if e["event"] == "progress"]
    assert states[0] == (READ_SOURCE, "started")
    assert states[-1] == (READ_SOURCE, "finished")
    assert (READ_SOURCE, "running") in states
    assert logs[-1]["count"] == 7


def test_steps_report_each_tenth_once_and_not_the_last() -> None:
    with capture_logs() as logs, ProgressEvents(interval=3600) as events:
        events.begin(APPLY, "t", 25)
        for _ in range(25):
            events.advance(APPLY, "t")
        events.end(APPLY, "t", 25, "operations")
    running = [e["done"] for e in logs if e.get("state") == "running"]
    assert running == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]


def test_bars_keep_log_lines_and_give_stderr_back(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    real = io.StringIO()
    monkeypatch.setattr(sys, "stderr", real)
    bars = ProgressBars(Console(file=screen, force_terminal=True, width=100), batch_seconds=0.01)
    bars.begin(READ_TARGET, "t", None)
    print("a log line while the bars show", file=sys.stderr)
    assert sys.stderr is not real
    bars.advance(READ_TARGET, "t")
    bars.end(READ_TARGET, "t", 3, "members and invitations")
    bars.close()
    assert sys.stderr is real
    assert "a log line while the bars show" in screen.getvalue()
    assert "read target t: 3 members and invitations (1 requests)" in screen.getvalue()
    assert real.getvalue() == ""


def test_the_plan_is_shown_between_the_reads_and_the_apply() -> None:
    screen = io.StringIO()
    shown: list[str] = []

    def show(plan: Plan) -> None:
        shown.append(plan.target)
        screen.write("THE PLAN\n")

    bars = ProgressBars(Console(file=screen, force_terminal=True, width=100), show_plan=show)
    bars.begin(READ_SOURCE, None, None)
    bars.end(READ_SOURCE, None, 2, "people")
    bars.planned(Plan(target="t", generated_at="2026-01-01T00:00:00Z"))
    bars.begin(APPLY, "t", 2)
    bars.advance(APPLY, "t")
    bars.advance(APPLY, "t")
    bars.end(APPLY, "t", 2, "operations")
    bars.close()
    text = screen.getvalue()
    assert shown == ["t"]
    assert text.index("read source: 2 people") < text.index("THE PLAN")
    assert text.index("THE PLAN") < text.index("apply t: 2 operations")


@pytest.mark.parametrize(("code", "replayed"), [(0, False), (2, False), (1, True), (3, True)])
def test_quiet_replays_the_report_on_stderr_only_for_errors_and_holds(
    code: int, replayed: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    with quiet_stdout() as quiet:
        print("the report")
        assert quiet.ended(code) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert ("the report" in err) is replayed
