"""The engine: the one place that wires source, rules, planner, safety, applier and store.

`Engine.run(options)` reads the source once, then for each selected target: takes the
target's writer lock and lease (sync only), reads the organization, plans, holds what the
safety gate holds, applies (sync only), records links and run history, and returns one
`TargetResult` per target. The CLI and the daemon call it; adapters never call each other.
What is read from a target and what the planner is given belong to `orgsync.planning`;
`orgsync explain` reads and plans through the same pieces (`orgsync.explaining.explain`).

A sync refused because another process holds the target's lock is `busy`: not a run (it
changed nothing and is not recorded), so it never counts towards quarantine. A stop
request (SIGTERM) during a read ends the read at once and records the run `interrupted`.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

import structlog

from orgsync.applier import Applier, ApplySettings
from orgsync.applier import Outcome as ApplyOutcome
from orgsync.config import Config, TargetConfig
from orgsync.core.errors import (
    EXIT_ERROR,
    EXIT_OK,
    ConfigError,
    Interrupted,
    OrgsyncError,
    StateError,
)
from orgsync.core.model import Memory, SourceSnapshot, TargetSnapshot, screen
from orgsync.core.plan import Plan
from orgsync.core.plan_file import check_reviewed
from orgsync.core.ports import (
    APPLY,
    READ_SOURCE,
    READ_TARGET,
    DetectsChanges,
    LearnsForms,
    PlanAware,
    ReadsPeople,
    RunObserver,
    RunProgress,
    Source,
    Target,
    Unobserved,
    Unwatched,
)
from orgsync.core.restore import forgotten_leavers, review_warning
from orgsync.core.safety import check_source_size, managed_in_memory
from orgsync.core.scope import needs_invitations, unknown_subjects
from orgsync.factories import build_source, build_target, open_state_store, retry_settings
from orgsync.passes import FULL, TARGETED, Pass, Passes, SourceOnce
from orgsync.planning import Planning, scope
from orgsync.policy import safety_limits
from orgsync.results import RunOptions, TargetResult, dry_result, outcome_of, sync_result
from orgsync.store import (
    HeldLease,
    LeaseKeeper,
    LeaseLost,
    LinkingJournal,
    Origin,
    Outcome,
    StateStore,
    TargetBusy,
)
from orgsync.store.identity import seen as seen_identity
from orgsync.store.leases import RELEASED, holder_label

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from orgsync.interrupt import ReadInterrupt  # imports httpx: only when a run reads


BUSY = "busy"
"""A sync refused because another process is the target's writer: not recorded as a run."""
LEASE_LOST = "lease-lost"
"""A sync stopped because its lease was taken over or ran out (a frozen or cut-off replica):
it calls the target no more and records nothing further; the new holder's run does."""
LOCK_PATIENCE = 1.0
"""Seconds a sync waits for a target's writer lock before it is refused as busy (long
enough to ride out `orgsync status` probing the lock, far shorter than any run)."""


class TargetFactory(Protocol):
    def __call__(
        self, config: TargetConfig, environ: Mapping[str, str], *, interrupt: ReadInterrupt
    ) -> Target: ...


class SourceFactory(Protocol):
    def __call__(
        self, config: Config, environ: Mapping[str, str], *, interrupt: ReadInterrupt
    ) -> Source: ...


@dataclass(frozen=True, slots=True)
class LeaseMark:
    """A target's lease row (holder, token; None: never taken) before a run read the
    source, to compare with the lease the run then takes."""

    row: tuple[str, int] | None


