"""The dispatcher: takes events from the run's thread, sends them from its own.

Never blocks, never fails a run: `publish` (and the engine's `run_finished` hook, and the
daemon's `quarantine`) only put the event on each matching entry's bounded queue, and
catch everything. Each `[[notify]]` entry has its own queue and sender thread, so a
receiver that hangs delays only its own messages. A full queue drops the event with a
`notify.dropped` log line and a count.

Per entry, in its sender thread:
1. De-duplication: an event with the same fingerprint as one sent within `repeat_after`
   (the same held plan, the same failure) is not sent, only counted (`notify.suppressed`);
   the first one after the quiet period is sent with that count. See `ledger.py`.
2. Rate limit: at most `max_per_hour` sent in any hour, by every process sharing the
   ledger; beyond that an event is dropped (`notify.rate_limited`), not taken as told, and
   the next message sent says how many were.
3. Send, retried by the project's retry policy (`orgsync.retrying`): `TransientError`
   (5xx, 429 with its Retry-After, timeouts) up to `max_attempts`, nothing else.

`close(timeout)` waits at most `timeout` seconds for the queues to drain, then abandons
what is left (logged): the CLI calls it after printing its result, the daemon when it
stops, so a dead receiver costs a bounded wait at exit and nothing during a run.

A quarantine or recovery message that is not delivered (every attempt failed, or
abandoned at exit) is kept in the ledger (`ledger.py`, `events.KEPT_KINDS`) and sent
again later: each sender looks for its entry's kept messages whose turn has come when the
daemon reports a standing (after each run of each target) or a real sync finishes, at
most once per `retry_after` (`look_for_unsent`), in its own thread.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from orgsync.core.errors import OrgsyncError
from orgsync.notify.events import (
    KEPT_KINDS,
    FinishedRun,
    Notification,
    RunMode,
    Standing,
    from_json,
    from_run,
    quarantine_change,
    to_json,
)
from orgsync.notify.ledger import Claim, Ledger, MemoryLedger, Slot, Unsent
from orgsync.notify.render import Delivery, Redactor
from orgsync.notify.senders import Channel
from orgsync.retrying import RetrySettings

log = structlog.get_logger(__name__)

QUEUE_SIZE = 100
"""Events waiting per entry; more are dropped (a receiver down for a long time)."""
DRAIN_SECONDS = 10.0
"""How long `orgsync sync` and a stopping daemon wait for unsent notifications."""
RETRY_BUDGET = 60.0
"""Seconds one notification may spend on retries (waits and attempts together)."""
UNSENT_RETRY_AFTER = 300.0
"""Seconds before a kept quarantine or recovery message is tried again, doubling at each
round (`ledger.UNSENT_TRIES` rounds at most: 5, 10, 20, 40 and 80 minutes)."""
_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Route:
    """One `[[notify]]` entry: which events, where to, and how often at most."""

    name: str
    channel: Channel
    events: frozenset[str]
    targets: frozenset[str] = frozenset()
    """Empty: every target."""
    max_per_hour: int = 12
    repeat_after: float = 6 * _HOUR
    max_attempts: int = 3
    timeout: float = 10.0
    """One attempt's longest time (the channel's own deadline)."""

    @property
    def in_flight_for(self) -> float:
        """How long a sending can last, retries included: a claim older than this is a
        process that died mid-send (`ledger.py`)."""
        return RETRY_BUDGET + self.max_attempts * self.timeout + 60.0

    def wants(self, event: Notification) -> bool:
        return event.kind in self.events and (not self.targets or event.target in self.targets)


class _Abandoned(Exception):
    """Raised inside a retry wait once the dispatcher gave up draining."""


_STOP = object()
_LOOK = object()
"""Look for the entry's kept messages whose turn has come, and send them."""


@dataclass(frozen=True, slots=True)
class _Kept:
    """A kept message being sent again."""

    unsent: Unsent
    event: Notification


