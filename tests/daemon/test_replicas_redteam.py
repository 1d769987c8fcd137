"""Red team of incremental passes decided by one process while another writes the same
target, on one PostgreSQL state database (replicas, or a careless operator's
`orgsync sync --incremental` from cron on a second host while the daemons run).

An incremental pass decides what it plans (`Passes.decide`: baseline, source read) before
it takes the target's lease; the other writer may run a pass in between. How it could
hurt an administrator: the other writer's full pass does not end clean (the target down
halfway), which must make the next pass full; the late incremental pass, decided from the
baseline as it was, ends clean and records its baseline as trusted again, so every later
pass is incremental and what only a full pass corrects (a role raised to owner by hand on
the organization) stays until `full_interval` (a day by default).

Real file source, real PostgreSQL, the OpenAI emulator over loopback; engines in-process
(two engines are two replicas: each has its own instance, lease keeper and connections).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orgsync.config import Config, parse_config
from orgsync.core.model import SourceSnapshot
from orgsync.core.ports import Source
from orgsync.engine import Engine
from orgsync.factories import build_source
from orgsync.interrupt import ReadInterrupt
from orgsync.results import RunOptions
from orgsync.store import INVALIDATED, StateStore
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, directory, holdings, wanted_roles
from tests.daemon.test_daemon_process import with_people
from tests.engine.differential import one, openai_target


def config(folder: Path, emulator: OpenAIEmulator, state: str, max_removals: int = 10) -> Config:
    document: dict[str, Any] = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [{**openai_target(emulator), "max_retry_delay": "100ms"}],
        "safety": {"max_removals": max_removals, "max_removal_ratio": 1.0},
        "state": {"url": state},
    }
    return parse_config(document, origin="test", base_dir=folder)


class Paused:
    """The real file source, whose read returns only once `go` is set: the moment between
    a pass's decision and its lease, held open so the other replica can run in it."""

    def __init__(self, source: Source, read: threading.Event, go: threading.Event) -> None:
        self._source = source
        self._read = read
        self._go = go

    def read(self) -> SourceSnapshot:
        snapshot = self._source.read()
        self._read.set()
        assert self._go.wait(20), "the test never let the paused read return"
        return snapshot


def test_a_late_incremental_pass_does_not_trust_again_a_baseline_another_replica_invalidated(
    tmp_path: Path, postgres_url: str
) -> None:
    faults = Faults(kinds=("500",), phases=("before",))
    with OpenAIEmulator(api_key=API_KEY, faults=faults) as emulator:
        # person2 is a member already (adopted by the first pass as a reader).
        uid = emulator.state.add_user("person2@example.com", "reader")
        (tmp_path / "directory.json").write_text(json.dumps(directory(4)), encoding="utf-8")
        environ = {KEY_ENV: API_KEY}
        first = Engine(config(tmp_path, emulator, postgres_url), environ=environ)
        try:
            assert one(first.run(RunOptions(dry_run=False))).status == "ok"
        finally:
            first.close()
        assert holdings(emulator)["person2@example.com"] == "reader"

        read, go = threading.Event(), threading.Event()

        def paused(
            config: Config, environ: Mapping[str, str], *, interrupt: ReadInterrupt
        ) -> Source:
            return Paused(build_source(config, environ, interrupt=interrupt), read, go)

        late = Engine(
            config(tmp_path, emulator, postgres_url), environ=environ, source_factory=paused
        )
        other = Engine(config(tmp_path, emulator, postgres_url), environ=environ)
        outcome: list[Any] = []
        try:
            # The late replica decides its incremental pass (the source read happens
            # inside the decision) ...
            runner = threading.Thread(
                target=lambda: outcome.append(
                    one(late.run(RunOptions(dry_run=False, incremental=True)))
                )
            )
            runner.start()
            assert read.wait(20)
            # ... meanwhile somebody raises person2 to owner by hand, and the other
            # replica's full pass meets the target down: not clean, the next must be full.
            emulator.state.api_update_user(uid, {"role": "owner"})
            faults.error_rate = 1.0
            failed = one(other.run(RunOptions(dry_run=False)))
            faults.error_rate = 0.0
            assert failed.status != "ok"
            with StateStore.open(postgres_url) as store:
                stored = store.baseline("t")
                assert stored is not None and stored.config == INVALIDATED
            go.set()
            runner.join(30)
            (late_pass,) = outcome
            assert late_pass.status == "ok", late_pass.error
            with StateStore.open(postgres_url) as store:
                stored = store.baseline("t")
                assert stored is not None
            # Either the late pass saw the invalidation (it decides again under the
            # lease: a full pass), or it left the baseline invalidated.
            assert late_pass.pass_kind == "full" or stored.config == INVALIDATED, (
                "the late incremental pass trusted again a baseline the failed full "
                "pass had invalidated"
            )
            following = one(other.run(RunOptions(dry_run=False, incremental=True)))
            assert following.status == "ok", following.error
            assert "full" in (late_pass.pass_kind, following.pass_kind)
            assert holdings(emulator)["person2@example.com"] == "reader"
        finally:
            go.set()
            late.close()
            other.close()


