"""The dispatcher against real receivers: retries, no retries, never blocking the caller,
a bounded queue, the rate limit, de-duplication that survives the process, filters."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from orgsync.notify.dispatcher import Dispatcher, Route
from orgsync.notify.events import Notification, Standing
from orgsync.notify.ledger import FileLedger, ledger_path
from orgsync.notify.render import Redactor
from orgsync.notify.senders import WebhookChannel
from tests.notify.receivers import HttpReceiver

SECRET = b"dispatcher-test-secret-0123456789"
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HELD = Notification(kind="held", target="a", at=AT, held=2, checksum="sha256:one")
FAILED = Notification(kind="failed", target="a", at=AT, error="HTTP 401: bad key")
EVENTS = frozenset({"held", "failed", "quarantined", "recovered"})


def route(url: str, *, timeout: float = 5, **settings: Any) -> Route:
    channel = WebhookChannel(url, secret=SECRET, timeout=timeout, ca_file=None, redact=Redactor())
    return Route(name="hook", channel=channel, events=settings.pop("events", EVENTS), **settings)


def test_5xx_and_429_are_retried_until_delivered() -> None:
    with HttpReceiver(secret=SECRET, script=[500, (429, 0), 503]) as receiver:
        dispatcher = Dispatcher([route(receiver.url, max_attempts=4)])
        dispatcher.publish(HELD)
        assert dispatcher.close(timeout=20)
    assert len(receiver.received) == 4
    assert all(r.signature_ok for r in receiver.received)
    assert len({r.headers["x-orgsync-delivery"] for r in receiver.received}) == 1
    assert dispatcher.counts == {("hook", "sent"): 1}


def test_a_4xx_is_never_retried_and_the_next_occurrence_is_tried_again() -> None:
    with HttpReceiver(secret=SECRET, script=[400]) as receiver:
        dispatcher = Dispatcher([route(receiver.url, max_attempts=4)])
        dispatcher.publish(HELD)
        receiver.wait_for(1)
        time.sleep(0.3)
        assert len(receiver.received) == 1
        dispatcher.publish(HELD)  # the failed one did not count as said
        assert dispatcher.close(timeout=10)
    assert len(receiver.received) == 2
    assert dispatcher.counts == {("hook", "failed"): 1, ("hook", "sent"): 1}


def test_a_hanging_receiver_times_out_and_gives_up_after_max_attempts() -> None:
    with HttpReceiver(secret=SECRET, default="hang") as receiver:
        dispatcher = Dispatcher([route(receiver.url, timeout=0.3, max_attempts=2)])
        dispatcher.publish(FAILED)
        assert dispatcher.close(timeout=10)
    assert len(receiver.received) == 2
    assert dispatcher.counts == {("hook", "failed"): 1}


def test_publishing_never_blocks_and_a_full_queue_drops_with_a_log_line_and_a_count() -> None:
    counted: list[tuple[str, str]] = []
    with HttpReceiver(secret=SECRET, default="hang") as receiver:
        dispatcher = Dispatcher(
            [route(receiver.url, timeout=30, max_per_hour=1000)],
            queue_size=10,
            count=lambda entry, result: counted.append((entry, result)),
        )
        events = [replace(HELD, checksum=f"sha256:{i}") for i in range(150)]
        with capture_logs() as logs:
            started = time.monotonic()
            for event in events:
                dispatcher.publish(event)
            publishing = time.monotonic() - started
        receiver.wait_for(1)
        closing = time.monotonic()
        assert dispatcher.close(timeout=0.5) is False  # the receiver still hangs
        closed_after = time.monotonic() - closing
    print(f"\n150 publishes: {publishing * 1000:.1f} ms; close gave up after {closed_after:.2f} s")
    assert publishing < 1.0
    assert closed_after < 2.0
    dropped = dispatcher.counts[("hook", "dropped")]
    assert 150 - 11 <= dropped <= 150 - 10
    assert counted.count(("hook", "dropped")) == dropped
    assert sum(1 for e in logs if e["event"] == "notify.dropped") == dropped


def test_the_rate_limit_drops_beyond_max_per_hour() -> None:
    with HttpReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher([route(receiver.url, max_per_hour=2)])
        for i in range(5):
            dispatcher.publish(replace(HELD, checksum=f"sha256:{i}"))
        assert dispatcher.close(timeout=10)
    assert len(receiver.received) == 2
    assert dispatcher.counts == {("hook", "sent"): 2, ("hook", "rate_limited"): 3}


def test_the_same_held_plan_is_sent_once_then_again_with_a_count_after_the_quiet_period(
    tmp_path: Path,
) -> None:
    ledger = FileLedger(ledger_path(tmp_path / "state.db"))
    with HttpReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher([route(receiver.url, repeat_after=1.0)], ledger=ledger)
        for _ in range(4):  # a held plan every 15 minutes, compressed
            dispatcher.publish(HELD)
        dispatcher.publish(replace(HELD, checksum="sha256:two"))  # a different plan is news
        receiver.wait_for(2)
        time.sleep(1.1)
        dispatcher.publish(HELD)  # after the quiet period: once more, with the count
        assert dispatcher.close(timeout=10)
    bodies = receiver.bodies()
    assert [(b["checksum"], b["repeats"]) for b in bodies] == [
        ("sha256:one", 0),
        ("sha256:two", 0),
        ("sha256:one", 3),
    ]
    assert "The same happened 3 more time(s)" in bodies[2]["text"]
    assert dispatcher.counts[("hook", "suppressed")] == 3
    assert (tmp_path / "state.notify.db").stat().st_mode & 0o777 == 0o600


def test_what_was_sent_is_remembered_by_the_next_process(tmp_path: Path) -> None:
    """A cron'd `orgsync sync` or a restarted daemon must not page again."""
    path = ledger_path(tmp_path / "state.db")
    with HttpReceiver(secret=SECRET) as receiver:
        for _ in range(3):
            dispatcher = Dispatcher([route(receiver.url)], ledger=FileLedger(path))
            dispatcher.publish(FAILED)
            dispatcher.publish(replace(FAILED, error="HTTP 401: bad key (request id req_9)"))
            assert dispatcher.close(timeout=10)
    assert len(receiver.received) == 1


