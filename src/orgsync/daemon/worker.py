"""One worker thread per target: the only place the daemon runs a sync.

The worker takes the next due request from its target's mailbox and runs it through
`Engine.run`. Before a run it becomes the target's writer itself (its kernel lock and
lease, see `orgsync.store.writer_lock`): a target another process is writing (a second
daemon, an operator's `orgsync sync`) is a reason to wait and try again, not a failed
run, so processes sharing one database take turns and never write to the organization at
the same time. Scheduled requests are incremental passes, except the first of the process
and the one after `full_interval` (the engine decides). A quarantined target's requests
wait for its next attempt, which is always a full reconcile. Quarantine reads the
daemon's own syncs only (`DAEMON_WRITES`).

Replicas (several daemons on one PostgreSQL database) share the targets: each target
falls to one live replica (`preferred()`, rendezvous hashing); another replica's scheduled
or start-up reconcile of it first waits `grace` (the lease TTL) for that one, and is
dropped when a good full run of the target by another daemon started within half the
interval before the request (and since this daemon started). A worker takes its target's
lease only while its daemon holds fewer than its fair share (`share()`: the targets over
the live replicas). So each pass, each replica reconciles about its share, and the
targets of a replica that died are taken by the others once its leases and registration
expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from orgsync.config import Config
from orgsync.core.errors import OrgsyncError
from orgsync.core.quarantine import DAEMON_WRITES, HISTORY, Quarantine, assess
from orgsync.daemon.queue import SCHEDULED, Mailbox, SyncRequest
from orgsync.engine import Engine
from orgsync.passes import FULL
from orgsync.results import RunOptions, TargetResult
from orgsync.store import StateStore

log = structlog.get_logger(__name__)

LEASE_RETRY_FIRST = 1.0
LEASE_RETRY_MAX = 30.0
SHARED_TRIGGERS = frozenset({"schedule", "startup"})
"""Requests for a full reconcile that any replica's full reconcile satisfies."""
_GOOD = frozenset({"ok", "held", "changes-pending"})


