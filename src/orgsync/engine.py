"""The engine: the one place that wires source, rules, planner, safety, applier and store.

`Engine.run(options)` reads the source once, then for each selected target: takes the
target's lease (sync only), reads the organization, plans, holds what the safety gate
holds, applies (sync only), records links and run history, and returns one
`TargetResult` per target. The CLI and the daemon call it; adapters never call each other.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Protocol, runtime_checkable

import structlog

from orgsync.applier import Applier, ApplyReport, ApplySettings
from orgsync.config import Config, TargetConfig
from orgsync.core.errors import ConfigError, OrgsyncError, StateError
from orgsync.core.model import (
    Capabilities,
    EmailKey,
    Memory,
    RoleCatalog,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
    screen,
)
from orgsync.core.plan import (
    AdoptGroup,
    CreateGroup,
    CreateUser,
    DeleteGroup,
    Invite,
    Operation,
    Plan,
    RemoveMember,
    RenameGroup,
    RevokeInvite,
    SuspendMember,
    UpdateUser,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.ports import OperationJournal, OperationStatus, Source, Target
from orgsync.core.rules import DesiredState, GroupRule, MembershipRules, RoleRule, desired_state
from orgsync.core.safety import (
    SafetyLimits,
    check_source_size,
    hold_group_member_removals,
    hold_mass_removals,
    managed_population,
)
from orgsync.core.scope import Scoped, Subjects, restrict
from orgsync.factories import build_source, build_target, retry_settings
from orgsync.store import StateStore

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_PENDING, EXIT_HELD = 0, 1, 2, 3
_SEVERITY = {EXIT_OK: 0, EXIT_PENDING: 1, EXIT_HELD: 2, EXIT_ERROR: 3}


def worst_exit_code(codes: Sequence[int]) -> int:
    """SPEC: with several targets the worst result decides the process's exit code."""
    return max(codes, key=_SEVERITY.__getitem__, default=EXIT_OK)


@dataclass(frozen=True, slots=True)
class RunOptions:
    dry_run: bool = True
    target: str | None = None
    allow_removals: int | None = None
    reviewed_plans: Mapping[str, Plan] | None = None
    """`sync --plan FILE`: per target, the plan a person reviewed; refused if it changed."""
    trigger: str = "cli"
    only_emails: frozenset[str] = frozenset()
    only_source_ids: frozenset[str] = frozenset()
    """A targeted reconcile (a webhook naming people): plan for these people only. Empty
    both: the whole organization. See `orgsync.core.scope`."""

    @property
    def subjects(self) -> Subjects:
        return Subjects.of(self.only_emails, self.only_source_ids)


@dataclass(slots=True)
class TargetResult:
    target: str
    exit_code: int
    status: str
    run_id: str | None = None
    plan: Plan | None = None
    report: ApplyReport | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@runtime_checkable
class PlanAware(Protocol):
    """A target that wants the plan before it is applied (to batch calls)."""

    def prepare(self, operations: Sequence[Operation]) -> None: ...


TargetFactory = Callable[[TargetConfig, Mapping[str, str]], Target]
SourceFactory = Callable[[Config, Mapping[str, str]], Source]


class RunObserver(Protocol):
    """What the engine reports while it works (the daemon's metrics implement it).

    Plain callbacks, so that the engine knows nothing of Prometheus; each must be cheap
    and must not raise.
    """

    def source_read(self, people: int) -> None: ...
    def http_response(self, system: str, status: int) -> None: ...
    def operation_finished(self, target: str, op: str, result: str) -> None: ...
    def run_finished(self, target: str, status: str, *, held: int, seconds: float) -> None: ...


class _Unobserved:
    def source_read(self, people: int) -> None:
        pass

    def http_response(self, system: str, status: int) -> None:
        pass

    def operation_finished(self, target: str, op: str, result: str) -> None:
        pass

    def run_finished(self, target: str, status: str, *, held: int, seconds: float) -> None:
        pass


class _Halt(threading.Event):
    """Stops one run's applier: set when the run lost its lease, or on shutdown."""

    def __init__(self, shutdown: threading.Event) -> None:
        super().__init__()
        self._shutdown = shutdown

    def is_set(self) -> bool:
        return super().is_set() or self._shutdown.is_set()


