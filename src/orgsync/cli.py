"""The `orgsync` command: argument parsing, output, and exit codes (docs/reference.md "Commands",
"Exit codes").

Human output goes to stdout, logs to stderr. Exit codes: 0 nothing left to do, 1 error,
2 changes pending (dry run), 3 held by a safety guard, 64 usage error (nothing was read
or changed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from orgsync import __version__
from orgsync.core.errors import EXIT_ERROR, EXIT_OK, OrgsyncError

if TYPE_CHECKING:
    from orgsync.config import Config
    from orgsync.core.forms import LearnedForm
    from orgsync.core.plan import Plan
    from orgsync.core.quarantine import Quarantine
    from orgsync.results import TargetResult
    from orgsync.store import LeaseRecord, RunRecord, StateStore

# Everything else is imported by the command that needs it: `orgsync --help` must not pay
# for pydantic, the connectors, the HTTP client, SQLite helpers and structlog (docs/reference.md
# "Output and logs").

EXIT_USAGE = 64
"""BSD sysexits EX_USAGE: a mistyped command line is not an error of the run (1) and must
never read as "changes pending" (2) to a script."""

_EXIT_CODES = """\
exit codes:
  0   nothing left to do
  1   error: bad configuration, unreachable source or target, failed operations
  2   changes pending (dry run)
  3   a safety guard held operations back, the rest was applied (--allow-removals N,
      --allow-additions N lift it for one run)
  64  usage error: unknown command or option, bad option value; nothing was read or changed
