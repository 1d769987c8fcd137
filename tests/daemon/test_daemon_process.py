"""`orgsync daemon` as a real process against the OpenAI emulator, over loopback.

Each test starts the daemon as an administrator would (`python -m orgsync --config X
daemon`), drives it only through its HTTP endpoints, signals and configuration, and
judges it by the organization (the emulator), the state database and the endpoints.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from orgsync.metrics import SPEC_METRICS
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import OKTA_AUTH, Daemon, DaemonRig, wait_for


def with_people(document: dict[str, Any], *indexes: int) -> dict[str, Any]:
    """`document` plus people p<i> (in openai-users), as the IdP would add them."""
    extra: dict[str, Any] = json.loads(json.dumps(document))
    users = next(g for g in extra["groups"] if g["name"] == "openai-users")
    for i in indexes:
        extra["people"].append(
            {"id": f"p{i}", "email": f"person{i}@example.com", "name": f"P{i}", "active": True}
        )
        users["members"].append(f"p{i}")
    return extra


def metric_families(daemon: Daemon) -> dict[str, Any]:
    response = daemon.get("/metrics")
    assert response.status_code == 200
    found: dict[str, Any] = {f.name: f for f in text_string_to_metric_families(response.text)}
    return found


def sample(families: dict[str, Any], family: str, **labels: str) -> float:
    values = [
        float(s.value)
        for s in families[family].samples
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith("_created")
    ]
    return sum(values)


class NotifySocket:
    """A stand-in for systemd: collects what the daemon sends to $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def saw(self, line: str) -> bool:
        return any(line in m.split("\n") for m in self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


def test_webhooks_drive_targeted_runs_and_hostile_input_changes_nothing(
    tmp_path: Path, started: list[Daemon]
) -> None:
    document = directory(5, owners=1)
    notify = NotifySocket(tmp_path / "notify.sock")
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(document)
        daemon = rig.start(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000")
        started.append(daemon)
        daemon.wait_started()

        # Start: a full reconcile, READY for systemd, heartbeats while healthy.
        wait_for(rig.finished_runs, timeout=30, what="the startup run")
        assert [r["triggered_by"] for r in rig.runs()] == ["startup"]
        assert rig.holdings() == wanted_roles(document)
        wait_for(lambda: notify.saw("READY=1"), timeout=5, what="READY=1")
        wait_for(lambda: notify.saw("WATCHDOG=1"), timeout=5, what="WATCHDOG=1")
        assert daemon.get("/readyz").status_code == 200

        # A signed webhook naming one new person: that person, and only them, soon.
        rig.write(with_people(document, 5, 6))
        sent = time.monotonic()
        response = daemon.post_generic({"id": "evt-1", "emails": ["person5@example.com"]})
        answered = time.monotonic() - sent
        assert response.status_code == 202, response.text
        assert response.json()["scope"] == "targeted"
        wait_for(
            lambda: "person5@example.com" in rig.holdings(), timeout=15, what="person5 invited"
        )
        latency = time.monotonic() - sent
        print(
            f"\nwebhook answered in {answered * 1000:.0f} ms; person invited {latency:.2f} s "
            "after the webhook was sent (debounce 0.3 s)"
        )
        assert latency < 10
        wait_for(lambda: len(rig.finished_runs()) == 2, timeout=15, what="the targeted run")
        targeted = rig.finished_runs()[-1]
        assert (targeted["triggered_by"], targeted["status"]) == ("webhook:generic", "ok")
        assert json.loads(targeted["summary"]) == {"invite": 1}
        assert "person6@example.com" not in rig.holdings()  # not named: waits for a full pass

        # A burst of 100 webhooks becomes one run (counted by `orgsync runs --json`).
        before = json.loads(rig.orgsync("runs", "--json", "--limit", "100").stdout)
        names = [f"person{i % 7}@example.com" for i in range(100)]
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda i: (
                        daemon.post_generic(
                            {"id": f"burst-{i}", "emails": [names[i]]}, client=client
                        ).status_code
                    ),
                    range(100),
                )
            )
        assert statuses == [202] * 100
        wait_for(lambda: len(rig.finished_runs()) == 3, timeout=20, what="the burst's run")
        time.sleep(1.5)  # anything the burst might still set off would have started by now
        after = json.loads(rig.orgsync("runs", "--json", "--limit", "100").stdout)
        assert len(after) == len(before) + 1, [r["trigger"] for r in after]
        assert after[0]["trigger"] == "webhook:generic"
        assert after[0]["summary"] == {"invite": 1}  # person6, named in the burst
        assert rig.holdings() == wanted_roles(with_people(document, 5, 6))

        # Hostile input: refused with the right status, nothing run, the daemon serving.
        writes_before = len(emulator.writes())
        runs_before = len(rig.runs())
        now = int(time.time())
        hostile = [
            ("too_large", 413, daemon.post_generic(body=b'{"pad":"' + b"x" * 1_048_600 + b'"}')),
            ("bad_signature", 401, daemon.post_generic({"id": "h1"}, secret="guessed")),
            ("bad_signature", 401, httpx.post(daemon.url("/webhooks/generic"), json={})),
            ("stale", 401, daemon.post_generic({"id": "h2"}, timestamp=now - 301)),
            ("replay", 409, daemon.post_generic({"id": "evt-1", "emails": ["x@example.com"]})),
            ("malformed", 400, daemon.post_generic(body=b'{"emails": ["a@b.c"')),
            ("unauthorized", 401, httpx.post(daemon.url("/webhooks/okta"), json={"data": {}})),
            (
                "bad_client_state",
                401,
                httpx.post(
                    daemon.url("/webhooks/entra"),
                    json={"value": [{"clientState": "guess", "resource": "Users/1"}]},
                ),
            ),
        ]
        for result, status, answer in hostile:
            assert answer.status_code == status, (result, answer.text)
            assert answer.json()["error"] == result
            assert daemon.get("/healthz").status_code == 200
        time.sleep(0.8)  # longer than the debounce: a wrongly accepted event would run now
        assert len(rig.runs()) == runs_before
        assert len(emulator.writes()) == writes_before
        refused = [e for e in daemon.events() if e.get("event") == "webhook.refused"]
        assert sorted(e["result"] for e in refused) == sorted(r for r, _, _ in hostile)

        # Okta's one-time verification, then an event naming a user by login.
        challenge = httpx.get(
            daemon.url("/webhooks/okta"),
            headers={"Authorization": OKTA_AUTH, "X-Okta-Verification-Challenge": "c-42"},
        )
        assert challenge.json() == {"verification": "c-42"}

        # Metrics: parseable, every contract name, and the counts of what happened above.
        families = metric_families(daemon)
        missing = [n for n in SPEC_METRICS if n.removesuffix("_total") not in families]
        assert missing == []
        assert sample(families, "orgsync_runs", target="openai-test", result="ok") == 3
        assert sample(families, "orgsync_webhooks", kind="generic", result="accepted") == 101
        assert sample(families, "orgsync_webhooks", kind="generic", result="bad_signature") == 2
        for result in ("too_large", "stale", "replay", "malformed"):
            assert sample(families, "orgsync_webhooks", kind="generic", result=result) == 1
        assert sample(families, "orgsync_operations", op="invite", result="done") == 7
        assert sample(families, "orgsync_source_people") == 7
        assert sample(families, "orgsync_http_requests", system="openai-test", status="200") > 0
        assert sample(families, "orgsync_quarantined", target="openai-test") == 0

        # SIGTERM: STOPPING, then exit 0.
        assert daemon.terminate() == 0
        wait_for(lambda: notify.saw("STOPPING=1"), timeout=5, what="STOPPING=1")
    notify.close()


