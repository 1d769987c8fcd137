"""Webhooks through the state database's queue (issue 15): the daemon writes what a
delivery's parser produced, claims it, runs it, and marks it done; nothing of a body or a
header (secrets included) is ever stored."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import OKTA_AUTH, SECRET, Daemon, DaemonRig, wait_for
from tests.daemon.test_daemon_process import with_people
from tests.leaks import traces

BODY_MARKER = "raw-body-marker-5e1f0a77c2d94b38"
HEADER_SECRET = "header-secret-9b3c1d7e55a04f2a"


def everything_stored(path: Path) -> str:
    """Every value of every table of a SQLite state database, as text."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            repr(row) for table in tables for row in db.execute(f"SELECT * FROM {table}")
        )


def test_a_webhook_goes_through_the_queue_and_only_its_ids_are_stored(
    tmp_path: Path, started: list[Daemon]
) -> None:
    document = directory(3, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(document)
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(rig.finished_runs, timeout=30, what="the startup run")

        rig.write(with_people(document, 3, 4))
        # Whatever a sender puts beside the ids (a body field, its headers, the
        # signature, Okta's Authorization header) must not reach the database.
        generic = daemon.post_generic(
            {"id": BODY_MARKER, "emails": ["person3@example.com"], "note": BODY_MARKER}
        )
        assert generic.status_code == 202, generic.text
        okta = httpx.post(
            daemon.url("/webhooks/okta"),
            headers={"Authorization": OKTA_AUTH, "X-Extra": HEADER_SECRET},
            json={
                "data": {
                    "events": [
                        {
                            "uuid": BODY_MARKER,
                            "debugContext": {"debugData": {"secret": BODY_MARKER}},
                            "target": [
                                {
                                    "type": "User",
                                    "id": "p4",
                                    "alternateId": "person4@example.com",
                                    "displayName": BODY_MARKER,
                                }
                            ],
                        }
                    ]
                }
            },
            timeout=10,
        )
        assert okta.status_code == 204, okta.text
        wanted = wanted_roles(with_people(document, 3, 4))
        wait_for(lambda: rig.holdings() == wanted, timeout=30, what="both people invited")
        wait_for(
            lambda: (
                (rows := rig.query("SELECT * FROM webhook_queue")) and all(r["done"] for r in rows)
            ),
            timeout=15,
            what="the queue rows done",
        )
        rows = rig.query("SELECT * FROM webhook_queue ORDER BY received_at")
        assert {(r["kind"], r["person"]) for r in rows} == {
            ("email", "person3@example.com"),
            ("email", "person4@example.com"),
            ("source_id", "p4"),
        }
        assert {r["target"] for r in rows} == {"openai-test"}
        assert {r["triggered_by"] for r in rows} == {"webhook:generic", "webhook:okta"}
        claimers = {r["claimed_by"] for r in rows}
        assert len(claimers) == 1 and None not in claimers
        runs = [r for r in rig.finished_runs() if r["triggered_by"].startswith("webhook:")]
        assert runs and all(r["status"] == "ok" for r in runs)
        assert json.loads(runs[-1]["summary"]).get("invite")

        stored = everything_stored(rig.state_db)
        for secret in (BODY_MARKER, HEADER_SECRET, OKTA_AUTH, SECRET):
            assert traces(secret, stored) == [], secret
        assert daemon.terminate() == 0
