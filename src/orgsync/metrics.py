"""The Prometheus metrics of the daemon, under the names docs/reference.md "Metrics" binds.

`Metrics` owns one `CollectorRegistry` (not the process-global one, so tests can build
several) and implements `core.ports.RunObserver`: the engine reports what happened
through plain callbacks and never imports prometheus-client itself.

Names and labels are a contract with dashboards and alerts: change none of them.
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE", "SPEC_METRICS", "Metrics"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

SPEC_METRICS: Final = (
    "orgsync_runs_total",
    "orgsync_run_duration_seconds",
    "orgsync_operations_total",
    "orgsync_held_operations",
    "orgsync_last_success_timestamp_seconds",
    "orgsync_source_people",
    "orgsync_http_requests_total",
    "orgsync_webhooks_total",
)
"""Every metric name the product contract requires, as exposed (counters without their
`_total` twin)."""

# Runs last from a fraction of a second (nothing to do) to many minutes (a first sync of
# a large organization under a rate limit).
_DURATION_BUCKETS: Final = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """Every orgsync metric, registered in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "orgsync_runs", "Runs per target by result", ["target", "result"], registry=r
        )
        self.run_duration = Histogram(
            "orgsync_run_duration_seconds",
            "Wall time of one run of one target",
            ["target"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.operations = Counter(
            "orgsync_operations",
            "Applied operations by kind and outcome (done, failed)",
            ["target", "op", "result"],
            registry=r,
        )
        self.held = Gauge(
            "orgsync_held_operations",
            "Operations the safety gate held back in the target's last run",
            ["target"],
            registry=r,
        )
        self.last_success = Gauge(
            "orgsync_last_success_timestamp_seconds",
            "Unix time of the target's last run that ended ok or held",
            ["target"],
            registry=r,
        )
        self.source_people = Gauge(
            "orgsync_source_people", "People in the last complete read of the source", registry=r
        )
        self.http_requests = Counter(
            "orgsync_http_requests",
            "HTTP requests to targets by system and status (0: no response), retries included",
            ["system", "status"],
            registry=r,
        )
        self.webhooks = Counter(
            "orgsync_webhooks",
            "Webhook deliveries by kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.connections_dropped = Counter(
            "orgsync_http_connections_dropped",
            "Connections the daemon closed unserved, by listener (main, health) and reason "
            "(too_many, too_many_from_client, header_timeout, head_too_large, unread_body, "
            "write_timeout) or request it could not parse (bad_request)",
            ["listener", "reason"],
            registry=r,
        )
        self.quarantined = Gauge(
            "orgsync_quarantined",
            "1 while the target is quarantined (runs back off after repeated failures)",
            ["target"],
            registry=r,
        )
        self.notifications = Counter(
            "orgsync_notifications",
            "Notifications per [[notify]] entry by result (sent, failed, suppressed, "
            "rate_limited, dropped, abandoned)",
            ["entry", "result"],
            registry=r,
        )
        self.lease_held = Gauge(
            "orgsync_target_lease_held",
            "1 while this daemon holds the target's lease (is its writer), else 0",
            ["target"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "orgsync_consecutive_failed_runs",
            "Failed runs of the target since its last clean one",
            ["target"],
            registry=r,
        )
        self.webhook_queue = Counter(
            "orgsync_webhook_queue_requests",
            "Webhook requests through the state database's queue, by target and result "
            "(queued by this replica, claimed by it, widened: too many people waiting, "
            "replaced by one full reconcile)",
            ["target", "result"],
            registry=r,
        )

    # ------------------------------------------------------------------ the engine's observer

    def source_read(self, people: int) -> None:
        self.source_people.set(people)

    def http_response(self, system: str, status: int) -> None:
        self.http_requests.labels(system=system, status=str(status)).inc()

    def operation_finished(self, target: str, op: str, result: str) -> None:
        self.operations.labels(target=target, op=op, result=result).inc()

    def run_finished(self, target: str, status: str, *, held: int, seconds: float) -> None:
        self.runs.labels(target=target, result=status).inc()
        self.run_duration.labels(target=target).observe(seconds)
        self.held.labels(target=target).set(held)
        if status in {"ok", "held"}:
            self.last_success.labels(target=target).set(time.time())

    # ------------------------------------------------------------------ the daemon's own

    def webhook(self, kind: str, result: str) -> None:
        self.webhooks.labels(kind=kind, result=result).inc()

    def connection_dropped(self, listener: str, reason: str) -> None:
        self.connections_dropped.labels(listener=listener, reason=reason).inc()

    def quarantine(self, target: str, *, quarantined: bool, failures: int) -> None:
        self.quarantined.labels(target=target).set(1 if quarantined else 0)
        self.consecutive_failures.labels(target=target).set(failures)

    def queued_request(self, target: str, result: str) -> None:
        self.webhook_queue.labels(target=target, result=result).inc()

    def notification(self, entry: str, result: str) -> None:
        self.notifications.labels(entry=entry, result=result).inc()

    def lease(self, target: str, held: bool) -> None:
        self.lease_held.labels(target=target).set(1 if held else 0)

    def declare_target(self, target: str, *, last_success: float | None = None) -> None:
        """Create the target's series at zero, so that absent means "no such target".

        `last_success` (Unix time, from the run history) carries the last good run across
        a restart: otherwise every restart would reset "time since the last success"."""
        if last_success is not None:
            self.last_success.labels(target=target).set(last_success)
        self.held.labels(target=target).set(0)
        self.quarantined.labels(target=target).set(0)
        self.consecutive_failures.labels(target=target).set(0)
        self.lease_held.labels(target=target).set(0)
        self.run_duration.labels(target=target)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