def test_sigterm_during_a_run_records_it_and_the_next_start_converges(
    tmp_path: Path, started: list[Daemon]
) -> None:
    document = directory(40, owners=2)
    with OpenAIEmulator(api_key=API_KEY, faults=Faults(latency=0.25)) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(document)
        daemon = rig.start("first")
        started.append(daemon)
        daemon.wait_started()

        def applying() -> bool:
            runs = rig.runs()
            if not runs or runs[-1]["status"] != "running":
                return False
            return any(op["status"] == "done" for op in rig.operations(runs[-1]["run_id"]))

        wait_for(applying, timeout=60, what="the first operation applied")
        signalled = time.monotonic()
        assert daemon.terminate(timeout=30) == 0
        print(f"\nstopped {time.monotonic() - signalled:.2f} s after SIGTERM")

        (run,) = rig.runs()
        assert run["status"] == "interrupted"
        operations = rig.operations(run["run_id"])
        statuses = {op["status"] for op in operations}
        assert statuses <= {"done", "skipped"}, statuses  # nothing left in flight or planned
        done = {json.loads(op["payload"])["email"] for op in operations if op["status"] == "done"}
        skipped = {
            json.loads(op["payload"])["email"] for op in operations if op["status"] == "skipped"
        }
        assert done and skipped
        # The journal and the organization agree: what is recorded done happened, and
        # what was skipped did not.
        assert set(rig.pending_invites()) == done
        assert skipped.isdisjoint(rig.holdings())

        emulator.faults = Faults()
        again = rig.start("second")
        started.append(again)
        again.wait_started()
        wait_for(lambda: len(rig.finished_runs()) == 2, timeout=60, what="the second start's run")
        assert rig.finished_runs()[-1]["status"] == "ok"
        assert rig.holdings() == wanted_roles(document)
        assert max(rig.pending_invites().values()) == 1
        assert again.terminate() == 0


def _intervals(rig: DaemonRig) -> list[tuple[int, datetime, datetime]]:
    """(pid, first call started, last call finished) of every run that wrote something."""
    found = []
    for run in rig.runs():
        operations = [op for op in rig.operations(run["run_id"]) if op["started_at"]]
        if operations:
            found.append(
                (
                    int(run["pid"]),
                    min(datetime.fromisoformat(op["started_at"]) for op in operations),
                    max(datetime.fromisoformat(op["finished_at"]) for op in operations),
                )
            )
    return found


