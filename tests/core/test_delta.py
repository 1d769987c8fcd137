"""The compact source snapshot incremental passes compare with (`orgsync.core.delta`):
whatever the rules can see about a person changes their digest, nothing else does, and
the digests kept in the state database (both backends) are written only where they
differ."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from orgsync.core.delta import Fingerprint, config_fingerprint, diff, fingerprint
from orgsync.core.model import RejectedRecord, SourceGroup, SourceId, SourcePerson, SourceSnapshot
from orgsync.store import INVALIDATED, StateStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def p(i: int, **changes: object) -> SourcePerson:
    fields: dict[str, object] = {"id": SourceId(f"p{i}"), "email": f"person{i}@example.com"}
    fields.update(changes)
    return SourcePerson(**fields)  # type: ignore[arg-type]


def snap(people: tuple[SourcePerson, ...], groups: tuple[SourceGroup, ...] = ()) -> SourceSnapshot:
    return SourceSnapshot(people=people, groups=groups)


BASE_GROUPS = (
    SourceGroup(SourceId("g-eng"), "eng", members=(SourceId("p1"),)),
    SourceGroup(SourceId("g-all"), "all", subgroups=(SourceId("g-eng"),)),
)


def touched(before: SourceSnapshot, after: SourceSnapshot) -> set[str]:
    return set(diff(fingerprint(before).people, fingerprint(after).people).touched)


def test_an_unchanged_directory_touches_nobody_whatever_the_order() -> None:
    before = snap((p(1), p(2)), BASE_GROUPS)
    after = snap((p(2), p(1)), tuple(reversed(BASE_GROUPS)))
    assert touched(before, after) == set()
    assert fingerprint(before) == fingerprint(after)


@pytest.mark.parametrize(
    "changed",
    [
        {"email": "Person1.New@example.com"},
        {"email": "PERSON1@example.com"},  # the address as written reaches the target
        {"name": "Renamed"},
        {"active": False},
        {"attributes": {"department": "Sales"}},
    ],
)
def test_any_field_of_a_person_touches_that_person_only(changed: dict[str, object]) -> None:
    before = snap((p(1), p(2)), BASE_GROUPS)
    after = snap((p(1, **changed), p(2)), BASE_GROUPS)
    assert touched(before, after) == {"p1"}


def test_a_nested_group_change_touches_every_person_it_reaches() -> None:
    """p1 is in `all` through `eng`: renaming `all`, or unnesting `eng`, changes what a
    role rule sees about p1 although p1's own record and direct groups did not move."""
    before = snap((p(1), p(2)), BASE_GROUPS)
    renamed = (
        BASE_GROUPS[0],
        SourceGroup(SourceId("g-all"), "everyone", subgroups=(SourceId("g-eng"),)),
    )
    assert touched(before, snap((p(1), p(2)), renamed)) == {"p1"}
    unnested = (BASE_GROUPS[0], SourceGroup(SourceId("g-all"), "all"))
    assert touched(before, snap((p(1), p(2)), unnested)) == {"p1"}
    joined = (
        SourceGroup(SourceId("g-eng"), "eng", members=(SourceId("p1"), SourceId("p2"))),
        BASE_GROUPS[1],
    )
    assert touched(before, snap((p(1), p(2)), joined)) == {"p2"}
    assert fingerprint(before).groups != fingerprint(snap((p(1), p(2)), joined)).groups


def test_a_cycle_of_groups_ends() -> None:
    cycle = (
        SourceGroup(SourceId("a"), "a", members=(SourceId("p1"),), subgroups=(SourceId("b"),)),
        SourceGroup(SourceId("b"), "b", subgroups=(SourceId("a"),)),
    )
    assert fingerprint(snap((p(1),), cycle)).people


def test_joiners_leavers_and_fixed_records_are_touched() -> None:
    before = SourceSnapshot(
        people=(p(1), p(2)), rejected=(RejectedRecord(SourceId("p3"), "no email address"),)
    )
    after = SourceSnapshot(people=(p(1), p(3), p(4)))
    delta = diff(fingerprint(before).people, fingerprint(after).people)
    assert delta.added == {"p4"}
    assert delta.changed == {"p3"}  # rejected before, a person now
    assert delta.removed == {"p2"}


def test_the_config_fingerprint_follows_its_material() -> None:
    assert config_fingerprint({"a": 1, "b": [1, 2]}) == config_fingerprint({"b": [1, 2], "a": 1})
    assert config_fingerprint({"a": 1}) != config_fingerprint({"a": 2})


# --------------------------------------------------------------------------- the store


@pytest.fixture
def store(location: str) -> Iterator[StateStore]:
    with StateStore.open(location, clock=lambda: T0, server_clock=False) as opened:
        yield opened


def test_a_baseline_round_trips_and_rewrites_only_what_differs(store: StateStore) -> None:
    assert store.baseline("t") is None
    assert store.source_fingerprint("t") == Fingerprint(people={}, groups={})
    first = fingerprint(snap((p(1), p(2), p(3)), BASE_GROUPS))
    assert store.record_baseline("t", config="c1", cursor=None, fingerprint=first, full_at=T0) == 5
    assert store.source_fingerprint("t") == first
    assert store.source_fingerprint("other") == Fingerprint(people={}, groups={})
    baseline = store.baseline("t")
    assert baseline is not None
    assert (baseline.config, baseline.cursor, baseline.full_at, baseline.people) == (
        "c1",
        None,
        T0,
        3,
    )

    # An incremental pass: one person changed, one left; the full pass time is kept.
    second = fingerprint(snap((p(1, name="New"), p(3)), BASE_GROUPS))
    written = store.record_baseline("t", config="c1", cursor="k2", fingerprint=second, full_at=None)
    assert written == 3  # p1 deleted and inserted, p2 deleted
    assert store.source_fingerprint("t") == second
    baseline = store.baseline("t")
    assert baseline is not None
    assert (baseline.cursor, baseline.full_at, baseline.people) == ("k2", T0, 2)
    assert (
        store.record_baseline("t", config="c1", cursor="k2", fingerprint=second, full_at=None) == 0
    )

    store.advance_cursor("t", "k3")
    later = T0 + timedelta(days=1)
    store.record_baseline("t", config="c2", cursor="k4", fingerprint=second, full_at=later)
    baseline = store.baseline("t")
    assert baseline is not None
    assert (baseline.config, baseline.cursor, baseline.full_at) == ("c2", "k4", later)

    store.invalidate_baseline("t")
    baseline = store.baseline("t")
    assert baseline is not None and baseline.config == INVALIDATED
    assert store.source_fingerprint("t") == second, "the digests stay for the next full pass"
    store.forget_baseline("t")
    assert store.baseline("t") is None
    assert store.source_fingerprint("t") == Fingerprint(people={}, groups={})
