"""The client's rate adapts to the server's (AIMD), and 429 means "not processed".

The bucket is driven by a settable clock (no sleeping); the client test runs against the
OpenAI emulator's own rate limiter over loopback, with the client configured at twice the
server's limit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from orgsync.core.errors import TransientError
from orgsync.http.ratelimit import TokenBucket
from orgsync.http.responses import error_for_response
from orgsync.retrying import RetrySettings
from orgsync.targets.http import ApiClient
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator

KEY = "sk-admin-test-rate-0000000000000000000000000000000000000"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_refusal_halves_the_rate_and_holds_everyone_for_retry_after() -> None:
    clock = Clock()
    waits: list[float] = []
    bucket = TokenBucket(60.0, clock=clock, sleep=waits.append)
    bucket.limited(retry_after=2.0)
    assert bucket.rate == 30.0
    # The next caller waits out the server's Retry-After (and its own slot).
    assert bucket.acquire() == pytest.approx(2.0 + 1 / 30)
    # Refusals of requests that were in flight at the old rate do not halve it again.
    clock.now += 0.5
    bucket.limited(retry_after=1.0)
    assert bucket.rate == 30.0
    clock.now += 2.0
    bucket.limited(retry_after=None)
    assert bucket.rate == 15.0


def test_success_recovers_quickly_below_the_refused_rate_then_creeps() -> None:
    clock = Clock()
    bucket = TokenBucket(60.0, clock=clock, sleep=lambda _: None)
    bucket.limited(retry_after=1.0)  # refused at 60
    steps = 0
    while bucket.rate < 0.95 * 60 / TokenBucket.RECOVER:
        bucket.succeeded()
        steps += 1
    assert steps < 15  # back near the refused rate within a few requests
    near = bucket.rate
    for _ in range(100):
        bucket.succeeded()
    # Then slowly: each success adds a small share of the ceiling.
    assert near < bucket.rate <= near * TokenBucket.RECOVER + 100 * 60 * TokenBucket.CREEP
    for _ in range(100_000):
        bucket.succeeded()
    assert bucket.rate == 60.0  # never above what the administrator configured


def test_the_rate_has_a_floor() -> None:
    clock = Clock()
    bucket = TokenBucket(64.0, clock=clock, sleep=lambda _: None)
    for _ in range(20):
        clock.now += 10.0
        bucket.limited(retry_after=None)
    assert bucket.rate == 1.0


@pytest.mark.parametrize(
    ("status", "headers", "not_processed"),
    [
        (429, {}, True),
        (429, {"retry-after": "3"}, True),
        (503, {"retry-after": "3"}, True),
        (503, {}, False),  # unavailable, maybe mid-way: a create may have happened
        (500, {"retry-after": "3"}, False),
        (502, {}, False),
        (408, {}, False),
    ],
)
def test_which_refusals_mean_not_processed(
    status: int, headers: dict[str, str], not_processed: bool
) -> None:
    response = httpx.Response(status, headers=headers, json={"error": {"message": "busy"}})
    error = error_for_response(response, context="POST /organization/invites")
    assert isinstance(error, TransientError)
    assert error.not_processed is not_processed


def test_a_client_above_the_server_limit_settles_below_it() -> None:
    """Configured at twice the server's 20 requests a second, four threads (the applier's
    pool) making 160 list calls draw a few refusals, not one in every few requests."""
    with OpenAIEmulator(api_key=KEY) as emulator:
        emulator.faults = Faults(rate_limit=20.0)
        client = ApiClient(
            emulator.start(),
            bearer_token=KEY,
            system="test",
            requests_per_second=40.0,
            retry=RetrySettings(max_attempts=10, max_delay=30.0),
            user_agent="orgsync-test",
        )

        def calls() -> None:
            for _ in range(40):
                client.request("GET", "/organization/users", params={"limit": 1}, idempotent=True)

        with client, ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(calls) for _ in range(4)]:
                future.result()
        refused = [r for r in emulator.requests if r.injected_fault == "rate_limit"]
        assert len(emulator.requests) == 160 + len(refused)
        # A bucket that does not adapt draws about 25 here.
        assert 1 <= len(refused) <= 12, len(refused)
