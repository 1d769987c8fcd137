"""What a notification says: the facts, the reasons, the next command; never a secret,
never a list of thousands, never a Slack ping or a second e-mail header smuggled in."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orgsync.core.plan import HeldOperation, Plan, RemoveMember
from orgsync.core.ports import OperationStatus
from orgsync.notify.events import MAX_SUBJECTS, Notification, Standing, from_run, quarantine_change
from orgsync.notify.render import (
    Delivery,
    Redactor,
    compose,
    email_message,
    plain_text,
    slack_payload,
    webhook_document,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec-0123456789abcdefXYZ"
FAILED_EVENT = Notification(kind="failed", target="t", at=AT, error="HTTP 500")


@dataclass
class Report:
    done: int = 0
    failed: tuple[object, ...] = ()

    def count(self, status: OperationStatus) -> int:
        return self.done if status is OperationStatus.DONE else 0


@dataclass
class Result:
    target: str
    status: str
    run_id: str | None = "run-1"
    plan: Plan | None = None
    report: Report | None = None
    error: str | None = None


@dataclass
class Mode:
    dry_run: bool = False
    trigger: str = "cli"


def held_plan(count: int, guard: str = "40 removals exceed safety.max_removals = 10") -> Plan:
    held = [
        HeldOperation(
            operation=RemoveMember(
                email=f"person{i}@example.com", user_id=f"u{i}", reason="not in the source"
            ),
            guard=guard,
        )
        for i in range(count)
    ]
    return Plan.build(target="openai-prod", generated_at=AT, operations=[], held=held)


def everything(event: Notification, redact: Redactor) -> str:
    """Every rendering of `event`, decoded, as one string to search."""
    delivery = Delivery(id="d1", host="host-1", repeats=2, since=AT, dropped=1)
    message = compose(event, delivery, redact)
    mail = email_message(
        message, sender="orgsync@example.com", recipients=["ops@example.com"], prefix="[x]", at=AT
    )
    return "\n".join(
        [
            plain_text(message),
            json.dumps(slack_payload(message), ensure_ascii=False),
            json.dumps(
                webhook_document(event, message, delivery, redact, "d1"), ensure_ascii=False
            ),
            str(mail["Subject"]),
            mail.get_content(),
            # Encodable as sent: UTF-8 bodies, an e-mail on the wire.
            str(len(mail.as_bytes()) + len(json.dumps(slack_payload(message)).encode("utf-8"))),
        ]
    )


def test_a_held_run_names_target_counts_reasons_and_the_next_commands() -> None:
    plan = held_plan(40)
    event = from_run(Result("openai-prod", "held", plan=plan, report=Report(done=3)), Mode(), AT)
    assert event is not None
    message = compose(event, Delivery(host="h"), Redactor())
    text = plain_text(message)
    assert message.title == "openai-prod: 40 operations held by the safety gate"
    assert "held 40 operations back" in text and "3 operations were applied" in text
    assert "40 removals exceed safety.max_removals = 10 (40 operations)" in text
    assert f"• and {40 - MAX_SUBJECTS} more" in text
    assert text.count("@example.com") == MAX_SUBJECTS
    assert "orgsync status" in text
    assert "orgsync sync --dry-run --target openai-prod" in text
    assert "orgsync sync --target openai-prod --allow-removals 40" in text
    assert plan.checksum in text


def test_thousands_of_held_removals_stay_a_short_message() -> None:
    event = from_run(Result("t", "held", plan=held_plan(5000)), Mode(), AT)
    assert event is not None
    assert len(event.held_subjects) == MAX_SUBJECTS
    text = everything(event, Redactor())
    assert "and 4990 more" in text
    assert len(json.dumps(slack_payload(compose(event, Delivery(), Redactor())))) < 6000


def test_a_message_after_a_quiet_period_or_a_rate_limit_says_what_was_not_sent() -> None:
    delivery = Delivery(repeats=4, since=AT, dropped=3)
    text = plain_text(compose(replace(FAILED_EVENT), delivery, Redactor()))
    assert "The same happened 4 more time(s) since 2026-03-01 12:00 UTC" in text
    assert "3 earlier notification(s) were dropped by this channel's rate limit" in text


def test_dry_runs_and_clean_runs_notify_nobody() -> None:
    assert from_run(Result("t", "held", plan=held_plan(3)), Mode(dry_run=True), AT) is None
    for status in ("ok", "changes-pending", "interrupted"):
        assert from_run(Result("t", status), Mode(), AT) is None


def test_a_failure_says_what_failed_and_what_to_type() -> None:
    error = "HTTP 401: Incorrect API key provided (request id req_8f3a)"
    event = from_run(Result("acme", "failed", error=error), Mode(trigger="schedule"), AT)
    assert event is not None and event.kind == "failed"
    text = plain_text(compose(event, Delivery(), Redactor()))
    assert "A sync of acme (schedule) failed: HTTP 401: Incorrect API key" in text
    assert "orgsync runs --target acme" in text


def test_the_same_failure_with_other_numbers_and_ids_is_one_fingerprint() -> None:
    def fingerprint(error: str) -> str | None:
        event = from_run(Result("t", "failed", error=error), Mode(), AT)
        assert event is not None
        return event.fingerprint

    same = fingerprint("3 operation(s) failed: invite a@x: HTTP 500 (request id req_1)")
    assert same == fingerprint("4 operation(s) failed: invite a@x: HTTP 500 (request id req_2)")
    assert same != fingerprint("3 operation(s) failed: invite a@x: HTTP 403 forbidden")


def test_quarantine_and_recovery_are_transitions_and_a_start_is_a_baseline() -> None:
    bad = Standing(True, 3, AT + timedelta(minutes=30), "HTTP 401: bad key")
    good = Standing(False, 0)
    assert quarantine_change("t", None, bad, AT) is None
    assert quarantine_change("t", bad, bad, AT) is None
    quarantined = quarantine_change("t", good, bad, AT)
    recovered = quarantine_change("t", bad, good, AT)
    assert quarantined is not None and recovered is not None
    text = plain_text(compose(quarantined, Delivery(), Redactor()))
    assert "t: quarantined after 3 failed runs" in text
    assert "next attempt at 2026-03-01 12:30 UTC" in text and "HTTP 401: bad key" in text
    assert "ran clean again after 3 failed runs" in plain_text(
        compose(recovered, Delivery(), Redactor())
    )


def test_slack_text_cannot_ping_a_channel_or_hide_a_link() -> None:
    event = from_run(
        Result("t", "failed", error="group <!channel> <https://evil.example|click> & co"),
        Mode(),
        AT,
    )
    assert event is not None
    payload = json.dumps(slack_payload(compose(event, Delivery(), Redactor())))
    assert "<!channel>" not in payload and "<https://" not in payload
    assert "&lt;!channel&gt;" in payload and "&amp; co" in payload


def test_an_email_subject_is_one_line_whatever_the_target_sent() -> None:
    event = Notification(
        kind="failed", target="t", at=AT, error="x\r\nBcc: victim@example.com\r\n\r\nbody"
    )
    mail = email_message(
        compose(event, Delivery(), Redactor()),
        sender="o@example.com",
        recipients=["a@example.com"],
        prefix="[orgsync]",
        at=AT,
    )
    assert mail["Bcc"] is None
    assert "\n" not in str(mail["Subject"])
    assert mail["Auto-Submitted"] == "auto-generated"


def test_credential_shapes_are_redacted_even_when_not_configured() -> None:
    redact = Redactor()
    text = redact(
        "Authorization: Bearer abc.def.ghi failed; key sk-admin-AAAAAAAAAAAAAAAAAAAA; "
        "https://user:pw@host/x; https://hooks.slack.com/services/T0/B0/XYZ"
    )
    for leaked in ("abc.def.ghi", "sk-admin-AAAA", "user:pw", "T0/B0/XYZ"):
        assert leaked not in text


# Any Unicode, control characters, newlines and lone surrogates (a JSON source decodes
# "\ud800" into one) included.
_text = st.text(
    alphabet=st.characters() | st.sampled_from("\ud800\udfff\u202e\x1b<>&\n"), max_size=400
)
_secret = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=16,
    max_size=64,
).filter(
    # A real credential mixes cases and digits; a lowercase word such as
    # "failed_operation" would be "found" in the message's own wording.
    lambda s: any(c.isdigit() for c in s) and any(c.isupper() for c in s)
)


@st.composite
def run_results(draw: Any) -> tuple[Result, str]:
    secret = draw(_secret)

    def maybe_with_secret(text: str) -> str:
        where = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:where] + secret + text[where:] if draw(st.booleans()) else text

    emails = draw(st.lists(_text, max_size=30))
    guard = maybe_with_secret(draw(_text))
    held = [
        HeldOperation(
            operation=RemoveMember(email=maybe_with_secret(e) or "x", user_id="u", reason="r"),
            guard=guard,
        )
        for e in emails
    ]
    plan = Plan.build(target="t", generated_at=AT, operations=[], held=held)
    error = maybe_with_secret(draw(_text) * draw(st.integers(min_value=1, max_value=5)))
    result = Result(
        target=maybe_with_secret(draw(_text)) or "t",
        status=draw(st.sampled_from(["held", "failed"])),
        run_id=draw(_text),
        plan=plan,
        report=Report(done=draw(st.integers(0, 10_000))),
        error=error,
    )
    return result, secret


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=run_results(), trigger=_text)
def test_formatting_never_raises_and_never_includes_a_secret(
    case: tuple[Result, str], trigger: str
) -> None:
    result, secret = case
    redact = Redactor([secret])
    event = from_run(result, Mode(trigger=trigger), AT, redact)
    assert event is not None
    rendered = everything(event, redact)
    assert secret not in rendered
    standing = Standing(True, 5, AT, error=result.error)
    for change in (
        quarantine_change(result.target, Standing(False), standing, AT, redact),
        quarantine_change(result.target, standing, Standing(False), AT, redact),
    ):
        assert change is not None
        assert secret not in everything(change, redact)
