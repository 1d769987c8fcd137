"""The plan: typed, ordered, serialisable operations with a checksum.

Every operation carries the fields its API call needs and a human `reason`. The JSON form
is the contract of docs/reference.md "Plan JSON"; `Plan.checksum` covers what would be done (the
operations and the held operations), not when the plan was made, so a reviewed plan file
can be compared with a fresh plan.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import IntEnum
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class Phase(IntEnum):
    """Order of application (reference "Order of application"): creations, additions and
    raises, lowerings, removals.

    Renames come first so that a name one group gives up is free before another group
    is created or adopted under it.
    """

    RENAME = 0
    CREATE = 1
    ADD_OR_RAISE = 2
    LOWER = 3
    REMOVE = 4
    DELETE_GROUPS = 5

    @property
    def takes_access_away(self) -> bool:
        """Lowerings, removals and deletions: what the safety gate counts as removals."""
        return self >= Phase.LOWER


# How a person reads a phase in a plan table (README "Reading a plan"): + creations,
# ^ additions and raises, v lowerings, - removals, ~ renames, x deletions. The report and
# `orgsync explain` both print them, so they are defined once, beside the phases.
PHASE_MARKS: Mapping[Phase, str] = MappingProxyType(
    {
        Phase.RENAME: "~",
        Phase.CREATE: "+",
        Phase.ADD_OR_RAISE: "^",
        Phase.LOWER: "v",
        Phase.REMOVE: "-",
        Phase.DELETE_GROUPS: "x",
    }
)


# Every operation kind is a frozen, keyword-only dataclass with slots rather than a
# pydantic model: the planner makes one per change (tens of thousands at 100k people)
# from values it has already checked, where validation paid for nothing (3.6 µs a model,
# 1.5 µs a dataclass, and a third of the memory). Validation stays where input comes from
# outside: a plan file or a journal row is read through `OPERATION_ADAPTER` (pydantic
# validates dataclasses, refusing unknown keys by each kind's `__pydantic_config__`).
_STRICT_FIELDS = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Operation:
    """One kind of operation. Each kind declares how it is classified once, as class
    attributes, and the planner, safety gate, applier, report and explain read them; none
    of them lists kinds itself (as octoDNS's `Create`/`Update`/`Delete` changes carry
    their own class)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT_FIELDS

    phase: ClassVar[Phase]
    """When it is applied (reference "Order of application"); `SetRole` alone decides per
    instance."""

    is_addition: ClassVar[bool] = False
    """Whether it brings someone new in (an invitation e-mail, an account): what cannot
    be taken back, so a suspect source holds it (`core.safety`)."""

    read_back_before_retry: ClassVar[bool] = False
    """Whether it creates something (not idempotent): the applier retries it, and answers a
    409, only after asking the target whether an earlier attempt took effect
    (`Target.find_existing`), so a lost response never makes a duplicate."""

    done_if_absent: ClassVar[bool] = False
    """Whether a 404 means it is already done (what it removes is gone already)."""

    is_removal: ClassVar[bool] = False
    """Whether it takes access away from someone: the safety gate counts it against
    `max_removals` / `max_removal_ratio` and holds it when the run removes too much. It
    follows from the phase (`__init_subclass__` sets it once per kind, `SetRole` per
    instance), so the two cannot disagree."""

    reason: str

    def __init_subclass__(cls, **kwargs: object) -> None:
        phase = cls.__dict__.get("phase")
        if isinstance(phase, Phase):
            cls.is_removal = phase.takes_access_away

    @property
    def subject(self) -> str:
        """The natural key the operation is about, for ordering and the journal."""
        raise NotImplementedError

    @property
    def detail(self) -> str:
        """Second sort key within one subject (the member or role of a group operation)."""
        return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _MemberOperation(_Operation):
    """An operation about one person of the organization, named by email."""

    email: str

    @property
    def subject(self) -> str:
        return self.email


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite(_MemberOperation):
    """Invite a person; `replaces_invite_id` names a wrong-role or expired invite to drop first."""

    op: Literal["invite"] = "invite"
    role: str
    source_id: str
    replaces_invite_id: str | None = None

    phase: ClassVar[Phase] = Phase.CREATE
    is_addition: ClassVar[bool] = True
    read_back_before_retry: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateUser(_MemberOperation):
    """Provision a person directly, on targets that create users (SCIM)."""

    op: Literal["create_user"] = "create_user"
    name: str = ""
    role: str | None = None
    source_id: str

    phase: ClassVar[Phase] = Phase.CREATE
    is_addition: ClassVar[bool] = True
    read_back_before_retry: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateUser(_MemberOperation):
    """Re-enable a suspended member who is wanted again (never a second invitation), and/or
    rename their email when the IdP changed it (`previous_email` set; same source id)."""

    op: Literal["update_user"] = "update_user"
    user_id: str
    active: bool = True
    previous_email: str | None = None
    source_id: str | None = None

    phase: ClassVar[Phase] = Phase.ADD_OR_RAISE


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeInvite(_MemberOperation):
    op: Literal["revoke_invite"] = "revoke_invite"
    invite_id: str

    phase: ClassVar[Phase] = Phase.REMOVE
    done_if_absent: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRole(_MemberOperation):
    """Change a member's organization role; every lowering takes access away."""

    op: Literal["set_role"] = "set_role"
    user_id: str
    role: str
    previous_role: str | None
    raise_: Annotated[bool, Field(alias="raise")]

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid", populate_by_name=True)

    # The one kind whose phase is the instance's, a raise or a lowering: read-only
    # properties where the others declare class attributes (hence the ignores).
    @property
    def phase(self) -> Phase:  # type: ignore[override]
        return Phase.ADD_OR_RAISE if self.raise_ else Phase.LOWER

    @property
    def is_removal(self) -> bool:  # type: ignore[override]
        return not self.raise_


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveMember(_MemberOperation):
    op: Literal["remove_member"] = "remove_member"
    user_id: str

    phase: ClassVar[Phase] = Phase.REMOVE
    done_if_absent: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SuspendMember(_MemberOperation):
    op: Literal["suspend_member"] = "suspend_member"
    user_id: str

    phase: ClassVar[Phase] = Phase.REMOVE
    done_if_absent: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupOperationFields(_Operation):
    """Common fields of group operations: the group's name, and its id where known.

    `group_id` is None for a group this plan creates; the applier fills it in from the
    create's result, keyed by `source_group_id`.
    """

    group: str
    group_id: str | None = None
    source_group_id: str | None = None

    @property
    def subject(self) -> str:
        return f"group {self.group}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateGroup(GroupOperationFields):
    op: Literal["create_group"] = "create_group"

    phase: ClassVar[Phase] = Phase.CREATE
    read_back_before_retry: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptGroup(GroupOperationFields):
    """Take ownership of an existing group a rule names exactly (recorded, no API call)."""

    op: Literal["adopt_group"] = "adopt_group"

    phase: ClassVar[Phase] = Phase.CREATE


