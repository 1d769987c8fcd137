"""Three `orgsync daemon` replicas over 30 targets on one PostgreSQL database (issue 15).

The replicas share the targets (each does about a third), replicas are killed with
SIGKILL at random during applies (20 times, each restarted at once) while the directory
keeps changing, and then every organization converges with no invitation and no group
made twice. A bigger version with figures is bench/ (ha-queue's bench/replicas.py).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgsync.store import StateStore
from orgsync.testing.faults import Faults
from orgsync.testing.fleet import ManyOrgs, replicas_config
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, directory, wanted_roles
from tests.daemon.harness import SECRET, SECRET_ENV, Daemon, start_daemon, wait_for
from tests.postgres import PASSWORD, PASSWORD_ENV, PostgresServer

TARGETS = 30
REPLICAS = 3
KILLS = 20


def write_config(folder: Path, url: str, orgs: ManyOrgs) -> Path:
    path = folder / "orgsync.toml"
    text = replicas_config(
        [orgs.url(i) for i in range(TARGETS)],
        key_env=KEY_ENV,
        state_url=url,
        password_env=PASSWORD_ENV,
        lease_ttl="6s",
        interval="4s",
        target_keys='timeout = "2s"\nmax_retry_delay = "20s"',
        target_tables='[[targets.groups]]\nsource = "openai-*"\nname = "{source}"\n',
        server_keys=f'webhook_secret_env = "{SECRET_ENV}"',
    )
    path.write_text(text, encoding="utf-8")
    return path


def start(folder: Path, config: Path, name: str) -> Daemon:
    env = {**os.environ, KEY_ENV: API_KEY, SECRET_ENV: SECRET, PASSWORD_ENV: PASSWORD}
    env.pop("PGPASSWORD", None)
    return start_daemon(config, folder / f"{name}.log", env)


def holdings(org: OpenAIEmulator) -> dict[str, str]:
    state = org.state
    held = {str(u["email"]).lower(): str(u["role"]) for u in state.users()}
    held.pop("key-owner@example.com", None)
    for invite in state.invites():
        if invite["status"] == "pending":
            held[str(invite["email"]).lower()] = str(invite["role"])
    return held


def duplicates(org: OpenAIEmulator) -> list[str]:
    invites = Counter(
        str(i["email"]).lower() for i in org.state.invites() if i["status"] == "pending"
    )
    groups = Counter(str(g["name"]) for g in org.state.groups())
    return [f"invite {e}" for e, n in invites.items() if n > 1] + [
        f"group {g}" for g, n in groups.items() if n > 1
    ]


def converged(orgs: ManyOrgs, document: dict[str, Any]) -> bool:
    wanted = wanted_roles(document)
    return all(
        holdings(org) == wanted
        and {str(g["name"]) for g in org.state.groups()} == {"openai-users", "openai-owners"}
        for org in orgs.orgs
    )


@pytest.fixture
def replicas() -> Iterator[list[Daemon]]:
    running: list[Daemon] = []
    yield running
    for daemon in running:
        daemon.kill()


def test_three_replicas_share_thirty_targets_and_survive_kills(
    tmp_path: Path, postgres: PostgresServer, replicas: list[Daemon]
) -> None:
    url = postgres.url_for_new_database("replicas")
    document = directory(4, owners=1)
    (tmp_path / "directory.json").write_text(json.dumps(document), encoding="utf-8")
    rng = random.Random(15)
    with ManyOrgs(TARGETS, api_key=API_KEY, faults=Faults(latency=0.02)) as orgs:
        config = write_config(tmp_path, url, orgs)
        replicas.extend(start(tmp_path, config, f"r{i}") for i in range(REPLICAS))
        for daemon in replicas:
            daemon.wait_started()
        began = time.monotonic()
        wait_for(lambda: converged(orgs, document), timeout=60, what="the first pass")
        print(f"first pass converged after {time.monotonic() - began:.1f} s")

        # Once every replica is registered, the scheduled passes split the targets: each
        # replica reconciles about a third.
        def scheduled() -> list[Any] | None:
            with StateStore.open(url, password=PASSWORD) as store:
                runs = [r for r in store.runs(limit=1000) if r.trigger == "schedule"]
            done = {r.target for r in runs if r.status == "ok"}
            return runs if len(done) == TARGETS else None

        runs = wait_for(scheduled, timeout=60, interval=0.5, what="a scheduled pass")
        print(f"a scheduled pass after {time.monotonic() - began:.1f} s")
        by_instance = Counter(r.instance for r in runs if r.status == "ok")
        assert len(by_instance) == REPLICAS, by_instance
        assert min(by_instance.values()) >= 3, by_instance
        # /readyz names who holds which target; each replica's metrics say what it holds.
        ready = httpx.get(replicas[0].probe_url("/readyz"), timeout=60).json()
        assert set(ready["leases"]) == {f"t{i:02d}" for i in range(TARGETS)}
        assert "instance" in ready

        # Kill replicas at random during applies while the directory keeps growing.
        people = 4
        for kill in range(KILLS):
            if kill % 4 == 0:
                people += 1
                document = directory(people, owners=1)
                (tmp_path / "directory.json").write_text(json.dumps(document), encoding="utf-8")
            time.sleep(rng.uniform(0.3, 1.2))
            victim = rng.randrange(REPLICAS)
            replicas[victim].kill()
            replicas[victim] = start(tmp_path, config, f"r{victim}-{kill}")
        for daemon in replicas:
            daemon.wait_started()

        print(f"kills done after {time.monotonic() - began:.1f} s")
        wait_for(lambda: converged(orgs, document), timeout=60, what="convergence after kills")
        print(f"converged after the kills at {time.monotonic() - began:.1f} s")
        found = {i: duplicates(org) for i, org in enumerate(orgs.orgs) if duplicates(org)}
        assert found == {}
        metrics = httpx.get(replicas[0].probe_url("/metrics"), timeout=60).text
        assert 'orgsync_target_lease_held{target="t00"}' in metrics
