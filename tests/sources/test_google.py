"""The Google Workspace source against the Directory API emulator on loopback."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import jwt
import pytest

from orgsync.core.errors import ConfigError, SourceError
from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings
from orgsync.sources.google import SCOPES, GoogleSource, ServiceAccountKey
from orgsync.testing.faults import Faults
from orgsync.testing.google import GoogleEmulator, PageFailure, Throttle
from tests.sources.idp import (
    ADMIN,
    FAST,
    KEY_ID,
    PATIENT,
    SERVICE_ACCOUNT,
    Recorder,
    ServiceAccount,
    Sleeps,
)
from tests.sources.idp_contract import ContractViolation, check_google
from tests.sources.idp_directory import (
    Directory,
    build,
    expected,
    member_pages,
    observed,
    pages,
    seed_google,
)


def source(
    google: GoogleEmulator,
    account: ServiceAccount,
    *,
    page_size: int = 500,
    settings: HttpSettings = FAST,
    sleep: Sleeps | None = None,
    subject: str = ADMIN,
    transport: httpx.BaseTransport | None = None,
) -> GoogleSource:
    return GoogleSource(
        key=ServiceAccountKey.from_json(account.text),
        subject=subject,
        directory_url=google.directory_url,
        reports_url=google.reports_url,
        token_url=google.token_url,
        page_size=page_size,
        settings=settings,
        sleep=sleep if sleep is not None else Sleeps(),
        transport=transport,
    )


def budget(directory: Directory, page_size: int) -> int:
    """Directory calls of a complete read: users, groups and one member listing per group."""
    group_size = min(page_size, 200)
    return (
        pages(len(directory.people), min(page_size, 500))
        + pages(len(directory.groups), group_size)
        + member_pages(directory, group_size)
    )


def directory_calls(google: GoogleEmulator) -> list[str]:
    return [r.path for r in google.requests if r.path.startswith("/admin/")]


def test_complete_read_of_2500_people_and_300_nested_groups(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    directory = build(2500, 300)
    ids = seed_google(google, directory)
    snapshot = source(google, service_account).read()
    assert observed(snapshot, ids) == expected(directory)
    inactive = [p for p in snapshot.people if not p.active]
    assert len(inactive) == 250
    assert {(p.attributes["suspended"], p.attributes["archived"]) for p in inactive} == {
        (True, False),
        (False, True),
    }
    calls = directory_calls(google)
    assert len(calls) == budget(directory, 500), "pages only: no call per user or per pair"
    assert google.tokens_issued == 1


@pytest.mark.parametrize("people", [4, 5, 6])
def test_pagination_boundaries(
    google: GoogleEmulator, service_account: ServiceAccount, people: int
) -> None:
    directory = build(people, people, nested=False, inactive_every=1000)
    for group in directory.groups:
        group.people = [p.key for p in directory.people]
    ids = seed_google(google, directory)
    snapshot = source(google, service_account, page_size=5).read()
    assert observed(snapshot, ids) == expected(directory)
    assert len(directory_calls(google)) == budget(directory, 5)


def test_a_customer_member_stands_for_everyone(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    ids = seed_google(google, build(7, 3, nested=False))
    everyone = google.add_group("openai-everyone")
    google.add_everyone(everyone)
    snapshot = source(google, service_account).read()
    group = next(g for g in snapshot.groups if g.name == "openai-everyone")
    assert set(group.members) == {ids[f"p{i}"] for i in range(7)}


def test_the_assertion_is_a_delegated_read_only_jwt(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    reading = source(google, service_account)
    assertion = reading.assertion()
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "kid": KEY_ID, "typ": "JWT"}
    claims = jwt.decode(
        assertion, service_account.public_pem, algorithms=["RS256"], audience=google.token_url
    )
    assert claims["iss"] == SERVICE_ACCOUNT
    assert claims["sub"] == ADMIN
    assert claims["scope"].split() == list(SCOPES)
    assert all(s.endswith(".readonly") for s in SCOPES)
    assert claims["exp"] - claims["iat"] == 3600


def test_an_admin_without_delegation_is_refused_with_a_hint(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    with pytest.raises(SourceError) as caught:
        source(google, service_account, subject="someone@example.com").read()
    message = str(caught.value)
    assert "unauthorized_client" in message
    assert "domain-wide delegation" in message
    assert service_account.document["private_key"][40:80] not in message


def test_a_key_google_does_not_know_is_refused(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    other = dict(service_account.document, private_key_id="another-key-id")
    reading = GoogleSource(
        key=ServiceAccountKey.from_json(json.dumps(other)),
        subject=ADMIN,
        directory_url=google.directory_url,
        reports_url=google.reports_url,
        token_url=google.token_url,
        settings=FAST,
    )
    with pytest.raises(SourceError, match=r"HTTP 400: invalid_grant"):
        reading.read()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{not json", "not JSON"),
        ('{"type": "authorized_user"}', "not a service account key"),
        ('{"type": "service_account", "client_email": "x@y"}', "has no private_key_id"),
        (
            '{"type": "service_account", "client_email": "x@y", "private_key_id": "k", '
            '"private_key": "-----BEGIN PRIVATE KEY-----\\nc2VjcmV0\\n-----END PRIVATE KEY-----"}',
            "not a readable PEM private key",
        ),
    ],
)
def test_a_bad_key_file_is_a_config_error_that_quotes_nothing(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        ServiceAccountKey.from_json(text)
    assert "c2VjcmV0" not in str(caught.value)
    assert str(caught.value).startswith("source.credentials_file: ")


def test_rate_limit_403_is_retried_with_backoff(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    directory = build(60, 12)
    ids = seed_google(google, directory)
    google.throttle = Throttle(every=4, status=403)
    sleeps = Sleeps()
    snapshot = source(google, service_account, page_size=10, sleep=sleeps, settings=PATIENT).read()
    assert observed(snapshot, ids) == expected(directory)
    throttled = [r for r in google.requests if r.status == 403]
    assert len(sleeps) == len(throttled) > 3
    assert all(0 <= s <= 0.05 for s in sleeps), "no Retry-After: jittered backoff, capped"


def test_rate_limit_429_honours_retry_after(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    seed_google(google, build(30, 6))
    google.throttle = Throttle(every=3, status=429, seconds=2)
    sleeps = Sleeps()
    source(google, service_account, page_size=10, sleep=sleeps, settings=PATIENT).read()
    assert sleeps
    assert set(sleeps) == {2.0}


def test_a_forbidden_call_that_is_no_rate_limit_is_not_retried(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    google.register_service_account(
        SERVICE_ACCOUNT,
        KEY_ID,
        service_account.public_pem,
        delegated_scopes=frozenset(SCOPES),
    )
    google.add_user(primary_email="a@example.com", given_name="A", family_name="B")
    reading = source(google, service_account)
    reading.read()
    google.expire_tokens()
    google.register_service_account(
        SERVICE_ACCOUNT, KEY_ID, service_account.public_pem, delegated_scopes=frozenset()
    )
    with pytest.raises(SourceError, match="unauthorized_client"):
        reading.read()


def test_the_token_is_renewed_once_after_revocation(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    seed_google(google, build(10, 4))
    reading = source(google, service_account, page_size=3)
    first = reading.read()
    google.expire_tokens()
    assert reading.read() == first
    assert google.tokens_issued == 2


@pytest.mark.parametrize("mode", ["error", "bad_cursor", "loop"])
@pytest.mark.parametrize("listing", ["users", "groups", "members"])
def test_a_failure_mid_pagination_fails_the_read(
    google: GoogleEmulator, service_account: ServiceAccount, listing: str, mode: str
) -> None:
    seed_google(google, build(30, 30))
    google.failure = PageFailure(listing, 3, mode)  # type: ignore[arg-type]
    with pytest.raises(SourceError) as caught:
        source(google, service_account, page_size=5).read()
    expected_text = {
        "error": "HTTP 503",
        "bad_cursor": "Invalid Input: pageToken",
        "loop": "points back to a page already read",
    }[mode]
    assert expected_text in str(caught.value)
    if mode == "error":
        failed = Counter(r.path for r in google.requests if r.status == 503)
        assert max(failed.values()) == FAST.retry.max_attempts


def test_transport_faults_are_retried_and_the_read_is_still_complete(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    directory = build(40, 10)
    ids = seed_google(google, directory)
    google.faults = Faults(error_rate=0.25, kinds=("500", "reset", "429"), seed=11)
    settings = HttpSettings(retry=RetrySettings(max_attempts=8, max_delay=30, base=0.01, cap=0.02))
    snapshot = source(google, service_account, page_size=5, settings=settings).read()
    assert observed(snapshot, ids) == expected(directory)
    assert any(r.injected_fault for r in google.requests)


class TestContract:
    """Every Directory exchange of a read, and the emulator's errors, against the discovery doc."""

    def test_a_read_and_its_errors_follow_the_discovery_document(
        self, google: GoogleEmulator, service_account: ServiceAccount
    ) -> None:
        seed_google(google, build(12, 6))
        google.add_everyone(google.add_group("everyone"))
        google.add_group("empty")
        recorder = Recorder()
        reading = source(google, service_account, page_size=4, transport=recorder)
        reading.read()
        grant = httpx.post(
            google.token_url,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": reading.assertion(),
            },
        ).json()
        assert grant["token_type"] == "Bearer"
        auth = {"Authorization": f"Bearer {grant['access_token']}"}
        with httpx.Client(base_url=google.directory_url + "/", transport=recorder) as client:
            customer = {"customer": "my_customer"}
            assert client.get("users", params=customer).status_code == 401
            assert client.get("users", params=customer, headers=auth).status_code == 200
            big = {**customer, "maxResults": "201"}
            assert client.get("groups", params=big, headers=auth).status_code == 400
            token = {**customer, "pageToken": "bogus"}
            assert client.get("users", params=token, headers=auth).status_code == 400
            assert client.get("groups/nope/members", headers=auth).status_code == 404
            google.throttle = Throttle(every=1, status=403)
            assert client.get("groups", params=customer, headers=auth).status_code == 403
        directory = [r for r in recorder.responses if r.request.url.path.startswith("/admin/")]
        assert len(directory) > 12
        for response in directory:
            check_google(response)
        empty = next(
            r.json()
            for r in directory
            if r.request.url.path.endswith("/members")
            and r.status_code == 200
            and "members" not in r.json()
        )
        assert empty["kind"] == "admin#directory#members", "an empty page leaves the list out"

    def test_the_checker_catches_an_undeclared_field(
        self, google: GoogleEmulator, service_account: ServiceAccount
    ) -> None:
        google.add_user(primary_email="a@example.com", given_name="A", family_name="B")
        recorder = Recorder()
        source(google, service_account, transport=recorder).read()
        response = next(r for r in recorder.responses if r.request.url.path.endswith("/users"))
        body = response.json()
        body["users"][0]["disabled"] = True
        with pytest.raises(ContractViolation, match="disabled"):
            check_google(httpx.Response(200, json=body, request=response.request))
        body["users"][0] = {"id": "1", "suspended": "no"}
        with pytest.raises(ContractViolation):
            check_google(httpx.Response(200, json=body, request=response.request))
        wrong_param = response.request.url.copy_add_param("maxResults", "900")
        with pytest.raises(ContractViolation, match="maxResults"):
            check_google(httpx.Response(200, json={}, request=httpx.Request("GET", wrong_param)))
