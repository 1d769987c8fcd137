"""The Entra ID source against the Graph emulator on loopback: complete or `SourceError`."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from orgsync.core.errors import SourceDataError, SourceError
from orgsync.core.model import RoleCatalog
from orgsync.core.rules import MembershipRules, desired_state
from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings
from orgsync.sources.entra import EntraSource, pick_email
from orgsync.testing.entra import EntraEmulator, PageFailure, Throttle
from orgsync.testing.faults import Faults
from tests.sources.idp import FAST, PATIENT, Recorder, Sleeps
from tests.sources.idp_contract import ContractViolation, check_openapi
from tests.sources.idp_directory import (
    Directory,
    build,
    expected,
    member_pages,
    observed,
    pages,
    seed_entra,
)


def source(
    entra: EntraEmulator,
    *,
    page_size: int = 999,
    settings: HttpSettings = FAST,
    sleep: Sleeps | None = None,
    secret: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> EntraSource:
    return EntraSource(
        tenant_id=entra.tenant_id,
        client_id=entra.client_id,
        client_secret=secret if secret is not None else entra.client_secret,
        graph_url=entra.graph_url,
        login_url=entra.login_url,
        page_size=page_size,
        settings=settings,
        sleep=sleep if sleep is not None else Sleeps(),
        transport=transport,
    )


def budget(directory: Directory, page_size: int) -> int:
    """Graph calls of a complete read: users, groups and one member listing per group."""
    return (
        pages(len(directory.people), page_size)
        + pages(len(directory.groups), page_size)
        + member_pages(directory, page_size)
    )


def graph_calls(entra: EntraEmulator) -> list[str]:
    return [r.path for r in entra.requests if r.path.startswith("/v1.0/")]


def test_complete_read_of_2500_people_and_300_nested_groups(entra: EntraEmulator) -> None:
    directory = build(2500, 300)
    ids = seed_entra(entra, directory)
    snapshot = source(entra).read()
    assert observed(snapshot, ids) == expected(directory)
    assert sum(not p.active for p in snapshot.people) == 250
    calls = graph_calls(entra)
    assert len(calls) == budget(directory, 999), "pages only: no call per user or per pair"
    assert {c for c in calls if c.startswith("/v1.0/users/")} == set()
    assert entra.tokens_issued == 1, "one token for the whole read, shared by the workers"

    # The cycle team-0 ⊃ team-1 ⊃ team-2 ⊃ team-0 reaches the core intact, and the core
    # flattens it: everyone active in the three teams is wanted via team-0.
    rules = MembershipRules(scope_groups=("team-0",), default_role="reader")
    wanted = desired_state(snapshot, rules, RoleCatalog(("reader", "owner"))).wanted
    in_teams = {
        p
        for name in ("team-0", "team-1", "team-2")
        for p in directory.group(name).people
        if next(x for x in directory.people if x.key == p).active
    }
    assert {w.source_id for w in wanted.values()} == {ids[p] for p in in_teams}


@pytest.mark.parametrize("people", [4, 5, 6])
def test_pagination_boundaries(entra: EntraEmulator, people: int) -> None:
    directory = build(people, people, nested=False, inactive_every=1000)
    for group in directory.groups:
        group.people = [p.key for p in directory.people]
    ids = seed_entra(entra, directory)
    snapshot = source(entra, page_size=5).read()
    assert observed(snapshot, ids) == expected(directory)
    assert len(graph_calls(entra)) == budget(directory, 5)


def test_email_is_mail_else_an_address_shaped_upn(entra: EntraEmulator) -> None:
    entra.add_user(display_name="A", user_principal_name="a@contoso.com", mail="A.Mail@contoso.com")
    entra.add_user(display_name="B", user_principal_name="b@contoso.com")
    guest = entra.add_user(
        display_name="G", user_principal_name="g_x.com#EXT#@contoso.onmicrosoft.com"
    )
    mailed_guest = entra.add_user(
        display_name="H", user_principal_name="h_y.com#EXT#@contoso.onmicrosoft.com", mail="h@y.com"
    )
    group = entra.add_group("openai-users")
    for member in (guest, mailed_guest, entra.add_device()):
        entra.add_member(group, member)
    reading = source(entra)
    snapshot = reading.read()
    assert sorted(p.email for p in snapshot.people) == [
        "A.Mail@contoso.com",
        "b@contoso.com",
        "h@y.com",
    ]
    assert reading.skipped_without_email == 1
    (users,) = snapshot.groups
    assert users.members == (guest, mailed_guest), "devices are no people; ids kept as listed"
    assert pick_email({"userPrincipalName": "not-an-address"}) is None


def test_disabled_and_unknown_account_state_are_inactive(entra: EntraEmulator) -> None:
    entra.add_user(display_name="On", user_principal_name="on@c.com", account_enabled=True)
    entra.add_user(display_name="Off", user_principal_name="off@c.com", account_enabled=False)
    entra.add_user(display_name="Null", user_principal_name="null@c.com", account_enabled=None)
    active = {p.email: p.active for p in source(entra).read().people}
    assert active == {"on@c.com": True, "off@c.com": False, "null@c.com": False}


def test_a_server_ignoring_select_fails_the_read() -> None:
    """Without accountEnabled nobody's status is known: no guessing for everybody."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3600})
        return httpx.Response(200, json={"value": [{"id": "u1", "mail": "a@b.c"}]})

    entra = EntraSource(
        tenant_id="t",
        client_id="c",
        client_secret="s3cret-value",
        graph_url="https://graph.example/v1.0",
        login_url="https://login.example",
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(SourceDataError, match="accountEnabled"):
        entra.read()


def test_throttling_honours_retry_after(entra: EntraEmulator) -> None:
    directory = build(60, 12)
    ids = seed_entra(entra, directory)
    entra.throttle = Throttle(every=4, seconds=3)
    sleeps = Sleeps()
    snapshot = source(entra, page_size=10, sleep=sleeps, settings=PATIENT).read()
    assert observed(snapshot, ids) == expected(directory)
    throttled = [r for r in entra.requests if r.status == 429]
    assert len(sleeps) == len(throttled) > 3
    assert set(sleeps) == {3.0}, "exactly what Retry-After asked"


def test_the_token_is_renewed_once_when_graph_refuses_it(entra: EntraEmulator) -> None:
    seed_entra(entra, build(10, 4))
    reading = source(entra, page_size=3)
    first = reading.read()
    entra.expire_tokens()  # revoked between two runs of a daemon that keeps the source
    assert reading.read() == first
    assert entra.tokens_issued == 2
    refused = [r for r in entra.requests if r.status == 401]
    assert len(refused) == 1


def test_a_token_refused_again_fails_the_read(entra: EntraEmulator) -> None:
    seed_entra(entra, build(3, 2))
    entra.token_lifetime = 0  # every token is dead on arrival
    with pytest.raises(SourceError, match=r"HTTP 401.*InvalidAuthenticationToken"):
        source(entra).read()
    assert entra.tokens_issued == 2, "renewed once, not in a loop"


def test_a_wrong_secret_is_refused_with_the_aadsts_reason(entra: EntraEmulator) -> None:
    with pytest.raises(SourceError) as caught:
        source(entra, secret="not-the-secret-value").read()
    message = str(caught.value)
    assert "invalid_client: AADSTS7000215: Invalid client secret provided" in message
    assert "source.client_secret" in message
    assert "not-the-secret-value" not in message
    assert len(entra.requests) == 1, "no retry of a refused credential"


@pytest.mark.parametrize("mode", ["error", "bad_cursor", "loop"])
@pytest.mark.parametrize("listing", ["users", "groups", "members"])
def test_a_failure_mid_pagination_fails_the_read(
    entra: EntraEmulator, listing: str, mode: str
) -> None:
    seed_entra(entra, build(30, 30))
    entra.failure = PageFailure(listing, 3, mode)  # type: ignore[arg-type]
    with pytest.raises(SourceError) as caught:
        source(entra, page_size=5).read()
    expected_text = {
        "error": "HTTP 500",
        "bad_cursor": "Directory_ExpiredPageToken",
        "loop": "points back to a page already read",
    }[mode]
    assert expected_text in str(caught.value)
    if mode == "error":
        failed = Counter(r.path for r in entra.requests if r.status == 500)
        assert max(failed.values()) == FAST.retry.max_attempts


def test_transport_faults_are_retried_and_the_read_is_still_complete(entra: EntraEmulator) -> None:
    directory = build(40, 10)
    ids = seed_entra(entra, directory)
    entra.faults = Faults(error_rate=0.25, kinds=("500", "reset", "429"), seed=5)
    settings = HttpSettings(retry=RetrySettings(max_attempts=8, max_delay=30, base=0.01, cap=0.02))
    snapshot = source(entra, page_size=5, settings=settings).read()
    assert observed(snapshot, ids) == expected(directory)
    assert any(r.injected_fault for r in entra.requests)


class TestContract:
    """Every Graph exchange of a read, and the emulator's errors, against Graph's spec."""

    def test_a_read_and_its_errors_follow_the_spec(self, entra: EntraEmulator) -> None:
        seed_entra(entra, build(12, 6))
        entra.add_member(entra.add_group("with-device"), entra.add_device())
        recorder = Recorder()
        source(entra, page_size=4, transport=recorder).read()
        grant = httpx.post(
            f"{entra.login_url}/{entra.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": entra.client_id,
                "client_secret": entra.client_secret,
                "scope": "https://graph.microsoft.com/.default",
            },
        ).json()
        assert grant["token_type"] == "Bearer"
        assert grant["expires_in"] == entra.token_lifetime
        auth = {"Authorization": f"Bearer {grant['access_token']}"}
        with httpx.Client(base_url=entra.graph_url + "/", transport=recorder) as client:
            assert client.get("users", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert client.get("users", headers=auth).status_code == 200, "defaults, no $select"
            assert client.get("groups", headers=auth).status_code == 200
            bad_select = client.get("users", params={"$select": "id,nickname"}, headers=auth)
            assert bad_select.status_code == 400
            assert client.get("users", params={"$top": "1000"}, headers=auth).status_code == 400
            expired = client.get("users", params={"$skiptoken": "Zm9v"}, headers=auth)
            assert expired.status_code == 400
            assert client.get("groups/nope/members", headers=auth).status_code == 404
            entra.throttle = Throttle(every=1)
            throttled = client.get("groups", headers=auth)
            assert throttled.status_code == 429
            assert throttled.headers["Retry-After"] == "1"
        graph = [r for r in recorder.responses if r.request.url.path.startswith("/v1.0/")]
        assert len(graph) > 12
        for response in graph:
            check_openapi("graph", response)

    def test_the_checker_catches_an_undeclared_field(self, entra: EntraEmulator) -> None:
        entra.add_user(display_name="A", user_principal_name="a@c.com")
        recorder = Recorder()
        source(entra, transport=recorder).read()
        response = next(r for r in recorder.responses if r.request.url.path == "/v1.0/users")
        body = response.json()
        body["value"][0]["accountDisabled"] = False
        forged = httpx.Response(200, json=body, request=response.request)
        with pytest.raises(ContractViolation, match="accountDisabled"):
            check_openapi("graph", forged)
        body["value"][0] = {"id": "x", "accountEnabled": "yes"}
        with pytest.raises(ContractViolation):
            check_openapi("graph", httpx.Response(200, json=body, request=response.request))