def test_entries_get_only_their_events_and_targets() -> None:
    with HttpReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher(
            [route(receiver.url, events=frozenset({"failed"}), targets=frozenset({"a"}))]
        )
        dispatcher.publish(HELD)
        dispatcher.publish(replace(FAILED, target="b"))
        dispatcher.publish(FAILED)
        assert dispatcher.close(timeout=10)
    assert [(b["kind"], b["target"]) for b in receiver.bodies()] == [("failed", "a")]


def test_quarantine_standings_notify_on_change_only() -> None:
    with HttpReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher([route(receiver.url)])
        bad = Standing(True, 3, AT, "HTTP 401: bad key")
        dispatcher.quarantine("a", bad)  # the daemon starts: a baseline
        dispatcher.quarantine("a", bad)
        dispatcher.quarantine("a", Standing(False))
        dispatcher.quarantine("a", Standing(False, 1))
        dispatcher.quarantine("a", bad)
        assert dispatcher.close(timeout=10)
    assert [b["kind"] for b in receiver.bodies()] == ["recovered", "quarantined"]


class Exploding:
    target = "a"
    status = "held"
    run_id = None
    report = None
    error = None

    @property
    def plan(self) -> Any:
        raise RuntimeError("a bug in a result")


class Mode:
    dry_run = False
    trigger = "cli"


def test_the_engine_hook_never_raises() -> None:
    dispatcher = Dispatcher([route("http://127.0.0.1:9/never")])
    with capture_logs() as logs:
        dispatcher.run_finished(Exploding(), Mode())
    assert [e["event"] for e in logs] == ["notify.unformattable"]
    assert dispatcher.close(timeout=1)
