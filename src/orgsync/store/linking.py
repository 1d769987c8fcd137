"""The linking journal: the run's operation journal that also keeps the state database's
links and group ownership in step with each operation, durably, as it happens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orgsync.core.model import normalize_email
from orgsync.core.plan import (
    AdoptGroup,
    CreateGroup,
    CreateUser,
    DeleteGroup,
    Invite,
    Operation,
    RemoveMember,
    RenameGroup,
    RevokeInvite,
    SuspendMember,
    UpdateUser,
)
from orgsync.core.ports import OperationJournal, OperationStatus

if TYPE_CHECKING:
    from orgsync.store.state import StateStore


class LinkingJournal:
    """Journal that also remembers, before the call, whom orgsync is about to invite.

    Written before the call so that a crash between the server creating the invitation and
    the journal recording it still leaves the person marked as managed by orgsync.
    """

    def __init__(self, inner: OperationJournal, store: StateStore, target: str) -> None:
        self.inner, self.store, self.target = inner, store, target

    def started(self, seq: int, operation: Operation) -> None:
        if isinstance(operation, Invite | CreateUser):
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
            )
        self.inner.started(seq, operation)

    def finished(
        self,
        seq: int,
        operation: Operation,
        status: OperationStatus,
        *,
        detail: str | None = None,
        object_id: str | None = None,
    ) -> None:
        self.inner.finished(seq, operation, status, detail=detail, object_id=object_id)
        if status is not OperationStatus.DONE:
            return
        if isinstance(operation, Invite):
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
                invite_id=object_id,
            )
        elif isinstance(operation, UpdateUser) and operation.previous_email is not None:
            self.store.unlink(self.target, normalize_email(operation.previous_email))
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
                member_id=operation.user_id,
            )
        elif isinstance(operation, CreateUser):
            self.store.link(
                self.target,
                email_key=normalize_email(operation.email),
                source_id=operation.source_id,
                member_id=object_id,
            )
        elif isinstance(operation, (RemoveMember, SuspendMember, RevokeInvite)):
            self.store.unlink(self.target, normalize_email(operation.email))
        elif isinstance(operation, (CreateGroup, AdoptGroup)):
            group_id = object_id or operation.group_id
            if group_id is not None and operation.source_group_id is not None:
                self.store.own_group(
                    self.target,
                    group_id=group_id,
                    source_group_id=operation.source_group_id,
                    name=operation.group,
                    how="created" if isinstance(operation, CreateGroup) else "adopted",
                )
        elif isinstance(operation, RenameGroup) and operation.group_id is not None:
            self.store.rename_owned_group(self.target, operation.group_id, operation.group)
        elif isinstance(operation, DeleteGroup) and operation.group_id is not None:
            self.store.disown_group(self.target, operation.group_id)
