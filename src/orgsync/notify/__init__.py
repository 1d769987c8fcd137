"""Notifications: `[[notify]]` entries told when a run holds or fails, or a target is
quarantined or recovers (a signed JSON webhook, a Slack incoming webhook, SMTP e-mail).

`events` decides what is worth a message, `render` what it says, `senders` how it
travels, `ledger` what was already said, `dispatcher` when (in the background, bounded,
rate-limited, de-duplicated), `build` which entries exist. The CLI and the daemon build
one `Dispatcher` each and hand its `run_finished` to the engine; the daemon also reports
quarantine standings. Nothing else imports this package (import-linter).
"""

from orgsync.notify.build import build_dispatcher, check_secrets
from orgsync.notify.dispatcher import DRAIN_SECONDS, Dispatcher, Route
from orgsync.notify.events import Notification, Standing

__all__ = [
    "DRAIN_SECONDS",
    "Dispatcher",
    "Notification",
    "Route",
    "Standing",
    "build_dispatcher",
    "check_secrets",
]
