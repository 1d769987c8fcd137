"""The `orgsync` command: argument parsing, output, and exit codes (SPEC "Commands").

Human output goes to stdout, logs to stderr. Exit codes: 0 nothing left to do, 1 error,
2 changes pending (dry run), 3 held by a safety guard, 64 usage error (nothing was read
or changed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from orgsync import __version__
from orgsync.config import Config, default_config_path, load_config
from orgsync.core.errors import OrgsyncError
from orgsync.core.plan import Plan
from orgsync.engine import EXIT_ERROR, EXIT_OK, Engine, RunOptions, worst_exit_code
from orgsync.logs import configure_logging
from orgsync.report import render_result, results_json

EXIT_USAGE = 64
"""BSD sysexits EX_USAGE: a mistyped command line is not an error of the run (1) and must
never read as "changes pending" (2) to a script."""

_EXIT_CODES = """\
exit codes:
  0   nothing left to do
  1   error: bad configuration, unreachable source or target, failed operations
  2   changes pending (dry run)
  3   a safety guard held removals back (--allow-removals N lifts it for one run)
  64  usage error: unknown command or option, bad option value; nothing was read or changed
"""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on exit code 64 instead of argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: usage error: {message}\n")


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    parse.__name__ = "number"  # argparse names the converter in its messages
    return parse


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--config and --log-level, accepted before and after the command (SPEC).

    On the command's parser the defaults are suppressed, so a value given before the
    command is not overwritten by the command's own default.
    """
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="PATH",
        help="configuration file (default: $ORGSYNC_CONFIG, else ./orgsync.toml)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help="stderr log level (default: info; warning for demo)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="orgsync",
        description="Keep SaaS organizations in step with your identity provider.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orgsync {__version__}")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _global_options(sub, top=False)
        return sub

    sync = command("sync", "plan and apply (or only plan, with --dry-run)")
    sync.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    sync.add_argument("--json", action="store_true", help="print the plan as JSON")
    sync.add_argument("--target", help="only this target")
    sync.add_argument(
        "--allow-removals",
        type=_count(0),
        metavar="N",
        help="lift the removal guard for up to N removals (N >= 0)",
    )
    sync.add_argument(
        "--plan-out",
        type=Path,
        metavar="FILE",
        help="with --dry-run: write the plan for review (required: --dry-run)",
    )
    sync.add_argument("--plan", type=Path, metavar="FILE", help="apply exactly this reviewed plan")
    sync.set_defaults(usage=sync)

    status = command("status", "last run, pending work and lock per target")
    status.add_argument("--json", action="store_true")

    runs = command("runs", "run history")
    runs.add_argument("--limit", type=_count(1), default=20, metavar="N", help="N >= 1")
    runs.add_argument("--target")
    runs.add_argument("--json", action="store_true")

    validate = command("validate", "check configuration and connectivity")
    validate.add_argument(
        "--offline", action="store_true", help="check the file only, contact nothing"
    )

    command("daemon", "serve: scheduled reconciliation, webhooks, health and metrics")

    demo = command("demo", "a complete sync against a local emulator")
    demo.add_argument("--json", action="store_true", help="print plans as JSON")
    return parser


def _check_usage(args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; refused before anything is read."""
    if args.command == "sync" and args.plan_out is not None and not args.dry_run:
        args.usage.error(
            "--plan-out writes a plan for review and needs --dry-run "
            "(orgsync sync --dry-run --plan-out FILE); nothing was read or changed"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check_usage(args)
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


def _status(config: Config, *, as_json: bool) -> int:
    from orgsync.daemon.quarantine import HISTORY, assess

    engine = Engine(config)
    schedule = config.schedule
    try:
        store = engine.store
        views = [
            (
                target.name,
                store.last_run(target.name),
                store.lease_holder(target.name),
                store.pending(target.name),
            )
            for target in config.targets
        ]
        standings = {
            target.name: assess(
                store.runs(limit=HISTORY, target=target.name),
                after=schedule.quarantine_after,
                interval=schedule.interval,
                ceiling=schedule.quarantine_max_interval,
            )
            for target in config.targets
        }
    finally:
        engine.close()
    if as_json:
        document = [
            {
                "target": name,
                "last_run": last.as_json() if last else None,
                "lock_holder": lease.holder if lease else None,
                "lock_expires_at": lease.expires_at.isoformat() if lease else None,
                "pending": [p.as_json() for p in pending],
                "drift": last.summary if last else {},
                "quarantine": standings[name].as_json(),
            }
            for name, last, lease, pending in views
        ]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    for name, last, lease, pending in views:
        print(f"{name}:")
        if last is None:
            print("  never run")
        else:
            finished = f"{last.finished_at:%Y-%m-%d %H:%M:%S}Z" if last.finished_at else "not yet"
            print(
                f"  last run {last.run_id} ({last.mode}) {last.status}, "
                f"exit {last.exit_code}, finished {finished}"
            )
            if last.error:
                print(f"  error: {last.error}")
            drift = ", ".join(f"{n} {op}" for op, n in last.summary.items()) or "none"
            print(f"  drift at last run: {drift}")
        print(f"  lock: {lease.holder if lease else 'free'}")
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
    engine = Engine(config)
    try:
        records = engine.store.runs(limit=limit, target=target)
    finally:
        engine.close()
    if as_json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return EXIT_OK
    for record in records:
        summary = ", ".join(f"{n} {op}" for op, n in record.summary.items()) or "-"
        print(
            f"{record.run_id}  {record.target:<16} {record.mode:<8} {record.status:<16} "
            f"exit {record.exit_code if record.exit_code is not None else '-'}  {summary}"
        )
    return EXIT_OK


def _validate(config: Config, *, offline: bool) -> int:
    from orgsync.validation import validate

    lines, ok = validate(config, environ=dict(os.environ), offline=offline)
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