@dataclass(frozen=True, slots=True, kw_only=True)
class RenameGroup(GroupOperationFields):
    op: Literal["rename_group"] = "rename_group"
    previous_name: str

    phase: ClassVar[Phase] = Phase.RENAME


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteGroup(GroupOperationFields):
    op: Literal["delete_group"] = "delete_group"

    phase: ClassVar[Phase] = Phase.DELETE_GROUPS
    done_if_absent: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AddGroupMember(GroupOperationFields):
    """Add a member; `user_id` is None for a user this plan creates (filled in on apply)."""

    op: Literal["add_group_member"] = "add_group_member"
    email: str
    user_id: str | None

    phase: ClassVar[Phase] = Phase.ADD_OR_RAISE
    read_back_before_retry: ClassVar[bool] = True

    @property
    def detail(self) -> str:
        return self.email


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveGroupMember(GroupOperationFields):
    op: Literal["remove_group_member"] = "remove_group_member"
    email: str
    user_id: str

    phase: ClassVar[Phase] = Phase.REMOVE
    done_if_absent: ClassVar[bool] = True

    @property
    def detail(self) -> str:
        return self.email


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignGroupRole(GroupOperationFields):
    op: Literal["assign_group_role"] = "assign_group_role"
    role: str
    role_id: str

    phase: ClassVar[Phase] = Phase.ADD_OR_RAISE
    read_back_before_retry: ClassVar[bool] = True

    @property
    def detail(self) -> str:
        return self.role


