"""Which pass a target's run is, and what it plans: full, incremental or targeted.

A full pass reconciles the whole organization against the whole source. An incremental
pass (`sync --incremental`, the daemon between `[schedule] full_interval`s) trusts the
organization as the last clean pass left it and plans only the people the source
changed since (see docs/design.md "Incremental passes"): `Passes.decide` says which
people, or that nothing can be trusted and the pass must be full. A targeted pass
(`--only`, webhooks) plans the people it names. The engine runs whichever is decided.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from orgsync.config import Config, TargetConfig
from orgsync.core.delta import Fingerprint, config_fingerprint, diff, fingerprint
from orgsync.core.errors import CursorExpired, OrgsyncError, SourceError
from orgsync.core.model import SourceSnapshot
from orgsync.core.ports import ChangeProbe, DetectsChanges, Source
from orgsync.results import RunOptions
from orgsync.store import INVALIDATED, Baseline, StateStore

log = structlog.get_logger(__name__)

FULL, INCREMENTAL, TARGETED = "full", "incremental", "targeted"
UNSETTLED = "unsettled"
"""The stored digest of a person an unclean incremental pass planned: no digest equals
it, so every pass touches them until one ends clean."""
INCREMENTAL_MAX_PEOPLE = 500
"""An incremental pass touching more people than this plans the whole organization: one
read of it is then cheaper than many lookups, and a full plan is never less safe."""
CLOCK_STEP_ALLOWANCE = timedelta(minutes=5)
"""How far ahead of the store's clock a recorded full pass may be before it is taken for
a clock that ran ahead, and the pass is made full. Passes are recorded and compared on
the store's clock (the server's on PostgreSQL, whichever replica records them), so only
a clock that moved back since shows one ahead: a SQLite host's clock stepped back, the
database server's, or a row written by an orgsync that still used each host's clock."""


class SourceOnce:
    """One run's source: built once, read whole at most once, with one change cursor taken
    before that read starts (a change made during it is seen by the next probe). A failed
    read fails every target of the run alike, as a full run's does."""

    def __init__(
        self, build: Callable[[], Source], read: Callable[[Source], SourceSnapshot]
    ) -> None:
        self._build = build
        self._read_whole = read
        self._source: Source | None = None
        self._read: tuple[SourceSnapshot, str | None] | None = None
        self._error: OrgsyncError | None = None

    @property
    def source(self) -> Source:
        if self._source is None:
            self._source = self._build()
        return self._source

    @property
    def was_read(self) -> bool:
        return self._read is not None

    def read(self, cursor: str | None = None) -> tuple[SourceSnapshot, str | None]:
        """The snapshot and the cursor the next probe starts from. `cursor`: one already
        taken before this read (a change probe's, taken before the probe's first request),
        kept rather than taking another, which costs the source calls of its own (Entra's
        delta rounds, Google's activity listing, Okta's and SCIM's clock request, LDAP's
        marker search). Ignored once the source was read: that read's cursor stands, and
        it too was taken before it."""
        if self._error is not None:
            raise self._error
        if self._read is None:
            source = self.source
            try:
                if cursor is None and isinstance(source, DetectsChanges):
                    cursor = source.change_cursor()
                self._read = (self._read_whole(source), cursor)
            except OrgsyncError as error:
                self._error = error
                raise
        return self._read

    def close(self) -> None:
        """A source that was only probed still holds its connections (SCIM's client)."""
        closer = getattr(self._source, "close", None)
        if callable(closer):
            closer()


@dataclass(frozen=True, slots=True)
class Pass:
    """Which pass a target's run is, why, and what to record once a sync of it ends clean."""

    kind: str
    reason: str | None = None
    on_clean: Callable[[StateStore], None] | None = None
    on_unclean: Callable[[StateStore], None] | None = None
    """A sync of it that did not end clean (held, failed, interrupted): what to record."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a target's run plans: the source snapshot (None: nothing to plan, the
    organization is not read), the options scoped to the people it touches, its pass."""

    snapshot: SourceSnapshot | None
    options: RunOptions
    pass_: Pass