"""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on exit code 64 instead of argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: usage error: {message}\n")


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        # ASCII digits only: int() would also take "1_000", "+5" and other scripts' digits.
        if re.fullmatch(r"-?[0-9]+", text) is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    parse.__name__ = "number"  # argparse names the converter in its messages
    return parse


def _person(text: str) -> str:
    """One `--only` name, kept as typed: `_subjects` decides email or source id."""
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("an empty name names nobody")
    if "@" in name:
        local, _, domain = name.rpartition("@")
        if not local or not domain or any(c.isspace() for c in name):
            raise argparse.ArgumentTypeError(f"{text!r} is not an email address")
    return name


def _subjects(names: Sequence[str]) -> tuple[frozenset[str], frozenset[str]]:
    """`--only` names as (emails, source ids): with '@' an email, else a source id."""
    emails = frozenset(n for n in names if "@" in n)
    return emails, frozenset(n for n in names if "@" not in n)


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--config, --quiet, -v, --log-format and --log-level, accepted before and after the
    command (docs/reference.md "Commands").

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
        help="stderr log level (default: info; warning for demo, with --quiet, and for "
        "sync on a terminal, where progress bars show what happens)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="nothing on stdout on success (exit codes unchanged; when a run fails or a "
        "guard holds operations, exit 1 or 3, the report goes to stderr); no progress",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logs on stderr (same as --log-level debug)",
    )
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default=default,
        help="stderr log lines (default: console on a terminal, json otherwise)",
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
        "--only",
        nargs="+",
        action="extend",
        type=_person,
        metavar="EMAIL|SOURCE_ID",
        help="reconcile only these people, as a webhook naming them does (an argument with "
        "'@' is an email, anything else a source id); the organization is read for them "
        "alone where its API can look people up, the source is read whole",
    )
    sync.add_argument(
        "--allow-removals",
        type=_count(0),
        metavar="N",
        help="this run only: apply the access removals the safety gate would hold, when "
        "the run has at most N of them (removals, suspensions, revocations, role "
        "lowerings, group member removals, group role unassignments and deletions); "
        "additions stay held",
    )
    sync.add_argument(
        "--allow-additions",
        type=_count(0),
        metavar="N",
        help="this run only: send the invitations and create the users the safety gate "
        "would hold, when the run has at most N of them (held when the source lost too "
        "many managed people, or over max_additions / max_addition_ratio); removals stay "
        "held",
    )
    sync.add_argument(
        "--plan-out",
        type=Path,
        metavar="FILE",
        help="required: --dry-run; write the plan for review (mode 0600)",
    )
    sync.add_argument(
        "--plan",
        type=Path,
        metavar="FILE",
        help="apply exactly this reviewed plan: only its targets, each only while a fresh "
        "plan is the same (pass the same --allow-* as when it was written)",
    )
    sync.set_defaults(usage=sync)

    explain = command(
        "explain",
        "read-only: why one person would be invited, changed, removed or left alone, "
        "target by target, as a dry run plans it (exit 1 when found nowhere)",
    )
    explain.add_argument("person", metavar="EMAIL|SOURCE_ID", help="an email or a source id")
    explain.add_argument("--target", help="only this target")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")

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
    demo.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="leave the demo's configuration, directory file and state database in DIR "
        "(new or empty) and print the commands to go on with",
    )
    _emulate_command(command("emulate", "serve an emulated organization to rehearse against"))
    _state_commands(command("state", "move the state database to another one"))
    return parser


def _emulate_command(emulate: argparse.ArgumentParser) -> None:
    def listen(text: str) -> tuple[str, int]:
        from orgsync.emulate import parse_listen  # the emulators load only when asked for

        try:
            return parse_listen(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    listen.__name__ = "HOST:PORT"
    emulate.add_argument(
        "kind",
        choices=["openai", "keycard", "okta", "entra", "google"],
        help="which organization API (openai, keycard) or directory (okta, entra, google)",
    )
    emulate.add_argument(
        "--listen",
        type=listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to serve on (default: loopback, a free port)",
    )
    emulate.add_argument(
        "--people",
        type=_count(0),
        default=0,
        metavar="N",
        help="add N members person1..N@example.com to the organization (to a directory: "
        "people in openai-users)",
    )
    emulate.add_argument(
        "--seed-file",
        type=Path,
        metavar="F",
        help="the organization's members, invitations and groups, or the directory's people "
        "and groups in the file source's format (JSON, README: Rehearse) instead of the "
        "demo's sample",
    )


def _state_commands(state: argparse.ArgumentParser) -> None:
    def state_location(text: str) -> str:
        # Imported when parsed: the store and config modules cost every command's start-up.
        from orgsync.state_command import state_location as parse

        return parse(text)

    actions = state.add_subparsers(dest="state_command", required=True, metavar="COMMAND")
    migrate = actions.add_parser(
        "migrate",
        help="copy links, ledger, missing-since clocks, learned forms and run history",
        description="Copy an installation's state to another database (stop orgsync "
        "first); the row counts are verified after the copy.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(migrate, top=False)
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        type=state_location,
        metavar="FROM",
        help="sqlite:PATH or postgresql://USER@HOST:PORT/DB (must exist)",
    )
    migrate.add_argument(
        "--to",
        dest="destination",
        required=True,
        type=state_location,
        metavar="TO",
        help="postgresql://USER@HOST:PORT/DB?sslmode=... or sqlite:PATH (must be empty)",
    )
    migrate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the orgsync state the destination already holds",
    )
    migrate.add_argument(
        "--password-env",
        metavar="NAME",
        help="environment variable with the PostgreSQL password (else PGPASSWORD etc.)",
    )
    migrate.add_argument(
        "--password-file", type=Path, metavar="PATH", help="file with the PostgreSQL password"
    )


def _check_usage(args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; refused before anything is read."""
    if args.command == "sync" and args.only and (args.plan or args.plan_out):
        args.usage.error(
            f"--only reconciles a few people and cannot be combined with "
            f"{'--plan' if args.plan else '--plan-out'}: a reviewed plan covers whole "
            "organizations; nothing was read or changed"
        )
    if args.command == "sync" and args.plan_out is not None and not args.dry_run:
        args.usage.error(
            "--plan-out writes a plan for review and needs --dry-run "
            "(orgsync sync --dry-run --plan-out FILE); nothing was read or changed"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check_usage(args)
    from orgsync.logs import configure_logging

    configure_logging(_log_level(args), json=_log_json(args))
    if not args.quiet:
        return _command(args)
    from orgsync.progress import quiet_stdout

    with quiet_stdout() as quiet:
        return quiet.ended(_command(args))


def _log_level(args: argparse.Namespace) -> str:
    if args.log_level:
        return str(args.log_level)
    if args.verbose:
        return "debug"
    if args.quiet or args.command in ("demo", "emulate"):
        return "warning"
    if args.command == "sync" and sys.stderr.isatty() and _log_json(args) is not True:
        # A person at a terminal watches the bars and the plan; a line per operation
        # would bury them (1,500 invitations, 1,500 lines). Journals and pipes keep info.
        return "warning"
    return "info"


def _log_json(args: argparse.Namespace) -> bool | None:
    return None if args.log_format is None else args.log_format == "json"


def _command(args: argparse.Namespace) -> int:
    from orgsync.config import default_config_path, load_config

    try:
        if args.command == "demo":
            from orgsync.demo import run_demo

            return run_demo(as_json=args.json, keep=args.keep)
        if args.command == "emulate":
            from orgsync.emulate import run_emulator

            host, port = args.listen
            return run_emulator(
                args.kind, host=host, port=port, people=args.people, seed_file=args.seed_file
            )
        if args.command == "state":
            from orgsync.state_command import migrate_state

            return migrate_state(args, os.environ)
        config = load_config(args.config or default_config_path())
        if args.command == "sync":
            return _sync(config, args)
        if args.command == "daemon":
            from orgsync.daemon import run_daemon

            return run_daemon(config)
        if args.command == "explain":
            return _explain(config, args.person, target=args.target, as_json=args.json)
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
    from orgsync.engine import Engine
    from orgsync.notify import DRAIN_SECONDS, build_dispatcher
    from orgsync.progress import reporter
    from orgsync.results import RunOptions

    if args.plan and args.dry_run:
        raise OrgsyncError("--plan applies a reviewed plan; it cannot be combined with --dry-run")
    reviewed = _read_plans(args.plan) if args.plan else None
    if args.plan_out and not args.plan_out.parent.is_dir():
        raise OrgsyncError(f"--plan-out {args.plan_out}: no such directory; nothing was run")
    emails, source_ids = _subjects(args.only or ())
    options = RunOptions(
        dry_run=args.dry_run,
        target=args.target,
        allow_removals=args.allow_removals,
        allow_additions=args.allow_additions,
        reviewed_plans=reviewed,
        # `runs` and `status` tell a targeted run's (partial) drift from a full pass's.
        trigger="cli:only" if args.only else "cli",
        only_emails=emails,
        only_source_ids=source_ids,
        only_must_exist=bool(args.only),
    )
    # A dry run is a person reading a plan: it notifies nobody. A sync that holds or
    # fails is a real run and does; its messages go out after the result is printed.
    notifier = None if args.dry_run else build_dispatcher(config, os.environ, strict=False)
    # On a terminal a sync's plan is shown before its first call, as it is applied; the
    # result then says how it went without repeating it.
    shown: set[str] = set()
    early = not (args.dry_run or args.json or args.quiet) and sys.stdout.isatty()
    progress = reporter(
        quiet=bool(args.quiet), show_plan=partial(_show_plan, shown) if early else None
    )
    engine = Engine(
        config, on_finished=notifier.run_finished if notifier else None, progress=progress
    )
    try:
        with _stop_on_signals(engine.stop):
            results = engine.run(options)
    finally:
        engine.close()
        if progress is not None:
            progress.close()
    try:
        return _print_sync(results, args, shown)
    finally:
        if notifier is not None:
            notifier.close(DRAIN_SECONDS)


def _explain(config: Config, person: str, *, target: str | None, as_json: bool) -> int:
    from orgsync import explaining
    from orgsync.engine import Engine

    if not person.strip():
        raise OrgsyncError("explain: give an email or a source id, not an empty text")
    engine = Engine(config)
    try:
        with _stop_on_signals(engine.stop):
            found = engine.explain(person, target=target)
    finally:
        engine.close()
    if as_json:
        print(json.dumps(explaining.explanations_json(person, found), indent=2))
    else:
        print(explaining.render_explanations(found))
    if not explaining.found_anywhere(found):
        print(f"orgsync: {explaining.not_found_message(person, found)}", file=sys.stderr)
    return explaining.exit_code(found)


def _show_plan(shown: set[str], plan: Plan) -> None:
    from orgsync.report import Style, render_plan

    print(render_plan(plan, Style.for_stream(sys.stdout)), flush=True)
    shown.add(plan.target)


def _print_sync(
    results: list[TargetResult], args: argparse.Namespace, shown: set[str] | None = None
) -> int:
    from orgsync.core.plan_file import plan_file_text
    from orgsync.report import Style, render_results, sync_json
    from orgsync.results import worst_exit_code

    if args.plan_out:
        _write_private(args.plan_out, plan_file_text([r.plan for r in results if r.plan]))
    if args.json:
        print(json.dumps(sync_json(results, dry_run=args.dry_run), indent=2))
    else:
        style = Style.for_stream(sys.stdout)
        print(render_results(results, dry_run=args.dry_run, style=style, shown=shown or set()))
    return worst_exit_code([r.exit_code for r in results])


def _read_plans(path: Path) -> dict[str, Plan]:
    from orgsync.core.plan_file import PlanFileError, read_plan_file

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise OrgsyncError(f"--plan {path}: cannot read the plan: {error.strerror}") from None
    except UnicodeDecodeError:
        raise OrgsyncError(f"--plan {path}: not a plan written by --plan-out (not UTF-8)") from None
    try:
        return read_plan_file(text)
    except PlanFileError as error:
        raise OrgsyncError(f"--plan {path}: {error}") from None


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (plans hold e-mails and ids).

    A new file replaces an existing one, so a file that was readable by others before is
    never written into, and a reader holding it open sees only its old content.
    """
    if path.exists() and not path.is_file():  # /dev/stdout and the like: write through
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None
        return
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp makes it 0600
            handle.write(text)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None


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
        import structlog

        structlog.get_logger(__name__).warning("sync.stopping", signal=signal.Signals(signum).name)
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
    from orgsync.factories import open_state_store
    from orgsync.store import NoStateDatabase

    try:
        return open_state_store(config.state, os.environ, create=False)
    except NoStateDatabase as missing:
        print(f"orgsync: {missing}", file=sys.stderr)
        return None


def _status(config: Config, *, as_json: bool) -> int:
    from orgsync.core.quarantine import DAEMON_WRITES, HISTORY, Quarantine, assess

    schedule = config.schedule
    store = _open_state(config)
    views: list[tuple[str, RunRecord | None, LeaseRecord | None, bool, list[Any]]] = []
    standings: dict[str, Quarantine] = {}
    learned: dict[str, list[LearnedForm]] = {}
    try:
        for target in config.targets:
            if store is None:
                views.append((target.name, None, None, False, []))
                standings[target.name] = Quarantine()
                learned[target.name] = []
                continue
            learned[target.name] = store.learned_forms(target.name)
            lease, held = store.lease_view(target.name)
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
                "lock_token": lease.token if lease else None,
                "pending": [p.as_json() for p in pending],
                "drift": last.summary if last else {},
                "quarantine": standings[name].as_json(),
                "learned_forms": [_learned_json(f) for f in learned[name]],
            }
            for name, last, lease, held, pending in views
        ]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    _print_status(config, views, standings, learned)
    return EXIT_OK


def _print_status(
    config: Config,
    views: list[tuple[str, RunRecord | None, LeaseRecord | None, bool, list[Any]]],
    standings: Mapping[str, Quarantine],
    learned: Mapping[str, list[LearnedForm]],
) -> None:
    from orgsync.core.forms import describe as describe_forms

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
            print(
                f"  lock: held by {lease.holder} since {lease.acquired_at:%Y-%m-%d %H:%M:%S}Z "
                f"(lease until {lease.expires_at:%H:%M:%S}Z unless renewed, token {lease.token})"
            )
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
        from orgsync.targets.scim.connector import ScimTargetConfig

        target = config.target(name)
        if isinstance(target, ScimTargetConfig):
            forms = f'fixed by scim_dialect = "{target.scim_dialect}"'
            if target.scim_dialect == "auto":
                forms = describe_forms(learned[name])
            print(f"  SCIM request forms: {forms}")


def _learned_json(learned: LearnedForm) -> dict[str, str | None]:
    return {
        "change": learned.change,
        "form": learned.form,
        "server": learned.server,
        "reason": learned.reason,
        "learned_at": learned.learned_at.isoformat() if learned.learned_at else None,
    }


def _runs(config: Config, *, limit: int, target: str | None, as_json: bool) -> int:
    from orgsync.report import Style, render_runs

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
    print(render_runs(records, Style.for_stream(sys.stdout)))
    return EXIT_OK


def _validate(config: Config, *, offline: bool) -> int:
    from orgsync.validation import validate

    lines, ok = validate(config, environ=dict(os.environ), offline=offline)
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