@dataclass(frozen=True, slots=True, kw_only=True)
class UnassignGroupRole(GroupOperationFields):
    """Remove a role from a group: every member of the group loses what it granted."""

    op: Literal["unassign_group_role"] = "unassign_group_role"
    role: str
    role_id: str

    phase: ClassVar[Phase] = Phase.LOWER
    done_if_absent: ClassVar[bool] = True

    @property
    def detail(self) -> str:
        return self.role


GroupOperation = (
    CreateGroup
    | AdoptGroup
    | RenameGroup
    | DeleteGroup
    | AddGroupMember
    | RemoveGroupMember
    | AssignGroupRole
    | UnassignGroupRole
)
MemberOperation = (
    Invite | CreateUser | UpdateUser | RevokeInvite | SetRole | RemoveMember | SuspendMember
)

Operation = Annotated[MemberOperation | GroupOperation, Field(discriminator="op")]
OPERATION_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Operation)


def operation_key(operation: Operation) -> tuple[int, str, str, str]:
    """Sort key giving the deterministic plan order: phase, subject, kind, detail."""
    return (operation.phase, operation.subject, operation.op, operation.detail)


def _wire_names(kind: type[_Operation]) -> tuple[tuple[str, str], ...]:
    """(attribute, JSON key) of each field of `kind`, in declaration order (base first)."""
    return tuple((f.name, "raise" if f.name == "raise_" else f.name) for f in fields(kind))


_WIRE: Mapping[type[_Operation], tuple[tuple[str, str], ...]] = MappingProxyType(
    {kind: _wire_names(kind) for kind in (*get_args(MemberOperation), *get_args(GroupOperation))}
)


def operation_json(operation: Operation) -> dict[str, object]:
    """The operation's wire form (reference "Plan JSON"), stable across runs: every field
    in declaration order, `raise_` as `raise`. Each value is a text, a boolean or None."""
    return {key: getattr(operation, name) for name, key in _WIRE[type(operation)]}


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldOperation:
    """An operation the safety gate held back, with the guard's reason."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT_FIELDS

    operation: Operation
    guard: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting:
    """Something that cannot happen yet, e.g. a removal inside `removal_grace`.

    A dataclass, as the operations are: a group planner lists one per group membership
    of each invited person (100k at 100k people with 10% invited)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT_FIELDS

    op: str
    email: str
    reason: str
    until: datetime | None = None
    group: str | None = None


_WAITING_ADAPTER: TypeAdapter[Waiting] = TypeAdapter(Waiting)


def waiting_json(waiting: Waiting) -> dict[str, object]:
    """The wire form of a waiting item (reference "Plan JSON"): no null fields, `until`
    as pydantic writes a datetime."""
    document: dict[str, object] = _WAITING_ADAPTER.dump_python(
        waiting, mode="json", exclude_none=True
    )
    return document


