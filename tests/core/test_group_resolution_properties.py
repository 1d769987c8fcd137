"""The group planner's resolution (`GroupMembership.resolve`) equals reachability.

`resolve` does not memoize the group it is asked about (the group planner asks once per
group), while the groups met below it are memoized: whatever the order of the questions,
and mixed with the memoized questions of other spaces, every answer must be the people
reachable through nested groups (cycles, diamonds, ids naming both a person and a group,
unknown ids, duplicate group ids), each standing for its value in the space, whatever kind
of value that is (a user id, or the object standing for a person who is no member yet).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orgsync.core.group_planner import NotAMember
from orgsync.core.model import EmailKey, SourceId, SourceSnapshot
from orgsync.core.rules import GroupMembership, Wanted, _Nesting
from tests.core.test_rules_properties import GROUP_IDS, PROPERTY, directories, reachable


@PROPERTY
@given(directories(), st.randoms(use_true_random=False))
def test_resolve_equals_reachability_in_any_order_of_questions(  # type: ignore[no-untyped-def]
    source: SourceSnapshot, rnd
) -> None:
    keys = {p.id: p.email_key for p in source.people}
    wanted = {
        key: Wanted(pid, key, key, "reader", "test")
        for pid, key in keys.items()
        if rnd.random() < 0.7
    }
    nesting = _Nesting(source.groups, keys.keys())
    membership = GroupMembership(nesting, keys, wanted)
    # Strings (user ids, now and then one holding a NUL) and other objects (a person who
    # is no member yet, as the group planner's space holds them): each must stand for
    # itself whatever the others are.
    values: dict[SourceId, object] = {
        pid: rnd.choice([f"user-{pid}", f"user-{pid}", f"us\x00er-{pid}", NotAMember(key)])
        for pid, key in keys.items()
        if key in wanted
    }
    space = membership.space(values)
    questions = [*GROUP_IDS, "unknown"] * 2
    rnd.shuffle(questions)
    for group_id in questions:
        expected = reachable(source, SourceId(group_id))
        if rnd.random() < 0.3:  # memoized questions of other spaces, in between
            assert nesting.people_in(SourceId(group_id)) == expected
            assert membership.keys_in(SourceId(group_id)) == {
                EmailKey(keys[p]) for p in expected if keys[p] in wanted
            }
        assert membership.resolve(SourceId(group_id), space) == {
            values[p] for p in expected if p in values
        }
