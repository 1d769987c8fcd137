"""Red team: control characters in what a plan or a run shows, from the directory (group
names), the organization or a server's error message.

They reached the terminal as commands: a cursor-up and erase-line sequence in a group's
name made the removal printed before it vanish from a reviewed plan, OSC 52 wrote the
reviewer's clipboard. They are now shown escaped (`\\x1b`), with columns still aligned.
"""

from __future__ import annotations

from datetime import UTC, datetime

from orgsync.applier import ApplyReport, Outcome
from orgsync.core.plan import AddGroupMember, Plan, RemoveMember
from orgsync.core.ports import OperationStatus
from orgsync.core.text import visible
from orgsync.report import Style, render_plan, render_result
from orgsync.results import TargetResult

NOW = datetime(2026, 12, 2, tzinfo=UTC)
HIDE = "\x1b[1A\x1b[2K"  # up one line, erase it: the line before is gone on a terminal
CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"
BIDI = "\u202e"


def hostile_plan() -> Plan:
    return Plan.build(
        target="openai-prod",
        generated_at=NOW,
        operations=[
            RemoveMember(email="ceo@example.com", user_id="u1", reason="inactive in the source"),
            AddGroupMember(
                group=f"team{HIDE}{CLIPBOARD}",
                group_id="g1",
                email="ada@example.com",
                user_id="u2",
                reason=f"member of IdP group 'team{HIDE}'",
            ),
        ],
        warnings=[f"source record 'p9' rejected: {BIDI}moc.elpmaxe@evil"],
    )


def test_a_plan_shows_control_characters_escaped() -> None:
    for style in (Style(colour=False), Style(colour=True)):
        text = render_plan(hostile_plan(), style)
        assert "\x1b[1A" not in text and "\x1b[2K" not in text and "\x1b]" not in text
        assert "\x07" not in text and BIDI not in text
        assert "team\\x1b[1A\\x1b[2K\\x1b]52;c;ZXZpbA==\\x07" in text
        assert "\\u202emoc.elpmaxe@evil" in text
        assert "ceo@example.com" in text


def test_a_run_shows_a_servers_message_escaped() -> None:
    plan = hostile_plan()
    report = ApplyReport(
        outcomes=[Outcome(0, plan.operations[0], OperationStatus.FAILED, detail=f"500{HIDE}")]
    )
    result = TargetResult("t", 1, "failed", plan=plan, report=report, error=f"x{CLIPBOARD}")
    text = render_result(result, dry_run=False, style=Style(colour=True))
    assert "\x1b[1A" not in text and "\x1b]" not in text
    assert "500\\x1b[1A\\x1b[2K" in text and "x\\x1b]52;c;ZXZpbA==\\x07" in text


def test_visible_leaves_ordinary_text_alone() -> None:
    text = "Zoë Ünal <zoë@example.com> — équipe 東京, tab\tand newline\n"
    assert visible(text) == text.replace("\t", "\\x09").replace("\n", "\\x0a")
