"""A webhook naming one person costs a handful of requests, whatever the organization's
size (issue 13): the daemon's targeted run reads the named person through the users
list's `emails` filter, never the whole organization or its groups."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory
from tests.daemon.harness import Daemon, DaemonRig, wait_for

PEOPLE = 350
"""Four pages of the users list: a full read of the members alone is four requests."""


def test_a_webhook_naming_one_person_reads_only_them(tmp_path: Path, started: list[Daemon]) -> None:
    document = directory(PEOPLE)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        for i in range(PEOPLE):
            emulator.state.add_user(f"person{i}@example.com", "owner" if i == 0 else "reader")
        emulator.state.add_group("team-unrelated")  # a group a full read would list
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(document)
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(rig.finished_runs, timeout=60, what="the startup run")
        full = Counter(r.path for r in emulator.requests if r.method == "GET")
        assert full["/v1/organization/users"] == 4, full  # what a full read costs here

        grown = directory(PEOPLE + 1)
        rig.write(grown)
        mark = len(emulator.requests)
        response = daemon.post_generic({"id": "evt-new", "emails": [f"person{PEOPLE}@example.com"]})
        assert response.status_code == 202, response.text
        wait_for(lambda: len(rig.finished_runs()) == 2, timeout=30, what="the targeted run")
        targeted = rig.finished_runs()[-1]
        assert targeted["triggered_by"] == "webhook:generic"
        assert json.loads(targeted["summary"]) == {"invite": 1}

        seen = emulator.requests[mark:]
        reads = Counter(r.path for r in seen if r.method == "GET")
        assert reads["/v1/organization/users"] == 1, reads
        assert not any("/groups" in path for path in reads), reads
        assert sum(reads.values()) <= 4, reads  # users, invites, roles, admin keys
        assert [(r.method, r.path) for r in seen if r.method != "GET"] == [
            ("POST", "/v1/organization/invites")
        ]
        assert rig.pending_invites() == {f"person{PEOPLE}@example.com": 1}
        assert daemon.terminate() == 0
