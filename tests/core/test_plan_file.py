"""Plan files: `--plan` reads only what `--plan-out` writes, and applies nothing edited."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orgsync.core.model import Memory, SourceId, normalize_email
from orgsync.core.plan import Plan
from orgsync.core.plan_file import PlanFileError, check_reviewed, plan_file_text, read_plan_file
from orgsync.core.safety import Population, SafetyLimits, gate
from tests.coremodels import (
    group,
    invite,
    make_plan,
    member,
    org_with_groups,
    person,
    snapshot,
    target_group,
)
from tests.output_schema import assert_plan_file


def sample_plans() -> list[Plan]:
    """Plans with every shape a file holds: invitations, roles, removals, groups, held."""
    people = [person(f"p{i}", f"p{i}@x.com") for i in range(4)]
    source = snapshot(
        *people,
        groups=(
            group("g", "openai-users", "p0", "p1", "p2", "p3"),
            group("o", "openai-owners", "p0"),
            group("t", "team-ml", "p0", "p1"),
        ),
    )
    members = (member("u0", "p0@x.com"), member("u1", "p1@x.com"), member("u9", "gone@x.com"))
    observed = org_with_groups(target_group("tg", "team-old", ("u1", "u9")), members=members)
    observed = observed.__class__(
        members=observed.members,
        invites=(invite("i1", "p3@x.com", "owner"),),
        roles=observed.roles,
        groups=observed.groups,
    )
    memory = Memory(
        managed=frozenset({normalize_email("gone@x.com")}), owned_groups={"tg": SourceId("old")}
    )
    draft = make_plan(source, observed, memory=memory)
    held = gate(draft, population=Population(3), limits=SafetyLimits(max_removals=1))
    return [draft, held, make_plan(snapshot(people[0]), org_with_groups())]


PLANS = sample_plans()


def test_samples_cover_operations_and_held() -> None:
    kinds = {op.op for plan in PLANS for op in plan.operations}
    assert {"invite", "set_role", "remove_member", "create_group", "delete_group"} <= kinds
    assert PLANS[1].held


@pytest.mark.parametrize("plan", PLANS)
def test_a_written_plan_reads_back_as_itself(plan: Plan) -> None:
    (read,) = read_plan_file(plan_file_text([plan])).values()
    assert read.checksum == plan.checksum
    assert read.operations == plan.operations and read.held == plan.held
    check_reviewed(read, plan)


def test_several_targets_in_one_file() -> None:
    one, other = PLANS[0], PLANS[2].model_copy(update={"target": "other"})
    plans = read_plan_file(plan_file_text([one, other]))
    assert sorted(plans) == ["other", "t"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"hello": "world"}', "not a plan written by --plan-out: 'target' is missing"),
        ("[]", "not a plan written by --plan-out: an empty list, no plan in it"),
        ('"a string"', "not a plan written by --plan-out: expected a plan object, found a string"),
        ("{", "not a plan written by --plan-out: not JSON"),
        ("[1]", "not a plan written by --plan-out: expected a plan object, found a number"),
    ],
)
def test_what_is_not_a_plan_says_so_in_one_line(text: str, message: str) -> None:
    with pytest.raises(PlanFileError) as raised:
        read_plan_file(text)
    assert str(raised.value).startswith(message)
    assert "pydantic" not in str(raised.value) and "\n" not in str(raised.value)


def test_an_operation_that_is_not_one_is_named_by_its_place() -> None:
    document = PLANS[0].to_json()
    document["operations"][0]["op"] = "grant_everything"  # type: ignore[index]
    with pytest.raises(PlanFileError) as raised:
        read_plan_file(json.dumps(document))
    text = str(raised.value)
    assert text.startswith("not a plan written by --plan-out: operations[0]")
    assert "errors.pydantic.dev" not in text and "\n" not in text


def test_an_edited_summary_is_refused() -> None:
    """Issue 9.6: the summary a reviewer reads first must be the operations' summary."""
    document = PLANS[0].to_json()
    document["summary"] = {"invite": 1}
    with pytest.raises(PlanFileError, match=r"the summary in the file .* the file was edited"):
        read_plan_file(json.dumps(document))


def test_an_edited_operation_is_refused() -> None:
    document = PLANS[0].to_json()
    assert document["operations"][1]["op"] == "invite"  # type: ignore[index]
    document["operations"][1]["role"] = "owner"  # type: ignore[index]
    with pytest.raises(PlanFileError, match=r"the checksum in the file .* the file was edited"):
        read_plan_file(json.dumps(document))


def test_two_plans_for_one_target_are_refused() -> None:
    text = json.dumps([PLANS[0].to_json(), PLANS[0].to_json()])
    with pytest.raises(PlanFileError, match="a second plan for target t"):
        read_plan_file(text)


def test_held_operations_moved_into_the_operations_never_apply() -> None:
    """A careful tamperer moves what the gate held into `operations` and rewrites the
    checksum and summary: the file reads, but the fresh plan still holds them."""
    fresh = PLANS[1]
    tampered = Plan.build(
        target=fresh.target,
        generated_at=fresh.generated_at,
        operations=[*fresh.operations, *(h.operation for h in fresh.held)],
    )
    (reviewed,) = read_plan_file(plan_file_text([tampered])).values()
    with pytest.raises(PlanFileError, match="no longer matches a fresh plan"):
        check_reviewed(reviewed, fresh)


def test_a_reviewed_plan_is_not_applied_to_a_different_fresh_plan() -> None:
    with pytest.raises(PlanFileError, match="no longer matches a fresh plan"):
        check_reviewed(PLANS[0], PLANS[1])


