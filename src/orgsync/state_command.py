"""`orgsync state migrate --from sqlite:PATH --to postgresql://...`: moving an
installation's state between databases (the copy itself is `orgsync.store.transfer`);
`orgsync state forget TARGET`: forgetting what the state remembers of one target;
`orgsync state rename OLD NEW`: moving it to the target's new name;
`orgsync state accept-restore`: going on with a database restored from an older backup.

Either side may be a SQLite file (`sqlite:PATH`) or a PostgreSQL URL without a password;
the password of a PostgreSQL side comes from `--password-env` / `--password-file`, or
from libpq's own environment (PGPASSWORD, PGPASSFILE).
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from orgsync.config import SecretRef
from orgsync.core.errors import ConfigError, StateError
from orgsync.core.state_url import is_server_url, redact_state_url, state_url_problem
from orgsync.store import StateStore
from orgsync.store.leases import holder_label
from orgsync.store.transfer import TABLES, copy_state

SQLITE_PREFIX = "sqlite:"


def state_location(text: str) -> str:
    """An argparse type: `sqlite:PATH` or a PostgreSQL URL (a usage error otherwise)."""
    if is_server_url(text):
        problem = state_url_problem(text)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{redact_state_url(text)} {problem}")
        return text
    if text.startswith(SQLITE_PREFIX) and text[len(SQLITE_PREFIX) :].strip():
        return text
    # Not repeated: a mistyped URL may hold a password.
    raise argparse.ArgumentTypeError(
        "is neither sqlite:PATH nor postgresql://USER@HOST:PORT/DATABASE"
    )


def migrate_state(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Copy the state; prints what was copied. Errors are `OrgsyncError`s (exit 1)."""
    password = _password(args, environ)
    with (
        _open(args.source, password, create=False) as source,
        _open(args.destination, password, create=True) as destination,
    ):
        # A copy of a restored database would carry no mark: the restore would go unseen.
        source.check_writable()
        transfer = copy_state(source, destination, overwrite=args.overwrite)
        destination.publish_mark()
        shown_from, shown_to = source.location, destination.location
    print(f"copied the state of {shown_from} to {shown_to}:")
    for table in TABLES:
        print(f"  {table:<14} {transfer.counts[table]:>8} rows")
    if transfer.replaced:
        replaced = ", ".join(f"{n} {t}" for t, n in transfer.replaced.items())
        print(f"replaced what {shown_to} held before ({replaced})")
    print("verified: every table holds as many rows as in the source")
    if is_server_url(args.destination):
        print(f'next: set [state] url = "{shown_to}" in the configuration (and remove path)')
    return 0


def _open(location: str, password: str | None, *, create: bool) -> StateStore:
    if is_server_url(location):
        return StateStore.open(location, password=password, create=create)
    return StateStore.open(Path(location[len(SQLITE_PREFIX) :]).expanduser(), create=create)


def _password(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.password_env is None and args.password_file is None:
        return None
    if args.password_env is not None and args.password_file is not None:
        raise ConfigError("give either --password-env or --password-file, not both")
    ref = SecretRef(key="password", env=args.password_env, file=args.password_file)
    return ref.resolve(environ).get_secret_value()


def forget_target(args: argparse.Namespace, store: StateStore) -> int:
    """Forget `args.target`'s memory (or only which organization it is about), as its
    writer: refused while a sync of it runs. Prints what was deleted."""
    instance = secrets.token_hex(4)
    keeper = store.lease_keeper(
        holder_label("state forget", instance), timedelta(minutes=1), instance=instance
    )
    store.check_writable()
    try:
        lease = keeper.try_take(args.target, patience=1.0)
        if lease is None:
            holder = store.lease_holder(args.target)
            who = f" (by {holder.holder})" if holder is not None else ""
            raise StateError(
                f"target {args.target} is being synced right now{who}; nothing was "
                "forgotten: try again once that run ended"
            )
        was = store.identity(args.target)
        deleted = store.fenced(lease).forget_target(args.target, identity_only=args.identity_only)
        store.fenced(lease).bump_generation(f"state forget {args.target}")
    finally:
        keeper.close()
    about = f" (it was about {was.identity.describe()})" if was is not None else ""
    if args.identity_only:
        print(
            f"forgot which organization target {args.target} is about{about}; its next "
            "sync records the organization it reaches, and keeps its memory"
        )
    else:
        rows = ", ".join(f"{n} {table}" for table, n in deleted.items() if n) or "nothing"
        print(
            f"forgot what orgsync remembered of target {args.target}{about}: {rows}; its "
            "next sync manages nobody there until it links people again (run history kept)"
        )
    return 0


def rename_target(args: argparse.Namespace, store: StateStore) -> int:
    """Move `args.old`'s memory to `args.new`, as the writer of both: refused while a
    sync of either runs, and when `args.new` already has memory. Prints what moved."""
    if args.old == args.new:
        raise StateError(f"state rename: {args.old} and {args.new} are one name; nothing to do")
    instance = secrets.token_hex(4)
    keeper = store.lease_keeper(
        holder_label("state rename", instance), timedelta(minutes=1), instance=instance
    )
    store.check_writable()
    try:
        leases = []
        for name in (args.old, args.new):
            lease = keeper.try_take(name, patience=1.0)
            if lease is None:
                holder = store.lease_holder(name)
                who = f" (by {holder.holder})" if holder is not None else ""
                raise StateError(
                    f"target {name} is being synced right now{who}; nothing was renamed: "
                    "try again once that run ended"
                )
            leases.append(lease)
        moved = store.fenced(leases[0]).rename_target(args.old, args.new)
        store.fenced(leases[0]).bump_generation(f"state rename {args.old} {args.new}")
    finally:
        keeper.close()
    if not any(moved.values()):
        raise StateError(
            f"the state database remembers nothing of target {args.old}; nothing was "
            "renamed (`orgsync status` lists the targets it remembers)"
        )
    rows = ", ".join(f"{n} {table}" for table, n in moved.items() if n) or "nothing"
    print(
        f"moved what orgsync remembered of target {args.old} to {args.new}: {rows}; "
        f"{args.new}'s next sync manages the people {args.old} managed (run history kept "
        "under the old name)"
    )
    return 0


def accept_restore(store: StateStore) -> int:
    """Record that the operator knows the database went back in time; prints both marks
    and what follows. Not behind: says so, and changes nothing (exit 0)."""
    if store.behind() is None:
        print(
            f"state database {store.location} is not behind its high-water mark; nothing to accept"
        )
        return 0
    refusal, mark = store.accept_restore()
    if refusal is not None:
        had = refusal.database.describe() if refusal.database is not None else "no generation"
        print(
            f"accepted the restored state database {store.location}: it held {had}, its "
            f"mark {refusal.mark_file} {refusal.mark.describe()}; now {mark.describe()}"
        )
    print(
        "every target's next pass is full; until it ended clean, each plan lists the "
        "members and invitations the database does not know whom the source no longer "
        "reports as active (orgsync may have invited them after the backup: review them, "
        "orgsync leaves them alone)"
    )
    return 0
