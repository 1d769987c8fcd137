"""The Okta source's change probe (incremental passes) against the Okta emulator over
loopback: `lastUpdated gt` on users, `lastUpdated`/`lastMembershipUpdated gt` on groups
and the System Log (`/api/v1/logs?since=...&filter=eventType eq ...`). A quiet org costs
three requests; every kind of change (a profile, a status, a membership added or removed,
a user or a group deleted, a group renamed or created, a newcomer) is reported once; a
log window Okta refuses, a token that may not read the log, or a cursor it did not write
is `CursorExpired`; and `orgsync sync --incremental` over Okta calls nobody else when
nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgsync.core.errors import CursorExpired
from orgsync.core.ports import DetectsChanges
from orgsync.sources.okta import PROBE_PAGE
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.sources.idp import Recorder
from tests.sources.idp_contract import check_openapi
from tests.sources.probing import Prober
from tests.sources.test_okta import source

LAST_WEEK = datetime.now(UTC) - timedelta(days=7)


def seed(okta: OktaEmulator, people: int = 6) -> tuple[list[str], str]:
    """`people` users (the first four in `openai-users`), created last week, so that a
    probe's overlap window holds none of them."""
    okta.clock = lambda: LAST_WEEK
    users = [
        okta.add_user(email=f"person{i}@example.com", first_name="Person", last_name=str(i))
        for i in range(people)
    ]
    group = okta.add_group("openai-users")
    for user in users[:4]:
        okta.add_member(group, user)
    okta.clock = lambda: datetime.now(UTC)
    return users, group


def test_probes_report_each_change_once(okta: OktaEmulator) -> None:
    users, group = seed(okta)
    reader = source(okta)
    assert isinstance(reader, DetectsChanges)
    prober = Prober(reader)
    assert len(reader.read().people) == 6
    assert not prober.changed()
    assert prober.calls == 3
    mark = len(okta.requests)
    assert not prober.changed()
    paths = [r.path for r in okta.requests[mark:]]
    assert paths == ["/api/v1/users", "/api/v1/groups", "/api/v1/logs"]

    def seen_once(change: Callable[[], object]) -> None:
        change()
        assert prober.changed()
        assert not prober.changed()
        assert prober.calls == 3

    seen_once(lambda: okta.set_display_name(users[0], "Ada L."))
    seen_once(lambda: okta.set_display_name(users[0], "Ada Lovelace"))  # the same millisecond
    seen_once(lambda: okta.add_member(group, users[5]))
    seen_once(lambda: okta.remove_member(group, users[1]))
    seen_once(lambda: okta.set_status(users[2], "SUSPENDED"))
    seen_once(lambda: okta.set_status(users[3], "DEPROVISIONED"))
    # Deleting a deactivated user moves nobody's stamps: only the System Log tells.
    before = okta.group_record(group)["lastMembershipUpdated"]
    seen_once(lambda: okta.delete_user(users[3]))
    assert okta.group_record(group)["lastMembershipUpdated"] == before
    assert okta.events[-1]["eventType"] == "user.lifecycle.delete.initiated"
    seen_once(lambda: okta.rename_group(group, "openai-people"))
    seen_once(lambda: okta.add_user(email="newcomer@example.com"))
    team = okta.add_group("team-new")
    assert prober.changed()
    seen_once(lambda: okta.delete_group(team))


def test_orgsync_may_run_ahead_of_okta_by_less_than_the_overlap(okta: OktaEmulator) -> None:
    """Cursors are times on orgsync's clock minus the overlap: Okta's stamps may be that
    far behind without a change being missed."""
    users, _ = seed(okta)
    reader = source(okta)
    prober = Prober(reader)
    reader.clock = lambda: datetime.now(UTC) + timedelta(minutes=4)  # orgsync runs ahead
    assert not prober.changed()
    okta.set_display_name(users[0], "Changed")
    assert prober.changed()


