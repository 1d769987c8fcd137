"""`orgsync daemon`: the long-running service (docs/reference.md "Daemon endpoints").

Scheduled full reconciliation (APScheduler 3), webhook receivers (generic HMAC, Okta
event hooks, Microsoft Graph change notifications), a read-only HTML status page,
health, readiness and Prometheus metrics over HTTP, systemd notification, and
quarantine of targets that keep failing.

Shape: the scheduler and the webhooks only *enqueue* a `SyncRequest` into the target's
`Mailbox`, which coalesces; one `TargetWorker` thread per target takes from it and calls
`Engine.run`, so a target never has two syncs at once in this process, and the state
database lease keeps other processes out. Only this package imports apscheduler.
"""

from orgsync.daemon.service import run_daemon

__all__ = ["run_daemon"]