class TargetWorker:
    """Runs the syncs of one target, one at a time, until the mailbox is closed."""

    def __init__(
        self,
        target: str,
        *,
        config: Config,
        engine: Engine,
        store: StateStore,
        mailbox: Mailbox,
        stop: threading.Event,
        on_quarantine: Callable[[str, Quarantine], None],
        on_ran: Callable[[str, SyncRequest], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        share: Callable[[], int | None] = lambda: None,
        preferred: Callable[[], bool] = lambda: True,
        grace: float = 0.0,
    ) -> None:
        """`share()`: how many targets this daemon may hold at once (None: all);
        `preferred()`: whether the target falls to this replica, else a scheduled
        reconcile waits `grace` seconds for the replica it falls to."""
        self.target = target
        self.config = config
        self.engine = engine
        # The engine's own store, read here for quarantine and the lease's holder: the
        # engine is for runs, not a way to the database.
        self.store = store
        self.mailbox = mailbox
        self.stop = stop
        self.on_quarantine = on_quarantine
        self.on_ran = on_ran
        # The store's clock by default: run times written by other replicas (quarantine,
        # "done elsewhere") are compared with it, and it is the server's on PostgreSQL.
        self.clock = clock if clock is not None else store.clock
        self.share = share
        self.preferred = preferred
        self.grace = grace
        self._deferred = False
        self.started_at = self.clock()
        self.runs = 0
        self.reconciled = False
        """Whether a full pass of this process reached the organization: until one has,
        every pass is full (a start-up pass the source failed corrected nothing)."""
        self.busy_since: float | None = None
        self.standing = Quarantine()
        self._thread = threading.Thread(target=self._loop, name=f"worker:{target}", daemon=True)
        self._log = log.bind(target=target)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.standing = self._assess()
        self.on_quarantine(self.target, self.standing)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        lease_wait = LEASE_RETRY_FIRST
        while not self.stop.is_set():
            request = self.mailbox.take(not_before=self._not_before())
            if request is None or self.stop.is_set():
                return
            if self.standing.quarantined and not request.full:
                # The attempt that may end a quarantine checks the whole organization.
                request = request.widened()
            if self._defer(request):
                continue
            if self._done_elsewhere(request):
                lease_wait = LEASE_RETRY_FIRST
                self._deferred = False
                continue
            try:
                leased = self.engine.try_lease(self.target, limit=self.share())
            except OrgsyncError as error:  # the state database is busy or broken
                self._log.error("lease.unavailable", error=str(error))
                leased = False
            if not leased:
                holder = self._holder()
                self._log.info("run.waiting_for_lease", holder=holder, retry_in=lease_wait)
                self.mailbox.put(request, delay=lease_wait)
                lease_wait = min(lease_wait * 2, LEASE_RETRY_MAX)
                continue
            lease_wait = LEASE_RETRY_FIRST
            self._deferred = False
            self._run(request)

    def _run(self, request: SyncRequest) -> None:
        self.busy_since = time.monotonic()
        # Only the schedule's own passes are incremental. The first pass of this process
        # is full (start), and so is the attempt that may end a quarantine; the engine
        # makes any other one full when `full_interval` has passed or nothing it recorded
        # can be trusted. A webhook widened to the whole organization, or a scheduled
        # pass that absorbed a webhook's people, asks for them to be reconciled against
        # the organization as it is now, which an incremental pass would instead trust.
        incremental = (
            request.full
            and request.trigger == SCHEDULED
            and not request.absorbed
            and self.reconciled
            and not self.standing.quarantined
        )
        options = RunOptions(
            dry_run=False,
            target=self.target,
            trigger=request.trigger,
            only_emails=request.emails,
            only_source_ids=request.source_ids,
            incremental=incremental,
        )
        self._log.info(
            "run.starting",
            trigger=request.trigger,
            scope=("incremental" if incremental else "full") if request.full else "targeted",
            people=len(request.emails) + len(request.source_ids),
        )
        try:
            results = self.engine.run(options)
            # A full pass that reached the organization (planned, whatever came of it:
            # one that did not end clean leaves the next pass full by itself).
            self.reconciled = self.reconciled or any(r.pass_kind == FULL for r in results)
            self._after(results)
        except Exception:  # noqa: BLE001 - a bug must not kill the target's only worker
            self._log.exception("run.crashed")
        finally:
            try:
                # The engine releases the lease it used; this covers runs that ended
                # before taking it (the source failed), so it is never left held.
                self.engine.release_lease(self.target)
            except OrgsyncError as error:
                self._log.warning("lease.release_failed", error=str(error))
            self.busy_since = None
            self.runs += 1
            if self.on_ran is not None:
                # Whatever the run's outcome: a failed one is the quarantine's business,
                # and the request must not be run again by the next holder.
                self.on_ran(self.target, request)

    def _after(self, results: list[TargetResult]) -> None:
        before = self.standing
        self.standing = self._assess()
        self.on_quarantine(self.target, self.standing)
        for result in results:
            self._log.info("run.done", status=result.status, run_id=result.run_id)
        if self.standing.quarantined and not before.quarantined:
            self._log.warning(
                "target.quarantined",
                failures=self.standing.failures,
                next_run_at=self.standing.next_run_at.isoformat()
                if self.standing.next_run_at
                else None,
                error=self.standing.last_error,
            )
        elif self.standing.quarantined:
            self._log.warning(
                "target.still_quarantined",
                failures=self.standing.failures,
                next_run_at=self.standing.next_run_at.isoformat()
                if self.standing.next_run_at
                else None,
            )
        elif before.quarantined:
            self._log.info("target.released", reason="a clean run")

    # ------------------------------------------------------------------ helpers

    def _assess(self) -> Quarantine:
        schedule = self.config.schedule
        try:
            history = self.store.runs(limit=HISTORY, target=self.target, **DAEMON_WRITES)
        except OrgsyncError as error:
            self._log.error("quarantine.unreadable", error=str(error))
            return self.standing
        return assess(
            history,
            after=schedule.quarantine_after,
            interval=schedule.interval,
            ceiling=schedule.quarantine_max_interval,
        )

    def _not_before(self) -> float | None:
        """The quarantine's next attempt on the mailbox's (monotonic) clock."""
        next_run = self.standing.next_run_at
        if not self.standing.quarantined or next_run is None:
            return None
        wait = max(timedelta(0), next_run - self.clock())
        return time.monotonic() + wait.total_seconds()

    def _defer(self, request: SyncRequest) -> bool:
        """A scheduled (or start-up) reconcile of a target that falls to another replica waits once,
        `grace` seconds, for that replica to do it (then it is done elsewhere, or that
        replica is gone and this one does it)."""
        if (
            self._deferred
            or self.grace <= 0
            or request.trigger not in SHARED_TRIGGERS
            or not request.full
            or request.queued  # webhook requests are served at once by who claimed them
        ):
            return False
        try:
            mine = self.preferred()
        except OrgsyncError:
            return False
        if mine:
            return False
        self._deferred = True
        self.mailbox.put(request, delay=self.grace)
        return True

    def _done_elsewhere(self, request: SyncRequest) -> bool:
        """Whether another daemon just did this full reconcile (a replica's pass).

        Never when it serves webhook requests (merged into it: `absorbed`, `queued`):
        they arrived after whatever run is found, which may have read the source before
        the change."""
        if (
            request.trigger not in SHARED_TRIGGERS
            or not request.full
            or request.absorbed
            or request.queued
        ):
            return False
        # Runs from before this daemon started do not count: a restart reconciles.
        # Within half an interval before the request, which may have waited `grace`.
        window = self.config.schedule.interval / 2 + timedelta(seconds=self.grace)
        recent = max(self.clock() - window, self.started_at)
        try:
            runs = self.store.runs(limit=5, target=self.target, **DAEMON_WRITES)
        except OrgsyncError:
            return False
        for run in runs:
            if run.started_at < recent:
                break
            if (
                run.instance != self.engine.instance
                and run.status in _GOOD
                and run.trigger in SHARED_TRIGGERS
            ):
                self._log.info("run.done_elsewhere", run_id=run.run_id, by=run.instance)
                return True
        return False

    def _holder(self) -> str | None:
        try:
            lease = self.store.lease_holder(self.target)
        except OrgsyncError:
            return None
        return lease.holder if lease else None
