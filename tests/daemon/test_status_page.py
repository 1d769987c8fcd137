"""The status page's renderer and collector, against a real SQLite state database.

What could hurt an administrator here: a name or group from the identity provider that
runs as script in their browser (escaping), a credential shown on a page anyone on the
network may open (scrubbing), a page whose cost grows with a mass hold (truncation and
bounded queries), and a page that makes a run wait (its own connection, no lock).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import pytest

from orgsync.config import load_config
from orgsync.core.plan import HeldOperation, Invite, Plan, RemoveMember, Waiting
from orgsync.core.ports import OperationStatus
from orgsync.core.quarantine import Quarantine
from orgsync.core.redaction import Scrubber
from orgsync.daemon.queue import SyncRequest
from orgsync.daemon.status_page import (
    CONTENT_SECURITY_POLICY,
    HEADERS,
    MAX_LISTED,
    KnownWaiting,
    Listed,
    StatusPage,
    StatusSnapshot,
    TargetStatus,
    render,
    secret_values,
)
from orgsync.results import RunOptions, TargetResult
from orgsync.store import Origin, Outcome, RunRecord, StateStore, Unsettled
from tests.daemon.browser import Dom

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVIL = "<script>document.title='pwned'</script>"
EVIL_ATTR = '"><img src=x onerror="alert(1)">'


def run(
    target: str = "openai-prod",
    *,
    status: str = "ok",
    mode: str = "sync",
    error: str | None = None,
    held: int = 0,
    summary: dict[str, int] | None = None,
    minutes_ago: int = 5,
    trigger: str = "schedule",
) -> RunRecord:
    started = NOW - timedelta(minutes=minutes_ago)
    return RunRecord(
        run_id=f"{started:%Y%m%dT%H%M%S.%f}Z-0000",
        target=target,
        mode=mode,
        trigger=trigger,
        status=status,
        exit_code=0,
        started_at=started,
        finished_at=None if status == "running" else started + timedelta(seconds=3),
        summary=summary or {},
        checksum=None,
        error=error,
        held=held,
        failed=0,
        waiting=0,
        pid=1,
        host="h",
        origin="daemon",
    )


def test_empty_state_before_the_first_run_says_so() -> None:
    snapshot = StatusSnapshot(
        NOW,
        (
            TargetStatus("openai-prod", "openai", next_run_at=NOW + timedelta(minutes=15)),
            TargetStatus("scim-dev", "scim"),
        ),
    )
    dom = Dom(render(snapshot))
    text = dom.text
    assert text.count("never synced") == 2
    assert text.count("no sync has finished yet") == 2
    assert "No runs yet." in text
    assert "in 15 min" in text and "not scheduled" in text
    assert "Held" not in text and "Waiting" not in text
    assert "script" not in dom.tags


def test_no_targets_at_all_is_said_not_shown_as_a_blank_page() -> None:
    assert "No targets are configured." in Dom(render(StatusSnapshot(NOW, ()))).text


def hostile_snapshot() -> StatusSnapshot:
    """Every field that comes from the IdP, the target or the run history, made hostile."""
    store_records = StateStore.open(":memory:", clock=lambda: NOW)
    run_id = store_records.start_run(EVIL, "sync", origin=Origin("daemon", "i"))
    plan = Plan.build(
        target=EVIL,
        generated_at=NOW,
        operations=[],
        held=[
            HeldOperation(
                operation=Invite(
                    email=f"{EVIL}@example.com", role=EVIL, source_id="s", reason=EVIL
                ),
                guard=EVIL_ATTR,
            )
        ],
    )
    store_records.record_plan(run_id, plan)
    store_records.finish_run(run_id, status="held", exit_code=3, summary={}, checksum=None)
    held = store_records.unsettled(run_id, MAX_LISTED)
    assert len(held.records) == 1
    store_records.close()
    waiting = Waiting(op="remove_member", email=EVIL, reason=EVIL_ATTR, group=EVIL)
    target = TargetStatus(
        EVIL,
        EVIL_ATTR,
        last_sync=run(EVIL, status="held", error=EVIL, summary={EVIL: 1}, trigger=EVIL),
        queued=SyncRequest(EVIL),
        quarantine=Quarantine(3, True, NOW + timedelta(hours=1), EVIL_ATTR),
        unsettled={"held": Listed(tuple(held.records), 1)},
        waiting=KnownWaiting(Listed((waiting,), 1), NOW),
    )
    return StatusSnapshot(NOW, (target,), (run(EVIL, error=EVIL_ATTR, trigger=EVIL),))


def test_what_the_idp_or_target_says_is_shown_as_text_never_as_markup() -> None:
    page = render(hostile_snapshot())
    dom = Dom(page)
    # No element the data could have made: no script, no image, no event handler.
    assert "script" not in dom.tags and "img" not in dom.tags
    assert not [name for name, _ in dom.attrs if name.startswith("on")]
    # …and every hostile value is on the page, as the text it was.
    assert dom.text.count(EVIL) >= 12
    assert dom.text.count(EVIL_ATTR) >= 4
    assert "<script>" not in page and "<img" not in page


def test_held_operations_show_the_guard_and_the_operation_reason() -> None:
    page = render(hostile_snapshot())
    text = Dom(page).text
    assert "Held by the safety gate (1)" in text
    assert "Held because" in text
    assert "Quarantined" in text


def test_long_lists_are_cut_with_a_count_of_what_is_not_shown(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db", clock=lambda: NOW)
    run_id = store.start_run("t", "sync", origin=Origin("daemon", "i"))
    held = [
        HeldOperation(
            operation=RemoveMember(
                email=f"p{i:04}@example.com", user_id=f"u{i}", reason="not in the IdP"
            ),
            guard="12000 removals exceed max_removals = 10",
        )
        for i in range(12_000)
    ]
    store.record_plan(run_id, Plan.build(target="t", generated_at=NOW, operations=[], held=held))
    store.finish_run(run_id, status="held", exit_code=3, summary={}, checksum=None, held=12_000)
    page = StatusPage(
        [("t", "openai")],
        open_store=lambda: StateStore.open(tmp_path / "state.db", create=False),
        standing=lambda _t: Quarantine(),
        next_run=lambda _t: None,
        queued=lambda _t: None,
        clock=lambda: NOW,
    )
    started = time.perf_counter()
    html = page.html()
    elapsed = time.perf_counter() - started
    text = Dom(html).text
    assert "Held by the safety gate (12000)" in text
    assert html.count("@example.com") == MAX_LISTED
    assert "p0000@example.com" in text and f"p{MAX_LISTED - 1:04}@example.com" in text
    assert f"p{MAX_LISTED:04}@example.com" not in text
    assert f"and {12_000 - MAX_LISTED} more held operations not listed" in text
    # Not a benchmark: a page that parsed all 12,000 rows would still pass a loose bound,
    # so the count of rows read is what is asserted above; this catches a pathological one.
    assert elapsed < 5
    page.close()
    store.close()


def test_waiting_is_listed_from_full_runs_and_cut_too() -> None:
    waiting = [
        Waiting(op="remove_member", email=f"w{i}@example.com", reason="missing; pending removal")
        for i in range(MAX_LISTED + 7)
    ]
    target = TargetStatus(
        "t", "openai", waiting=KnownWaiting(Listed.of(waiting), NOW - timedelta(minutes=1))
    )
    text = Dom(render(StatusSnapshot(NOW, (target,)))).text
    assert f"Waiting ({MAX_LISTED + 7})" in text
    assert "and 7 more waiting not listed" in text


def test_a_secret_in_a_run_error_is_scrubbed_before_it_is_escaped() -> None:
    secret = "sk-admin-Zq8&<key>-0123456789abcdef"
    error = f"401 from https://api.example.com: bad key {secret} (also {secret[:12]}…)"
    snapshot = StatusSnapshot(
        NOW,
        (TargetStatus("t", "openai", last_sync=run(status="failed", error=error)),),
        (run(status="failed", error=error),),
    )
    page = render(snapshot, scrub=Scrubber([secret]))
    assert "[redacted]" in page
    for fragment in (secret, secret[:12], "Zq8&amp;&lt;key", "0123456789abcdef"):
        assert fragment not in page


def test_the_stylesheet_is_the_only_one_the_policy_allows() -> None:
    page = render(StatusSnapshot(NOW, ()))
    styles = re.findall(r"<style>(.*?)</style>", page, flags=re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert CONTENT_SECURITY_POLICY.startswith("default-src 'none';")
    assert " style=" not in page  # an attribute would need 'unsafe-inline'
    assert HEADERS["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in HEADERS["Cache-Control"]
    assert '<meta http-equiv="refresh" content="15">' in page


def test_secret_values_finds_env_and_file_secrets_not_ca_files(tmp_path: Path) -> None:
    key_file = tmp_path / "scim.key"
    key_file.write_text("file-secret-0123456789\n", encoding="utf-8")
    ca = tmp_path / "ca.pem"
    # A real bundle: the configuration refuses a ca_file holding no certificate.
    ca.write_bytes(Path(certifi.where()).read_bytes())
    (tmp_path / "dir.json").write_text('{"people": [], "groups": []}', encoding="utf-8")
    config_path = tmp_path / "orgsync.toml"
    config_path.write_text(
        f"""
