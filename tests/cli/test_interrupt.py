"""SIGTERM during a slow read ends it at once and records the run `interrupted` (issue 9, item 2).

Real processes (`orgsync sync`, `orgsync daemon`) against emulators that take seconds to
answer each request: the signal arrives while a request to the identity provider or to
the organization is in flight. The process ends within a fraction of that delay, the run
is `interrupted` (not `failed`: it says nothing about the systems read, and never counts
towards quarantine), nothing is written, and no request is sent again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.faults import Faults
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory
from tests.daemon.harness import DaemonRig, wait_for
from tests.sources.idp_directory import build, seed_okta

SLOW = 6.0
"""Seconds each emulator request takes: the stop must come long before."""
PROMPT = 3.0
"""Seconds from SIGTERM to the process's end that count as "at once": 0.1-0.3 s, plus
creating the state database when the IdP read was the first thing the sync did; the
margin is for a loaded CI machine."""
OKTA_TOKEN_ENV = "ORGSYNC_TEST_OKTA_TOKEN"
OTHER_KEY_ENV = "ORGSYNC_TEST_OTHER_ADMIN_KEY"


def connected_to(port: int) -> bool:
    """Whether some process has an established TCP connection to 127.0.0.1:`port`."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == wanted and fields[3] == "01":  # remote address, ESTABLISHED
            return True
    return False


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def start_sync(config: Path, **env: str) -> subprocess.Popen[str]:
    return cli.start(
        config,
        "sync",
        env={**os.environ, KEY_ENV: API_KEY, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def terminate_while_reading(sync: subprocess.Popen[str], port: int) -> tuple[float, str, str]:
    """SIGTERM `sync` once it is reading from `port`; seconds until it ended, its output."""
    try:
        wait_for(lambda: connected_to(port), timeout=60, what=f"a request to port {port}")
        signalled = time.monotonic()
        sync.send_signal(signal.SIGTERM)
        out, err = sync.communicate(timeout=60)
        return time.monotonic() - signalled, out, err
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.communicate()


def runs(state_db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM runs ORDER BY started_at"))


def settled(emulator: OpenAIEmulator | OktaEmulator) -> None:
    """Wait until the request in flight at the stop was answered (and so recorded)."""
    wait_for(lambda: emulator.requests, timeout=SLOW + 10, what="the request in flight")
    time.sleep(0.5)


def sent_once(requests: list[object]) -> bool:
    """No request was sent twice (a retry or a next page would repeat a path)."""
    counts = Counter(getattr(r, "path", None) for r in requests)
    return all(n == 1 for n in counts.values())


@pytest.fixture
def slow_emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY, key_owner_email="key-owner@example.com") as running:
        running.start()
        yield running


def test_sigterm_during_a_slow_organization_read_interrupts_the_cli_sync(
    tmp_path: Path, slow_emulator: OpenAIEmulator
) -> None:
    rig = Rig(folder=tmp_path, emulator=slow_emulator)
    rig.write(directory(10))
    # Longer than the emulator's delay: the read would otherwise wait it out.
    rig.config_path.write_text(
        rig.config_path.read_text().replace('timeout = "2s"', 'timeout = "30s"')
    )
    slow_emulator.faults = Faults(latency=SLOW)
    sync = start_sync(rig.config_path)
    took, out, err = terminate_while_reading(sync, port_of(slow_emulator.start()))
    print(f"\nCLI sync ended {took:.2f} s after SIGTERM during a {SLOW} s organization read")
    assert took < PROMPT, err
    assert sync.returncode == 1, out + err
    assert "=> openai-test: error" in out
    assert "stopped" in out
    (run,) = runs(tmp_path / "state.db")
    assert (run["mode"], run["status"], run["origin"]) == ("sync", "interrupted", "cli")
    assert run["finished_at"] is not None
    settled(slow_emulator)
    assert slow_emulator.writes() == []
    assert sent_once(slow_emulator.requests), [r.path for r in slow_emulator.requests]


def test_sigterm_during_a_slow_identity_provider_read_interrupts_the_cli_sync(
    tmp_path: Path,
) -> None:
    with (
        OktaEmulator(faults=Faults(latency=SLOW)) as okta,
        OpenAIEmulator(api_key=API_KEY) as openai,
    ):
        seed_okta(okta, build(6, 2))
        config = tmp_path / "orgsync.toml"
        config.write_text(
            f"""
[source]
type = "okta"
url = "{okta.url}"
token_env = "{OKTA_TOKEN_ENV}"
allow_plaintext = true
timeout = "30s"

[[targets]]
name = "openai-test"
type = "openai"
base_url = "{openai.start()}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "reader"

[[targets]]
name = "openai-other"
type = "openai"
base_url = "{openai.start()}"
api_key_env = "{OTHER_KEY_ENV}"
allow_plaintext = true
default_role = "reader"

[state]
path = "state.db"
""",
            encoding="utf-8",
        )
        # (The second table names the one emulator under a key variable of its own: one
        # organization configured twice is refused.)
        sync = start_sync(config, **{OKTA_TOKEN_ENV: okta.token, OTHER_KEY_ENV: API_KEY})
        took, out, err = terminate_while_reading(sync, port_of(okta.url))
        print(f"\nCLI sync ended {took:.2f} s after SIGTERM during a {SLOW} s IdP read")
        assert took < PROMPT, err
        assert sync.returncode == 1, out + err
        recorded = runs(tmp_path / "state.db")
        assert [(r["target"], r["status"], r["origin"]) for r in recorded] == [
            ("openai-test", "interrupted", "cli"),
            ("openai-other", "interrupted", "cli"),
        ]
        assert all("shutting down" in r["error"] for r in recorded)
        settled(okta)
        assert openai.requests == []  # the organization was never even read
        assert sent_once(okta.requests), [r.path for r in okta.requests]


def test_sigterm_during_a_slow_organization_read_stops_the_daemon_at_once(
    tmp_path: Path,
) -> None:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(directory(10))
        rig.config_path.write_text(
            rig.config_path.read_text().replace('timeout = "5s"', 'timeout = "30s"')
        )
        emulator.faults = Faults(latency=SLOW)
        daemon = rig.start()
        try:
            daemon.wait_started()
            wait_for(
                lambda: (
                    any(r["status"] == "running" for r in rig.runs())
                    and connected_to(port_of(emulator.start()))
                ),
                timeout=60,
                what="the startup run's organization read",
            )
            signalled = time.monotonic()
            assert daemon.terminate(timeout=60) == 0
            took = time.monotonic() - signalled
        finally:
            daemon.kill()
        print(f"\ndaemon stopped {took:.2f} s after SIGTERM during a {SLOW} s organization read")
        assert took < PROMPT + 1, daemon.log()
        (run,) = rig.runs()
        assert (run["status"], run["origin"], run["triggered_by"]) == (
            "interrupted",
            "daemon",
            "startup",
        )
        events = [e["event"] for e in daemon.events()]
        assert "run.interrupted" in events
        assert "http.retry" not in events
        settled(emulator)
        assert emulator.writes() == []
        assert sent_once(emulator.requests), [r.path for r in emulator.requests]
