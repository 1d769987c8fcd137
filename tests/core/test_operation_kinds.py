"""Operation kinds: each declares its classification once, and the plan's wire form is pinned.

The checksum below was computed on main before the kinds' classification moved into class
attributes: the plan JSON (docs/reference.md "Plan JSON") of a plan holding every kind, and its
checksum, must never change by accident, since a reviewed `--plan-out` file is compared
with a fresh plan by that checksum.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import get_args, get_type_hints

import pytest

from orgsync.core.plan import (
    AddGroupMember,
    AdoptGroup,
    AssignGroupRole,
    CreateGroup,
    CreateUser,
    DeleteGroup,
    HeldOperation,
    Invite,
    Operation,
    Phase,
    Plan,
    RemoveGroupMember,
    RemoveMember,
    RenameGroup,
    RevokeInvite,
    SetRole,
    SuspendMember,
    UnassignGroupRole,
    UpdateUser,
    Waiting,
)


def every_kind() -> list[Operation]:
    """One operation of each kind (two of `set_role`: a raise and a lowering)."""
    return [
        Invite(reason="r1", email="a@x.com", role="reader", source_id="s-a"),
        Invite(
            reason="r2", email="b@x.com", role="owner", source_id="s-b", replaces_invite_id="i-9"
        ),
        CreateUser(reason="r3", email="c@x.com", name="C", role="reader", source_id="s-c"),
        UpdateUser(
            reason="r4", email="d@x.com", user_id="u-d", previous_email="old@x.com", source_id="s-d"
        ),
        RevokeInvite(reason="r5", email="e@x.com", invite_id="i-e"),
        SetRole(
            reason="r6",
            email="f@x.com",
            user_id="u-f",
            role="owner",
            previous_role="reader",
            raise_=True,
        ),
        SetRole(
            reason="r7",
            email="g@x.com",
            user_id="u-g",
            role="reader",
            previous_role="owner",
            raise_=False,
        ),
        RemoveMember(reason="r8", email="h@x.com", user_id="u-h"),
        SuspendMember(reason="r9", email="i@x.com", user_id="u-i"),
        CreateGroup(reason="r10", group="new-team", source_group_id="sg-new"),
        AdoptGroup(reason="r11", group="adopted", group_id="g-ad", source_group_id="sg-ad"),
        RenameGroup(reason="r12", group="renamed", group_id="g-rn", previous_name="before"),
        DeleteGroup(reason="r13", group="doomed", group_id="g-del"),
        AddGroupMember(
            reason="r14", group="new-team", source_group_id="sg-new", email="c@x.com", user_id=None
        ),
        RemoveGroupMember(
            reason="r15", group="adopted", group_id="g-ad", email="h@x.com", user_id="u-h"
        ),
        AssignGroupRole(
            reason="r16", group="adopted", group_id="g-ad", role="admin", role_id="role-1"
        ),
        UnassignGroupRole(
            reason="r17", group="renamed", group_id="g-rn", role="viewer", role_id="role-2"
        ),
    ]


def pinned_plan() -> Plan:
    operations = every_kind()
    held = [
        HeldOperation(
            operation=RemoveMember(reason="r18", email="z@x.com", user_id="u-z"), guard="too many"
        )
    ]
    return Plan.build(
        target="acme",
        generated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        operations=operations,
        held=held,
        waiting=[Waiting(op="remove_member", email="w@x.com", reason="grace")],
        warnings=["a warning"],
    )


PINNED_CHECKSUM = "sha256:f8050f9218da0d612f7854bb967c10324ea877a2721fb2a3bcb845f99c3fe12f"
PINNED_DOCUMENT_SHA256 = "cce0ec05e72a0d2f09594cdb99108e1a3aa89a88f71b9bfea263fbf203e63e30"
"""sha256 of `json.dumps(plan.to_json(), indent=2)`: the whole document, as `--plan-out` writes."""


def test_every_kind_is_covered() -> None:
    kinds = {op.op for op in every_kind()}
    union = get_args(get_args(Operation)[0])
    assert kinds == {get_args(get_type_hints(kind)["op"])[0] for kind in union}


def test_plan_checksum_is_pinned() -> None:
    assert pinned_plan().checksum == PINNED_CHECKSUM


def test_plan_document_is_pinned() -> None:
    text = json.dumps(pinned_plan().to_json(), indent=2)
    assert hashlib.sha256(text.encode()).hexdigest() == PINNED_DOCUMENT_SHA256


def test_plan_json_round_trips_byte_identical() -> None:
    plan = pinned_plan()
    text = json.dumps(plan.to_json(), sort_keys=True)
    again = Plan.from_json(json.loads(text))
    assert json.dumps(again.to_json(), sort_keys=True) == text
    assert [op.op for op in plan.operations] == [
        "rename_group",
        "invite",
        "invite",
        "create_user",
        "adopt_group",
        "create_group",
        "update_user",
        "set_role",
        "assign_group_role",
        "add_group_member",
        "set_role",
        "unassign_group_role",
        "revoke_invite",
        "remove_group_member",
        "remove_member",
        "suspend_member",
        "delete_group",
    ]


# op → (phase, removes access, lets someone new in, read back before a retry, done if
# absent): the order of application, what the safety gate counts and how the applier
# retries, as main classified them before the kinds declared it themselves.
CLASSIFICATION: dict[str, tuple[Phase, bool, bool, bool, bool]] = {
    "invite": (Phase.CREATE, False, True, True, False),
    "create_user": (Phase.CREATE, False, True, True, False),
    "update_user": (Phase.ADD_OR_RAISE, False, False, False, False),
    "revoke_invite": (Phase.REMOVE, True, False, False, True),
    "remove_member": (Phase.REMOVE, True, False, False, True),
    "suspend_member": (Phase.REMOVE, True, False, False, True),
    "create_group": (Phase.CREATE, False, False, True, False),
    "adopt_group": (Phase.CREATE, False, False, False, False),
    "rename_group": (Phase.RENAME, False, False, False, False),
    "delete_group": (Phase.DELETE_GROUPS, True, False, False, True),
    "add_group_member": (Phase.ADD_OR_RAISE, False, False, True, False),
    "remove_group_member": (Phase.REMOVE, True, False, False, True),
    "assign_group_role": (Phase.ADD_OR_RAISE, False, False, True, False),
    "unassign_group_role": (Phase.LOWER, True, False, False, True),
}


@pytest.mark.parametrize("operation", every_kind(), ids=lambda op: op.op)
def test_each_kind_is_classified_as_before(operation: Operation) -> None:
    if isinstance(operation, SetRole):
        # A lowering takes access away, yet a 404 on it is no success: the member is
        # still there, or gone for another reason the next run will see.
        expected = (
            (Phase.ADD_OR_RAISE, False, False, False, False)
            if operation.raise_
            else (Phase.LOWER, True, False, False, False)
        )
    else:
        expected = CLASSIFICATION[operation.op]
    assert (
        operation.phase,
        operation.is_removal,
        operation.is_addition,
        operation.read_back_before_retry,
        operation.done_if_absent,
    ) == expected


def test_each_kind_declares_its_phase_on_the_class() -> None:
    """Only `set_role` decides its phase per instance; every other kind's is its class's,
    readable without an instance."""
    for operation in every_kind():
        if not isinstance(operation, SetRole):
            assert type(operation).phase is operation.phase