def test_replicas_configured_with_different_limits_never_trust_each_others_baseline(
    tmp_path: Path, postgres_url: str
) -> None:
    """A careless operator deploys one replica with `max_removals = 1` and the other with
    100. Neither may run an incremental pass from the baseline the other recorded (its
    digests were reconciled under other guards): every pass of either is full, and says
    why; the tight replica holds a mass removal its own gate holds."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        document = directory(6)
        (tmp_path / "directory.json").write_text(json.dumps(document), encoding="utf-8")
        environ = {KEY_ENV: API_KEY}
        tight = Engine(config(tmp_path, emulator, postgres_url, 1), environ=environ)
        loose = Engine(config(tmp_path, emulator, postgres_url, 100), environ=environ)
        try:
            assert one(tight.run(RunOptions(dry_run=False))).status == "ok"
            for engine in (loose, tight, loose):
                result = one(engine.run(RunOptions(dry_run=False, incremental=True)))
                assert result.status == "ok", result.error
                assert result.pass_kind == "full", result.pass_reason
                assert "configuration changed" in str(result.pass_reason)
            # Three leavers: the tight replica's pass (full, from the loose one's
            # baseline) holds them; it must not have planned them as an incremental
            # pass under the loose replica's trust.
            leavers = {"person3@example.com", "person4@example.com", "person5@example.com"}
            smaller = directory(3)
            (tmp_path / "directory.json").write_text(json.dumps(smaller), encoding="utf-8")
            held = one(tight.run(RunOptions(dry_run=False, incremental=True)))
            assert held.pass_kind == "full", held.pass_reason
            assert held.status != "ok" and held.plan is not None and len(held.plan.held) == 3
            assert leavers <= set(holdings(emulator))
        finally:
            tight.close()
            loose.close()


@dataclass
class Race:
    stale: Any  # the late run's TargetResult
    invited: dict[str, str]  # the invitations as the other replica's pass left them
    other: Engine


@contextmanager
def late_run_after_another_replica(
    folder: Path, emulator: OpenAIEmulator, postgres_url: str, options: RunOptions
) -> Iterator[Race]:
    """A run that read the source (carol, p4, joined), paused before its lease, while
    another replica's full pass reads a newer source (carol left, dave, p5, joined) and
    applies it; then the late run goes on. Yields its result, with the other engine."""
    base = directory(4)
    (folder / "directory.json").write_text(json.dumps(base), encoding="utf-8")
    environ = {KEY_ENV: API_KEY}
    first = Engine(config(folder, emulator, postgres_url), environ=environ)
    try:
        assert one(first.run(RunOptions(dry_run=False))).status == "ok"
    finally:
        first.close()
    read, go = threading.Event(), threading.Event()

    def paused(config: Config, environ: Mapping[str, str], *, interrupt: ReadInterrupt) -> Source:
        return Paused(build_source(config, environ, interrupt=interrupt), read, go)

    late = Engine(config(folder, emulator, postgres_url), environ=environ, source_factory=paused)
    other = Engine(config(folder, emulator, postgres_url), environ=environ)
    outcome: list[Any] = []
    newer = with_people(base, 5)
    try:
        (folder / "directory.json").write_text(json.dumps(with_people(base, 4)), encoding="utf-8")
        runner = threading.Thread(target=lambda: outcome.append(one(late.run(options))))
        runner.start()
        assert read.wait(20)
        (folder / "directory.json").write_text(json.dumps(newer), encoding="utf-8")
        assert one(other.run(RunOptions(dry_run=False))).status == "ok"
        invited = {i["email"]: i["id"] for i in emulator.state.invites()}
        go.set()
        runner.join(30)
        (stale,) = outcome
        assert stale.status == "ok", stale.error
        ops = list(stale.plan.operations) if stale.plan is not None else []
        assert ops == [], ops
        assert holdings(emulator) == wanted_roles(newer)
        assert {i["email"]: i["id"] for i in emulator.state.invites()} == invited, (
            "an invitation was revoked or sent again"
        )
        yield Race(stale, invited, other)
    finally:
        go.set()
        late.close()
        other.close()


def test_a_pass_planned_from_a_snapshot_older_than_another_replicas_writes_reads_again(
    tmp_path: Path, postgres_url: str
) -> None:
    """Bug found: an operator's `orgsync sync` reads the source (carol, p4, has joined);
    before it takes the lease a replica's pass reads a newer source (carol left again,
    dave, p5, joined) and invites dave. The late sync planned from its older snapshot:
    it revoked dave's invitation and invited carol; the next pass invited dave again (a
    second e-mail) and revoked carol's. Now a run that takes a lease another writer held
    since it read the source reads the source again, under the lease."""
    with (
        OpenAIEmulator(api_key=API_KEY) as emulator,
        late_run_after_another_replica(
            tmp_path, emulator, postgres_url, RunOptions(dry_run=False)
        ) as race,
    ):
        assert "person5@example.com" in race.invited
        following = one(race.other.run(RunOptions(dry_run=False, incremental=True)))
        assert following.plan is not None and list(following.plan.operations) == []


def test_an_incremental_pass_decided_before_another_replicas_pass_decides_again(
    tmp_path: Path, postgres_url: str
) -> None:
    """Bug found: an operator's `sync --incremental` decides (carol, p4, joined: she is
    its one subject); before it takes the lease a replica's full pass reads a newer
    source (carol left again, dave joined). The late pass invited carol from its older
    snapshot (an e-mail to someone who left; revoked only by the pass after). Now it
    decides again under the lease, and plans nothing."""
    with (
        OpenAIEmulator(api_key=API_KEY) as emulator,
        late_run_after_another_replica(
            tmp_path, emulator, postgres_url, RunOptions(dry_run=False, incremental=True)
        ),
    ):
        pass