Item = Notification | _Kept


class _Sender:
    """One entry's queue and thread."""

    def __init__(self, route: Route, dispatcher: Dispatcher, queue_size: int) -> None:
        self.route = route
        self.dispatcher = dispatcher
        self.queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self.abandon = threading.Event()
        self._in_flight: tuple[Claim | None, Slot, Item] | None = None
        self._overflow = 0
        """Events a full queue dropped since the last message (told in the next one)."""
        self._claim_lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"notify:{route.name}", daemon=True)

    def overflowed(self) -> None:
        with self._claim_lock:
            self._overflow += 1

    def take_overflow(self) -> int:
        with self._claim_lock:
            count, self._overflow = self._overflow, 0
            return count

    def hold(self, claim: Claim | None, slot: Slot, item: Item) -> None:
        """`claim` and `slot` are being sent now, for `item` (see `settle`)."""
        with self._claim_lock:
            self._in_flight = (claim, slot, item)

    def settle(self, ledger: Ledger, *, sent: bool, failed_round: bool = False) -> None:
        """End the sending in flight once: by this thread when it ends (`sent` or not),
        or by `close` when it abandons one still blocked in the receiver's socket. One
        not sent is given back to the ledger: neither told nor counted; a quarantine or
        recovery message is kept to be sent again (`keep_unsent`)."""
        with self._claim_lock:
            held, self._in_flight = self._in_flight, None
        if held is None:
            return
        claim, slot, item = held
        if sent:
            if claim is not None:
                ledger.confirm(claim)
            if isinstance(item, _Kept):
                ledger.retried(
                    item.unsent, sent=True, now=time.time(), retry_after=self.dispatcher.retry_after
                )
            return
        if claim is not None:
            ledger.release(claim)
        ledger.unreserve(slot)
        self.keep_unsent(item, failed_round=failed_round)

    def keep_unsent(self, item: Item, *, failed_round: bool) -> None:
        """`item` was not delivered: a quarantine or recovery message is kept in the
        ledger to be sent again; a kept one gets its next turn (`failed_round`: it was
        tried and failed) or is left for the next look (it was not tried to the end)."""
        ledger, now, after = self.dispatcher.ledger, time.time(), self.dispatcher.retry_after
        if isinstance(item, _Kept):
            if failed_round:
                ledger.retried(item.unsent, sent=False, now=now, retry_after=after)
            else:
                ledger.postpone(item.unsent, now=now)
        elif item.kind in KEPT_KINDS:
            # One abandoned at exit was not refused: the next process may try it at once.
            wait = after if failed_round else 0.0
            ledger.keep(self.route.name, to_json(item), now=now, retry_after=wait)
            log.warning(
                "notify.kept",
                entry=self.route.name,
                kind=item.kind,
                target=item.target,
                retry_after=wait,
            )

    def sleep(self, seconds: float) -> None:
        if self.abandon.wait(seconds):
            raise _Abandoned

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            if item is _LOOK:
                try:
                    self.look()
                except Exception as error:  # noqa: BLE001 - the sender thread must outlive any bug
                    log.error("notify.crashed", entry=self.route.name, error=type(error).__name__)
                continue
            assert isinstance(item, Notification | _Kept)
            if self.abandon.is_set():
                self.dispatcher.tally(self.route, "abandoned", _event(item))
                self.keep_unsent(item, failed_round=False)
                continue
            try:
                self.dispatcher.deliver(self, item)
            except Exception as error:  # noqa: BLE001 - the sender thread must outlive any bug
                log.error(
                    "notify.crashed",
                    entry=self.route.name,
                    error=self.dispatcher.redact(f"{type(error).__name__}: {error}"),
                )

    def look(self) -> None:
        """Send the entry's kept messages whose turn has come (in this thread)."""
        ledger = self.dispatcher.ledger
        for unsent in ledger.due(self.route.name, now=time.time(), lease=self.route.in_flight_for):
            try:
                event = from_json(unsent.event)
            except (ValueError, TypeError, KeyError):
                event = None
            if event is None or not self.route.wants(event):
                # Unreadable, or the entry no longer takes it: forgotten, not retried.
                ledger.retried(unsent, sent=True, now=time.time(), retry_after=0.0)
                continue
            if self.abandon.is_set():
                ledger.postpone(unsent, now=time.time())
                continue
            self.dispatcher.deliver(self, _Kept(unsent, event))


