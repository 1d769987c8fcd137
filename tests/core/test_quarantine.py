"""A target failing every run backs off towards one run a day; one clean run ends it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from orgsync.core.quarantine import assess, backoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(minutes=15)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Run:
    status: str
    finished_at: datetime | None = T0
    mode: str = "sync"
    error: str | None = None
    origin: str = "daemon"


def standing(*runs: Run):  # type: ignore[no-untyped-def]
    return assess(runs, after=3, interval=INTERVAL, ceiling=DAY)


def test_fewer_failures_than_the_threshold_is_no_quarantine() -> None:
    result = standing(Run("failed", error="boom"), Run("failed"), Run("ok"))
    assert (result.quarantined, result.failures, result.last_error) == (False, 2, "boom")
    assert result.next_run_at is None


def test_the_threshold_quarantines_and_counts_from_the_last_failure() -> None:
    last = T0 + timedelta(hours=2)
    result = standing(Run("failed", last, error="401"), Run("failed"), Run("failed"), Run("ok"))
    assert result.quarantined
    assert result.failures == 3
    assert result.next_run_at == last + 2 * INTERVAL
    assert result.last_error == "401"


def test_one_clean_run_ends_it() -> None:
    assert not standing(Run("ok"), *[Run("failed")] * 10).quarantined
    assert not standing(Run("held"), *[Run("failed")] * 10).quarantined


def test_an_operator_s_runs_neither_count_nor_end_it() -> None:
    """Refused, failing in their shell, or clean: a CLI run says nothing of the daemon's."""
    operator = [Run("failed", origin="cli", error="OPENAI_ADMIN_KEY is not set")] * 5
    assert standing(*operator) == standing()
    assert not standing(*operator, Run("failed"), Run("ok")).quarantined
    result = standing(Run("ok", origin="cli"), Run("failed"), Run("failed"), Run("failed"))
    assert (result.quarantined, result.failures) == (True, 3)


def test_interrupted_runs_and_dry_runs_neither_count_nor_end_it() -> None:
    result = standing(
        Run("interrupted"),
        Run("ok", mode="dry-run"),
        Run("running", finished_at=None),
        Run("failed"),
        Run("failed"),
        Run("failed"),
        Run("ok"),
    )
    assert (result.quarantined, result.failures) == (True, 3)


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(2, timedelta(0)), (3, 2 * INTERVAL), (4, 4 * INTERVAL), (8, 64 * INTERVAL), (9, DAY)],
)
def test_the_wait_doubles_up_to_one_day(failures: int, wait: timedelta) -> None:
    assert backoff(failures, after=3, interval=INTERVAL, ceiling=DAY) == wait


def test_a_very_long_quarantine_stays_at_the_ceiling() -> None:
    assert backoff(10_000, after=3, interval=INTERVAL, ceiling=DAY) == DAY
