"""The one retry policy: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import dataclasses
import time

import pytest

from orgsync.core.errors import AuthError, ConflictError, TargetError, TransientError
from orgsync.retrying import RetrySettings, retry_policy


class Flaky:
    """A callable that raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def transient(retry_after: float | None = None) -> TransientError:
    return TransientError("HTTP 503: busy", status=503, retry_after=retry_after)


class TestWhatIsRetried:
    def test_transient_errors_are_retried_until_success(self) -> None:
        """Two transient failures, then success: three calls, the result comes back."""
        sleeps: list[float] = []
        flaky = Flaky(transient(), transient())
        assert retry_policy(sleep=sleeps.append)(flaky) == "ok"
        assert flaky.calls == 3
        assert len(sleeps) == 2

    @pytest.mark.parametrize(
        "error",
        [
            TargetError("boom"),
            AuthError("no", status=401),
            ConflictError("exists", status=409),
            ValueError("bug"),
        ],
    )
    def test_anything_else_is_raised_at_once(self, error: Exception) -> None:
        """Only TransientError is retried; other errors surface after one call."""
        sleeps: list[float] = []
        flaky = Flaky(error)
        with pytest.raises(type(error)) as raised:
            retry_policy(sleep=sleeps.append)(flaky)
        assert raised.value is error
        assert flaky.calls == 1
        assert sleeps == []

    @pytest.mark.parametrize("attempts", [1, 2, 6])
    def test_gives_up_after_max_attempts_and_reraises_the_last_error(self, attempts: int) -> None:
        """The last TransientError itself is re-raised, not a tenacity RetryError."""
        errors = [transient() for _ in range(attempts + 3)]
        flaky = Flaky(*errors)
        with pytest.raises(TransientError) as raised:
            retry_policy(max_attempts=attempts, base=0, sleep=lambda _: None)(flaky)
        assert flaky.calls == attempts
        assert raised.value is errors[attempts - 1]


class TestWaits:
    def test_retry_after_is_honoured_exactly(self) -> None:
        """The server's delay is slept as given, not jittered."""
        sleeps: list[float] = []
        flaky = Flaky(transient(2.0), transient(0.0), transient(7.5))
        assert retry_policy(sleep=sleeps.append)(flaky) == "ok"
        assert sleeps == [2.0, 0.0, 7.5]

    def test_retry_after_beyond_the_budget_stops_at_once(self) -> None:
        """A Retry-After longer than max_delay is not shortened: sending early earns a 429."""
        sleeps: list[float] = []
        flaky = Flaky(transient(3600.0))
        with pytest.raises(TransientError):
            retry_policy(max_delay=60.0, sleep=sleeps.append)(flaky)
        assert flaky.calls == 1
        assert sleeps == []

    def test_budget_counts_the_sum_of_waits(self) -> None:
        """Waits of 25 s fit twice in a 60 s budget, not three times."""
        sleeps: list[float] = []
        flaky = Flaky(*(transient(25.0) for _ in range(5)))
        with pytest.raises(TransientError):
            retry_policy(max_delay=60.0, sleep=sleeps.append)(flaky)
        assert sleeps == [25.0, 25.0]
        assert flaky.calls == 3

    def test_budget_counts_wall_clock_time(self) -> None:
        """Slow attempts use up the budget even when the waits are zero."""

        def slow() -> None:
            time.sleep(0.03)
            raise transient()

        started = time.monotonic()
        with pytest.raises(TransientError):
            retry_policy(max_attempts=100, max_delay=0.05, base=0, sleep=lambda _: None)(slow)
        assert time.monotonic() - started < 0.5

    def test_backoff_is_full_jitter_below_the_exponential_window(self) -> None:
        """Without Retry-After, wait n is uniform in [0, min(cap, base * 2**(n-1))]."""
        windows = [0.5, 1.0, 2.0, 3.0, 3.0]
        seen: list[list[float]] = []
        for _ in range(200):
            sleeps: list[float] = []
            flaky = Flaky(*(transient() for _ in range(5)))
            retry_policy(max_attempts=6, base=0.5, cap=3.0, max_delay=1000, sleep=sleeps.append)(
                flaky
            )
            assert all(0 <= s <= w for s, w in zip(sleeps, windows, strict=True))
            seen.append(sleeps)
        # Jitter: the waits are spread out, not one fixed value.
        assert len({round(s[0], 6) for s in seen}) > 100
        assert max(s[3] for s in seen) > 2.0

    def test_backoff_is_trimmed_to_the_remaining_budget(self) -> None:
        """Jittered waits never overrun max_delay in total."""
        for _ in range(50):
            sleeps: list[float] = []
            flaky = Flaky(*(transient() for _ in range(10)))
            with pytest.raises(TransientError):
                retry_policy(max_attempts=10, base=30, cap=30, max_delay=10.0, sleep=sleeps.append)(
                    flaky
                )
            assert sum(sleeps) <= 10.0 + 1e-6


class TestSettings:
    def test_settings_build_the_same_policy(self) -> None:
        """RetrySettings carries the knobs; its policy behaves as retry_policy."""
        settings = RetrySettings(max_attempts=2, max_delay=5.0, base=0.0, cap=0.0)
        flaky = Flaky(transient(), transient(), transient())
        with pytest.raises(TransientError):
            settings.policy(sleep=lambda _: None)(flaky)
        assert flaky.calls == 2

    def test_settings_are_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            RetrySettings().max_attempts = 3  # type: ignore[misc]

    @pytest.mark.parametrize(
        "kwargs",
        [{"max_attempts": 0}, {"max_delay": -1.0}, {"base": -0.1}, {"cap": -1.0}],
    )
    def test_nonsense_is_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="must"):
            RetrySettings(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="must"):
            retry_policy(**kwargs)  # type: ignore[arg-type]

    def test_a_policy_can_be_reused_for_independent_calls(self) -> None:
        """Each call starts with a fresh attempt count and budget."""
        policy = retry_policy(max_attempts=3, base=0, sleep=lambda _: None)
        for _ in range(3):
            flaky = Flaky(transient(), transient())
            assert policy(flaky) == "ok"
            assert flaky.calls == 3