def test_two_daemons_on_one_state_database_never_write_at_the_same_time(
    tmp_path: Path, started: list[Daemon]
) -> None:
    document = directory(12, owners=1)
    with OpenAIEmulator(api_key=API_KEY, faults=Faults(latency=0.1)) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(document)
        first, second = rig.start("a"), rig.start("b")
        started.extend([first, second])
        first.wait_started()
        second.wait_started()
        # One start-up run at least: a daemon whose start-up reconcile another did well
        # moments ago drops its own (`run.done_elsewhere`), as replicas do.
        wait_for(lambda: len(rig.finished_runs()) >= 1, timeout=60, what="a startup run")

        # Each daemon is asked about different new people at the same moment. Whichever
        # runs them (the webhook queue is in the shared database, so either may claim
        # both), the lease must make writers take turns and nobody may be lost.
        bigger = with_people(document, *range(12, 36))
        rig.write(bigger)
        asks = [
            (first, [f"person{i}@example.com" for i in range(12, 24)]),
            (second, [f"person{i}@example.com" for i in range(24, 36)]),
        ]
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda a: a[0].post_generic({"emails": a[1]}).status_code, asks)
            )
        assert answers == [202, 202]
        wait_for(lambda: rig.holdings() == wanted_roles(bigger), timeout=60, what="convergence")
        wait_for(
            lambda: all(r["status"] != "running" for r in rig.runs()),
            timeout=30,
            what="every run finished",
        )
        intervals = _intervals(rig)
        writers = {pid for pid, _, _ in intervals}
        assert writers and writers <= {first.process.pid, second.process.pid}, intervals
        for pid, start, end in intervals:
            for other_pid, other_start, other_end in intervals:
                if pid != other_pid:
                    assert end <= other_start or other_end <= start, intervals
        assert all(r["status"] == "ok" for r in rig.runs()), [dict(r) for r in rig.runs()]
        waited = [
            e
            for d in (first, second)
            for e in d.events()
            if e.get("event") == "run.waiting_for_lease"
        ]
        print(f"\n{len(waited)} lease waits; {len(intervals)} writing runs, none overlapping")
        assert first.terminate() == 0
        assert second.terminate() == 0


def test_a_target_failing_every_run_is_quarantined_until_a_clean_run(
    tmp_path: Path, started: list[Daemon]
) -> None:
    document = directory(3, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=emulator,
            interval="2s",
            quarantine='quarantine_after = 2\nquarantine_max_interval = "8s"',
        )
        rig.write(document)
        emulator.api_key = "sk-admin-rotated-elsewhere-0000000000000000000"  # every call: 401
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()

        wait_for(lambda: len(rig.finished_runs()) >= 2, timeout=30, what="two failed runs")
        status = json.loads(rig.orgsync("status", "--json").stdout)
        assert status[0]["quarantine"]["quarantined"] is True
        assert "Incorrect API key" in status[0]["quarantine"]["last_error"]
        assert "QUARANTINED" in rig.orgsync("status").stdout
        families = metric_families(daemon)
        assert sample(families, "orgsync_quarantined", target="openai-test") == 1
        assert daemon.get("/readyz").status_code == 503
        assert daemon.get("/healthz").status_code == 200

        wait_for(lambda: len(rig.finished_runs()) >= 3, timeout=30, what="a third attempt")
        emulator.api_key = API_KEY  # the operator fixes the key
        wait_for(
            lambda: rig.finished_runs()[-1]["status"] == "ok",
            timeout=40,
            what="a clean run",
        )
        runs = rig.finished_runs()
        statuses = [r["status"] for r in runs]
        assert statuses[-1] == "ok"
        assert set(statuses[:-1]) == {"failed"}
        assert len(statuses) >= 4
        starts = [datetime.fromisoformat(r["started_at"]) for r in runs]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        # Every 2 s (the interval) before the quarantine; then 4 s after the second
        # failure, 8 s after the third, and 8 s (the ceiling) from then on. Each wait
        # counts from the end of a failed run; the scheduler's tick may add up to 2 s.
        wanted = [2.0] + [min(2.0 * 2 ** (i + 1), 8.0) for i in range(len(gaps) - 1)]
        for gap, least in zip(gaps, wanted, strict=True):
            assert least - 0.5 <= gap <= least + 4.5, (gaps, wanted)
        assert rig.holdings() == wanted_roles(document)
        wait_for(
            lambda: (
                sample(metric_families(daemon), "orgsync_quarantined", target="openai-test") == 0
            ),
            timeout=5,
            what="the quarantine gauge back at 0",
        )
        standing = json.loads(rig.orgsync("status", "--json").stdout)[0]["quarantine"]
        assert (standing["quarantined"], standing["consecutive_failures"]) == (False, 0)
        wait_for(lambda: daemon.get("/readyz").status_code == 200, timeout=5, what="ready")
        assert daemon.terminate() == 0