def test_orgsync_far_ahead_of_okta_reads_whole_rather_than_miss_a_change(
    okta: OktaEmulator,
) -> None:
    """A host clock ten minutes fast (NTP broken) puts the cursor after changes Okta
    stamps meanwhile; a pass later Okta's clock has passed the cursor, so Okta takes the
    query, and only the response's Date tells the probe the clocks disagree."""
    users, _ = seed(okta)
    start = datetime.now(UTC)
    okta.clock = lambda: start
    reader = source(okta)
    reader.clock = lambda: start + timedelta(minutes=10)
    prober = Prober(reader)  # its cursor: orgsync's time less the overlap, Okta's + 5 min
    okta.set_display_name(users[0], "Changed")  # stamped at Okta's `start`
    okta.clock = lambda: start + timedelta(minutes=15)  # the next pass, on both clocks
    reader.clock = lambda: start + timedelta(minutes=25)
    with pytest.raises(CursorExpired, match=r"clock runs 600 s ahead of Okta's"):
        prober.changed()


def test_more_changes_than_a_page_are_read_whole(okta: OktaEmulator) -> None:
    seed(okta)
    prober = Prober(source(okta))
    for i in range(PROBE_PAGE):
        okta.add_user(email=f"bulk{i}@example.com")
    assert prober.changed()
    # Not remembered (the cursor stays small): read whole again until the window passes.
    assert len(json.loads(prober.cursor)["seen"]) == 0
    assert prober.changed()


def test_a_log_window_okta_refuses_is_an_expired_cursor(okta: OktaEmulator) -> None:
    seed(okta)
    reader = source(okta)
    old = json.dumps({"since": "2020-01-01T00:00:00.000Z", "seen": {}})
    with pytest.raises(CursorExpired, match="refused the probe's query"):
        reader.probe_changes(old, 0, 0)
    okta.log_retention = timedelta(days=1)
    ten_days = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with pytest.raises(CursorExpired, match="since"):
        reader.probe_changes(json.dumps({"since": ten_days, "seen": {}}), 0, 0)


def test_a_token_that_may_not_read_the_log_is_an_expired_cursor(okta: OktaEmulator) -> None:
    seed(okta)
    reader = source(okta)
    okta.logs_forbidden = True
    with pytest.raises(CursorExpired, match=r"okta\.logs\.read"):
        Prober(reader).changed()
    assert len(reader.read().people) == 6, "the read itself does not need the log"


def test_a_cursor_it_did_not_write_is_expired(okta: OktaEmulator) -> None:
    reader = source(okta)
    for cursor in ("", "{}", '{"since": "yesterday", "seen": {}}', "[1]", '{"since": 3}'):
        with pytest.raises(CursorExpired):
            reader.probe_changes(cursor, 0, 0)
    naive = json.dumps({"since": "2026-01-01T00:00:00", "seen": {}})
    with pytest.raises(CursorExpired, match="time zone"):
        reader.probe_changes(naive, 0, 0)


def test_probe_answers_follow_the_okta_description(okta: OktaEmulator) -> None:
    users, group = seed(okta)
    recorder = Recorder()
    reader = source(okta, transport=recorder)
    prober = Prober(reader)  # one request: Okta's clock for the cursor
    assert len(recorder.responses) == 1
    okta.set_display_name(users[0], "Changed")
    okta.remove_member(group, users[1])
    okta.set_status(users[4], "DEPROVISIONED")
    okta.delete_user(users[4])
    assert prober.changed()
    assert len(recorder.responses) == 4
    for response in recorder.responses:
        assert response.status_code == 200
        check_openapi("okta", response)
    events = recorder.responses[3].json()
    assert [e["eventType"] for e in events] == [
        "user.account.update_profile",
        "group.user_membership.remove",
        "user.lifecycle.deactivate",
        "user.lifecycle.delete.initiated",
    ]


