"""The daemon tells `[[notify]]` entries when a target fails, is quarantined and recovers,
while a second entry whose receiver hangs delays neither the runs nor the others."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from pathlib import Path

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory
from tests.daemon.harness import Daemon, DaemonRig, wait_for
from tests.notify.receivers import HttpReceiver

SECRET = "daemon-notify-secret-0123456789"


def add_webhook(rig: DaemonRig, name: str, url: str, **extra: str) -> None:
    lines = [
        "",
        "[[notify]]",
        f'name = "{name}"',
        'type = "webhook"',
        f'url = "{url}"',
        'secret_env = "DAEMON_NOTIFY_SECRET"',
        "allow_plaintext = true",
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    with rig.config_path.open("a", encoding="utf-8") as config:
        config.write("\n".join(lines) + "\n")


def test_failed_quarantined_recovered_each_once_and_a_hanging_receiver_delays_nothing(
    tmp_path: Path, started: list[Daemon]
) -> None:
    with (
        OpenAIEmulator(api_key=API_KEY) as emulator,
        HttpReceiver(secret=SECRET.encode()) as receiver,
        HttpReceiver(secret=SECRET.encode(), default="hang") as hanging,
    ):
        rig = DaemonRig(
            folder=tmp_path,
            emulator=emulator,
            interval="2s",
            quarantine='quarantine_after = 2\nquarantine_max_interval = "4s"',
            env={"DAEMON_NOTIFY_SECRET": SECRET},
        )
        rig.write(directory(3))
        add_webhook(rig, "ops", receiver.url)
        add_webhook(rig, "stuck", hanging.url, timeout='"30s"')
        emulator.api_key = "sk-admin-rotated-elsewhere-0000000000000000000"  # every call: 401
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()

        wait_for(lambda: len(rig.finished_runs()) >= 3, timeout=40, what="three failed runs")
        receiver.wait_for(2, timeout=10)
        emulator.api_key = API_KEY  # the operator fixes the key
        wait_for(lambda: rig.finished_runs()[-1]["status"] == "ok", timeout=40, what="a clean run")
        receiver.wait_for(3, timeout=10)
        time.sleep(0.5)
        stopping = time.monotonic()
        assert daemon.terminate() == 0
        stopped_in = time.monotonic() - stopping

    bodies = receiver.bodies()
    assert all(r.signature_ok for r in receiver.received)
    assert [b["kind"] for b in bodies] == ["failed", "quarantined", "recovered"]
    failed, quarantined, recovered = bodies
    assert failed["trigger"] == "startup" and "Incorrect API key" in failed["error"]
    assert quarantined["consecutive_failures"] == 2 and quarantined["next_run_at"]
    assert "Incorrect API key" in quarantined["error"]
    assert recovered["text"].startswith("openai-test: recovered")
    assert "after " in recovered["text"] and "failed runs" in recovered["text"]
    # The hanging entry had its own thread: the runs kept their pace (2 s, then the
    # quarantine's 4 s) and the stop waited for it at most the documented drain.
    runs = rig.finished_runs()
    assert len(runs) >= 4
    starts = [datetime.fromisoformat(r["started_at"]) for r in runs]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert max(gaps) <= 4 + 4.5, gaps  # the longest wait is the quarantine's 4 s ceiling
    print(f"\n{len(runs)} runs; stopped in {stopped_in:.1f} s with a receiver hanging")
    assert stopped_in < 10 + 10
    events = [e["event"] for e in daemon.events()]
    assert "notify.abandoned" in events
    assert events.count("notify.suppressed") >= 1  # the same failure, not sent again


def test_the_daemon_refuses_to_start_without_a_notify_secret(
    tmp_path: Path, started: list[Daemon]
) -> None:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(directory(1))
        add_webhook(rig, "ops", "http://127.0.0.1:9/hook")
        daemon = rig.start()
        started.append(daemon)
        assert daemon.process.wait(60) == 1
        assert "notify.ops.secret_env: environment variable DAEMON_NOTIFY_SECRET" in daemon.log()
        assert rig.runs() == []
