"""The Google source's change probe (incremental passes) against the Google emulator over
loopback: the Reports API's `activities.list` for the `admin` and `groups_enterprise`
applications since a time, with a token of its own for `admin.reports.audit.readonly`.

How it could hurt an administrator, each tried below: a leaver (deleted, suspended) or a
membership taken away that the probe calls quiet keeps their access until the next full
pass; an activity logged minutes late (Google's documented lag) falling between two
probes' windows; the same change read again and again (cost only, but a probe that never
settles is no probe); an install that never delegated the Reports scope failing its
passes, or being told nothing about what each pass costs; a cursor older than the log's
retention, or in Google's future, read as quiet; the service account's key or a token
written into the cursor (the state database) or a log line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

import orgsync.sources.google as google_module
from orgsync.core.errors import CursorExpired
from orgsync.core.ports import DetectsChanges
from orgsync.sources.google import PROBE_OVERLAP, REPORTS_SCOPE, SCOPES, GoogleSource, _counts
from orgsync.testing.google import DIRECTORY_SCOPES, GoogleEmulator
from tests.sources.idp import KEY_ID, SERVICE_ACCOUNT, ServiceAccount
from tests.sources.probing import Prober
from tests.sources.test_google import source

LAST_WEEK = datetime.now(UTC) - timedelta(days=7)


def seed(google: GoogleEmulator, people: int = 6) -> tuple[list[str], str, str]:
    """`people` users (the first four in `openai-users`) and an empty group `team`,
    logged last week, so that a probe's overlap window holds none of their activities."""
    google.clock = lambda: LAST_WEEK
    users = [
        google.add_user(primary_email=f"person{i}@example.com", given_name="P", family_name=str(i))
        for i in range(people)
    ]
    group = google.add_group("openai-users")
    team = google.add_group("team")
    for user in users[:4]:
        google.add_member(group, user)
    google.clock = lambda: datetime.now(UTC)
    return users, group, team


def reports_calls(google: GoogleEmulator, mark: int) -> list[str]:
    return [r.path for r in google.requests[mark:] if r.path.startswith("/admin/reports/")]


@pytest.fixture(autouse=True)
def _say_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """The degraded warning is said once per process: each test starts unsaid."""
    monkeypatch.setattr(google_module, "_SAID_DEGRADED", set())


