"""Red team of webhooks across two `orgsync daemon` replicas on one PostgreSQL database.

How it could hurt an administrator: an IdP that retries a delivery through a load
balancer hands the same delivery to both replicas (each remembered the deliveries it saw,
not the other's; now the second refuses it as a replay, and it runs once); the replica that does not hold the target queues it, the holder queues
it too: a newcomer invited twice (two e-mails), or a leaver's removal lost between them.
Real daemon processes, the suite's PostgreSQL, the OpenAI emulator over loopback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.cli.test_only import without
from tests.daemon.harness import Daemon, DaemonRig, wait_for
from tests.daemon.test_daemon_process import with_people
from tests.postgres import PASSWORD, PostgresServer

PEOPLE = 6


def test_one_delivery_sent_to_both_replicas_invites_once_and_removes_the_leaver(
    tmp_path: Path,
    started: list[Daemon],
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        url = postgres.url_for_new_database()
        rig = DaemonRig(folder=tmp_path, emulator=emulator, debounce="100ms")
        rig.on_postgres(url, 'lease_ttl = "3s"')
        document = directory(PEOPLE, owners=1)
        rig.write(document)
        daemons = [rig.start("a"), rig.start("b")]
        started.extend(daemons)
        for daemon in daemons:
            daemon.wait_started()
        wait_for(lambda: rig.holdings() == wanted_roles(document), timeout=30, what="start-up")

        # p6 joins and p5 leaves; the IdP's one delivery reaches both replicas.
        changed = with_people(without(document, "p5"), PEOPLE)
        rig.write(changed)
        delivery = {"id": "once", "emails": ["person5@example.com", f"person{PEOPLE}@example.com"]}
        answers = [daemon.post_generic(delivery) for daemon in daemons]
        # The replica it reaches second finds it recorded by the first (seen_deliveries).
        assert [a.status_code for a in answers] == [202, 409], [a.text for a in answers]

        wait_for(lambda: rig.holdings() == wanted_roles(changed), timeout=30, what="convergence")
        with StateStore.open(url) as store:
            wait_for(lambda: all(r.done for r in store.queued_requests()), timeout=20, what="done")
        # Every invitation ever created (accepted, pending or revoked): one per person.
        created = Counter(str(i["email"]).lower() for i in emulator.state.invites())
        assert max(created.values()) == 1, created
        assert "person5@example.com" not in rig.holdings()
        # A daemon's runs read the source under the lease it already holds: never twice.
        for daemon in daemons:
            assert not [e for e in daemon.events() if e.get("event") == "source.reread"]
        for daemon in daemons:
            assert daemon.terminate() == 0