def membership_rules(config: TargetConfig, capabilities: Capabilities) -> MembershipRules:
    return MembershipRules(
        roleless=not capabilities.roles,
        scope_groups=config.scope_groups,
        roles=tuple(RoleRule(r.group, r.role) for r in config.roles),
        default_role=config.default_role,
        groups=tuple(GroupRule(g.source, g.name, g.roles) for g in config.groups),
    )


def check_capabilities(config: TargetConfig, capabilities: Capabilities) -> None:
    """A configuration asking a target for more than it can do is refused, by rule."""
    if config.groups and not capabilities.groups:
        raise ConfigError(
            f"targets.{config.name}.groups[0]: group rules need a target with groups, "
            f"and {config.type} targets have none"
        )


def check_roles(config: TargetConfig, catalog: RoleCatalog) -> None:
    """Every role the configuration names must exist in the target's catalog."""
    named = [(f"targets.{config.name}.roles[{i}].role", r.role) for i, r in enumerate(config.roles)]
    if config.default_role is not None:
        named.append((f"targets.{config.name}.default_role", config.default_role))
    for key, role in named:
        if role not in catalog.order:
            raise ConfigError(
                f"{key}: role {role!r} is not in the target's role catalog "
                f"({', '.join(catalog.order)})"
            )
    for index, rule in enumerate(config.groups):
        for role in rule.roles:
            if role not in catalog.assignable:
                known = ", ".join(sorted(catalog.assignable)) or "none"
                raise ConfigError(
                    f"targets.{config.name}.groups[{index}].roles: role {role!r} is not in "
                    f"the target's role catalog (roles a group can hold: {known})"
                )