def _written_since(mark: LeaseMark, lease: HeldLease) -> bool:
    """Whether a writer other than `lease`'s holder may have held the target since its
    lease row was `mark`: the token grows with every takeover, and a released row's next
    taker is the only one to raise it by exactly one."""
    if mark.row is None:
        return lease.token != 1
    holder, token = mark.row
    if holder == lease.holder:
        return lease.token != token
    return not (holder == RELEASED and lease.token == token + 1)


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        store: StateStore | None = None,
        source_factory: SourceFactory | None = None,
        target_factory: TargetFactory | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stop: threading.Event | None = None,
        observer: RunObserver | None = None,
        on_finished: Callable[[TargetResult, RunOptions], None] | None = None,
        origin: str = "cli",
        progress: RunProgress | None = None,
        on_lease: Callable[[str, bool], None] | None = None,
    ) -> None:
        """`origin`: "cli" or "daemon", recorded with each run; the daemon's quarantine and
        readiness count the daemon's own runs only. `on_lease(target, held)`: told when
        this engine takes or gives up (or loses) a target's lease (metrics)."""
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self._store = store
        self.observer: RunObserver = observer or Unobserved()
        # Told each target's result once a run returns (notifications); cheap, never raises.
        self.on_finished = on_finished or (lambda result, options: None)
        self.progress: RunProgress = progress or Unwatched()
        self.source_factory: SourceFactory = source_factory or partial(
            build_source, on_response=self.observer.http_response
        )
        self.target_factory: TargetFactory = target_factory or partial(
            build_target, on_response=self._on_response
        )
        self.clock = clock
        # Decided on the store's clock, which other replicas share (the server's on
        # PostgreSQL): when a removal grace or a full interval ends, what a pass records.
        self.passes = Passes(config, self.now)
        self.planning = Planning(config, self.now, self.progress)
        self.stop = stop or threading.Event()
        self.instance = secrets.token_hex(4)
        self.origin = Origin(origin, self.instance)
        self.holder = holder_label(origin, self.instance)
        self._on_lease = on_lease
        self._keeper: LeaseKeeper | None = None
        self._keeper_guard = threading.Lock()

    def _on_response(self, system: str, status: int) -> None:
        self.observer.http_response(system, status)
        reading = self.planning.reading
        if reading is not None:
            self.progress.advance(READ_TARGET, reading)

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = open_state_store(self.config.state, self.environ, clock=self.clock)
        return self._store

    def now(self) -> datetime:
        """Now on the state store's clock (`StateStore.clock`): every time a run records
        or compares with what another process recorded (runs, missing-since, baselines)
        is on it. `clock` is this host's, and the store's only on SQLite."""
        return self.store.clock()

    @property
    def leases(self) -> LeaseKeeper:
        """This engine's leases (`orgsync.store.leases`): which targets it holds now."""
        with self._keeper_guard:
            if self._keeper is None:
                self._keeper = self.store.lease_keeper(
                    self.holder,
                    self.config.state.lease_ttl,
                    instance=self.instance,
                    on_change=self._on_lease,
                )
            return self._keeper

    def close(self) -> None:
        with self._keeper_guard:
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def selected_targets(self, options: RunOptions) -> list[TargetConfig]:
        """`--target`, or every target; with reviewed plans exactly the reviewed targets."""
        reviewed = options.reviewed_plans
        if reviewed is None:
            return (
                [self.config.target(options.target)]
                if options.target
                else list(self.config.targets)
            )
        configured = [t.name for t in self.config.targets]
        unknown = sorted(set(reviewed) - set(configured))
        if unknown:
            raise ConfigError(
                f"--plan: the plan is for target(s) {', '.join(unknown)}, which the configuration "
                f"does not have (configured: {', '.join(configured)}); nothing was applied"
            )
        if options.target is not None and options.target not in reviewed:
            raise ConfigError(
                f"--target {options.target}: the reviewed plan has no plan for this target "
                f"(it has {', '.join(sorted(reviewed))}); nothing was applied"
            )
        chosen = {options.target} if options.target else set(reviewed)
        return [t for t in self.config.targets if t.name in chosen]

    def build_source(self) -> Source:
        from orgsync.interrupt import ReadInterrupt

        return self.source_factory(self.config, self.environ, interrupt=ReadInterrupt(self.stop))

    def read_source(self, source: Source | None = None) -> SourceSnapshot:
        source = source if source is not None else self.build_source()
        self.progress.begin(READ_SOURCE, None, None)
        snapshot = source.read()
        people, rejected = screen(snapshot)
        self.progress.end(READ_SOURCE, None, len(snapshot.people), "people")
        for record in rejected:
            log.warning("source.record_rejected", source_id=record.source_id, reason=record.reason)
        limits = safety_limits(self.config)
        # Only people orgsync can act on count: a directory whose emails all broke at
        # once (a mapping change) must stop the run, not shrink it.
        check_source_size(len(people), limits)
        self.observer.source_read(len(people))
        log.info(
            "source.read",
            people=len(people),
            groups=len(snapshot.groups),
            rejected=len(rejected),
        )
        return snapshot

    def run(self, options: RunOptions) -> list[TargetResult]:
        targets = self.selected_targets(options)
        mode = "dry-run" if options.dry_run else "sync"
        self.store  # noqa: B018 - an unusable state database stops the run before any read
        behind = None if options.dry_run else self.store.behind()
        if behind is not None:
            # A database restored from an older backup forgot whom orgsync invited since:
            # refused before any read, nothing written, not even a run row
            # (`orgsync.store.marks`); the daemon's readiness and notifications see it.
            log.error("state.behind", error=behind.summary)
            refused = [
                TargetResult(t.name, EXIT_ERROR, "failed", error=str(behind)) for t in targets
            ]
            for result in refused:
                self.observer.run_finished(result.target, "failed", held=0, seconds=0.0)
                self.on_finished(result, options)
            return refused
        started = self.now()
        if options.incremental and not options.subjects and options.reviewed_plans is None:
            once = SourceOnce(self.build_source, self.read_source)
            try:
                results = [self._incremental(t, options, started, once) for t in targets]
            finally:
                once.close()
            for result in results:
                self.on_finished(result, options)
            self._prune()
            return results
        kind = TARGETED if options.subjects else FULL
        # Who held each target's lease before the source is read: a writer that takes a
        # target after another one wrote it re-reads the source (`_reread`).
        marks = (
            {}
            if options.dry_run
            else {t.name: LeaseMark(self.store.lease_mark(t.name)) for t in targets}
        )
        try:
            source = self.build_source()
            cursor = source.change_cursor() if isinstance(source, DetectsChanges) else None
            snapshot = self.read_source(source)
        except Interrupted as error:
            log.warning("source.interrupted", error=str(error))
            results = [
                self._ended_early(
                    t.name, mode, options, started, status="interrupted", error=str(error)
                )
                for t in targets
            ]
        except OrgsyncError as error:
            log.error("source.failed", error=str(error))
            results = [
                self._ended_early(t.name, mode, options, started, status="failed", error=str(error))
                for t in targets
            ]
        else:
            results = self._reviewed_mismatch(targets, snapshot, options, started) or [
                self._run_target(
                    t,
                    snapshot,
                    options,
                    self.passes.full(t, snapshot, cursor) if kind == FULL else Pass(kind),
                    mark=marks.get(t.name),
                )
                for t in targets
            ]
        for result in results:
            self.on_finished(result, options)
        self._prune()
        return results

    def _reviewed_mismatch(
        self,
        targets: list[TargetConfig],
        snapshot: SourceSnapshot,
        options: RunOptions,
        started: datetime,
    ) -> list[TargetResult] | None:
        """A reviewed plan of several targets is applied whole or not at all: one review
        may move a person between organizations, and one side applied alone could leave
        them in neither. Every target's fresh plan is compared before any is applied (each
        is compared again as it is applied); the failed results when one differs, else
        None."""
        if options.reviewed_plans is None or options.dry_run or len(targets) < 2:
            return None
        checking = replace(options, dry_run=True)
        failed: dict[str, str] = {}
        for target in targets:
            result = self._attempt(target, snapshot, checking, None, store=self.store, lease=None)
            if result.exit_code == EXIT_ERROR:
                failed[target.name] = result.error or result.status
        if not failed:
            return None
        names = ", ".join(sorted(failed))
        return [
            self._ended_early(
                t.name,
                "sync",
                options,
                started,
                status="failed",
                error=failed.get(t.name)
                or f"not applied: the reviewed plan is applied whole or not at all, and {names} "
                "no longer matches",
            )
            for t in targets
        ]

    def _incremental(
        self, config: TargetConfig, options: RunOptions, started: datetime, once: SourceOnce
    ) -> TargetResult:
        """One target's incremental pass (orgsync.passes decides what it plans)."""
        mode = "dry-run" if options.dry_run else "sync"
        try:
            mark = None if options.dry_run else LeaseMark(self.store.lease_mark(config.name))
            decided = self.passes.decide(self.store, config, options, once)

            def again() -> tuple[SourceSnapshot | None, RunOptions, Pass]:
                # Decided again under the lease, from the baseline and source as they are.
                log.info("source.reread", target=config.name, reason="another writer held it")
                fresh = SourceOnce(self.build_source, self.read_source)
                try:
                    redone = self.passes.decide(self.store, config, options, fresh)
                finally:
                    fresh.close()
                return redone.snapshot, redone.options, redone.pass_

            return self._run_target(
                config, decided.snapshot, decided.options, decided.pass_, mark=mark, again=again
            )
        except Interrupted as error:
            log.warning("source.interrupted", error=str(error))
            status, message = "interrupted", str(error)
        except OrgsyncError as error:
            log.error("source.failed", error=str(error))
            status, message = "failed", str(error)
        return self._ended_early(config.name, mode, options, started, status=status, error=message)

    def _ended_early(
        self,
        target: str,
        mode: str,
        options: RunOptions,
        started: datetime,
        *,
        status: str,
        error: str,
    ) -> TargetResult:
        """A run that ended before it reached the target (the source failed or stopped)."""
        # Counted like any other run: an alert on failed runs must see a source that fails.
        self.observer.run_finished(
            target, status, held=0, seconds=(self.now() - started).total_seconds()
        )
        run_id = self.store.record_run(
            target,
            mode,
            options.trigger,
            origin=self.origin,
            started_at=started,
            outcome=Outcome(
                status=status, exit_code=EXIT_ERROR, summary={}, checksum=None, error=error
            ),
        )
        return TargetResult(target, EXIT_ERROR, status, run_id=run_id, error=error)

    def _run_target(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot | None,
        options: RunOptions,
        pass_: Pass,
        *,
        mark: LeaseMark | None = None,
        again: Callable[[], tuple[SourceSnapshot | None, RunOptions, Pass]] | None = None,
    ) -> TargetResult:
        """`snapshot` None: an incremental pass with nothing to plan (no target call).
        `mark`: the target's lease row before `snapshot` was read (None: not checked);
        `again`: what the run plans when another writer held the target since (the
        source read again under the lease; a full or targeted run's by default)."""
        mode = "dry-run" if options.dry_run else "sync"
        bound = log.bind(target=config.name, mode=mode)
        started = time.monotonic()
        if options.dry_run:
            began = self.now()
            result = self._attempt(config, snapshot, options, None, store=self.store, lease=None)
            result.pass_kind, result.pass_reason = pass_.kind, pass_.reason
            result.run_id = self.store.record_run(
                config.name,
                mode,
                options.trigger,
                origin=self.origin,
                started_at=began,
                outcome=outcome_of(result),
            )
        else:
            try:
                with self._lease(config.name) as lease:
                    # Every write of the run is fenced by its lease: refused, nothing
                    # written, once another holder took the target over.
                    store = self.store.fenced(lease)
                    if mark is not None and _written_since(mark, lease):
                        try:
                            if again is not None:
                                snapshot, options, pass_ = again()
                            else:
                                snapshot, pass_ = self._reread(config, pass_)
                        except OrgsyncError as error:
                            log.error("source.failed", error=str(error))
                            return self._ended_early(
                                config.name,
                                mode,
                                options,
                                self.now(),
                                status="failed",
                                error=str(error),
                            )
                    store.recover_interrupted(config.name)
                    run_id = store.start_run(config.name, mode, options.trigger, origin=self.origin)
                    result = self._attempt(
                        config, snapshot, options, run_id, store=store, lease=lease
                    )
                    result.pass_kind, result.pass_reason = pass_.kind, pass_.reason
                    if result.exit_code == EXIT_OK and pass_.on_clean is not None:
                        # Under the lease: the baseline is the state this writer left.
                        pass_.on_clean(store)
                    elif result.exit_code != EXIT_OK and pass_.kind == FULL:
                        # What it left undone concerns people no change may touch again:
                        # the next pass must be full too.
                        store.invalidate_baseline(config.name)
                    elif result.exit_code != EXIT_OK and pass_.on_unclean is not None:
                        # An incremental pass: its people are touched again next time.
                        pass_.on_unclean(store)
                    # Finished before the lease is released: a `running` row never outlives
                    # its writer's hold on the target.
                    ended = outcome_of(result)
                    store.finish_run(
                        run_id,
                        status=ended.status,
                        exit_code=ended.exit_code,
                        summary=dict(ended.summary),
                        checksum=ended.checksum,
                        error=ended.error,
                        held=ended.held,
                        failed=ended.failed,
                        waiting=ended.waiting,
                        pass_kind=ended.pass_kind,
                        pass_reason=ended.pass_reason,
                    )
            except TargetBusy as busy:
                bound.warning("run.busy", holder=busy.lease.holder if busy.lease else None)
                return TargetResult(config.name, EXIT_ERROR, BUSY, error=str(busy))
            except LeaseLost as lost:
                # Another holder has the target: nothing more is recorded by this run (the
                # journal refuses it); its `running` row is the new holder's to close.
                bound.error("run.lease_lost", error=str(lost))
                self.observer.run_finished(
                    config.name, LEASE_LOST, held=0, seconds=time.monotonic() - started
                )
                return TargetResult(config.name, EXIT_ERROR, LEASE_LOST, error=str(lost))
            except StateError as error:
                # The state database itself failed (busy beyond its timeout, gone bad):
                # nowhere to record the run; the next one tries again.
                bound.error("run.state_failed", error=str(error))
                self.observer.run_finished(
                    config.name, "failed", held=0, seconds=time.monotonic() - started
                )
                return TargetResult(config.name, EXIT_ERROR, "failed", error=str(error))
        plan_ = result.plan
        bound.info("run.finished", status=result.status, exit_code=result.exit_code)
        self.observer.run_finished(
            config.name,
            result.status,
            held=len(plan_.held) if plan_ else 0,
            seconds=time.monotonic() - started,
        )
        return result

    def _reread(self, config: TargetConfig, pass_: Pass) -> tuple[SourceSnapshot, Pass]:
        """The source again, under the lease: another writer held the target after this
        run read it, and may have applied a newer source (a newcomer invited, whom the
        older snapshot does not know and would remove; a leaver it would invite again)."""
        log.info("source.reread", target=config.name, reason="another writer held the target")
        source = self.build_source()
        cursor = source.change_cursor() if isinstance(source, DetectsChanges) else None
        snapshot = self.read_source(source)
        if pass_.kind == FULL:
            pass_ = self.passes.full(config, snapshot, cursor)
        return snapshot, pass_

    def _attempt(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot | None,
        options: RunOptions,
        run_id: str | None,
        *,
        store: StateStore,
        lease: HeldLease | None,
    ) -> TargetResult:
        """Plan (and apply); an error becomes a failed result, a stop an interrupted one,
        a lost lease `LeaseLost` (nothing of it may be recorded)."""
        if snapshot is None:  # an incremental pass that found nothing to do
            empty = Plan.build(target=config.name, generated_at=self.now(), operations=[])
            return TargetResult(config.name, EXIT_OK, "ok", run_id=run_id, plan=empty)
        try:
            return self._plan_and_apply(config, snapshot, options, run_id, store=store, lease=lease)
        except LeaseLost:
            raise
        except Interrupted as error:
            log.warning("run.interrupted", target=config.name, error=str(error))
            return TargetResult(
                config.name, EXIT_ERROR, "interrupted", run_id=run_id, error=str(error)
            )
        except OrgsyncError as error:
            log.error("run.failed", target=config.name, error=str(error))
            return TargetResult(config.name, EXIT_ERROR, "failed", run_id=run_id, error=str(error))

    def _prune(self) -> None:
        """Forget runs older than `[state] keep_runs`, with their journal."""
        keep = self.config.state.keep_runs
        try:
            pruned = self.store.prune_runs(self.now() - keep)
        except StateError as error:  # a busy database: the next run prunes
            log.warning("runs.prune_failed", error=str(error))
            return
        if pruned:
            log.info("runs.pruned", runs=pruned, older_than_days=keep.total_seconds() / 86400)

    def try_lease(self, target: str, *, patience: float = 0.0, limit: int | None = None) -> bool:
        """Become `target`'s writer (`orgsync.store.leases`); False while another holder
        has it, or while this engine already holds `limit` other targets (a replica's
        fair share).

        The daemon takes it before a run so that a busy target is a reason to wait, not a
        failed run; `run` then keeps it and releases it at the end. Taking it again while
        holding it extends the lease.
        """
        return self.leases.try_take(target, patience=patience, limit=limit) is not None

    def release_lease(self, target: str) -> None:
        """Stop being `target`'s writer (a no-op if this engine is not)."""
        if self._keeper is not None:
            self._keeper.release(target)

    def held_targets(self) -> frozenset[str]:
        """The targets this engine holds a valid lease on now."""
        return self._keeper.held_targets() if self._keeper is not None else frozenset()

    @contextmanager
    def _lease(self, target: str) -> Iterator[HeldLease]:
        lease = self.leases.try_take(target, patience=LOCK_PATIENCE)
        if lease is None:
            raise TargetBusy(target, self.store.lease_holder(target))
        try:
            yield lease
        finally:
            self.release_lease(target)

    def _plan_and_apply(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot,
        options: RunOptions,
        run_id: str | None,
        *,
        store: StateStore,
        lease: HeldLease | None,
    ) -> TargetResult:
        from orgsync.interrupt import ReadInterrupt

        interrupt = ReadInterrupt(self.stop)
        planning = self.planning
        target = self.target_factory(config, self.environ, interrupt=interrupt)
        if isinstance(target, LearnsForms):  # SCIM: ask first in the forms that worked
            learned = store.learned_forms(config.name)
            target.use_learned_forms(learned, partial(store.learn_form, config.name))
        try:
            memory = store.memory(config.name)
            observed, desired, _ = planning.read_target(
                config,
                snapshot,
                target,
                memory=memory,
                subjects=options.subjects,
            )
            # Before anything is planned: is the memory about the organization just read?
            store.check_identity(
                config.name,
                seen_identity(config.type, config.base_url, target),
                record=run_id is not None,
            )
            narrow = isinstance(target, ReadsPeople) and bool(options.subjects)
            limits = safety_limits(self.config)  # the guards a slice must not slip past
            scoped = scope(config.name, desired, observed, memory, options, limits=limits)
            if narrow and scoped and needs_invitations(scoped) and isinstance(target, ReadsPeople):
                # Only a person who is not a wanted member can be invited or lose one.
                observed = replace(observed, invites=target.read_invitations())
                scoped = scope(config.name, desired, observed, memory, options, limits=limits)
            if scoped is None and narrow:
                # A named person is an owner: the last-owner rule needs every owner, and
                # no API here lists owners alone, so read and plan the whole organization.
                observed, desired, _ = planning.read_target(config, snapshot, target, memory=memory)
                narrow = False
            if options.only_must_exist:
                unknown = unknown_subjects(options.subjects, desired, observed, memory)
                if unknown:
                    raise ConfigError(
                        f"--only {' '.join(unknown)}: no such person in the source, in "
                        f"{config.name} or in orgsync's memory; nothing was planned or changed"
                    )
            # The gate's ratios stay measured against everyone orgsync manages: counted
            # from the state database when the organization was read for a few people.
            population = (
                managed_in_memory(memory, desired)
                if narrow
                else planning.population(observed, memory, desired)
            )
            if options.subjects and not options.incremental:
                # Named people only: the gate must not judge their removals as the few
                # they are while the source lost many (an incremental pass names every
                # change, its removals are a full pass's).
                population = replace(population, named=True)
            fresh = planning.make_plan(
                config,
                scoped.desired if scoped else desired,
                scoped.observed if scoped else observed,
                target,
                options,
                memory=scoped.memory if scoped else memory,
                population=population,
            )
            reviewed = (options.reviewed_plans or {}).get(config.name)
            if options.reviewed_plans is not None and reviewed is None:
                raise ConfigError(f"the reviewed plan has no plan for {config.name}")
            if reviewed is not None:
                check_reviewed(reviewed, fresh)
            notes = self._restore_notes(config.name, snapshot, observed, memory)
            if notes:
                fresh = fresh.model_copy(update={"warnings": (*fresh.warnings, *notes)})
            if options.dry_run or run_id is None:
                return dry_result(config.name, fresh, run_id)
            # From here on the calls are the apply's: a stop lets those in flight finish.
            interrupt.pause()
            store.record_plan(run_id, fresh)
            planning.remember(
                store,
                config.name,
                scoped.desired if scoped else desired,
                observed,
                fresh,
                memory=memory,
                scope=scoped.keys if scoped else None,
                groups_read=not narrow,
            )
            if isinstance(target, PlanAware):
                # Knowing the plan, SCIM carries many member changes per PATCH request.
                target.prepare(fresh.operations)
            applier = Applier(
                target,
                LinkingJournal(store.journal(run_id), self.store, config.name),
                ApplySettings(max_concurrency=config.max_concurrency, retry=retry_settings(config)),
                stop=self.stop,
                check_lease=lease.check if lease is not None else None,
                on_outcome=partial(self._operation_finished, config.name),
            )
            self.progress.planned(fresh)
            self.progress.begin(APPLY, config.name, len(fresh.operations))
            report = applier.apply(fresh)
            self.progress.end(APPLY, config.name, len(report.outcomes), "operations")
        finally:
            target.close()
        return sync_result(config.name, fresh, report, run_id)

    def _restore_notes(
        self, target: str, snapshot: SourceSnapshot, observed: TargetSnapshot, memory: Memory
    ) -> list[str]:
        """The plan warnings of a restored state database: that it is behind its mark (a
        dry run: a sync was refused), and the people it may have forgotten, listed while
        it is behind and after `state accept-restore` until the target's first full sync
        that ended clean (`orgsync.core.restore`)."""
        behind = self.store.behind()
        notes = [behind.summary] if behind is not None else []
        if behind is None:
            accepted = self.store.restore_accepted_at()
            if accepted is None or any(
                run.started_at >= accepted and run.pass_kind == FULL and run.status == "ok"
                for run in self.store.runs(50, target, mode="sync")
            ):
                return notes
        review = review_warning(forgotten_leavers(snapshot, observed, memory))
        return [*notes, review] if review is not None else notes

    def _operation_finished(self, target: str, outcome: ApplyOutcome) -> None:
        self.observer.operation_finished(target, outcome.operation.op, outcome.status.value)
        self.progress.advance(APPLY, target)
