"""Webhook requests through the state database, to a replica that runs the target.

A webhook may reach any replica (a Service spreads deliveries), while a target is run by
one replica at a time, the holder of its lease. So an accepted delivery is not put in a
local mailbox but written to the state database's queue (`StateStore.queue_requests`):
only what the parser produced, target names and people's ids, before the answer is sent
(a delivery the IdP thinks was taken is never only in the memory of a process that may
die next). Every replica runs a `Relay` thread that claims the queued requests of the
targets it may run now (`runnable`: those it holds, and those nobody holds while it has
room in its fair share) and puts them in their mailboxes (debounced, merged as before),
and marks them done once the run that served them has finished. A request for a target
another replica holds is left to that replica. A replica that dies in between leaves its
claims unfinished; once its registration among the replicas has expired (the lease TTL),
another replica claims them again.

The thread wakes when this process queued something, when PostgreSQL notifies that
another replica did (LISTEN), and every `poll` seconds regardless: a target may have
become free, and a lost LISTEN connection must not leave requests waiting for long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta

import structlog

from orgsync.core.errors import OrgsyncError
from orgsync.core.webhook import Delivery, WebhookEvent
from orgsync.daemon.queue import Mailbox, SyncRequest
from orgsync.store import StateStore
from orgsync.store.queue import QueueListener, Request

log = structlog.get_logger(__name__)

POLL_SECONDS = 2.0
"""The longest a request waits for a replica that holds its target but was not told."""
RETRY_SECONDS = 5.0
"""After the state database failed: wait this long before trying again."""


class QueueUnavailable(OrgsyncError):
    """The state database could not take a webhook's requests (the delivery is refused
    with 503, and the IdP sends it again)."""


class Relay:
    """Writes accepted webhooks to the queue; claims the held targets' requests."""

    def __init__(
        self,
        *,
        store: StateStore,
        instance: str,
        mailboxes: Mapping[str, Mailbox],
        runnable: Callable[[], Collection[str]],
        count: Callable[[str, str], None],
        poll: float = POLL_SECONDS,
    ) -> None:
        """`runnable()`: the targets whose requests this replica takes now."""
        self._store = store
        self._instance = instance
        self._mailboxes = mailboxes
        self._runnable = runnable
        self._count = count
        self._poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listener: QueueListener | None = None
        self._thread = threading.Thread(target=self._loop, name="relay", daemon=True)
        self.claimed = 0
        """Requests claimed since the start (for logs and tests)."""

    # ------------------------------------------------------------------ the receiving side

    def submit(self, event: WebhookEvent, delivery: Delivery | None = None) -> tuple[str, ...]:
        """Queue an accepted event for its targets (all when it names none), and record
        its `delivery`'s keys as seen, in one transaction; durable on return. Returns the
        keys no process had recorded within their window: keys given and none of them
        new is a replay, and nothing is queued. Raises `QueueUnavailable` when the state
        database cannot take it (then nothing is recorded either)."""
        targets = event.targets if event.targets is not None else tuple(self._mailboxes)
        trigger = f"webhook:{event.kind}"
        requests = [Request(t, trigger, event.emails, event.source_ids) for t in targets]
        fresh: list[str] = []
        try:
            if delivery is None:
                queued = self._store.queue_requests(requests)
            else:
                window = timedelta(seconds=delivery.window)
                queued, fresh = self._store.queue_delivery(
                    requests, delivery.kind, delivery.keys, window
                )
        except OrgsyncError as error:
            log.error("webhook.queue_unavailable", error=str(error))
            raise QueueUnavailable(str(error)) from error
        if delivery is not None and delivery.keys and not fresh:
            return ()
        for target in targets:
            self._count(target, "queued")
        for target in queued.widened:
            self._count(target, "widened")
            log.warning(
                "webhook.queue_widened",
                target=target,
                reason="too many people waiting for this target: one full reconcile instead",
            )
        self._wake.set()
        return tuple(fresh)

    # ------------------------------------------------------------------ the holding side

    def start(self) -> None:
        if self._thread.is_alive():
            return
        try:
            self._listener = self._store.queue_listener()
        except OrgsyncError as error:
            # Polling still delivers; the loop tries to listen again.
            log.warning("relay.listen_failed", error=str(error))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        if self._listener is not None and not self._thread.is_alive():
            self._listener.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def finished(self, target: str, request: SyncRequest) -> None:
        """The run that served `request` has finished: its queue rows are done."""
        if not request.queued:
            return
        try:
            self._store.finish_requests(self._instance, request.queued)
        except OrgsyncError as error:
            # Left claimed: the next holder of the target runs them again (harmless).
            log.warning("relay.finish_failed", target=target, error=str(error))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.claim_now()
            except OrgsyncError as error:
                log.error("relay.claim_failed", error=str(error))
                self._stop.wait(RETRY_SECONDS)
                continue
            self._wait()

    def _wait(self) -> None:
        if self._listener is None:
            self._wake.wait(self._poll)
            self._wake.clear()
            return
        # Waiting on the LISTEN connection in slices, so that this process's own writes
        # (which also notify, but the local event is quicker) and a stop are seen soon.
        waited = 0.0
        step = min(0.25, self._poll)
        while waited < self._poll and not self._wake.is_set():
            try:
                if self._listener.wait(step):
                    break
            except OrgsyncError as error:
                log.warning("relay.listen_failed", error=str(error))
                self._stop.wait(min(RETRY_SECONDS, self._poll))
                break
            waited += step
        self._wake.clear()

    def claim_now(self) -> int:
        """Claim the held targets' requests and hand them to their mailboxes."""
        runnable = [t for t in self._runnable() if t in self._mailboxes]
        if not runnable or not self._store.requests_waiting(runnable, claimer=self._instance):
            return 0
        claims = self._store.claim_requests(self._instance, runnable)
        for claimed in claims:
            request = SyncRequest(
                claimed.trigger,
                claimed.emails,
                claimed.source_ids,
                queued=claimed.ids,
            )
            self._mailboxes[claimed.target].put(request, debounce=True)
            self._count(claimed.target, "claimed")
            self.claimed += len(claimed.ids)
            log.info(
                "webhook.claimed",
                target=claimed.target,
                scope="full" if claimed.full else "targeted",
                people=len(claimed.emails) + len(claimed.source_ids),
                requests=len(claimed.ids),
            )
        return len(claims)
