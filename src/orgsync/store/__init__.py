"""The state database: run history, operation journal, links, missing people, the
ownership ledger of target groups, leases, and the writer locks beside it; and the
`LinkingJournal` through which a sync keeps links and ownership in step with each call.

The only package that talks to SQLite and PostgreSQL. It depends on `orgsync.core` alone
and stores no secret. Use `StateStore.open(path_or_url)` (the CLI and the engine go
through `orgsync.factories.open_state_store`).
"""

from orgsync.store.baselines import INVALIDATED, Baseline
from orgsync.store.checkup import check_state_path, check_state_url
from orgsync.store.db import NoStateDatabase
from orgsync.store.groups import OWNED_HOW, OwnedGroup, OwnedHow
from orgsync.store.journal import OperationRecord, RunJournal, Unsettled
from orgsync.store.lease import LeaseRecord
from orgsync.store.linking import LinkingJournal
from orgsync.store.links import LinkRow
from orgsync.store.migrations import LATEST_VERSION
from orgsync.store.runs import FINAL_STATUSES, RUN_MODES, RUN_STATUSES, Origin, Outcome, RunRecord
from orgsync.store.state import StateStore
from orgsync.store.writer_lock import WriterLock

__all__ = [
    "FINAL_STATUSES",
    "INVALIDATED",
    "LATEST_VERSION",
    "OWNED_HOW",
    "RUN_MODES",
    "RUN_STATUSES",
    "Baseline",
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
    "Unsettled",
    "WriterLock",
    "check_state_path",
    "check_state_url",
]