class TestEmulatedSystemLog:
    """The emulator's System Log pages and refuses as Okta documents."""

    def get(self, okta: OktaEmulator, url: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"SSWS {okta.token}"}
        # httpx replaces a URL's query with `params`, even an empty one: a next link's
        # query is kept only without.
        if not params:
            return httpx.get(url, headers=headers, timeout=10)
        return httpx.get(url, params=params, headers=headers, timeout=10)

    def test_polling_always_links_next_and_bounded_only_while_more_remain(
        self, okta: OktaEmulator
    ) -> None:
        seed(okta, people=3)
        since = (LAST_WEEK - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        first = self.get(okta, f"{okta.url}/api/v1/logs", since=since, limit=2)
        assert first.status_code == 200
        assert len(first.json()) == 2
        url = first.links["next"]["url"]
        pages = [first.json()]
        for _ in range(5):
            page = self.get(okta, url)
            pages.append(page.json())
            url = page.links["next"]["url"]  # polling: there always is one
        seen = [e["uuid"] for page in pages for e in page]
        assert len(seen) == len(set(seen)) == 3 + 1 + 3  # 3 users, a group, 3 memberships
        assert pages[-1] == []

        until = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        bounded = self.get(okta, f"{okta.url}/api/v1/logs", since=since, until=until, limit=7)
        assert len(bounded.json()) == 7
        assert "next" not in bounded.links

    def test_refusals(self, okta: OktaEmulator) -> None:
        logs = f"{okta.url}/api/v1/logs"
        for params in (
            {"since": "yesterday"},
            {"since": "2020-01-01T00:00:00.000Z"},
            {"limit": "1001"},
            {"filter": 'eventType co "user"'},
            {"filter": 'displayMessage eq "x"'},
        ):
            answer = self.get(okta, logs, **params)
            assert answer.status_code == 400, params
            assert answer.json()["errorCode"] in ("E0000001", "E0000031")
        users = self.get(
            okta, f"{okta.url}/api/v1/users", filter='created gt "2020-01-01T00:00:00.000Z"'
        )
        assert users.status_code == 400
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        backwards = {
            "since": hour_ago.isoformat(),
            "until": (hour_ago - timedelta(hours=1)).isoformat(),
        }
        assert self.get(okta, logs, **backwards).status_code == 400

    def test_a_filtered_user_listing_includes_the_deactivated(self, okta: OktaEmulator) -> None:
        users, _ = seed(okta, people=2)
        okta.set_status(users[0], "DEPROVISIONED")
        plain = self.get(okta, f"{okta.url}/api/v1/users")
        assert [u["id"] for u in plain.json()] == [users[1]]
        since = (LAST_WEEK + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        filtered = self.get(okta, f"{okta.url}/api/v1/users", filter=f'lastUpdated gt "{since}"')
        assert [u["id"] for u in filtered.json()] == [users[0]]


def test_incremental_passes_over_okta(okta: OktaEmulator, tmp_path: Path) -> None:
    """`orgsync sync --incremental` over Okta: a quiet pass is the probe's three requests
    and not one call to the organization; a membership change reaches it by the next."""
    users, group = seed(okta)
    with OpenAIEmulator(api_key=API_KEY) as openai:
        config = tmp_path / "orgsync.toml"
        config.write_text(
            f"""
[source]
type = "okta"
url = "{okta.url}"
token_env = "OKTA_TOKEN_FOR_TEST"
allow_plaintext = true

[[targets]]
name = "openai-test"
type = "openai"
base_url = "{openai.start()}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-users"]

[state]
path = "state.db"
""",
            encoding="utf-8",
        )

        def sync(*args: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            done = subprocess.run(
                [sys.executable, "-m", "orgsync", "--config", str(config), "sync", "--json",
                 "--log-format", "json", *args],
                capture_output=True, text=True, timeout=120, check=False,
                env={**os.environ, KEY_ENV: API_KEY, "OKTA_TOKEN_FOR_TEST": okta.token},
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            (target,) = json.loads(done.stdout)["targets"]
            logged = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
            return target, logged

        sync()
        assert len(openai.state.invites()) == 4
        mark, okta_mark = len(openai.requests), len(okta.requests)
        target, logged = sync("--incremental")
        assert target["run"]["pass"] == "incremental"
        probed = [(e["changed"], e["calls"]) for e in logged if e["event"] == "source.probed"]
        assert probed == [(False, 3)]
        assert openai.requests[mark:] == [], "a quiet pass calls nobody on the organization"
        assert len(okta.requests) - okta_mark == 3

        okta.add_member(group, users[5])
        target, _ = sync("--incremental")
        assert [op["email"] for op in target["operations"]] == ["person5@example.com"]