_PERSON_REMOVALS = (RemoveMember, SuspendMember, RevokeInvite)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class _LinkingJournal:
    """Journal that also remembers, before the call, whom orgsync is about to invite.

    Written before the call so that a crash between the server creating the invitation and
    the journal recording it still leaves the person marked as managed by orgsync.
    """

    def __init__(self, inner: OperationJournal, store: StateStore, target: str) -> None:
        self.inner, self.store, self.target = inner, store, target

    def started(self, seq: int, operation: Operation) -> None:
        if isinstance(operation, Invite | CreateUser):
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
            )
        self.inner.started(seq, operation)

    def finished(
        self,
        seq: int,
        operation: Operation,
        status: OperationStatus,
        *,
        detail: str | None = None,
        object_id: str | None = None,
    ) -> None:
        self.inner.finished(seq, operation, status, detail=detail, object_id=object_id)
        if status is not OperationStatus.DONE:
            return
        if isinstance(operation, Invite):
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
                invite_id=object_id,
            )
        elif isinstance(operation, UpdateUser) and operation.previous_email is not None:
            self.store.unlink(self.target, normalize_email(operation.previous_email))
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
                member_id=operation.user_id,
            )
        elif isinstance(operation, CreateUser):
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
                member_id=object_id,
            )
        elif isinstance(operation, (RemoveMember, SuspendMember, RevokeInvite)):
            self.store.unlink(self.target, normalize_email(operation.email))
        elif isinstance(operation, (CreateGroup, AdoptGroup)):
            group_id = object_id or operation.group_id
            if group_id is not None and operation.source_group_id is not None:
                self.store.own_group(
                    self.target,
                    group_id=group_id,
                    source_group_id=operation.source_group_id,
                    name=operation.group,
                    how="created" if isinstance(operation, CreateGroup) else "adopted",
                )
        elif isinstance(operation, RenameGroup) and operation.group_id is not None:
            self.store.rename_owned_group(self.target, operation.group_id, operation.group)
        elif isinstance(operation, DeleteGroup) and operation.group_id is not None:
            self.store.disown_group(self.target, operation.group_id)


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        store: StateStore | None = None,
        source_factory: SourceFactory = build_source,
        target_factory: TargetFactory | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stop: threading.Event | None = None,
        observer: RunObserver | None = None,
    ) -> None:
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self._store = store
        self.observer: RunObserver = observer or _Unobserved()
        self.source_factory = source_factory
        self.target_factory: TargetFactory = target_factory or partial(
            build_target, on_response=self.observer.http_response
        )
        self.clock = clock
        self.stop = stop or threading.Event()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore.open(self.config.state.path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def selected_targets(self, name: str | None) -> list[TargetConfig]:
        return [self.config.target(name)] if name else list(self.config.targets)

    def read_source(self) -> SourceSnapshot:
        snapshot = self.source_factory(self.config, self.environ).read()
        people, rejected = screen(snapshot)
        for record in rejected:
            log.warning("source.record_rejected", source_id=record.source_id, reason=record.reason)
        limits = self.safety_limits()
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

    def safety_limits(self) -> SafetyLimits:
        safety = self.config.safety
        return SafetyLimits(
            max_removals=safety.max_removals,
            max_removal_ratio=safety.max_removal_ratio,
            min_source_users=safety.min_source_users,
        )

    def run(self, options: RunOptions) -> list[TargetResult]:
        targets = self.selected_targets(options.target)
        mode = "dry-run" if options.dry_run else "sync"
        try:
            snapshot = self.read_source()
        except OrgsyncError as error:
            log.error("source.failed", error=str(error))
            return [self._failed_run(t.name, mode, options.trigger, str(error)) for t in targets]
        return [self._run_target(t, snapshot, options) for t in targets]

    def _failed_run(self, target: str, mode: str, trigger: str, error: str) -> TargetResult:
        run_id = self.store.start_run(target, mode, trigger)
        self.store.finish_run(
            run_id, status="failed", exit_code=EXIT_ERROR, summary={}, checksum=None, error=error
        )
        return TargetResult(target, EXIT_ERROR, "failed", run_id=run_id, error=error)

    def _run_target(
        self, config: TargetConfig, snapshot: SourceSnapshot, options: RunOptions
    ) -> TargetResult:
        mode = "dry-run" if options.dry_run else "sync"
        bound = log.bind(target=config.name, mode=mode)
        started = time.monotonic()
        run_id = self.store.start_run(config.name, mode, options.trigger)
        try:
            with self._lease(config.name, exclusive=not options.dry_run) as halt:
                result = self._plan_and_apply(config, snapshot, options, run_id, halt)
        except OrgsyncError as error:
            bound.error("run.failed", error=str(error))
            result = TargetResult(
                config.name, EXIT_ERROR, "failed", run_id=run_id, error=str(error)
            )
        plan_ = result.plan
        report = result.report
        self.store.finish_run(
            run_id,
            status=result.status,
            exit_code=result.exit_code,
            summary=plan_.summary if plan_ else {},
            checksum=plan_.checksum if plan_ else None,
            error=result.error,
            held=len(plan_.held) if plan_ else 0,
            failed=len(report.failed) if report else 0,
            waiting=len(plan_.waiting) if plan_ else 0,
        )
        bound.info("run.finished", status=result.status, exit_code=result.exit_code)
        self.observer.run_finished(
            config.name,
            result.status,
            held=len(plan_.held) if plan_ else 0,
            seconds=time.monotonic() - started,
        )
        return result

    def try_lease(self, target: str) -> bool:
        """Take (or extend) `target`'s lease for this engine; False while another holds it.

        The daemon takes the lease before a run so that a busy target is a reason to wait,
        not a failed run; `run` then extends it and releases it at the end.
        """
        ttl = self.config.state.lease_ttl
        if self.store.acquire_lease(target, self.holder, ttl):
            return True
        self._break_dead_lease(target)
        return self.store.acquire_lease(target, self.holder, ttl)

    @contextmanager
    def _lease(self, target: str, *, exclusive: bool) -> Iterator[threading.Event]:
        halt = _Halt(self.stop)
        if not exclusive:
            yield halt
            return
        if not self.try_lease(target):
            holder = self.store.lease_holder(target)
            who = f"{holder.holder} until {holder.expires_at:%Y-%m-%d %H:%M:%S}Z" if holder else "?"
            raise StateError(f"another orgsync is syncing {target} ({who}); try again later")
        try:
            self.store.recover_interrupted(target)
            with self._keep_lease(target, halt):
                yield halt
        finally:
            self.store.release_lease(target, self.holder)

    @contextmanager
    def _keep_lease(self, target: str, halt: threading.Event) -> Iterator[None]:
        """Renew the lease every third of its TTL for as long as the run holds it.

        A run longer than the TTL (a first sync under a rate limit) would otherwise lose
        it half-way, and a second orgsync waiting for it would start writing to the same
        organization. A lease that could not be renewed halts the applier.
        """
        ttl = self.config.state.lease_ttl
        done = threading.Event()

        def renew() -> None:
            while not done.wait(ttl.total_seconds() / 3):
                try:
                    if not self.store.renew_lease(target, self.holder, ttl):
                        log.error("lease.lost", target=target, holder=self.holder)
                        halt.set()
                        return
                except StateError as error:  # a busy database: try again next time
                    log.warning("lease.renew_failed", target=target, error=str(error))

        keeper = threading.Thread(target=renew, name=f"lease:{target}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _break_dead_lease(self, target: str) -> None:
        """Free a lease whose holder was a process on this host that no longer exists.

        A sync killed with SIGKILL cannot release its lease; waiting for the TTL would
        block the very rerun that repairs what it left half done. Holders on other hosts
        are left to expire: their liveness cannot be checked from here.
        """
        lease = self.store.lease_holder(target)
        if lease is None:
            return
        host, _, rest = lease.holder.partition(":")
        pid_text = rest.partition(":")[0]
        if host != socket.gethostname() or not pid_text.isdigit():
            return
        if _process_alive(int(pid_text)):
            return
        log.warning("lease.broken", target=target, holder=lease.holder, reason="holder is dead")
        self.store.release_lease(target, lease.holder)

    def _plan_and_apply(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot,
        options: RunOptions,
        run_id: str,
        halt: threading.Event,
    ) -> TargetResult:
        target = self.target_factory(config, self.environ)
        try:
            observed = target.read()
            check_capabilities(config, target.capabilities)
            check_roles(config, observed.roles)
            rules = membership_rules(config, target.capabilities)
            desired = desired_state(snapshot, rules, observed.roles)
            memory = self.store.memory(config.name)
            scoped = self._scope(config.name, desired, observed, memory, options)
            fresh = self.make_plan(
                config,
                scoped.desired if scoped else desired,
                scoped.observed if scoped else observed,
                target,
                options,
                memory=scoped.memory if scoped else memory,
                population=managed_population(observed),
            )
            reviewed = (options.reviewed_plans or {}).get(config.name)
            if reviewed is not None and reviewed.checksum != fresh.checksum:
                raise OrgsyncError(
                    f"the reviewed plan for {config.name} ({reviewed.checksum}) no longer matches "
                    f"a fresh plan ({fresh.checksum}); nothing was applied: review again"
                )
            if options.dry_run:
                return self._dry_result(config.name, fresh, run_id)
            self.store.record_plan(run_id, fresh)
            self._remember(
                config.name,
                scoped.desired if scoped else desired,
                observed,
                fresh,
                scope=scoped.keys if scoped else None,
            )
            if isinstance(target, PlanAware):
                # Knowing the plan, SCIM carries many member changes per PATCH request.
                target.prepare(fresh.operations)
            applier = Applier(
                target,
                _LinkingJournal(self.store.journal(run_id), self.store, config.name),
                ApplySettings(max_concurrency=config.max_concurrency, retry=retry_settings(config)),
                stop=halt,
                on_outcome=lambda o: self.observer.operation_finished(
                    config.name, o.operation.op, o.status.value
                ),
            )
            report = applier.apply(fresh)
        finally:
            target.close()
        return self._sync_result(config.name, fresh, report, run_id)

    @staticmethod
    def _scope(
        target: str,
        desired: DesiredState,
        observed: TargetSnapshot,
        memory: Memory,
        options: RunOptions,
    ) -> Scoped | None:
        """The slice of a targeted reconcile, or None to plan the whole organization."""
        subjects = options.subjects
        if not subjects:
            return None
        scoped = restrict(desired, observed, memory, subjects)
        if scoped is None:
            log.info("run.widened", target=target, reason="a named person is an owner")
        return scoped

    def make_plan(
        self,
        config: TargetConfig,
        desired: DesiredState,
        observed: TargetSnapshot,
        target: Target,
        options: RunOptions,
        *,
        memory: Memory | None = None,
        population: int | None = None,
    ) -> Plan:
        """Plan and gate; `memory` and `population` default to the store's and `observed`'s.

        A targeted plan passes the whole organization's `population`: the removal ratio
        is measured against everyone, not against the few people in the slice.
        """
        safety = self.config.safety
        policy = RemovalPolicy(
            on_removal=config.on_removal,
            remove_unmanaged=safety.remove_unmanaged,
            protected=frozenset(normalize_email(e) for e in safety.protected),
            removal_grace=safety.removal_grace,
        )
        draft = plan(
            PlanInput(
                target=config.name,
                desired=desired,
                observed=observed,
                memory=memory if memory is not None else self.store.memory(config.name),
                policy=policy,
                capabilities=target.capabilities,
                now=self.clock(),
            )
        )
        gated = hold_mass_removals(
            draft,
            population=population if population is not None else managed_population(observed),
            limits=self.safety_limits(),
            allow_removals=options.allow_removals,
        )
        return hold_group_member_removals(gated, limit=safety.max_group_member_removals)

    def _remember(
        self,
        target: str,
        desired: DesiredState,
        observed: TargetSnapshot,
        fresh: Plan,
        *,
        scope: frozenset[EmailKey] | None = None,
    ) -> None:
        """Link wanted people to the members they matched, and track who went missing.

        `scope`: a targeted plan decided about these people only; everybody else's
        missing-since clock is kept as it is.
        """
        by_email = {m.email_key: m for m in observed.members if m.email_key is not None}
        for key, wanted in desired.wanted.items():
            member = by_email.get(key)
            if member is not None:
                self.store.link(
                    target, email_key=key, source_id=wanted.source_id, member_id=member.id
                )
        leaving = [op for op in fresh.operations if isinstance(op, _PERSON_REMOVALS)]
        leaving += [h.operation for h in fresh.held if isinstance(h.operation, _PERSON_REMOVALS)]
        # Held removals keep their clock: the grace must not restart while a person waits
        # for a human to lift the guard.
        missing = [normalize_email(w.email) for w in fresh.waiting if w.group is None]
        missing += [normalize_email(op.email) for op in leaving]
        self.store.mark_missing(target, missing, self.clock())
        if scope is not None:
            missing += [k for k in self.store.memory(target).missing_since if k not in scope]
        self.store.clear_missing(target, keep_only=missing)
        present = {group.id for group in observed.groups}
        for group_id in self.store.owned_groups(target):
            if group_id not in present:
                self.store.disown_group(target, group_id)  # deleted by someone else

    @staticmethod
    def _dry_result(target: str, fresh: Plan, run_id: str) -> TargetResult:
        if fresh.held:
            code, status = EXIT_HELD, "held"
        elif fresh.operations:
            code, status = EXIT_PENDING, "changes-pending"
        else:
            code, status = EXIT_OK, "ok"
        return TargetResult(target, code, status, run_id=run_id, plan=fresh)

    @staticmethod
    def _sync_result(target: str, fresh: Plan, report: ApplyReport, run_id: str) -> TargetResult:
        if report.failed or report.aborted:
            failures = "; ".join(
                f"{o.operation.op} {o.operation.subject}: {o.detail}" for o in report.failed[:5]
            )
            error = report.aborted or f"{len(report.failed)} operation(s) failed: {failures}"
            return TargetResult(target, EXIT_ERROR, "failed", run_id, fresh, report, error)
        skipped = report.count(OperationStatus.SKIPPED)
        if skipped:
            # Shutdown (SIGTERM) or a lost lease: calls in flight finished, no more started.
            error = f"stopped before {skipped} operation(s) started; the next run does them"
            return TargetResult(target, EXIT_ERROR, "interrupted", run_id, fresh, report, error)
        if fresh.held:
            return TargetResult(target, EXIT_HELD, "held", run_id, fresh, report)
        return TargetResult(target, EXIT_OK, "ok", run_id, fresh, report)