# ---------------------------------------------------------------- properties

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY
@given(json_values)
def test_any_json_is_read_or_refused_never_a_crash(value: object) -> None:
    try:
        read_plan_file(json.dumps(value))
    except PlanFileError as error:
        message = str(error)
    else:
        return
    assert (
        message.startswith("not a plan written by --plan-out") or "the file was edited" in message
    )
    assert "\n" not in message


@PROPERTY
@given(st.text(max_size=200))
def test_any_text_is_read_or_refused_never_a_crash(text: str) -> None:
    with contextlib.suppress(PlanFileError):
        read_plan_file(text)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, as a path of keys and indices."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def tampered(draw: st.DrawFn) -> tuple[Plan, dict[str, Any]]:
    """A plan and its document with one place changed: replaced, removed, or added to."""
    plan = draw(st.sampled_from(PLANS))
    document = copy.deepcopy(plan.to_json())
    path = draw(st.sampled_from(_paths(document)[1:]))
    parent: Any = document
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "remove", "add", "tweak"]))
    last = path[-1]
    if action == "remove":
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][draw(st.text(max_size=8))] = draw(json_values)
    elif action == "add" and isinstance(parent[last], list):
        parent[last].append(draw(json_values))
    elif action == "tweak" and isinstance(parent[last], str):
        parent[last] = parent[last] + draw(st.sampled_from(["x", " ", "\u00a0", "A"]))
    elif action == "tweak" and isinstance(parent[last], int | float | bool):
        parent[last] = not parent[last] if isinstance(parent[last], bool) else parent[last] + 1
    else:
        parent[last] = draw(json_values)
    return plan, document


@PROPERTY
@given(tampered())
def test_a_tampered_plan_is_refused_or_applies_only_what_was_reviewed(case) -> None:  # type: ignore[no-untyped-def]
    """Whatever changed in the file, what `--plan` would apply is the reviewed operations."""
    fresh, document = case
    try:
        plans = read_plan_file(json.dumps(document))
    except PlanFileError:
        return
    (reviewed,) = plans.values()
    try:
        check_reviewed(reviewed, fresh)
    except PlanFileError:
        return
    # Accepted: only what is never applied may have changed (generated_at, waiting, warnings).
    assert reviewed.operations == fresh.operations
    assert reviewed.held == fresh.held
    assert document["summary"] == fresh.summary
    assert document["target"] == fresh.target


# ---------------------------------------------------------------- the file's one shape


@pytest.mark.parametrize("count", [1, 2])
def test_the_file_is_one_object_with_a_targets_list_whatever_the_count(count: int) -> None:
    plans = [PLANS[0], PLANS[2].model_copy(update={"target": "other"})][:count]
    document = json.loads(plan_file_text(plans))
    assert list(document) == ["targets"]
    assert [d["target"] for d in document["targets"]] == [p.target for p in plans]
    assert_plan_file(document)
    assert [p.checksum for p in read_plan_file(json.dumps(document)).values()] == [
        p.checksum for p in plans
    ]


def test_files_written_before_the_targets_object_still_read() -> None:
    """A plan reviewed with the previous release applies with this one: one bare document
    for one target, a list for several."""
    one, other = PLANS[1], PLANS[2].model_copy(update={"target": "other"})
    (single,) = read_plan_file(json.dumps(one.to_json())).values()
    assert (single.checksum, single.held) == (one.checksum, one.held)
    several = read_plan_file(json.dumps([one.to_json(), other.to_json()]))
    assert {t: p.checksum for t, p in several.items()} == {
        "t": one.checksum,
        "other": other.checksum,
    }


def test_sync_json_output_is_not_a_plan_file_and_says_what_to_do() -> None:
    output = {"dry_run": True, "exit_code": 2, "targets": [{**PLANS[0].to_json(), "run": {}}]}
    with pytest.raises(PlanFileError) as raised:
        read_plan_file(json.dumps(output))
    assert str(raised.value) == (
        "not a plan written by --plan-out: unknown key 'dry_run' (this is `sync --json` "
        "output, not a plan file: write one with `orgsync sync --dry-run --plan-out FILE`)"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"targets": {"t": 1}}, "targets: expected a list, found an object"),
        ({"targets": []}, "an empty list, no plan in it"),
        ({"targets": [PLANS[0].to_json()], "note": "ok"}, "unknown key 'note'"),
        ({"targets": [{**PLANS[0].to_json(), "run": {}}]}, "unknown key 'run'"),
    ],
)
def test_a_targets_object_that_is_not_a_plan_file_is_refused(
    document: object, message: str
) -> None:
    with pytest.raises(PlanFileError, match=r"^not a plan written by --plan-out: ") as raised:
        read_plan_file(json.dumps(document))
    assert message in str(raised.value)


def _outcome(text: str) -> tuple[str, object]:
    try:
        plans = read_plan_file(text)
    except PlanFileError as error:
        return "refused", re.sub(r"plan \d+ of \d+: ", "", str(error))
    return "read", {t: p.model_dump() for t, p in plans.items()}


@PROPERTY
@given(tampered())
def test_a_tampered_plan_reads_the_same_inside_the_targets_object(case) -> None:  # type: ignore[no-untyped-def]
    """The `targets` object adds nothing to trust: a document is accepted or refused inside
    it exactly as on its own (the previous format)."""
    _, document = case
    assert _outcome(json.dumps({"targets": [document]})) == _outcome(json.dumps(document))
