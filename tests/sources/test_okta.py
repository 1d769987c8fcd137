"""The Okta source against the Okta emulator on loopback: complete or `SourceError`, never partial."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from orgsync.core.errors import SourceError
from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings
from orgsync.sources.okta import ACTIVE_STATUSES, OktaSource, okta_retry_after
from orgsync.testing.faults import Faults
from orgsync.testing.okta import OktaEmulator, PageFailure, Throttle
from tests.sources.idp import FAST, PATIENT, Recorder, Sleeps
from tests.sources.idp_contract import ContractViolation, check_openapi
from tests.sources.idp_directory import (
    Directory,
    build,
    expected,
    member_pages,
    observed,
    pages,
    seed_okta,
)


def source(
    okta: OktaEmulator,
    *,
    page_size: int = 200,
    sleep: Sleeps | None = None,
    settings: HttpSettings = FAST,
    **kwargs: object,
) -> OktaSource:
    return OktaSource(
        okta.url,
        token=okta.token,
        page_size=page_size,
        settings=settings,
        sleep=sleep if sleep is not None else Sleeps(),
        **kwargs,  # type: ignore[arg-type]
    )


def budget(directory: Directory, page_size: int) -> int:
    """Calls a complete read may make: two user listings, groups, one member listing each."""
    deprovisioned = sum(p.okta_status == "DEPROVISIONED" for p in directory.people)
    user_size = min(page_size, 200)
    return (
        pages(len(directory.people) - deprovisioned, user_size)
        + pages(deprovisioned, user_size)
        + pages(len(directory.groups), page_size)
        + member_pages(directory, page_size, nested=False)
    )


def test_complete_read_of_2500_people_and_300_groups(okta: OktaEmulator) -> None:
    """Everyone in every status and every membership, in pages only."""
    directory = build(2500, 300, nested=False)
    ids = seed_okta(okta, directory)
    snapshot = source(okta).read()
    assert observed(snapshot, ids) == expected(directory)
    # Deactivated people are known (as inactive), not merely absent.
    statuses = {p.attributes["status"] for p in snapshot.people if not p.active}
    assert statuses == {"STAGED", "SUSPENDED", "DEPROVISIONED"}
    assert sum(not p.active for p in snapshot.people) == 250

    calls = okta.requests
    assert len(calls) == budget(directory, 200), "pages only: no call per user or per pair"
    assert {c.path for c in calls if c.path.startswith("/api/v1/users/")} == set()
    member_calls = [c for c in calls if c.path.startswith("/api/v1/groups/")]
    assert len(member_calls) == member_pages(directory, 200, nested=False)


@pytest.mark.parametrize("people", [4, 5, 6])
def test_pagination_boundaries(okta: OktaEmulator, people: int) -> None:
    """A page size one under, equal to and one over the number of objects, everywhere."""
    directory = build(people, people, nested=False, inactive_every=1000)
    # Every group holds everyone: member listings sit on the same boundary.
    for group in directory.groups:
        group.people = [p.key for p in directory.people]
    ids = seed_okta(okta, directory)
    snapshot = source(okta, page_size=5).read()
    assert observed(snapshot, ids) == expected(directory)
    assert len(okta.requests) == budget(directory, 5)


@pytest.mark.parametrize("status", sorted(ACTIVE_STATUSES | {"STAGED", "SUSPENDED"}))
def test_status_decides_active(okta: OktaEmulator, status: str) -> None:
    okta.add_user(email="ada@example.com", first_name="Ada", last_name="L", status=status)
    (person,) = source(okta).read().people
    assert person.active is (status in ACTIVE_STATUSES)


def test_deprovisioned_people_come_from_the_filtered_listing(okta: OktaEmulator) -> None:
    okta.add_user(email="left@example.com", status="DEPROVISIONED")
    okta.add_user(email="here@example.com")
    people = {p.email: p.active for p in source(okta).read().people}
    assert people == {"left@example.com": False, "here@example.com": True}


def test_throttling_waits_until_the_reset_then_completes(okta: OktaEmulator) -> None:
    directory = build(60, 12, nested=False)
    ids = seed_okta(okta, directory)
    okta.throttle = Throttle(every=4, seconds=1)
    sleeps = Sleeps()
    snapshot = source(okta, page_size=10, sleep=sleeps, settings=PATIENT).read()
    assert observed(snapshot, ids) == expected(directory)
    throttled = [r for r in okta.requests if r.status == 429]
    assert len(sleeps) == len(throttled) > 3
    # X-Rate-Limit-Reset is one second after the server's clock: the wait is measured
    # against the response's Date (whole seconds), so it is 1 or 2 s, never a backoff
    # guess; 3 s when uvicorn's Date, refreshed once a second, lags the reset's clock
    # (seen at load 10).
    assert all(1.0 <= s <= 3.0 for s in sleeps), sleeps


def test_throttling_with_real_waits(okta: OktaEmulator) -> None:
    """The same, sleeping for real: the retry lands after the window reset."""
    ids = seed_okta(okta, build(8, 3, nested=False))
    okta.throttle = Throttle(every=3, seconds=1)
    snapshot = OktaSource(okta.url, token=okta.token, page_size=200, settings=PATIENT).read()
    assert len(snapshot.people) == 8
    assert {g.name for g in snapshot.groups} == {"openai-users", "openai-owners", "team-0"}
    assert set(ids.values()) >= {p.id for p in snapshot.people}


def test_retry_after_is_measured_against_the_servers_date() -> None:
    response = httpx.Response(
        429,
        headers={"X-Rate-Limit-Reset": "1700000030", "Date": "Tue, 14 Nov 2023 22:13:20 GMT"},
    )
    # The local clock is an hour off; only the server's own Date counts.
    assert okta_retry_after(response, clock=lambda: 1_700_003_600.0) == 30.0
    no_date = httpx.Response(429, headers={"X-Rate-Limit-Reset": "1700000030"})
    assert okta_retry_after(no_date, clock=lambda: 1_700_000_000.0) == 30.0
    assert okta_retry_after(no_date, clock=lambda: 1_700_000_100.0) is None, "past: back off"
    explicit = httpx.Response(429, headers={"Retry-After": "7", "X-Rate-Limit-Reset": "1"})
    assert okta_retry_after(explicit) == 7.0


@pytest.mark.parametrize("mode", ["error", "bad_cursor", "loop"])
@pytest.mark.parametrize("listing", ["users", "groups", "members"])
def test_a_failure_mid_pagination_fails_the_read(
    okta: OktaEmulator, listing: str, mode: str
) -> None:
    seed_okta(okta, build(30, 30, nested=False))
    okta.failure = PageFailure(listing, 3, mode)  # type: ignore[arg-type]
    with pytest.raises(SourceError) as caught:
        source(okta, page_size=5).read()
    message = str(caught.value)
    expected_text = {
        "error": "HTTP 500",
        "bad_cursor": "HTTP 400",
        "loop": "points back to a page already read",
    }[mode]
    assert expected_text in message
    assert okta.token not in message
    if mode == "error":
        failed = Counter(r.path for r in okta.requests if r.status == 500)
        # Retried by the policy, then given up; sibling workers stop at their next call.
        assert max(failed.values()) == FAST.retry.max_attempts
        assert all(n <= FAST.retry.max_attempts for n in failed.values())


def test_transport_faults_are_retried_and_the_read_is_still_complete(okta: OktaEmulator) -> None:
    directory = build(40, 10, nested=False)
    ids = seed_okta(okta, directory)
    okta.faults = Faults(error_rate=0.25, kinds=("500", "reset", "429"), seed=3)
    settings = HttpSettings(retry=RetrySettings(max_attempts=8, max_delay=30, base=0.01, cap=0.02))
    snapshot = OktaSource(
        okta.url, token=okta.token, page_size=5, settings=settings, sleep=Sleeps()
    ).read()
    assert observed(snapshot, ids) == expected(directory)
    assert any(r.injected_fault for r in okta.requests)


def test_a_wrong_token_is_refused_without_retries(okta: OktaEmulator) -> None:
    okta.add_user(email="ada@example.com")
    bad = OktaSource(okta.url, token="00-not-the-token", settings=FAST, sleep=Sleeps())
    with pytest.raises(SourceError, match=r"HTTP 401.*Invalid token provided.*source\.token"):
        bad.read()
    assert len(okta.requests) == 1
    assert "00-not-the-token" not in str(okta.requests)


def test_a_next_link_to_another_host_is_refused() -> None:
    """A next link elsewhere would receive the token: the read stops instead."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=[],
            headers={"Link": '<https://evil.example.net/api/v1/users?after=x>; rel="next"'},
        )

    okta = OktaSource(
        "https://example.okta.com",
        token="t0ken-value",
        settings=FAST,
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(SourceError, match="leaves the API"):
        okta.read()


class TestContract:
    """Every exchange of a read, and the emulator's errors, against Okta's published spec."""

    def test_a_read_and_its_errors_follow_the_spec(self, okta: OktaEmulator) -> None:
        seed_okta(okta, build(12, 5, nested=False))
        recorder = Recorder()
        source(okta, page_size=4, transport=recorder).read()
        with httpx.Client(base_url=okta.url, transport=recorder) as client:
            auth = {"Authorization": f"SSWS {okta.token}"}
            assert (
                client.get("/api/v1/users", headers={"Authorization": "SSWS x"}).status_code == 401
            )
            okta.throttle = Throttle(every=1)
            throttled = client.get("/api/v1/groups", headers=auth)
            assert throttled.status_code == 429
            assert int(throttled.headers["X-Rate-Limit-Reset"]) > 0
            okta.throttle = None
            assert client.get("/api/v1/groups/00gmissing/users", headers=auth).status_code == 404
            bad = client.get("/api/v1/users", params={"after": "bogus"}, headers=auth)
            assert bad.status_code == 400
        assert len(recorder.responses) > 10
        for response in recorder.responses:
            check_openapi("okta", response)

    def test_the_checker_catches_an_undeclared_field(self, okta: OktaEmulator) -> None:
        okta.add_user(email="ada@example.com")
        recorder = Recorder()
        source(okta, transport=recorder).read()
        response = recorder.responses[0]
        (user,) = response.json()
        forged = httpx.Response(200, json=[{**user, "emailAddress": "x"}], request=response.request)
        with pytest.raises(ContractViolation, match="emailAddress"):
            check_openapi("okta", forged)
        wrong_type = httpx.Response(
            200, json=[{**user, "status": "GONE"}], request=response.request
        )
        with pytest.raises(ContractViolation):
            check_openapi("okta", wrong_type)
