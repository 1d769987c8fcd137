"""`orgsync status`: per target, the last run, pending work, the lock, the quarantine
standing, which organization its memory is about and (SCIM) the request forms learned.
Reads the state database; starts nothing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orgsync.cli._common import load, open_state
from orgsync.core.errors import EXIT_OK

if TYPE_CHECKING:
    from orgsync.config import Config
    from orgsync.core.forms import LearnedForm
    from orgsync.core.quarantine import Quarantine
    from orgsync.store import LeaseRecord, RunRecord
    from orgsync.store.identity import Recorded

NAME = "status"
HELP = "last run, pending work and lock per target"


def add_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from orgsync.core.quarantine import DAEMON_WRITES, HISTORY, Quarantine, assess

    config = load(args)
    schedule = config.schedule
    store = open_state(config)
    views: list[tuple[str, RunRecord | None, LeaseRecord | None, bool, list[Any]]] = []
    standings: dict[str, Quarantine] = {}
    learned: dict[str, list[LearnedForm]] = {}
    identities: dict[str, Recorded | None] = {}
    # Targets with memory that the configuration no longer names: (recorded, people managed).
    dropped: dict[str, tuple[Recorded, int]] = {}
    behind: str | None = None
    try:
        if store is not None:
            refusal = store.behind()
            behind = refusal.summary if refusal is not None else None
            configured = {target.name for target in config.targets}
            for name, recorded in store.remembered_targets().items():
                if name not in configured:
                    dropped[name] = (recorded, len(store.memory(name).managed))
        for target in config.targets:
            if store is None:
                views.append((target.name, None, None, False, []))
                standings[target.name] = Quarantine()
                learned[target.name] = []
                identities[target.name] = None
                continue
            learned[target.name] = store.learned_forms(target.name)
            identities[target.name] = store.identity(target.name)
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
    if args.json:
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
                "identity": _identity_json(identities[name]),
                "state_behind": behind,
            }
            for name, last, lease, held, pending in views
        ]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    if behind is not None:
        print(f"WARNING: {behind}")
    _print_status(config, views, standings, learned, identities)
    _print_dropped(dropped)
    return EXIT_OK


def _print_dropped(dropped: Mapping[str, tuple[Recorded, int]]) -> None:
    """The targets the configuration lost: nothing happens to their people any more (no
    removal, no change), which an operator who only deleted a table may not expect."""
    from orgsync.core.text import visible

    for name, (recorded, managed) in sorted(dropped.items()):
        name = visible(name)  # noqa: PLW2901 - shown, as a run's error is
        print(f"{name} (in the state database, not in the configuration):")
        print(f"  memory is about: {_describe_identity(recorded)}")
        print(
            f"  {managed} people orgsync manages there are left as they are: nothing is "
            "synced, removed or changed while no [[targets]] table names it. Renamed? "
            f"`orgsync state rename {name} NEW`. Given up? `orgsync state forget {name}`"
        )


def _print_status(
    config: Config,
    views: list[tuple[str, RunRecord | None, LeaseRecord | None, bool, list[Any]]],
    standings: Mapping[str, Quarantine],
    learned: Mapping[str, list[LearnedForm]],
    identities: Mapping[str, Recorded | None],
) -> None:
    from orgsync.core.forms import describe as describe_forms
    from orgsync.core.text import visible  # a server's message, a directory's names

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
                print(f"  error: {visible(last.error)}")
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
        print(f"  memory is about: {_describe_identity(identities[name])}")
        for item in pending:
            line = f"{item.status.value}: {item.kind} {item.subject} {item.detail or ''}"
            print(f"  {visible(line.rstrip())}")
        from orgsync.targets.scim.connector import ScimTargetConfig

        target = config.target(name)
        if isinstance(target, ScimTargetConfig):
            forms = f'fixed by scim_dialect = "{target.scim_dialect}"'
            if target.scim_dialect == "auto":
                forms = describe_forms(learned[name])
            print(f"  SCIM request forms: {forms}")


def _describe_identity(recorded: Recorded | None) -> str:
    from orgsync.core.text import visible  # the organization is what a server said

    if recorded is None:
        return "not recorded yet (the next sync records it)"
    when = recorded.recorded_at.strftime("%Y-%m-%d %H:%M UTC")
    return visible(f"{recorded.identity.describe()} (recorded {when})")


def _identity_json(recorded: Recorded | None) -> dict[str, str | None] | None:
    """Which organization the target's memory is about, as the state database recorded
    it (`orgsync.store.identity`); None: not recorded yet."""
    if recorded is None:
        return None
    return {
        "organization": recorded.identity.organization,
        "address": recorded.identity.address,
        "recorded_at": recorded.recorded_at.isoformat(),
    }


def _learned_json(learned: LearnedForm) -> dict[str, str | None]:
    return {
        "change": learned.change,
        "form": learned.form,
        "server": learned.server,
        "reason": learned.reason,
        "learned_at": learned.learned_at.isoformat() if learned.learned_at else None,
    }
