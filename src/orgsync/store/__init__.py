"""The state database: run history, operation journal, links, missing people, the
ownership ledger of target groups, leases, and the writer locks beside it; and the
`LinkingJournal` through which a sync keeps links and ownership in step with each call.

The only package that talks to SQLite and PostgreSQL. It depends on `orgsync.core` alone
and stores no secret. Use `StateStore.open(path_or_url)` (the CLI and the engine go
through `orgsync.factories.open_state_store`).
"""

import importlib
from typing import TYPE_CHECKING

# Each name is imported on first use (PEP 562): `orgsync.store.checkup` must not load the
# state store, the journal and SQLite for `validate --offline` (bench/startup.py).
if TYPE_CHECKING:
    from orgsync.store.checkup import check_state_path, check_state_url
    from orgsync.store.db import NoStateDatabase
    from orgsync.store.groups import OWNED_HOW, OwnedGroup, OwnedHow
    from orgsync.store.journal import OperationRecord, RunJournal, Unsettled
    from orgsync.store.leases import HeldLease, LeaseKeeper, LeaseLost, LeaseRecord, TargetBusy
    from orgsync.store.linking import LinkingJournal
    from orgsync.store.links import LinkRow
    from orgsync.store.migrations import LATEST_VERSION
    from orgsync.store.runs import (
        FINAL_STATUSES,
        RUN_MODES,
        RUN_STATUSES,
        Origin,
        Outcome,
        RunRecord,
    )
    from orgsync.store.state import StateStore
    from orgsync.store.writer_lock import WriterLock

_HOME = {
    "FINAL_STATUSES": "orgsync.store.runs",
    "HeldLease": "orgsync.store.leases",
    "LATEST_VERSION": "orgsync.store.migrations",
    "LeaseKeeper": "orgsync.store.leases",
    "LeaseLost": "orgsync.store.leases",
    "LeaseRecord": "orgsync.store.leases",
    "LinkRow": "orgsync.store.links",
    "LinkingJournal": "orgsync.store.linking",
    "NoStateDatabase": "orgsync.store.db",
    "OWNED_HOW": "orgsync.store.groups",
    "OperationRecord": "orgsync.store.journal",
    "Origin": "orgsync.store.runs",
    "Outcome": "orgsync.store.runs",
    "OwnedGroup": "orgsync.store.groups",
    "OwnedHow": "orgsync.store.groups",
    "RUN_MODES": "orgsync.store.runs",
    "RUN_STATUSES": "orgsync.store.runs",
    "RunJournal": "orgsync.store.journal",
    "RunRecord": "orgsync.store.runs",
    "StateStore": "orgsync.store.state",
    "TargetBusy": "orgsync.store.leases",
    "Unsettled": "orgsync.store.journal",
    "WriterLock": "orgsync.store.writer_lock",
    "check_state_path": "orgsync.store.checkup",
    "check_state_url": "orgsync.store.checkup",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "FINAL_STATUSES",
    "LATEST_VERSION",
    "OWNED_HOW",
    "RUN_MODES",
    "RUN_STATUSES",
    "HeldLease",
    "LeaseKeeper",
    "LeaseLost",
    "LeaseRecord",
    "LinkRow",
    "LinkingJournal",
    "NoStateDatabase",
    "OperationRecord",
    "Origin",
    "Outcome",
    "OwnedGroup",
    "OwnedHow",
    "RunJournal",
    "RunRecord",
    "StateStore",
    "TargetBusy",
    "Unsettled",
    "WriterLock",
    "check_state_path",
    "check_state_url",
]
