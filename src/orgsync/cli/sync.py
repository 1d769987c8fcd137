"""`orgsync sync`: plan and apply (or only plan, with --dry-run), for every target or one,
for everybody or the people `--only` names, or exactly a reviewed plan (`--plan`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from orgsync.cli._common import count, load, stop_on_signals
from orgsync.core.errors import OrgsyncError

if TYPE_CHECKING:
    from orgsync.core.plan import Plan
    from orgsync.results import TargetResult

NAME = "sync"
HELP = "plan and apply (or only plan, with --dry-run)"


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


def add_arguments(sync: argparse.ArgumentParser) -> None:
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
        "--incremental",
        action="store_true",
        help="plan only what changed at the source since the last clean pass, trusting the "
        "organization as that pass left it (a full pass when there is no usable baseline, "
        "the configuration changed, or the last full pass is [schedule] full_interval old)",
    )
    sync.add_argument(
        "--allow-removals",
        type=count(0),
        metavar="N",
        help="this run only: apply the access removals the safety gate would hold, when "
        "the run has at most N of them (removals, suspensions, revocations, role "
        "lowerings, group member removals, group role unassignments and deletions); "
        "additions stay held",
    )
    sync.add_argument(
        "--allow-additions",
        type=count(0),
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


def check_usage(args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; refused before anything is read."""
    if args.only and (args.plan or args.plan_out):
        args.usage.error(
            f"--only reconciles a few people and cannot be combined with "
            f"{'--plan' if args.plan else '--plan-out'}: a reviewed plan covers whole "
            "organizations; nothing was read or changed"
        )
    if args.incremental and (args.only or args.plan):
        args.usage.error(
            f"--incremental cannot be combined with {'--only' if args.only else '--plan'}: "
            "an incremental pass decides itself whom to reconcile; nothing was read or changed"
        )
    if args.plan and args.dry_run:
        args.usage.error(
            "--plan applies a reviewed plan; it cannot be combined with --dry-run "
            "(orgsync sync --dry-run --plan-out FILE writes one); nothing was read or changed"
        )
    if args.plan_out is not None and not args.dry_run:
        args.usage.error(
            "--plan-out writes a plan for review and needs --dry-run "
            "(orgsync sync --dry-run --plan-out FILE); nothing was read or changed"
        )


def run(args: argparse.Namespace) -> int:
    from orgsync.cli.plan_files import check_plan_out, read_plans
    from orgsync.engine import Engine
    from orgsync.notify import DRAIN_SECONDS, build_dispatcher
    from orgsync.progress import reporter
    from orgsync.results import RunOptions

    config = load(args)
    reviewed = read_plans(args.plan) if args.plan else None
    if args.plan_out and not args.plan_out.parent.is_dir():
        raise OrgsyncError(f"--plan-out {args.plan_out}: no such directory; nothing was run")
    if args.plan_out:
        check_plan_out(args.plan_out)
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
        incremental=args.incremental,
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
        with stop_on_signals(engine.stop):
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


def _show_plan(shown: set[str], plan: Plan) -> None:
    from orgsync.report import Style, render_plan

    print(render_plan(plan, Style.for_stream(sys.stdout)), flush=True)
    shown.add(plan.target)


def _print_sync(
    results: list[TargetResult], args: argparse.Namespace, shown: set[str] | None = None
) -> int:
    from orgsync.cli.plan_files import write_private
    from orgsync.core.plan_file import plan_file_text
    from orgsync.report import Style, render_results, sync_json
    from orgsync.results import worst_exit_code

    if args.plan_out:
        write_private(args.plan_out, plan_file_text([r.plan for r in results if r.plan]))
    if args.json:
        print(json.dumps(sync_json(results, dry_run=args.dry_run), indent=2))
    else:
        style = Style.for_stream(sys.stdout)
        print(render_results(results, dry_run=args.dry_run, style=style, shown=shown or set()))
    return worst_exit_code([r.exit_code for r in results])
