"""Group member changes carried many to a request: the chunking of `add/remove_group_member`.

The applier executes one operation at a time (journaled before and after), while SCIM
servers take many member changes in one PATCH, and cap them (AWS: 100 per request).
Sending one request per member would cost a 2,000-member group 2,000 calls. So, given the
plan beforehand (`prepare`), the member changes of each group are cut into chunks of at
most `max_changes`, in plan order; the first operation of a chunk to execute sends the
whole chunk in one request, and the others of that chunk, when their turn comes, find
their change already made and return at once. 250 additions with a cap of 100 are
3 requests.

Failures stay attributed to operations:
* a transient failure (or a lost response) fails the operation that sent the chunk, which
  the applier retries; the next sender of that chunk re-reads the group first and sends
  only what is still missing (re-adding an existing member duplicates it on some servers);
* a refusal of a multi-member request (4xx other than 404) splits the chunk: every
  operation then sends its own change, so one bad member fails alone;
* a 404 (the group is gone), refused credentials, or a change the server takes in no
  form (`UnsupportedRequest`) end the chunk for all its operations.

An operation that rides along in another's request is journaled when its own turn comes;
killed in between, the change is made but not journaled, which the next run reads back
from the server and plans nothing for. Without `prepare` every operation is a chunk of one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from orgsync.core.errors import (
    AuthError,
    NotFoundError,
    RequestRejected,
    TargetError,
    UnsupportedRequest,
)
from orgsync.core.model import EmailKey, normalize_email
from orgsync.core.plan import AddGroupMember, Operation, RemoveGroupMember

__all__ = ["Change", "MemberChanges", "Send"]

Change = Literal["add", "remove"]
Send = Callable[[str, Change, Mapping[EmailKey, str], bool], None]
"""`send(group_id, change, {email: user id}, verify)`: make these changes in one request;
with `verify`, first re-read the group and leave out changes already made."""

_ChunkKey = tuple[Change, str, str]
"""(change, source group id, group name): stable while the applier fills in ids."""


def _key(operation: AddGroupMember | RemoveGroupMember) -> _ChunkKey:
    change: Change = "add" if isinstance(operation, AddGroupMember) else "remove"
    return change, operation.source_group_id or "", operation.group


@dataclass
class _Chunk:
    change: Change
    emails: tuple[EmailKey, ...]
    user_ids: dict[EmailKey, str] = field(default_factory=dict)
    applied: set[EmailKey] = field(default_factory=set)
    sending: threading.Event | None = None
    """Set while one operation sends this chunk; the others wait on it."""
    sends: int = 0
    split: bool = False
    final: TargetError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class MemberChanges:
    """The chunks of one plan's member changes, shared by the applier's worker threads."""

    def __init__(self, max_changes: int) -> None:
        if max_changes < 1:
            raise ValueError("max_changes must be at least 1")
        self.max_changes = max_changes
        self._lock = threading.Lock()
        self._chunks: dict[tuple[_ChunkKey, EmailKey], _Chunk] = {}
        self._created: dict[EmailKey, str] = {}

    def prepare(self, operations: Sequence[Operation]) -> None:
        """Cut the plan's member changes into chunks (replacing any earlier plan's)."""
        pending: dict[_ChunkKey, list[AddGroupMember | RemoveGroupMember]] = {}
        for operation in operations:
            if isinstance(operation, AddGroupMember | RemoveGroupMember):
                pending.setdefault(_key(operation), []).append(operation)
        chunks: dict[tuple[_ChunkKey, EmailKey], _Chunk] = {}
        for key, members in pending.items():
            for start in range(0, len(members), self.max_changes):
                part = members[start : start + self.max_changes]
                emails = tuple(normalize_email(op.email) for op in part)
                chunk = _Chunk(
                    key[0],
                    emails,
                    {normalize_email(op.email): op.user_id for op in part if op.user_id},
                )
                for email in emails:
                    chunks[(key, email)] = chunk
        with self._lock:
            self._chunks = chunks

    def user_created(self, email: str, user_id: str) -> None:
        """A user this target created (or adopted) in this run: its id, for the chunks
        whose member changes were planned before the id existed."""
        with self._lock:
            self._created[normalize_email(email)] = user_id

    def apply(self, operation: AddGroupMember | RemoveGroupMember, send: Send) -> None:
        """Make `operation`'s change, alone or with the rest of its chunk."""
        if operation.group_id is None or operation.user_id is None:
            raise TargetError(f"{operation.op} for {operation.email}: group or user id unknown")
        email = normalize_email(operation.email)
        with self._lock:
            chunk = self._chunks.get((_key(operation), email))
            created = dict(self._created)
        if chunk is None:
            change: Change = "add" if isinstance(operation, AddGroupMember) else "remove"
            send(operation.group_id, change, {email: operation.user_id}, False)
            return
        while True:
            with chunk.lock:
                chunk.user_ids[email] = operation.user_id
                if email in chunk.applied:
                    return
                if chunk.final is not None:
                    raise chunk.final
                if chunk.split:
                    break
                waiting = chunk.sending
                if waiting is None:
                    chunk.sending = done = threading.Event()
                    verify = chunk.sends > 0
                    chunk.sends += 1
                    members = {
                        e: chunk.user_ids.get(e) or created[e]
                        for e in chunk.emails
                        if e not in chunk.applied and (e in chunk.user_ids or e in created)
                    }
            if waiting is not None:
                waiting.wait()
                continue
            if self._send(
                chunk, operation.group_id, members=members, verify=verify, send=send, done=done
            ):
                return
        # Split after a refusal: this operation's change alone, after checking the group
        # (verify), in case the refused request was applied in part after all.
        send(operation.group_id, chunk.change, {email: operation.user_id}, True)

    @staticmethod
    def _send(
        chunk: _Chunk,
        group_id: str,
        *,
        members: dict[EmailKey, str],
        verify: bool,
        send: Send,
        done: threading.Event,
    ) -> bool:
        """Send one chunk; True when done, False when it was split (each op goes alone)."""
        try:
            send(group_id, chunk.change, members, verify)
        except (NotFoundError, AuthError, UnsupportedRequest) as error:
            # Gone, refused credentials, or no form of this change the server takes: each
            # member alone would meet the same answer.
            with chunk.lock:
                chunk.final = error
            raise
        except RequestRejected:
            if len(members) == 1:
                raise
            with chunk.lock:
                chunk.split = True
            return False
        else:
            with chunk.lock:
                chunk.applied.update(members)
            return True
        finally:
            with chunk.lock:
                chunk.sending = None
            done.set()
