"""`StateStore`: the one object the rest of orgsync uses to reach the state database.

A thin facade: it opens and migrates the database and delegates each concern to the
module that owns it (runs, journal, recovery, links, group ledger, lease, writer locks).
It holds no logic of its own, so each rule is written, and tested, in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType, TracebackType

import structlog

from orgsync.core.delta import Fingerprint
from orgsync.core.errors import StateError
from orgsync.core.forms import LearnedForm
from orgsync.core.model import Memory, SourceId
from orgsync.core.plan import Plan
from orgsync.core.state_url import is_server_url
from orgsync.store.baselines import Baseline, Baselines
from orgsync.store.db import Clock, Session, SqliteDB, StateDB, utc_now
from orgsync.store.deliveries import SeenDeliveries
from orgsync.store.forms import FormMemory
from orgsync.store.groups import GroupLedger, OwnedGroup, OwnedHow
from orgsync.store.identity import (
    Identities,
    Identity,
    OrganizationTwice,
    Recorded,
    judge,
    twin,
)
from orgsync.store.journal import Journal, OperationRecord, RunJournal, Unsettled
from orgsync.store.leases import FencedDB, HeldLease, LeaseKeeper, LeaseRecord, LeaseTable
from orgsync.store.links import LinkRow, Links
from orgsync.store.marks import MARKS_VERSION, Mark, StateBehind, WriteMarks, bump_in
from orgsync.store.migrations import migrate, schema_version
from orgsync.store.queue import (
    CHANNEL,
    Claimed,
    Queued,
    QueueListener,
    QueueRow,
    Request,
    WebhookQueue,
)
from orgsync.store.recovery import recover_interrupted
from orgsync.store.runs import Origin, Outcome, RunRecord, Runs
from orgsync.store.writer_lock import WriterLock

log = structlog.get_logger(__name__)

CLI = Origin("cli")


class StateStore:
    """Run history, operation journal, links, owned groups, learned request forms and
    leases in one SQLite file, or in a PostgreSQL database.

    Safe to share between threads. Every write has committed durably when it returns.
    """

    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._runs = Runs(db)
        self._journal = Journal(db)
        self._links = Links(db)
        self._groups = GroupLedger(db)
        self._leases = LeaseTable(db)
        self._forms = FormMemory(db)
        self._baselines = Baselines(db)
        self._queue = WebhookQueue(db)
        self._seen = SeenDeliveries(db)
        self._identities = Identities(db)
        self._marks = WriteMarks(db)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        clock: Clock = utc_now,
        server_clock: bool = True,
        create: bool = True,
        password: str | None = None,
    ) -> StateStore:
        """Open and migrate a SQLite file, `":memory:"` for tests, or a PostgreSQL database
        given as a `postgresql://` URL (`password`, if given, is used for it and for
        nothing else; libpq's own variables, PGPASSWORD and the like, work too).

        A missing file is created (mode 0600) and announced with a `state.created` log
        line, and so is the schema of an empty PostgreSQL database, unless `create` is
        False (`status`, `runs`): then `NoStateDatabase`. Raises `StateError` for an
        existing file that is empty, unreadable or not orgsync's, one locked beyond the
        busy timeout, a server that cannot be reached, or a schema newer than this code.
        `clock` (this host's) must return aware datetimes. It is the store's clock on
        SQLite; on PostgreSQL the store's clock is the server's (`db.ServerClock`), so
        that replicas on hosts whose clocks disagree record and compare shared times on
        one clock; `server_clock=False` keeps `clock` there too (tests that need times
        of their choosing; never for replicas).
        """
        db: StateDB
        if is_server_url(str(path)):
            from orgsync.store.postgres import PostgresDB

            db = PostgresDB.open(
                str(path),
                password=password,
                clock=clock,
                server_clock=server_clock,
                prepare=migrate,
                create=create,
            )
        else:
            db = SqliteDB.open(path, clock=clock, prepare=migrate, create=create)
        if db.created and schema_version(db) >= MARKS_VERSION:
            WriteMarks(db).initialize()
            log.warning(
                "state.created",
                path=db.location,
                note="a new state database: orgsync manages nobody in any target yet",
            )
        return cls(db)

    @property
    def path(self) -> Path | None:
        """The database file, or None for `:memory:` and a server."""
        return self._db.path

    @property
    def location(self) -> str:
        """Where the state is, for people: a file, or a server's URL without a secret."""
        return self._db.location

    def clock(self) -> datetime:
        """Now, on the store's clock (`StateDB.clock`): what every time shared through
        the database is written in and compared with (the server's on PostgreSQL)."""
        return self._db.clock()

    @property
    def db(self) -> StateDB:
        """The database itself, for `orgsync.store.transfer` and the tests."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def start_run(
        self, target: str, mode: str, trigger: str = "cli", *, origin: Origin = CLI
    ) -> str:
        """Record a run as `running`; returns its time-sortable id. `mode`: dry-run | sync.

        Only while holding `target`'s writer lock: recovery takes any `running` run of a
        target whose lock it holds for one whose process ended.
        """
        if mode != "sync":
            return self._runs.start(target, mode, trigger, origin)
        # The generation moves in the run's own transaction; the mark file follows at the
        # run's end only (one fsync per run): a backup taken during the run is below it.
        return self._runs.start(
            target, mode, trigger, origin, also=lambda s: self._bump_in(s, target)
        )

    def _bump_in(self, session: Session, target: str) -> Mark:
        return bump_in(session, self._db.clock(), f"a sync of {target}")

    def record_run(
        self,
        target: str,
        mode: str,
        trigger: str = "cli",
        *,
        origin: Origin = CLI,
        started_at: datetime,
        outcome: Outcome,
    ) -> str:
        """Record a run that is over (a dry run, a run stopped before taking the lock)."""
        return self._runs.record(target, mode, trigger, origin, started=started_at, outcome=outcome)

    def prune_runs(self, before: datetime) -> int:
        """Forget runs started before `before` and their journal (see `Runs.prune`)."""
        return self._runs.prune(before)

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        exit_code: int,
        summary: dict[str, int],
        checksum: str | None,
        error: str | None = None,
        held: int = 0,
        failed: int = 0,
        waiting: int = 0,
        pass_kind: str | None = None,
        pass_reason: str | None = None,
    ) -> None:
        """Status: ok | changes-pending | held | failed | interrupted."""
        bumped: list[Mark] = []
        record = self._runs.get(run_id)
        write = record is not None and record.mode == "sync"
        self._runs.finish(
            run_id,
            also=(lambda s: bumped.append(self._bump_in(s, record.target)))
            if write and record is not None
            else None,
            outcome=Outcome(
                status=status,
                exit_code=exit_code,
                summary=summary,
                checksum=checksum,
                error=error,
                held=held,
                failed=failed,
                waiting=waiting,
                pass_kind=pass_kind,
                pass_reason=pass_reason,
            ),
        )
        if bumped:
            self._marks.publish(bumped[0])

    def run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    def runs(
        self,
        limit: int = 20,
        target: str | None = None,
        *,
        origin: str | None = None,
        mode: str | None = None,
        instance: str | None = None,
    ) -> list[RunRecord]:
        """Newest first; only `origin`'s (cli, daemon), `mode`'s and `instance`'s runs
        when given."""
        return self._runs.history(limit, target, origin=origin, mode=mode, instance=instance)

    def last_run(self, target: str) -> RunRecord | None:
        """The newest run of `target`, whatever its status (a `running` one included)."""
        history = self._runs.history(1, target)
        return history[0] if history else None

    # ------------------------------------------------------------------ journal

    def record_plan(self, run_id: str, plan: Plan) -> None:
        """Journal `plan.operations` as planned (seq 0…) and `plan.held` as held after them."""
        self._journal.record_plan(run_id, plan)

    def journal(self, run_id: str) -> RunJournal:
        """The run's `OperationJournal` for the applier."""
        return self._journal.for_run(run_id)

    def operations(self, run_id: str) -> list[OperationRecord]:
        """The run's journaled operations in seq order."""
        return self._journal.operations(run_id)

    def recover_interrupted(self, target: str) -> int:
        """Mark `target`'s runs of ended processes interrupted (holding its writer lock);
        returns the operations marked."""
        return recover_interrupted(self._db, target)

    def pending(self, target: str) -> list[OperationRecord]:
        """Operations the latest finished sync run of `target` did not settle."""
        return self._journal.pending(target)

    def unsettled(self, run_id: str, per_status: int) -> Unsettled:
        """The operations `run_id` did not settle, at most `per_status` of each status, with
        the full count of each (`pending` of one run, bounded)."""
        return self._journal.unsettled(run_id, per_status)

    # ------------------------------------------------------------------ links and memory

    def link(
        self,
        target: str,
        *,
        email_key: str,
        source_id: str | None,
        member_id: str | None = None,
        invite_id: str | None = None,
    ) -> None:
        self._links.link(
            target,
            email_key=email_key,
            source_id=source_id,
            member_id=member_id,
            invite_id=invite_id,
        )

    def record_links(self, target: str, batch: Iterable[LinkRow]) -> int:
        """Link many people in one transaction, writing only rows that change (returns how
        many); see `Links.record_links`."""
        return self._links.record_links(target, batch)

    def unlink(self, target: str, email_key: str) -> None:
        self._links.unlink(target, email_key)

    def memory(self, target: str) -> Memory:
        """What the planner needs from earlier runs: links, missing times, owned groups."""
        owned = {group: SourceId(source) for group, source in self.owned_groups(target).items()}
        return dataclasses.replace(self._links.memory(target), owned_groups=MappingProxyType(owned))

    def mark_missing(self, target: str, email_keys: Iterable[str], now: datetime) -> None:
        self._links.mark_missing(target, email_keys, now)

    def clear_missing(self, target: str, keep_only: Iterable[str]) -> None:
        self._links.clear_missing(target, keep_only)

    # ------------------------------------------------------------------ owned groups

    def own_group(
        self,
        target: str,
        *,
        group_id: str,
        source_group_id: str,
        name: str,
        how: OwnedHow,
    ) -> None:
        """Record that orgsync owns `group_id` (`how`: created | adopted) for the IdP group
        `source_group_id`. Owning it again updates the source and name, keeps `how`."""
        self._groups.own(
            target, group_id=group_id, source_group_id=source_group_id, name=name, how=how
        )

    def rename_owned_group(self, target: str, group_id: str, name: str) -> bool:
        """Record a rename; False (nothing written) if the group is not owned."""
        return self._groups.rename(target, group_id, name)

    def disown_group(self, target: str, group_id: str) -> bool:
        """Forget an owned group (deleted); False if it was not owned."""
        return self._groups.disown(target, group_id)

    def owned_groups(self, target: str) -> dict[str, str]:
        """Target group id → IdP group id of every group `target` owns."""
        return self._groups.owned(target)

    def owned_group_records(self, target: str) -> list[OwnedGroup]:
        """The ledger rows of `target` with name, how and times (for status output)."""
        return self._groups.records(target)

    # ------------------------------------------------------------------ learned forms

    def learn_form(self, target: str, learned: LearnedForm) -> None:
        """Remember the request form of one change that `target`'s server accepted."""
        self._forms.learn(target, learned)

    def learned_forms(self, target: str) -> list[LearnedForm]:
        """The forms learned for `target` (all servers it pointed at; newest per change)."""
        return self._forms.learned(target)

    def forget_forms(self, target: str) -> int:
        return self._forms.forget(target)

    # ------------------------------------------------------------------ lease

    def writer_lock(self, target: str) -> WriterLock:
        """The lock that makes its holder the one writer of `target`: a kernel lock on
        SQLite, a session advisory lock on PostgreSQL."""
        return self._db.writer_lock(target)

    @property
    def leases(self) -> LeaseTable:
        """The lease rows themselves (tests, `orgsync status`); runs use `lease_keeper`."""
        return self._leases

    def lease_keeper(
        self,
        holder: str,
        ttl: timedelta,
        *,
        instance: str,
        on_change: Callable[[str, bool], None] | None = None,
    ) -> LeaseKeeper:
        """The leases of one holder (an engine): take, renew, release, which it holds."""
        return LeaseKeeper(self._db, holder, ttl, instance=instance, on_change=on_change)

    def fenced(self, lease: HeldLease) -> StateStore:
        """This store (the same connection) with every write refused, nothing written,
        once `lease` is no longer its holder's (`LeaseLost`): what a sync writes through."""
        return StateStore(FencedDB(self._db, lease))

    def lease_holder(self, target: str, now: datetime | None = None) -> LeaseRecord | None:
        """The unexpired lease row of `target`, or None."""
        return self._leases.holder(target, now)

    def lease_mark(self, target: str) -> tuple[str, int] | None:
        """See `LeaseTable.mark`."""
        return self._leases.mark(target)

    def lease_holders(self) -> dict[str, LeaseRecord]:
        """Every unexpired lease, by target (who holds which target now)."""
        return self._leases.holders()

    def lease_view(self, target: str) -> tuple[LeaseRecord | None, bool]:
        """The lease worth showing and whether someone holds `target` now.

        On SQLite the kernel lock says whether it is held: a row whose holder no longer
        holds it is a process that died holding it (`kill -9`), shown as free since the
        next sync takes it over at once. On PostgreSQL the unexpired row decides.
        """
        lease = self._leases.holder(target)
        if self._db.leases_expire:
            return lease, lease is not None
        held = self._db.writer_lock(target).held_elsewhere()
        return (lease if held else None), held

    # ------------------------------------------------------------------ webhook queue

    def queue_requests(self, requests: Iterable[Request]) -> Queued:
        """Queue webhook requests for the replicas holding their targets (see
        `orgsync.store.queue`); on PostgreSQL every listening replica is notified."""
        return self._queue.put(requests)

    def queue_delivery(
        self, requests: Iterable[Request], kind: str, keys: Collection[str], window: timedelta
    ) -> tuple[Queued, list[str]]:
        """Record a webhook delivery's `keys` as seen for `window` and queue its
        `requests`, in one transaction; returns what was queued and the keys not seen
        before. Keys given and none new: a replay, and nothing is queued
        (`orgsync.store.deliveries`)."""
        fresh: list[str] = []

        def record(session: Session) -> bool:
            fresh.extend(self._seen.record(session, kind, keys, window))
            return bool(fresh) or not keys

        queued = self._queue.put(requests, first=record)
        try:
            self._seen.prune_if_due()
        except StateError as error:  # the delivery is queued; the next one prunes
            log.warning("webhook.seen_prune_failed", error=str(error))
        return queued, fresh

    def seen_deliveries(self) -> SeenDeliveries:
        """The table of webhook deliveries seen (for pruning now, tests and operators)."""
        return self._seen

    def claim_requests(self, claimer: str, targets: Collection[str]) -> list[Claimed]:
        """Claim the queued requests of `targets`, which `claimer` may run now (also those
        a replica no longer live claimed and did not finish)."""
        return self._queue.claim(claimer, targets)

    def requests_waiting(
        self, targets: Collection[str] | None = None, *, claimer: str | None = None
    ) -> bool:
        """Whether requests (of `targets`) are not done, or are for `claimer` to claim."""
        return self._queue.waiting(targets, claimer=claimer)

    def finish_requests(self, claimer: str, ids: Iterable[str]) -> int:
        """Mark claimed requests done once the run they were part of finished."""
        return self._queue.finish(claimer, ids)

    def queued_requests(self, target: str | None = None) -> list[QueueRow]:
        return self._queue.rows(target)

    def queue_listener(self) -> QueueListener | None:
        """What tells this process at once that requests were queued (by any replica):
        a LISTEN connection on PostgreSQL; None on SQLite, where the only writer of the
        queue is this process, which knows."""
        from orgsync.store.postgres import PostgresDB

        if isinstance(self._db, PostgresDB):
            return self._db.listen(CHANNEL)
        return None

    # ------------------------------------------------------------------ incremental passes

    def baseline(self, target: str) -> Baseline | None:
        return self._baselines.get(target)

    def source_fingerprint(self, target: str) -> Fingerprint:
        return self._baselines.fingerprint(target)

    def record_baseline(
        self,
        target: str,
        *,
        config: str,
        cursor: str | None,
        fingerprint: Fingerprint,
        full_at: datetime | None,
    ) -> int:
        """See `Baselines.record`."""
        return self._baselines.record(
            target, config=config, cursor=cursor, fingerprint=fingerprint, full_at=full_at
        )

    def advance_cursor(self, target: str, cursor: str | None) -> None:
        self._baselines.advance_cursor(target, cursor)

    def invalidate_baseline(self, target: str) -> None:
        self._baselines.invalidate(target)

    def forget_baseline(self, target: str) -> None:
        self._baselines.forget(target)

    # ------------------------------------------------------------------ organization identity

    def check_identity(self, target: str, seen: Identity, *, record: bool) -> None:
        """Refuse (`OrganizationChanged`) when `target`'s memory is about another
        organization than `seen`; with `record`, remember `seen` as what it is about
        (a sync, under its lease; a dry run only checks). See `orgsync.store.identity`."""
        recorded = self._identities.get(target)
        update = judge(target, recorded, seen)
        if recorded is None:
            refusal = self.twin_of(target, seen)
            if refusal is not None:
                raise refusal
        if update is not None and record:
            self._identities.record(target, update)
            if recorded is None:
                log.info("state.identity_recorded", target=target, identity=update.describe())
            else:
                log.warning(
                    "state.identity_updated",
                    target=target,
                    was=recorded.identity.describe(),
                    now=update.describe(),
                )

    def twin_of(self, target: str, seen: Identity) -> OrganizationTwice | None:
        """The refusal when `target` has no memory yet and `seen` is the organization
        another target's memory is about (see `orgsync.store.identity.twin`)."""
        return twin(target, seen, self._identities.others(target))

    def remembered_targets(self) -> dict[str, Recorded]:
        """Every target whose organization the state database records, by name: those a
        configuration no longer names still have memory (`orgsync status` says so)."""
        return self._identities.others(None)

    def rename_target(self, old: str, new: str) -> dict[str, int]:
        """See `Identities.rename` (`orgsync state rename`)."""
        return self._identities.rename(old, new)

    def identity(self, target: str) -> Recorded | None:
        """Which organization `target`'s memory is about, if recorded."""
        return self._identities.get(target)

    def forget_target(self, target: str, *, identity_only: bool = False) -> dict[str, int]:
        """See `Identities.forget` (`orgsync state forget`)."""
        return self._identities.forget(target, identity_only=identity_only)

    # ------------------------------------------------------------------ restored databases

    def behind(self) -> StateBehind | None:
        """The refusal when this database is older than its high-water mark (restored from
        a backup, rolled back); None when it is not or cannot be told. Reads only."""
        return self._marks.behind()

    def check_writable(self) -> None:
        """Raise `StateBehind` when this database is older than its mark (see `marks.py`):
        asked before a write run reads anything."""
        self._marks.check_writable()

    def write_mark(self) -> Mark | None:
        """The database's own write generation (None: never written by a write run)."""
        return self._marks.database_mark()

    def bump_generation(self, what: str) -> Mark:
        """Raise the write generation (a write outside runs: `state forget`/`rename`)."""
        return self._marks.bump(what)

    def accept_restore(self) -> tuple[StateBehind | None, Mark]:
        """See `WriteMarks.accept_restore` (`orgsync state accept-restore`)."""
        return self._marks.accept_restore()

    def restore_accepted_at(self) -> datetime | None:
        """When an operator last accepted a restored database, if ever."""
        return self._marks.last_accepted()

    def publish_mark(self) -> None:
        """Write the database's generation into its mark file (after `state migrate`)."""
        mark = self._marks.database_mark()
        if mark is not None:
            self._marks.publish(mark)