def _event(item: Item) -> Notification:
    return item.event if isinstance(item, _Kept) else item


class Dispatcher:
    """Routes events to the configured entries; see the module docstring."""

    def __init__(
        self,
        routes: Sequence[Route] = (),
        *,
        ledger: Ledger | None = None,
        redact: Redactor | None = None,
        count: Callable[[str, str], None] | None = None,
        host: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        queue_size: int = QUEUE_SIZE,
        retry_after: float = UNSENT_RETRY_AFTER,
    ) -> None:
        self.routes = tuple(routes)
        self.ledger: Ledger = ledger or MemoryLedger()
        self.redact = redact or Redactor()
        self.host = socket.gethostname() if host is None else host
        self.clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()
        self._count = count
        self._senders = [_Sender(route, self, queue_size) for route in self.routes]
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._standings: dict[str, Standing] = {}
        self.retry_after = retry_after
        self._looked: float | None = None

    # ------------------------------------------------------------------ what callers feed

    def run_finished(self, result: FinishedRun, options: RunMode) -> None:
        """The engine's hook: a held or failed real run becomes a notification."""
        if not self.routes:
            return
        if not options.dry_run:  # a dry run sends nothing, kept messages included
            self.look_for_unsent()
        try:
            event = from_run(result, options, self.clock(), self.redact)
        except Exception as error:  # noqa: BLE001 - never fail a run over a message
            log.error("notify.unformattable", error=f"{type(error).__name__}")
            return
        if event is not None:
            self.publish(event)

    def quarantine(self, target: str, standing: Standing) -> None:
        """The daemon's standing of `target` after a run (or at start: the baseline)."""
        self.look_for_unsent()
        try:
            with self._lock:
                before = self._standings.get(target)
                self._standings[target] = standing
            event = quarantine_change(target, before, standing, self.clock(), self.redact)
        except Exception as error:  # noqa: BLE001 - called from a target's only worker
            log.error("notify.unformattable", error=f"{type(error).__name__}")
            return
        if event is not None:
            self.publish(event)

    def publish(self, event: Notification) -> None:
        """Queue `event` for every entry that wants it; never blocks, never raises."""
        try:
            for sender in self._senders:
                if not sender.route.wants(event):
                    continue
                if self._closed:  # a late event after close(): nobody would send it
                    self.tally(sender.route, "dropped", event)
                    continue
                self._start()
                try:
                    sender.queue.put_nowait(event)
                except queue.Full:
                    sender.overflowed()
                    self.tally(sender.route, "dropped", event, queue_size=sender.queue.maxsize)
        except Exception as error:  # noqa: BLE001 - the caller is a run; it must go on
            log.error("notify.publish_failed", error=f"{type(error).__name__}")

    def look_for_unsent(self) -> None:
        """Have each entry send its kept messages whose turn has come (see the module
        doc); at most once per `retry_after`, never blocks, never raises."""
        try:
            now = time.monotonic()
            with self._lock:
                if self._closed or (
                    self._looked is not None and now - self._looked < self.retry_after
                ):
                    return
                self._looked = now
            self._start()
            for sender in self._senders:
                with contextlib.suppress(queue.Full):  # a busy entry looks next time
                    sender.queue.put_nowait(_LOOK)
        except Exception as error:  # noqa: BLE001 - the caller is a run; it must go on
            log.error("notify.publish_failed", error=f"{type(error).__name__}")

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for sender in self._senders:
                sender.thread.start()

    def close(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Send what is queued for at most `timeout` seconds; True if everything went."""
        with self._lock:
            self._closed = True
            started = self._started
        if not started:
            return True
        deadline = time.monotonic() + timeout
        for sender in self._senders:
            try:
                sender.queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                sender.abandon.set()
        for sender in self._senders:
            sender.thread.join(max(0.0, deadline - time.monotonic()))
        drained = True
        for sender in self._senders:
            if sender.thread.is_alive():
                drained = False
                sender.abandon.set()
                # The process may end before the blocked send does: a claim left in the
                # ledger file would make the next `orgsync sync` take this event for
                # one already told, and nobody would hear of it for `repeat_after`.
                sender.settle(self.ledger, sent=False)
                # Nor is a quarantine or recovery still queued behind it lost.
                while True:
                    try:
                        item = sender.queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(item, Notification | _Kept):
                        sender.keep_unsent(item, failed_round=False)
                log.warning(
                    "notify.abandoned",
                    entry=sender.route.name,
                    waiting=sender.queue.qsize(),
                    reason=f"not delivered within {timeout:g}s of the end",
                )
            else:
                sender.route.channel.close()
        return drained

    # ------------------------------------------------------------------ in a sender thread

    def tally(self, route: Route, result: str, event: Notification, **fields: object) -> None:
        self.counts[(route.name, result)] += 1
        if self._count is not None:
            self._count(route.name, result)
        level = {"sent": "info", "suppressed": "info"}.get(result, "warning")
        getattr(log, level)(
            f"notify.{result}", entry=route.name, kind=event.kind, target=event.target, **fields
        )

    def deliver(self, sender: _Sender, item: Item) -> None:
        route = sender.route
        event = _event(item)
        fingerprint = event.fingerprint
        claim = None
        if fingerprint is not None:
            key = (route.name, event.target, event.kind, fingerprint)
            claim = self.ledger.claim(
                key, now=time.time(), window=route.repeat_after, pending_for=route.in_flight_for
            )
            if claim is None:
                self.tally(route, "suppressed", event, repeat_after=route.repeat_after)
                return
        slot = self.ledger.reserve(route.name, now=time.time(), limit=route.max_per_hour)
        if slot is None:
            if claim is not None:  # not told: the next occurrence is news again
                self.ledger.release(claim)
            if isinstance(item, _Kept):  # not tried: its turn comes at the next look
                self.ledger.postpone(item.unsent, now=time.time())
            self.tally(route, "rate_limited", event, max_per_hour=route.max_per_hour)
            return
        delivery = Delivery(
            id=uuid.uuid4().hex,
            host=self.host,
            repeats=claim.repeats if claim else 0,
            since=datetime.fromtimestamp(claim.since, UTC) if claim and claim.since else None,
            # Only logged before, events a full queue dropped while the receiver was
            # slow went unmentioned in the message people read next.
            dropped=slot.dropped + sender.take_overflow(),
            late=isinstance(item, _Kept),
        )
        policy = RetrySettings(
            max_attempts=route.max_attempts, max_delay=RETRY_BUDGET, base=0.5, cap=8.0
        ).policy(sleep=sender.sleep)
        attempts = 0
        sender.hold(claim, slot, item)
        try:
            for attempt in policy:
                with attempt:
                    attempts += 1
                    route.channel.send(event, delivery)
        except _Abandoned:
            sender.settle(self.ledger, sent=False)
            self.tally(route, "abandoned", event)
            return
        except Exception as error:  # noqa: BLE001 - any failure is this message's, not the run's
            sender.settle(self.ledger, sent=False, failed_round=True)
            reason = str(error) if isinstance(error, OrgsyncError) else type(error).__name__
            self.tally(route, "failed", event, attempts=attempts, error=self.redact(reason))
            return
        sender.settle(self.ledger, sent=True)
        self.tally(route, "sent", event, attempts=attempts, repeats=delivery.repeats)