def test_a_quiet_probe_is_two_requests_and_each_change_is_reported_once(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    users, group, team = seed(google)
    reader = source(google, service_account)
    assert isinstance(reader, DetectsChanges)
    prober = Prober(reader)
    assert len(reader.read().people) == 6
    mark, tokens = len(google.requests), google.tokens_issued
    assert not prober.changed()
    assert prober.calls == 2
    assert reports_calls(google, mark) == [
        "/admin/reports/v1/activity/users/all/applications/admin",
        "/admin/reports/v1/activity/users/all/applications/groups_enterprise",
    ]
    assert len(google.requests) - mark == 2, "nothing else: no token, no directory call"
    assert google.tokens_issued == tokens

    def seen_once(change: Callable[[], object]) -> None:
        change()
        assert prober.changed()
        assert not prober.changed(), "reported once"
        assert prober.calls == 2

    seen_once(
        lambda: google.add_user(primary_email="new@example.com", given_name="N", family_name="U")
    )
    seen_once(lambda: google.set_suspended(users[0], True))
    seen_once(lambda: google.set_suspended(users[0], False))
    seen_once(lambda: google.set_name(users[1], given_name="Ada", family_name="Lovelace"))
    seen_once(lambda: google.set_primary_email(users[1], "ada@example.com"))
    seen_once(lambda: google.add_member(group, users[5]))
    seen_once(lambda: google.remove_member(group, users[2]))
    # A group's owner, in Google Groups: only the groups_enterprise log has it.
    seen_once(lambda: google.add_member(group, users[4], by_owner=True))
    seen_once(lambda: google.remove_member(group, users[3], by_owner=True))
    seen_once(lambda: google.add_member(group, team))  # nesting
    seen_once(lambda: google.rename_group(team, "openai-team"))
    seen_once(lambda: google.add_group("openai-owners"))
    seen_once(lambda: google.delete_group(team))
    seen_once(lambda: google.delete_user(users[3]))
    assert not prober.changed()


def test_a_late_activity_inside_the_overlap_is_found_and_reported_once(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    """Google: admin events appear in "a couple of minutes", sometimes later. A leaver
    suspended now, logged three minutes late: the probe a minute later sees nothing, the
    one after the activity appears (four minutes on) finds it, and the next is quiet."""
    users, _, _ = seed(google)
    ours = datetime.now(UTC)
    reader = source(google, service_account)
    reader._wall_clock = lambda: ours.timestamp()  # noqa: PLW0108 - orgsync's clock, moved below
    prober = Prober(reader)
    assert not prober.changed()
    google.activity_lag = timedelta(minutes=3)
    start = ours
    google.clock = lambda: start
    google.set_suspended(users[0], True)

    def at(moment: datetime) -> bool:
        nonlocal ours
        ours = moment
        google.clock = lambda: moment
        return prober.changed()

    assert not at(start + timedelta(minutes=1)), "not visible yet"
    assert at(start + timedelta(minutes=4)), "the late activity is inside the overlap"
    assert not at(start + timedelta(minutes=5)), "and not reported twice"


def test_a_lag_longer_than_the_overlap_is_the_residual_risk(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    """What only a full pass corrects (documented): an activity that appears after a
    probe's window has moved past its time. Kept so the documented bound stays true."""
    users, _, _ = seed(google)
    ours = datetime.now(UTC)
    reader = source(google, service_account)
    reader._wall_clock = lambda: ours.timestamp()  # noqa: PLW0108 - orgsync's clock, moved below
    prober = Prober(reader)
    google.activity_lag = PROBE_OVERLAP * 2
    google.set_suspended(users[0], True)

    def at(moment: datetime) -> bool:
        nonlocal ours
        ours = moment
        google.clock = lambda: moment
        return prober.changed()

    start = ours
    assert not at(start + PROBE_OVERLAP + timedelta(minutes=5)), "not visible yet"
    assert not at(start + PROBE_OVERLAP * 3), "missed: its time is before the window"


def test_credential_only_activities_do_not_count_and_unknown_ones_do() -> None:
    def activity(kind: Any, name: Any) -> dict[str, Any]:
        return {"events": [{"type": kind, "name": name}]}

    assert not _counts("admin", activity("USER_SETTINGS", "CHANGE_PASSWORD"))
    assert not _counts("admin", activity("CALENDAR_SETTINGS", "CHANGE_CALENDAR_SETTING"))
    assert _counts("admin", activity("USER_SETTINGS", "SOME_NEW_EVENT"))
    assert _counts("admin", activity("USER_SETTINGS", "CHANGE_USER_ORGANIZATION"))
    assert _counts("admin", activity("GROUP_SETTINGS", "UPDATE_GROUP_MEMBER"))
    assert _counts("admin", activity("ORG_SETTINGS", "EDIT_ORG_UNIT_NAME"))
    assert _counts("admin", activity("DOMAIN_SETTINGS", "CHANGE_PRIMARY_DOMAIN"))
    assert _counts("admin", activity(None, "CREATE_USER")), "an odd shape counts"
    assert _counts("admin", {"events": []})
    assert _counts("groups_enterprise", activity("moderator_action", "accept_invitation"))


def test_many_pages_of_activities_in_the_window_are_a_change(
    google: GoogleEmulator, service_account: ServiceAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than a few pages in the window is read whole, not walked page by page."""
    monkeypatch.setattr(google_module, "PROBE_PAGE", 2)
    monkeypatch.setattr(google_module, "PROBE_MAX_PAGES", 2)
    seed(google)
    prober = Prober(source(google, service_account))
    for i in range(5):
        google.add_user(primary_email=f"n{i}@example.com", given_name="N", family_name=str(i))
    assert prober.changed()
    assert prober.changed(), "the window is still fuller than the pages walked"


def test_without_the_reports_scope_the_probe_degrades_once_and_reads_still_work(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    """An install that delegated the directory scopes only: the probe's token is refused
    (`unauthorized_client`), the directory token is not, nothing fails, and the log says
    once what to delegate and what each pass costs meanwhile."""
    google.register_service_account(
        SERVICE_ACCOUNT, KEY_ID, service_account.public_pem, delegated_scopes=DIRECTORY_SCOPES
    )
    seed(google)
    reader = source(google, service_account)
    with capture_logs() as logs:
        assert reader.change_cursor() is None
        assert len(reader.read().people) == 6
        assert reader.change_cursor() is None
        assert source(google, service_account).change_cursor() is None
        recent = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        with pytest.raises(CursorExpired, match="cannot be used"):
            reader.probe_changes(json.dumps({"since": recent, "seen": {}}), 0, 0)
    (said,) = [e for e in logs if e["event"] == "source.change_probe_degraded"]
    assert REPORTS_SCOPE in said["enable"]
    assert "reads the whole directory" in said["cost"]
    assert "unauthorized_client" in said["reason"]
    assert reports_calls(google, 0) == []
    assert not any("ya29." in json.dumps(e, default=str) for e in logs)


def test_an_admin_who_may_not_read_reports_degrades_too(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    seed(google)
    google.report_readers = frozenset()
    reader = source(google, service_account)
    with capture_logs() as logs:
        assert reader.change_cursor() is None
        assert len(reader.read().people) == 6
    (said,) = [e for e in logs if e["event"] == "source.change_probe_degraded"]
    assert "403" in said["reason"]


def test_the_directory_token_never_asks_for_the_reports_scope(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    """Adding the scope to the directory token would break every install that did not
    delegate it: the two tokens ask for their own scopes only."""
    reader = source(google, service_account)
    assert REPORTS_SCOPE not in reader.assertion()
    assert set(json.loads(_claims(reader.assertion()))["scope"].split()) == set(SCOPES)
    reports = json.loads(_claims(reader.assertion((REPORTS_SCOPE,))))
    assert reports["scope"] == REPORTS_SCOPE


def _claims(token: str) -> str:
    import base64

    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


def test_a_cursor_older_than_the_retention_is_expired(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    """`activities.list` returns only the last 180 days for an older start, silently:
    changes before that would be missed, so the source is read whole."""
    seed(google)
    reader = source(google, service_account)
    old = (datetime.now(UTC) - timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    mark = len(google.requests)
    with pytest.raises(CursorExpired, match="days old"):
        reader.probe_changes(json.dumps({"since": old, "seen": {}}), 6, 2)
    assert reports_calls(google, mark) == []


@pytest.mark.parametrize("cursor", ["not json", '{"since": "2026-01-01T00:00:00", "seen": {}}'])
def test_a_cursor_this_source_did_not_write_is_expired(
    google: GoogleEmulator, service_account: ServiceAccount, cursor: str
) -> None:
    with pytest.raises(CursorExpired):
        source(google, service_account).probe_changes(cursor, 0, 0)


def test_a_window_google_refuses_is_expired(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    """A cursor in Google's future (written by a host whose clock ran ahead): Google
    answers 400 ("Start time is after end time"), and the source is read whole."""
    seed(google)
    ahead = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with pytest.raises(CursorExpired, match="time window"):
        source(google, service_account).probe_changes(
            json.dumps({"since": ahead, "seen": {}}), 0, 0
        )


def test_the_cursor_holds_no_secret_and_no_address(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    users, group, _ = seed(google)
    reader = source(google, service_account)
    prober = Prober(reader)
    google.set_suspended(users[0], True)
    google.add_member(group, users[5], by_owner=True)
    assert prober.changed()
    cursor = prober.cursor
    assert len(json.loads(cursor)["seen"]) == 2
    assert "@" not in cursor
    assert "ya29." not in cursor
    for part in service_account.document["private_key"].splitlines()[1:-1]:
        assert part not in cursor
    assert "GoogleSource(" in repr(reader) and "PRIVATE" not in repr(reader)


def test_the_emulator_pages_filters_and_refuses_as_documented(
    google: GoogleEmulator, service_account: ServiceAccount
) -> None:
    """The emulator's activities.list: newest first, `maxResults` pages, `startTime` /
    `endTime` bounds, the list left out when empty, 400 for a bad page size or a start
    after the end, 403 without the scope."""
    import httpx

    seed(google)
    reader: GoogleSource = source(google, service_account)
    try:
        token = reader.reports_token.tokens.get()
        url = f"{google.reports_url}/activity/users/all/applications/admin"
        headers = {"Authorization": f"Bearer {token}"}
        first = httpx.get(url, params={"maxResults": 3}, headers=headers).json()
        assert first["kind"] == "admin#reports#activities" and len(first["items"]) == 3
        times = [a["id"]["time"] for a in first["items"]]
        assert times == sorted(times, reverse=True)
        rest = httpx.get(
            url, params={"maxResults": 1000, "pageToken": first["nextPageToken"]}, headers=headers
        ).json()
        assert "nextPageToken" not in rest
        assert len(first["items"]) + len(rest["items"]) == len(google.activities)
        recent = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        empty = httpx.get(url, params={"startTime": recent}, headers=headers).json()
        assert "items" not in empty
        before = (LAST_WEEK - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        window = httpx.get(url, params={"startTime": before, "endTime": recent}, headers=headers)
        assert len(window.json()["items"]) == len(google.activities)
        for params in ({"maxResults": 1001}, {"startTime": recent, "endTime": before}):
            refused = httpx.get(url, params=params, headers=headers)
            assert refused.status_code == 400
            assert refused.json()["error"]["errors"][0]["reason"] == "invalid"
        directory_token = reader.token.tokens.get()
        scope = httpx.get(url, headers={"Authorization": f"Bearer {directory_token}"})
        assert scope.status_code == 403
        assert scope.json()["error"]["errors"][0]["reason"] == "insufficientPermissions"
    finally:
        # Tokens asked for outside a read: their endpoints' connections are closed here.
        reader.reports_token.close()
        reader.token.close()
    newest = first["items"][0]  # the seed's last change: person3 into openai-users
    assert newest["id"]["applicationName"] == "admin"
    assert newest["events"][0]["type"] == "GROUP_SETTINGS"
    assert newest["events"][0]["name"] == "ADD_GROUP_MEMBER"
    assert {p["name"]: p["value"] for p in newest["events"][0]["parameters"]} == {
        "GROUP_EMAIL": "openai-users@example.com",
        "USER_EMAIL": "person3@example.com",
    }