[source]
type = "file"
path = "{tmp_path / "dir.json"}"

[[targets]]
name = "a"
type = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "A_KEY"
ca_file = "{ca}"

[[targets]]
name = "b"
type = "scim"
base_url = "https://scim.example.com/v2"
api_key_file = "{key_file}"

[server]
webhook_secret_env = "HOOK"

[[notify]]
name = "chat"
type = "slack"
url_env = "SLACK"
""",
        encoding="utf-8",
    )
    config = load_config(config_path)
    slack = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX"
    found = secret_values(
        config, {"A_KEY": "env-secret-abcdefgh", "HOOK": "hook-secret-xyz12", "SLACK": slack}
    )
    expected = {"env-secret-abcdefgh", "file-secret-0123456789", "hook-secret-xyz12"}
    assert found == expected | {"/services/T000/B000/XXXXXXXXXXXX"}
    # The URL's path is the secret: scrubbed, while other URLs on the page stay readable.
    scrub = Scrubber(found)
    assert "XXXXXXXX" not in scrub(f"posted to {slack}")
    assert scrub("cannot reach https://api.example.com/v1") == (
        "cannot reach https://api.example.com/v1"
    )


# --------------------------------------------------------------------------- the collector


def finished_sync(store: StateStore, target: str, plan: Plan, status: str) -> str:
    run_id = store.start_run(target, "sync", "schedule", origin=Origin("daemon", "i"))
    store.record_plan(run_id, plan)
    store.finish_run(
        run_id,
        status=status,
        exit_code=3 if plan.held else 0,
        summary=plan.summary,
        checksum=plan.checksum,
        held=len(plan.held),
        waiting=len(plan.waiting),
    )
    return run_id


def test_collector_reads_runs_held_and_memory(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore.open(path)
    plan = Plan.build(
        target="prod",
        generated_at=NOW,
        operations=[],
        held=[
            HeldOperation(
                operation=Invite(
                    email="ada@example.com", role="reader", source_id="1", reason="member of x"
                ),
                guard="3 additions exceed max_additions = 2",
            )
        ],
        waiting=[Waiting(op="remove_member", email="bob@example.com", reason="grace")],
    )
    finished_sync(store, "prod", plan, "held")
    store.record_run(
        "prod",
        "dry-run",
        origin=Origin("cli"),
        started_at=datetime.now(UTC),
        outcome=Outcome(
            status="changes-pending", exit_code=2, summary={"invite": 1}, checksum=None
        ),
    )
    page = StatusPage(
        [("prod", "openai"), ("never", "scim")],
        open_store=lambda: StateStore.open(path, create=False),
        standing=lambda t: Quarantine(4, True, NOW, "boom") if t == "never" else Quarantine(),
        next_run=lambda _t: NOW + timedelta(minutes=3),
        queued=lambda t: (
            SyncRequest("webhook:okta", frozenset({"x@example.com"})) if t == "prod" else None
        ),
        clock=lambda: NOW,
        cache_seconds=0,
    )
    text = Dom(page.html()).text
    assert "Held by the safety gate (1)" in text
    assert "3 additions exceed max_additions = 2" in text and "ada@example.com" in text
    assert "queued: webhook:okta (1 people)" in text
    assert "Quarantined after 4 failed runs in a row" in text
    # The dry run is in the history, but the last *sync* is what the held list belongs to.
    assert "changes-pending" in text and "dry-run" in text
    # Waiting: only the count until this daemon has seen a full run…
    assert "Waiting (1)" in text and "bob@example.com" not in text
    # …a targeted run's plan does not replace it…
    page.run_finished(
        TargetResult("prod", 0, "ok", plan=plan),
        RunOptions(dry_run=False, target="prod", only_emails=frozenset({"ada@example.com"})),
    )
    assert "bob@example.com" not in Dom(page.html()).text
    # …a full one does.
    page.run_finished(TargetResult("prod", 3, "held", plan=plan), RunOptions(dry_run=False))
    assert "bob@example.com" in Dom(page.html()).text
    page.close()
    store.close()


def test_the_page_is_reused_for_a_second(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore.open(path).close()
    opened: list[int] = []

    def open_store() -> StateStore:
        opened.append(1)
        return StateStore.open(path, create=False)

    reads: list[str] = []
    page = StatusPage(
        [("t", "openai")],
        open_store=open_store,
        standing=lambda _t: Quarantine(),
        next_run=lambda t: reads.append(t) or None,  # type: ignore[func-returns-value]
        queued=lambda _t: None,
        cache_seconds=60,
    )
    first = page.html()
    assert page.html() is first and len(reads) == 1
    assert len(opened) == 1
    page.close()


def test_an_unreadable_database_is_a_banner_not_an_error_page(tmp_path: Path) -> None:
    def broken() -> StateStore:
        return StateStore.open(tmp_path / "missing.db", create=False)

    page = StatusPage(
        [("t", "openai")],
        open_store=broken,
        standing=lambda _t: Quarantine(),
        next_run=lambda _t: None,
        queued=lambda _t: None,
        cache_seconds=0,
    )
    text = Dom(page.html()).text
    assert "The state database could not be read" in text and "missing.db" in text
    assert "t" in text and "openai" in text


def test_the_page_never_waits_for_a_writer(tmp_path: Path) -> None:
    """A run holds the database's write lock (here: for 3 s, far longer than any real
    write); the page is still served at once, from its own connection."""
    path = tmp_path / "state.db"
    engine_store = StateStore.open(path)
    finished_sync(engine_store, "t", Plan.build(target="t", generated_at=NOW, operations=[]), "ok")
    page = StatusPage(
        [("t", "openai")],
        open_store=lambda: StateStore.open(path, create=False),
        standing=lambda _t: Quarantine(),
        next_run=lambda _t: None,
        queued=lambda _t: None,
        cache_seconds=0,
    )
    page.html()  # connected
    writing = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with engine_store._db.write() as session:
            session.execute("UPDATE runs SET triggered_by = triggered_by")
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(5)
    try:
        started = time.monotonic()
        text = Dom(page.html()).text
        assert time.monotonic() - started < 1.0
        assert "ok" in text and "schedule" in text
    finally:
        release.set()
        thread.join()
    page.close()
    engine_store.close()


@pytest.mark.parametrize("status", ["ok", "held", "failed", "changes-pending", "interrupted"])
def test_each_run_status_gets_a_badge(status: str) -> None:
    target = TargetStatus("t", "openai", last_sync=run(status=status))
    page = render(StatusSnapshot(NOW, (target,), (run(status=status),)))
    assert f">{status}</span>" in page


def test_unsettled_lists_a_few_of_each_status_and_counts_them_all(tmp_path: Path) -> None:
    """`StateStore.unsettled`: a run's undone operations, bounded per status (so a long
    list of one kind never hides another), with full counts."""
    store = StateStore.open(tmp_path / "state.db", clock=lambda: NOW)
    operations = [
        Invite(email=f"i{i:03}@example.com", role="reader", source_id=f"s{i}", reason="r")
        for i in range(10)
    ]
    held = [
        HeldOperation(
            operation=RemoveMember(email=f"h{i:03}@example.com", user_id=f"u{i}", reason="r"),
            guard="too many",
        )
        for i in range(120)
    ]
    plan = Plan.build(target="t", generated_at=NOW, operations=operations, held=held)
    older = finished_sync(store, "t", plan, "held")
    run_id = store.start_run("t", "sync", origin=Origin("daemon", "i"))
    store.record_plan(run_id, plan)
    journal = store.journal(run_id)
    for seq, op in enumerate(plan.operations[:8]):
        journal.started(seq, op)
        outcome = OperationStatus.DONE if seq < 5 else OperationStatus.FAILED
        journal.finished(seq, op, outcome, detail="409" if seq >= 5 else None)
    # Seqs 8 and 9 never started (planned).
    store.finish_run(run_id, status="failed", exit_code=1, summary={}, checksum=None)
    found = store.unsettled(run_id, 50)
    assert found.counts == {"held": 120, "failed": 3, "planned": 2}
    statuses = [r.status.value for r in found.records]
    assert statuses.count("held") == 50 and statuses.count("failed") == 3
    assert statuses.count("planned") == 2
    assert all(r.run_id == run_id for r in found.records)
    assert [r.seq for r in found.records] == sorted(r.seq for r in found.records)
    assert store.unsettled(older, 50).counts == {"held": 120, "planned": 10}
    assert store.unsettled("no-such-run", 50).counts == {}
    store.close()


def test_the_page_follows_the_newest_finished_sync_and_reads_each_run_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = StateStore.open(path)
    held = [
        HeldOperation(
            operation=RemoveMember(email="gone@example.com", user_id="u1", reason="r"),
            guard="first guard",
        )
    ]
    finished_sync(
        store, "t", Plan.build(target="t", generated_at=NOW, operations=[], held=held), "held"
    )
    reads: list[str] = []

    class Counting(StateStore):
        def unsettled(self, run_id: str, per_status: int) -> Unsettled:
            reads.append(run_id)
            return super().unsettled(run_id, per_status)

    page = StatusPage(
        [("t", "openai")],
        open_store=lambda: Counting(StateStore.open(path, create=False)._db),
        standing=lambda _t: Quarantine(),
        next_run=lambda _t: None,
        queued=lambda _t: None,
        cache_seconds=0,
    )
    assert "first guard" in page.html()
    assert "first guard" in page.html()
    assert len(reads) == 1
    # A dry run changes nothing; a new sync that held nothing empties the list.
    store.record_run(
        "t",
        "dry-run",
        started_at=datetime.now(UTC),
        outcome=Outcome(status="held", exit_code=3, summary={}, checksum=None, held=1),
    )
    assert "first guard" in page.html() and len(reads) == 1
    finished_sync(store, "t", Plan.build(target="t", generated_at=NOW, operations=[]), "ok")
    assert "first guard" not in page.html()
    assert len(reads) == 2
    page.close()
    store.close()
