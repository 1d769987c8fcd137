"""The `orgsync` command: argument parsing, output, and exit codes (SPEC "Commands").

Human output goes to stdout, logs to stderr. Exit codes: 0 nothing left to do, 1 error,
2 changes pending (dry run), 3 held by a safety guard.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from orgsync import __version__
from orgsync.config import Config, default_config_path, load_config
from orgsync.core.errors import OrgsyncError
from orgsync.core.plan import Plan
from orgsync.engine import EXIT_ERROR, EXIT_OK, Engine, RunOptions, worst_exit_code
from orgsync.logs import configure_logging
from orgsync.report import render_result, results_json
from orgsync.store import LeaseRecord, NoStateDatabase, RunRecord, StateStore

log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orgsync",
        description="Keep SaaS organizations in step with your identity provider.",
    )
    parser.add_argument("--version", action="version", version=f"orgsync {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $ORGSYNC_CONFIG, else ./orgsync.toml)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default: info; warning for demo)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="plan and apply (or only plan, with --dry-run)")
    sync.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    sync.add_argument("--json", action="store_true", help="print the plan as JSON")
    sync.add_argument("--target", help="only this target")
    sync.add_argument(
        "--allow-removals", type=int, metavar="N", help="lift the removal guard for up to N"
    )
    sync.add_argument("--plan-out", type=Path, metavar="FILE", help="write the plan for review")
    sync.add_argument("--plan", type=Path, metavar="FILE", help="apply exactly this reviewed plan")

    status = commands.add_parser("status", help="last run, pending work and lock per target")
    status.add_argument("--json", action="store_true")

    runs = commands.add_parser("runs", help="run history")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--target")
    runs.add_argument("--json", action="store_true")

    validate = commands.add_parser("validate", help="check configuration and connectivity")
    validate.add_argument(
        "--offline", action="store_true", help="check the file only, contact nothing"
    )

    commands.add_parser(
        "daemon", help="serve: scheduled reconciliation, webhooks, health and metrics"
    )

    demo = commands.add_parser("demo", help="a complete sync against a local emulator")
    demo.add_argument("--json", action="store_true", help="print plans as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level or ("warning" if args.command == "demo" else "info"))
    try:
        if args.command == "demo":
            from orgsync.demo import run_demo

            return run_demo(as_json=args.json)
        config = load_config(args.config or default_config_path())
        if args.command == "sync":
            return _sync(config, args)
        if args.command == "daemon":
            from orgsync.daemon import run_daemon

            return run_daemon(config)
        if args.command == "status":
            return _status(config, as_json=args.json)
        if args.command == "runs":
            return _runs(config, limit=args.limit, target=args.target, as_json=args.json)
        return _validate(config, offline=args.offline)
    except OrgsyncError as error:
        print(f"orgsync: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _sync(config: Config, args: argparse.Namespace) -> int:
    if args.plan and args.dry_run:
        raise OrgsyncError("--plan applies a reviewed plan; it cannot be combined with --dry-run")
    reviewed = _read_plans(args.plan) if args.plan else None
    options = RunOptions(
        dry_run=args.dry_run,
        target=args.target,
        allow_removals=args.allow_removals,
        reviewed_plans=reviewed,
    )
    if reviewed is not None and args.target is None:
        options = RunOptions(
            dry_run=False,
            target=next(iter(reviewed)) if len(reviewed) == 1 else None,
            allow_removals=args.allow_removals,
            reviewed_plans=reviewed,
        )
    engine = Engine(config)
    try:
        with _stop_on_signals(engine.stop):
            results = engine.run(options)
    finally:
        engine.close()
    if args.plan_out:
        plans = [r.plan.to_json() for r in results if r.plan is not None]
        document: Any = plans[0] if len(plans) == 1 else plans
        args.plan_out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(results_json(results), indent=2))
    else:
        print("\n\n".join(render_result(r, dry_run=args.dry_run) for r in results))
    return worst_exit_code([r.exit_code for r in results])


def _read_plans(path: Path) -> dict[str, Plan]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OrgsyncError(f"--plan {path}: cannot read the plan: {error}") from error
    documents = document if isinstance(document, list) else [document]
    plans: dict[str, Plan] = {}
    for item in documents:
        try:
            parsed = Plan.from_json(item)
        except (ValueError, TypeError) as error:
            raise OrgsyncError(
                f"--plan {path}: not a plan written by --plan-out: {error}"
            ) from error
        written = item.get("checksum")
        if written != parsed.checksum:
            raise OrgsyncError(
                f"--plan {path}: the checksum in the file ({written}) does not match its "
                f"operations ({parsed.checksum}): the file was edited"
            )
        plans[parsed.target] = parsed
    return plans


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM or SIGINT ends a sync cleanly: a read in flight ends at once, an apply
    finishes its calls in flight and starts no more, and the run is recorded
    `interrupted`. A second signal ends the process at once (the journal makes it safe)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        log.warning("sync.stopping", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers (an embedding caller's thread)
        return
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _open_state(config: Config) -> StateStore | None:
    """The state database for reading commands, which never create one (None: none yet)."""
    try:
        return StateStore.open(config.state.path, create=False)
    except NoStateDatabase as missing:
        print(f"orgsync: {missing}", file=sys.stderr)
        return None


def _lock_view(store: StateStore, target: str) -> tuple[LeaseRecord | None, bool]:
    """The lease row worth showing, and whether a process holds the target's lock now.

    A row whose holder no longer holds the kernel lock is a process that died holding it
    (`kill -9`): shown as free, since the next sync takes it over at once.
    """
    held = store.writer_lock(target).held_elsewhere()
    lease = store.lease_holder(target)
    return (lease if held else None), held


def _status(config: Config, *, as_json: bool) -> int:
    from orgsync.daemon.quarantine import DAEMON_WRITES, HISTORY, Quarantine, assess

    schedule = config.schedule
    store = _open_state(config)
    views: list[tuple[str, RunRecord | None, LeaseRecord | None, bool, list[Any]]] = []
    standings: dict[str, Quarantine] = {}
    try:
        for target in config.targets:
            if store is None:
                views.append((target.name, None, None, False, []))
                standings[target.name] = Quarantine()
                continue
            lease, held = _lock_view(store, target.name)
            views.append(
                (target.name, store.last_run(target.name), lease, held, store.pending(target.name))
            )
            standings[target.name] = assess(
                store.runs(limit=HISTORY, target=target.name, **DAEMON_WRITES),
                after=schedule.quarantine_after,
                interval=schedule.interval,
                ceiling=schedule.quarantine_max_interval,
            )
    finally:
        if store is not None:
            store.close()
    if as_json:
        document = [
            {
                "target": name,
                "last_run": last.as_json() if last else None,
                "lock_held": held,
                "lock_holder": lease.holder if lease else None,
                "lock_expires_at": lease.expires_at.isoformat() if lease else None,
                "pending": [p.as_json() for p in pending],
                "drift": last.summary if last else {},
                "quarantine": standings[name].as_json(),
            }
            for name, last, lease, held, pending in views
        ]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    for name, last, lease, held, pending in views:
        print(f"{name}:")
        if last is None:
            print("  never run")
        else:
            finished = f"{last.finished_at:%Y-%m-%d %H:%M:%S}Z" if last.finished_at else "not yet"
            print(
                f"  last run {last.run_id} ({last.mode}, {last.origin}) {last.status}, "
                f"exit {last.exit_code}, finished {finished}"
            )
            if last.status == "running" and not held:
                print("  (its process ended without finishing; the next sync records it)")
            if last.error:
                print(f"  error: {last.error}")
            drift = ", ".join(f"{n} {op}" for op, n in last.summary.items()) or "none"
            print(f"  drift at last run: {drift}")
        if lease is not None:
            print(f"  lock: held by {lease.holder} since {lease.acquired_at:%Y-%m-%d %H:%M:%S}Z")
        else:
            print(
                "  lock: held (its holder has not recorded itself yet)" if held else "  lock: free"
            )
        standing = standings[name]
        if standing.quarantined and standing.next_run_at is not None:
            print(
                f"  QUARANTINED after {standing.failures} failed runs in a row; next attempt "
                f"not before {standing.next_run_at:%Y-%m-%d %H:%M:%S}Z (one clean run ends it)"
            )
        elif standing.failures:
            print(f"  failed runs in a row: {standing.failures}")
        for item in pending:
            print(f"  {item.status.value}: {item.kind} {item.subject} {item.detail or ''}".rstrip())
    return EXIT_OK


def _runs(config: Config, *, limit: int, target: str | None, as_json: bool) -> int:
    store = _open_state(config)
    if store is None:
        records: list[RunRecord] = []
    else:
        try:
            records = store.runs(limit=limit, target=target)
        finally:
            store.close()
    if as_json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return EXIT_OK
    for record in records:
        summary = ", ".join(f"{n} {op}" for op, n in record.summary.items()) or "-"
        print(
            f"{record.run_id}  {record.target:<16} {record.mode:<8} {record.origin:<7} "
            f"{record.status:<16} exit {record.exit_code if record.exit_code is not None else '-'}"
            f"  {summary}"
        )
    return EXIT_OK


def _validate(config: Config, *, offline: bool) -> int:
    from orgsync.validation import validate

    lines, ok = validate(config, environ=dict(os.environ), offline=offline)
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
