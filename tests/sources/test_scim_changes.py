"""The SCIM source's change probe (incremental passes) against a real scim2-server on
loopback: a quiet provider is reported quiet in four requests, each kind of change
(a user changed, added or deleted, a group's members, a group deleted) is reported once,
and a provider that refuses or ignores the `meta.lastModified` filter is read whole
instead (a snapshot diff), never trusted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgsync.core.errors import CursorExpired
from orgsync.core.ports import DetectsChanges
from orgsync.sources.scim import ScimSource
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.sources.cli import holdings, orgsync, write_config
from tests.sources.conftest import SCIM_TOKEN
from tests.sources.directory import make_directory
from tests.sources.probing import Prober
from tests.sources.servers import FaultProxy, Respond, ServerProcess, start_scim2_server
from tests.sources.test_scim import scim_config, scim_source

AUTH = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_scim2_server(make_directory(20, 2), tmp_path / "scim2", SCIM_TOKEN)
    yield running
    running.stop()


def scim_prober(source: ScimSource, url: str, **options: Any) -> Prober:
    """A prober after a whole read of `source` (a read closes its source's connections:
    the probes get a source of their own)."""
    snapshot = source.read()
    return Prober(scim_source(url, **options), len(snapshot.people), len(snapshot.groups))


def user_ids(server: ServerProcess) -> list[str]:
    body = httpx.get(f"{server.url}/Users", params={"count": 100}, headers=AUTH).json()
    return [r["id"] for r in body["Resources"]]


def test_probes_report_each_change_once(server: ServerProcess) -> None:
    prober = scim_prober(scim_source(server.url), server.url)
    source = prober.source
    assert isinstance(source, DetectsChanges)
    assert prober.changed()  # seeded moments ago: inside the overlap window
    assert not prober.changed()
    assert prober.calls == 4

    first, second = user_ids(server)[:2]
    user = httpx.get(f"{server.url}/Users/{first}", headers=AUTH).json()
    changed = {**user, "displayName": "Renamed"}
    assert httpx.put(f"{server.url}/Users/{first}", json=changed, headers=AUTH).is_success
    assert prober.changed()
    assert not prober.changed()

    group = httpx.get(f"{server.url}/Groups", params={"count": 1}, headers=AUTH).json()
    group_id = group["Resources"][0]["id"]
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": second}]}],
    }
    assert httpx.patch(f"{server.url}/Groups/{group_id}", json=patch, headers=AUTH).is_success
    assert prober.changed()
    assert not prober.changed()

    assert httpx.delete(f"{server.url}/Users/{second}", headers=AUTH).is_success
    assert prober.changed(), "a deletion leaves no timestamp: the count tells"
    prober.people -= 1
    assert not prober.changed()

    assert httpx.delete(f"{server.url}/Groups/{group_id}", headers=AUTH).is_success
    assert prober.changed()
    prober.groups -= 1
    assert not prober.changed()

    with pytest.raises(CursorExpired):
        source.probe_changes("not json", 1, 1)
    source.close()


def refuse_filters(status: int) -> Any:
    def plan(_number: int, path: str) -> Respond | None:
        return Respond(status) if "filter=" in path else None

    return plan


@pytest.mark.parametrize("status", [400, 501])
def test_a_provider_refusing_the_filter_is_read_whole_each_pass(
    server: ServerProcess, status: int
) -> None:
    with FaultProxy(server.url, refuse_filters(status)) as proxy:
        prober = scim_prober(scim_source(proxy.url), proxy.url, max_attempts=1)
        assert prober.changed()
        assert prober.changed(), "no filter: every pass reads the provider and compares"
        assert prober.calls == 0, "and the refused filter is not asked again until a full pass"
        prober.source.close()


def test_a_provider_ignoring_the_filter_is_not_trusted(server: ServerProcess) -> None:
    """A provider answering every user to a filter it ignored would make its first page
    look like the only changes: an answer older than the cursor means "no filter"."""
    unfiltered = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 1,
        "startIndex": 1,
        "itemsPerPage": 1,
        "Resources": [{"id": "u-old", "meta": {"lastModified": "2020-01-01T00:00:00Z"}}],
    }

    def ignore_filters(_number: int, path: str) -> Respond | None:
        if "filter=" not in path:
            return None
        headers = {"Content-Type": "application/scim+json"}
        return Respond(200, headers, json.dumps(unfiltered).encode())

    with FaultProxy(server.url, ignore_filters) as proxy:
        prober = scim_prober(scim_source(proxy.url), proxy.url)
        assert prober.changed()
        assert json.loads(prober.cursor)["filters"] is False
        prober.source.close()


def test_incremental_passes_over_scim(
    server: ServerProcess, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    config = write_config(tmp_path, emulator, scim_config(server.url))

    def incremental() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        run = orgsync(
            config, "sync", "--incremental", "--json", "--log-format", "json", secret=SCIM_TOKEN
        )
        assert run.returncode == 0, run.stdout + run.stderr
        (target,) = json.loads(run.stdout)["targets"]
        logged = [json.loads(x) for x in run.stderr.splitlines() if x.startswith("{")]
        return target, logged

    assert orgsync(config, "sync", secret=SCIM_TOKEN).returncode == 0
    incremental()  # the seeded users are minutes old: read and compared once
    mark = len(emulator.requests)
    target, logged = incremental()
    assert target["run"]["pass"] == "incremental"
    assert [e["calls"] for e in logged if e["event"] == "source.probed"] == [4]
    assert not any(e["event"] == "source.read" for e in logged)
    assert emulator.requests[mark:] == []

    people = {p["email"]: p for p in holdings_people(server)}
    leaver = next(e for e in sorted(holdings(emulator)) if e in people)
    assert httpx.delete(f"{server.url}/Users/{people[leaver]['id']}", headers=AUTH).is_success
    target, _ = incremental()
    # Invited by the first sync, not joined yet: their invitation is revoked.
    assert [(op["op"], op["email"]) for op in target["operations"]] == [("revoke_invite", leaver)]
    assert leaver not in holdings(emulator)


def holdings_people(server: ServerProcess) -> list[dict[str, Any]]:
    body = httpx.get(f"{server.url}/Users", params={"count": 100}, headers=AUTH).json()
    return [
        {"id": r["id"], "email": r["emails"][0]["value"].lower()}
        for r in body["Resources"]
        if r.get("emails")
    ]