class Plan(BaseModel):
    """One target's plan. Build it with `Plan.build` so operations are ordered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    generated_at: datetime
    operations: tuple[Operation, ...] = ()
    held: tuple[HeldOperation, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    warnings: tuple[str, ...] = ()
    matches: Mapping[str, str] = Field(
        default_factory=lambda: MappingProxyType({}), exclude=True, repr=False
    )
    """Each wanted person's email key -> the member the planner matched them to. Not part
    of the plan document (nor its checksum): what a sync links afterwards, so that the
    links record the planner's decision rather than whichever member carries an address
    (reference "Matching")."""

    @classmethod
    def build(
        cls,
        *,
        target: str,
        generated_at: datetime,
        operations: list[Operation],
        held: list[HeldOperation] | None = None,
        waiting: list[Waiting] | None = None,
        warnings: list[str] | None = None,
        matches: Mapping[str, str] | None = None,
    ) -> Plan:
        # Every operation is a validated model already and the rest is typed: validating
        # the tuples again would cost a pass over tens of thousands of operations.
        return cls.model_construct(
            target=target,
            generated_at=generated_at,
            operations=tuple(sorted(operations, key=operation_key)),
            held=tuple(sorted(held or [], key=lambda h: operation_key(h.operation))),
            waiting=tuple(sorted(waiting or [], key=lambda w: (w.email, w.op, w.group or ""))),
            warnings=tuple(sorted(set(warnings or []))),
            matches=MappingProxyType(dict(matches or {})),
        )

    @property
    def checksum(self) -> str:
        material = {
            "target": self.target,
            "operations": [operation_json(op) for op in self.operations],
            "held": [
                {"operation": operation_json(h.operation), "guard": h.guard} for h in self.held
            ],
        }
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def summary(self) -> dict[str, int]:
        return dict(sorted(Counter(op.op for op in self.operations).items()))

    def to_json(self) -> dict[str, object]:
        """The plan document (reference "Plan JSON")."""
        return {
            "target": self.target,
            "generated_at": self.generated_at.isoformat().replace("+00:00", "Z"),
            "operations": [operation_json(op) for op in self.operations],
            "held": [{**operation_json(h.operation), "guard": h.guard} for h in self.held],
            "waiting": [waiting_json(w) for w in self.waiting],
            "warnings": list(self.warnings),
            "checksum": self.checksum,
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, document: object) -> Plan:
        """Parse a plan document written by `to_json`; `PlanDocumentError` names what is wrong.

        The checksum and summary written in it are checked by `core.plan_file`.
        """
        if not isinstance(document, dict):
            raise PlanDocumentError(f"expected a plan object, found {_json_kind(document)}")
        missing = [key for key in PLAN_KEYS if key not in document]
        if missing:
            raise PlanDocumentError(f"'{missing[0]}' is missing")
        unknown = sorted(str(key) for key in document if key not in PLAN_KEYS)
        if unknown:
            raise PlanDocumentError(f"unknown key '{unknown[0]}'")
        held_docs = document["held"]
        if not isinstance(held_docs, list):
            raise PlanDocumentError(f"held: expected a list, found {_json_kind(held_docs)}")
        held: list[HeldOperation] = []
        for index, item in enumerate(held_docs):
            if not isinstance(item, dict) or not isinstance(item.get("guard"), str):
                raise PlanDocumentError(f"held[{index}]: expected an operation with its 'guard'")
            body = {key: value for key, value in item.items() if key != "guard"}
            held.append(
                HeldOperation(
                    operation=_validated(OPERATION_ADAPTER, body, f"held[{index}]"),
                    guard=item["guard"],
                )
            )
        return _validated(
            PLAN_ADAPTER,
            {key: document[key] for key in PLAN_KEYS if key not in ("held", "checksum", "summary")}
            | {"held": held},
            "",
        )


class PlanDocumentError(ValueError):
    """A document that is not a plan as `Plan.to_json` writes it; the message says where."""


PLAN_KEYS = (
    "target",
    "generated_at",
    "operations",
    "held",
    "waiting",
    "warnings",
    "checksum",
    "summary",
)
"""The keys of a plan document (reference "Plan JSON"), no more, no fewer."""

PLAN_ADAPTER: TypeAdapter[Plan] = TypeAdapter(Plan)

_Parsed = TypeVar("_Parsed")


def _validated(adapter: TypeAdapter[_Parsed], value: object, where: str) -> _Parsed:
    """`adapter.validate_python`, its error told in one line: the first problem's place."""
    try:
        return adapter.validate_python(value, strict=False)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        place = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"]
        )
        place = (where + place).lstrip(".")
        raise PlanDocumentError(f"{place or 'plan'}: {problem['msg']}") from None


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if not isinstance(value, bool) else "true/false"