class Passes:
    """Decides each target's pass from its baseline in the state database."""

    def __init__(self, config: Config, clock: Callable[[], datetime]) -> None:
        """`clock`: the store's (`Engine.now`), which baselines and missing-since times
        are recorded on, whichever replica recorded them."""
        self.config = config
        self.clock = clock

    def full(self, target: TargetConfig, snapshot: SourceSnapshot, cursor: str | None) -> Pass:
        """A full pass over `snapshot`: once clean, it becomes the target's baseline."""
        return Pass(FULL, None, self.baseline_writer(target, snapshot, cursor, full=True))

    def decide(
        self, store: StateStore, target: TargetConfig, options: RunOptions, once: SourceOnce
    ) -> Decision:
        """One target's incremental pass: full when nothing can be trusted, else only the
        people the source changed (and those missing past their removal grace)."""
        name = target.name
        bound = log.bind(target=name)
        source = once.source
        baseline = store.baseline(name)
        reason = self.full_reason(target, baseline)
        if reason is not None or baseline is None:
            bound.info("pass.full", reason=reason)
            snapshot, cursor = once.read()
            writer = self.baseline_writer(target, snapshot, cursor, full=True)
            return Decision(snapshot, options, Pass(FULL, reason, writer))

        memory = store.memory(name)
        now = self.clock()
        grace = self.config.safety.removal_grace
        # People missing from the source wait out `removal_grace`; once it has passed, the
        # pass that removes them is this one, whether or not anything else changed.
        due = frozenset(k for k, since in memory.missing_since.items() if since + grace <= now)
        probe: ChangeProbe | None = None
        # Once the run has read the source whole (for another target), comparing costs
        # nothing more, and the read's cursor is as recent as a probe's.
        cursor = None if once.was_read else baseline.cursor
        if isinstance(source, DetectsChanges) and cursor is not None:
            try:
                probe = source.probe_changes(cursor, baseline.people, baseline.groups)
            except CursorExpired as error:
                bound.warning("source.cursor_expired", error=str(error), fallback="full read")
            except SourceError as error:
                # The probe only spares a read: one failing (a provider answering 500 to
                # the filtered query alone) must not fail every pass between full ones
                # while the lists read fine. A source that is down fails the read too.
                bound.warning("source.probe_failed", error=str(error), fallback="full read")
            else:
                bound.info("source.probed", changed=probe.changed, calls=probe.calls)
        if probe is not None and not probe.changed and not due:
            writer = self.cursor_writer(name, baseline.cursor, probe.cursor)
            note = "nothing changed at the source"
            return Decision(None, options, Pass(INCREMENTAL, note, writer))

        # The probe's cursor was taken before its first request, so before this read: a
        # change made during the read is after it, and the next probe sees it. Taking
        # another for the read would only spend the source's calls on a second one.
        snapshot, cursor = once.read(probe.cursor if probe is not None else None)
        before = store.source_fingerprint(name)
        after = fingerprint(snapshot)
        touched = diff(before.people, after.people).touched
        if before.groups != after.groups and target.groups:
            reason = "source groups changed and this target mirrors groups"
        elif len(touched) > INCREMENTAL_MAX_PEOPLE:
            # A large change (a truncated directory among them) is planned over the whole
            # organization, under exactly the guards of a full pass.
            reason = f"{len(touched)} people changed (more than {INCREMENTAL_MAX_PEOPLE})"
        if reason is not None:
            bound.info("pass.full", reason=reason)
            writer = self.baseline_writer(target, snapshot, cursor, full=True)
            return Decision(snapshot, options, Pass(FULL, reason, writer))
        # The emails each touched id was linked under: a person deleted at the source, or
        # whose email changed, is found on the target under the email orgsync knew.
        emails = {k for k, s in memory.linked_sources.items() if s in touched} | set(due)
        writer = self.incremental_writer(target, snapshot, cursor, baseline, touched)
        note = f"{len(touched)} changed at the source, {len(due)} missing past their grace"
        bound.info("pass.incremental", changed=len(touched), due=len(due))
        if not touched and not emails:
            return Decision(None, options, Pass(INCREMENTAL, note, writer))
        scoped = replace(options, only_emails=frozenset(emails), only_source_ids=touched)
        unsettled = self.unsettled_writer(name, touched)
        return Decision(snapshot, scoped, Pass(INCREMENTAL, note, writer, unsettled))

    def config_fingerprint(self, target: TargetConfig) -> str:
        """What a baseline depends on: the source, the target's rules and the guards (not
        the schedule, the server, notifications or the state's location)."""
        return config_fingerprint(
            {
                "source": self.config.source.model_dump(mode="json"),
                "target": target.model_dump(mode="json"),
                "safety": self.config.safety.model_dump(mode="json"),
            }
        )

    def full_reason(self, target: TargetConfig, baseline: Baseline | None) -> str | None:
        """Why the pass must be full, or None when the baseline can be trusted."""
        if baseline is None:
            return "no clean full pass recorded yet"
        if baseline.config == INVALIDATED:
            return "the last full pass did not end clean"
        if baseline.config != self.config_fingerprint(target):
            return "the configuration changed since the last full pass"
        now = self.clock()
        if baseline.full_at > now + CLOCK_STEP_ALLOWANCE:
            # Recorded by a clock that ran ahead and was corrected since (see
            # CLOCK_STEP_ALLOWANCE): trusting it would put off every full pass until
            # the clock caught up.
            when = f"{baseline.full_at:%Y-%m-%d %H:%M}Z"
            return f"the last full pass ({when}) is recorded in the future"
        due = baseline.full_at + self.config.schedule.full_interval
        if due <= now:
            return f"the last full pass ({baseline.full_at:%Y-%m-%d %H:%M}Z) is full_interval old"
        return None

    def baseline_writer(
        self, target: TargetConfig, snapshot: SourceSnapshot, cursor: str | None, *, full: bool
    ) -> Callable[[StateStore], None]:
        """Called once a sync's pass ended clean (with the run's fenced store): the
        snapshot it reconciled becomes what the next incremental pass compares with."""

        def write(store: StateStore) -> None:
            written = store.record_baseline(
                target.name,
                config=self.config_fingerprint(target),
                cursor=cursor,
                fingerprint=fingerprint(snapshot),
                full_at=self.clock() if full else None,
            )
            log.info("baseline.recorded", target=target.name, full=full, rows=written)

        return write

    def incremental_writer(
        self,
        target: TargetConfig,
        snapshot: SourceSnapshot,
        cursor: str | None,
        decided: Baseline,
        touched: frozenset[str],
    ) -> Callable[[StateStore], None]:
        """Called once an incremental sync ended clean: its snapshot becomes the baseline,
        but only if the stored baseline is still the one it was decided from. The decision
        is made before the target's lease is taken, so another writer (a replica, an
        operator's `sync --incremental` on another host) may have run a pass in between:
        a full pass that did not end clean invalidated the baseline, and recording over
        it would trust it again, every later pass incremental until `full_interval`
        (`tests/daemon/test_replicas_redteam.py`). Then its people are only marked
        unsettled, in the baseline as it now is, so the next pass touches them again."""
        record = self.baseline_writer(target, snapshot, cursor, full=False)
        unsettle = self.unsettled_writer(target.name, touched)

        def write(store: StateStore) -> None:
            now = store.baseline(target.name)
            if now is not None and (now.config, now.updated_at) == (
                decided.config,
                decided.updated_at,
            ):
                record(store)
                return
            log.warning("baseline.moved", target=target.name, people=len(touched))
            unsettle(store)

        return write

    def unsettled_writer(
        self, target: str, touched: frozenset[str]
    ) -> Callable[[StateStore], None]:
        """Called once an incremental sync ended unclean: the baseline stays, but the
        people it planned are marked unsettled there, so that every later pass touches
        them until one ends clean. Keeping the baseline alone is not enough: what the
        pass did apply (the invitations of a group nested in, while the gate held its
        removals) is on the organization, and a source that returns to the baseline's
        state (the group un-nested again) would no longer touch those people, whose
        invitations would then stay until the next full pass."""

        def write(store: StateStore) -> None:
            baseline = store.baseline(target)
            if baseline is None or not touched:
                return
            before = store.source_fingerprint(target)
            people = dict(before.people)
            people.update(dict.fromkeys(touched, UNSETTLED))
            store.record_baseline(
                target,
                config=baseline.config,
                cursor=baseline.cursor,
                fingerprint=Fingerprint(people=people, groups=before.groups),
                full_at=None,
            )
            log.info("baseline.unsettled", target=target, people=len(touched))

        return write

    def cursor_writer(
        self, target: str, before: str | None, after: str | None
    ) -> Callable[[StateStore], None]:
        def write(store: StateStore) -> None:
            if after != before:
                store.advance_cursor(target, after)

        return write
