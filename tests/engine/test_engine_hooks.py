"""What the daemon relies on in the engine: targeted runs that leave everyone else's
memory alone, a lease kept for as long as a run lasts, and a stop that is recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import Config, parse_config
from orgsync.core.model import normalize_email
from orgsync.engine import Engine
from orgsync.results import RunOptions
from orgsync.store import StateStore
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, directory


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


def config(folder: Path, emulator: OpenAIEmulator, **state: Any) -> Config:
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [
            {
                "name": "t",
                "type": "openai",
                "base_url": emulator.start(),
                "api_key_env": KEY_ENV,
                "allow_plaintext": True,
                "default_role": "reader",
                "scope_groups": ["openai-*"],
                "roles": [{"group": "openai-owners", "role": "owner"}],
            }
        ],
        "safety": {"max_removals": 100, "max_removal_ratio": 1.0, "removal_grace": "1h"},
        "state": {"path": "state.db", **state},
    }
    return parse_config(document, origin="test", base_dir=folder)


def write(folder: Path, document: dict[str, Any]) -> None:
    (folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")


def engine(cfg: Config, **kwargs: Any) -> Engine:
    return Engine(cfg, environ={KEY_ENV: API_KEY}, **kwargs)


def test_a_targeted_run_keeps_everyone_elses_removal_grace(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    cfg = config(tmp_path, emulator)
    write(tmp_path, directory(4))
    first = engine(cfg)
    try:
        assert first.run(RunOptions(dry_run=False))[0].status == "ok"
        write(tmp_path, directory(2))  # person2 and person3 leave the IdP
        assert first.run(RunOptions(dry_run=False))[0].status == "ok"
        missing = set(first.store.memory("t").missing_since)
        assert missing == {
            normalize_email("person2@example.com"),
            normalize_email("person3@example.com"),
        }
        targeted = first.run(
            RunOptions(dry_run=False, only_emails=frozenset({"person2@example.com"}))
        )
        assert targeted[0].status == "ok"
        assert targeted[0].plan is not None
        assert [w.email for w in targeted[0].plan.waiting] == ["person2@example.com"]
        # person3 was not part of the targeted run: their clock must still be running.
        assert set(first.store.memory("t").missing_since) == missing
    finally:
        first.close()


def test_the_lease_is_renewed_while_a_run_outlasts_its_ttl(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    cfg = config(tmp_path, emulator, lease_ttl="1s")
    write(tmp_path, directory(16))
    emulator.faults = Faults(latency=0.25)  # 16 invites, 4 at a time: about 1.5 s and more
    runner, rival = engine(cfg), engine(cfg)
    grabbed: list[datetime] = []
    refused = 0
    result: list[str] = []
    try:
        thread = threading.Thread(
            target=lambda: result.extend(r.status for r in runner.run(RunOptions(dry_run=False)))
        )
        thread.start()
        deadline = time.monotonic() + 60
        while runner.store.lease_holder("t") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # From now until the run ends, a rival asks for the lease ten times a second; an
        # expired lease would be taken over.
        while thread.is_alive() and time.monotonic() < deadline:
            if rival.try_lease("t"):
                grabbed.append(datetime.now(UTC))
                rival.release_lease("t")
            else:
                refused += 1
            time.sleep(0.1)
        thread.join()
        assert result == ["ok"]
        run = runner.store.runs(limit=1, target="t")[0]
        assert run.finished_at is not None
        assert (run.finished_at - run.started_at).total_seconds() > 2  # outlived the TTL
        assert refused > 10
        # Free only once the last call had returned (the run then records itself).
        operations = runner.store.operations(run.run_id)
        last_call = max(op.finished_at for op in operations if op.finished_at is not None)
        assert all(at > last_call for at in grabbed), (grabbed, last_call)
        assert rival.try_lease("t")  # released at the end
    finally:
        runner.close()
        rival.close()


def test_a_writer_whose_lock_file_is_deleted_stops_writing(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """Deleting the lock file under a writer would let another process lock a new one:
    the writer notices at its next renewal, starts no more calls and records nothing
    more (its run is `lease-lost`, not recorded as finished)."""
    cfg = config(tmp_path, emulator, lease_ttl="1s")
    write(tmp_path, directory(30))
    emulator.faults = Faults(latency=0.25)  # 30 invites, 4 at a time: about 2 s
    runner = engine(cfg)
    try:
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.extend(runner.run(RunOptions(dry_run=False)))
        )
        thread.start()
        lock_file = tmp_path / "state.db.t.lock"
        deadline = time.monotonic() + 30
        while runner.store.lease_holder("t") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        lock_file.unlink()
        thread.join(60)
        (result,) = results
        assert result.status == "lease-lost"
        writes = [r for r in emulator.requests if r.method in {"POST", "DELETE"}]
        assert len(writes) < 30, "the writer went on after its lock file was deleted"
        (run,) = runner.store.runs(limit=5, target="t")
        assert run.status == "running"  # nothing more recorded; the next holder closes it
        done = [op for op in runner.store.operations(run.run_id) if op.status.value == "done"]
        assert len(done) <= len(writes)
    finally:
        runner.close()


def test_a_stop_during_apply_is_recorded_as_interrupted(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    cfg = config(tmp_path, emulator)
    write(tmp_path, directory(20))
    emulator.faults = Faults(latency=0.2)
    stop = threading.Event()
    worker = engine(cfg, stop=stop)
    try:
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.extend(worker.run(RunOptions(dry_run=False)))
        )
        thread.start()
        store = StateStore.open(tmp_path / "state.db")
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                runs = store.runs(limit=1, target="t")
                if runs and any(
                    op.status.value == "done" for op in store.operations(runs[0].run_id)
                ):
                    break
                time.sleep(0.02)
            stop.set()
            thread.join(30)
            (result,) = results
            assert result.status == "interrupted"
            statuses = {op.status.value for op in store.operations(result.run_id)}
            assert statuses == {"done", "skipped"}
            assert store.run(result.run_id) is not None
            assert store.run(result.run_id).status == "interrupted"  # type: ignore[union-attr]
        finally:
            store.close()
    finally:
        worker.close()


def test_a_failing_source_counts_as_a_failed_run_in_the_metrics(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    # The "failed runs" alert must see a source that fails before any target is read.
    from orgsync.metrics import Metrics

    cfg = config(tmp_path, emulator)
    (tmp_path / "directory.json").write_text("{not json", encoding="utf-8")
    metrics = Metrics()
    running = engine(cfg, observer=metrics)
    try:
        assert running.run(RunOptions(dry_run=False))[0].status == "failed"
    finally:
        running.close()
    assert metrics.runs.labels(target="t", result="failed")._value.get() == 1


def test_a_restarted_daemon_remembers_the_last_good_run(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    # Otherwise every restart resets "time since the last success" and hides a target
    # that has not synced for days behind a fresh-looking gauge (or shows none at all).
    from orgsync.daemon.service import Service

    cfg = config(tmp_path, emulator)
    write(tmp_path, directory(2))
    first = engine(cfg)
    try:
        assert first.run(RunOptions(dry_run=False))[0].status == "ok"
        finished = first.store.last_run("t")
    finally:
        first.close()
    assert finished is not None and finished.finished_at is not None
    service = Service(cfg, environ={KEY_ENV: API_KEY})
    try:
        gauge = service.metrics.last_success.labels(target="t")._value.get()
        assert gauge == pytest.approx(finished.finished_at.timestamp())
    finally:
        service.engine.close()
