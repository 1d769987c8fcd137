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
"""

from __future__ import annotations

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
    FinishedRun,
    Notification,
    RunMode,
    Standing,
    from_run,
    quarantine_change,
)
from orgsync.notify.ledger import Claim, Ledger, MemoryLedger, Slot
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


class _Sender:
    """One entry's queue and thread."""

    def __init__(self, route: Route, dispatcher: Dispatcher, queue_size: int) -> None:
        self.route = route
        self.dispatcher = dispatcher
        self.queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self.abandon = threading.Event()
        self._in_flight: tuple[Claim | None, Slot] | None = None
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

    def hold(self, claim: Claim | None, slot: Slot) -> None:
        """`claim` and `slot` are being sent now (see `settle`)."""
        with self._claim_lock:
            self._in_flight = (claim, slot)

    def settle(self, ledger: Ledger, *, sent: bool) -> None:
        """End the sending in flight once: by this thread when it ends (`sent` or not),
        or by `close` when it abandons one still blocked in the receiver's socket. One
        not sent is given back to the ledger: neither told nor counted."""
        with self._claim_lock:
            held, self._in_flight = self._in_flight, None
        if held is None:
            return
        claim, slot = held
        if sent:
            if claim is not None:
                ledger.confirm(claim)
            return
        if claim is not None:
            ledger.release(claim)
        ledger.unreserve(slot)

    def sleep(self, seconds: float) -> None:
        if self.abandon.wait(seconds):
            raise _Abandoned

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Notification)
            if self.abandon.is_set():
                self.dispatcher.tally(self.route, "abandoned", item)
                continue
            try:
                self.dispatcher.deliver(self, item)
            except Exception as error:  # noqa: BLE001 - the sender thread must outlive any bug
                log.error(
                    "notify.crashed",
                    entry=self.route.name,
                    error=self.dispatcher.redact(f"{type(error).__name__}: {error}"),
                )


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

    # ------------------------------------------------------------------ what callers feed

    def run_finished(self, result: FinishedRun, options: RunMode) -> None:
        """The engine's hook: a held or failed real run becomes a notification."""
        if not self.routes:
            return
        try:
            event = from_run(result, options, self.clock(), self.redact)
        except Exception as error:  # noqa: BLE001 - never fail a run over a message
            log.error("notify.unformattable", error=f"{type(error).__name__}")
            return
        if event is not None:
            self.publish(event)

    def quarantine(self, target: str, standing: Standing) -> None:
        """The daemon's standing of `target` after a run (or at start: the baseline)."""
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

    def deliver(self, sender: _Sender, event: Notification) -> None:
        route = sender.route
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
        )
        policy = RetrySettings(
            max_attempts=route.max_attempts, max_delay=RETRY_BUDGET, base=0.5, cap=8.0
        ).policy(sleep=sender.sleep)
        attempts = 0
        sender.hold(claim, slot)
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
            sender.settle(self.ledger, sent=False)
            reason = str(error) if isinstance(error, OrgsyncError) else type(error).__name__
            self.tally(route, "failed", event, attempts=attempts, error=self.redact(reason))
            return
        sender.settle(self.ledger, sent=True)
        self.tally(route, "sent", event, attempts=attempts, repeats=delivery.repeats)
