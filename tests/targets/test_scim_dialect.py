"""Learned request forms and colliding ids, against real servers (issue 11).

django-scim2 (PyPI, in a minimal Django project) is a provider in production use that
numbers users and groups from separate sequences, sends members without `type`, and
answers 501 to a filtered member removal and to a `displayName` replace (both forms).
scim2-server behind the recording proxy with `quirks` adds the emulated refusals: 501 to
the filtered removal and to the rename, while it refuses the value array itself (400
`invalidValue`), so the walk goes all the way to the read-modify-write PUT with If-Match.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgsync.core.errors import UnsupportedRequest
from orgsync.core.forms import LearnedForm
from orgsync.core.plan import (
    AddGroupMember,
    CreateGroup,
    RemoveGroupMember,
    RenameGroup,
    SuspendMember,
    UpdateUser,
)
from orgsync.targets.scim import ScimTarget
from tests.targets.scim_servers import TOKEN, Scim2Server, ScimProxy, start_django_scim
from tests.targets.test_scim_target import FAST, apply, create_users, done


class Provider:
    """A server, a recording proxy in front of it, and the target's findings."""

    def __init__(self, upstream: str, *, quirks: frozenset[str] = frozenset()) -> None:
        self.upstream = upstream
        self.proxy = ScimProxy(upstream, quirks=quirks)
        self.recorded: list[LearnedForm] = []
        self.direct = httpx.Client(
            base_url=upstream, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def target(
        self, *, dialect: str = "auto", learned: list[LearnedForm] | None = None
    ) -> ScimTarget:
        target = ScimTarget.connect(
            self.proxy.url, token=TOKEN, system="scim-dialect", retry=FAST, dialect=dialect
        )
        target.use_learned_forms(learned or [], self.recorded.append)
        return target

    def statuses(self, method: str) -> list[int]:
        return [r.status for r in self.proxy.requests if r.method == method]

    def members(self, group_id: str) -> set[str]:
        body: dict[str, Any] = self.direct.get(f"/Groups/{group_id}").json()
        return {m["value"] for m in body.get("members") or []}

    def close(self) -> None:
        self.direct.close()
        self.proxy.stop()


@pytest.fixture
def django(tmp_path: Path) -> Iterator[Provider]:
    server = start_django_scim(tmp_path / "django")
    provider = Provider(server.url)
    yield provider
    provider.close()
    server.stop()


@pytest.fixture
def quirky(scim2: Scim2Server) -> Iterator[Provider]:
    provider = Provider(
        scim2.tenant(), quirks=frozenset({"no-filter-removal", "no-display-name-replace"})
    )
    yield provider
    provider.close()


def group_with(target: ScimTarget, name: str, ids: dict[str, str]) -> str:
    group_id = str(target.execute(CreateGroup(group=name, reason="t")))
    adds = [
        AddGroupMember(group=name, group_id=group_id, email=e, user_id=u, reason="t")
        for e, u in ids.items()
    ]
    assert done(apply(target, adds))
    return group_id


def test_colliding_user_and_group_ids_read_as_users(django: Provider) -> None:
    """User 1 and 2, group 1 and 2: group 1 holds users 1 and 2, which the snapshot must
    show as members (before issue 11, a member whose value was a group id was dropped)."""
    target = django.target()
    ids = create_users(target, 2)
    assert set(ids.values()) == {"1", "2"}
    first = group_with(target, "g1", ids)
    second = group_with(target, "g2", {})
    assert (first, second) == ("1", "2")
    groups = {g.id: g for g in target.read().groups}
    assert groups["1"].member_ids == {"1", "2"}
    assert groups["2"].member_ids == frozenset()
    target.close()


def test_a_501_removal_falls_back_to_the_value_array_and_is_remembered(django: Provider) -> None:
    target = django.target()
    ids = create_users(target, 4)
    group_id = group_with(target, "g", ids)
    emails = sorted(ids)
    patches = len(django.statuses("PATCH"))
    first = [
        RemoveGroupMember(group="g", group_id=group_id, email=e, user_id=ids[e], reason="t")
        for e in emails[:2]
    ]
    assert done(apply(target, first))
    # One request refused (501, not retried), then one in the value-array form.
    assert django.statuses("PATCH")[patches:] == [501, 200]
    assert django.members(group_id) == {ids[emails[2]], ids[emails[3]]}
    learned = [r for r in django.recorded if r.change == "remove_members"]
    assert [(r.form, r.reason) for r in learned] == [("value_array", "filter refused: HTTP 501")]

    # The next removal asks in the learned form at once, and so does a new run.
    patches = len(django.statuses("PATCH"))
    later = RemoveGroupMember(
        group="g", group_id=group_id, email=emails[2], user_id=ids[emails[2]], reason="t"
    )
    assert done(apply(target, [later]))
    target.close()
    again = django.target(learned=django.recorded)
    last = RemoveGroupMember(
        group="g", group_id=group_id, email=emails[3], user_id=ids[emails[3]], reason="t"
    )
    assert done(apply(again, [last]))
    assert django.statuses("PATCH")[patches:] == [200, 200]
    assert django.members(group_id) == set()
    again.close()


def test_a_rename_refused_in_both_patch_forms_is_a_put(django: Provider) -> None:
    target = django.target()
    group_id = group_with(target, "before", {})
    target.execute(
        RenameGroup(group="after", previous_name="before", group_id=group_id, reason="t")
    )
    assert [g.name for g in target.read().groups] == ["after"]
    assert django.statuses("PATCH") == [501, 501]
    assert django.statuses("PUT") == [200]
    renamed = [(r.form, r.reason) for r in django.recorded if r.change == "rename_group"]
    assert renamed == [("put", "path refused: HTTP 501; no_path refused: HTTP 501")]
    target.close()


def test_user_changes_by_path_are_remembered_as_accepted(django: Provider) -> None:
    target = django.target()
    ids = create_users(target, 1)
    ((email, user_id),) = ids.items()
    target.execute(SuspendMember(email=email, user_id=user_id, reason="t"))
    target.execute(UpdateUser(email=email, user_id=user_id, source_id="s", active=True, reason="t"))
    assert django.statuses("PATCH") == [200, 200]
    assert [(r.change, r.form, r.reason) for r in django.recorded] == [
        ("update_user", "path", "accepted")
    ]
    target.close()


def test_a_named_dialect_fixes_the_form_and_says_how_to_learn(django: Provider) -> None:
    """`scim_dialect = "strict"` is an override: no fallback, one request for the whole
    chunk (an unsupported form is not split per member), and the message names the key."""
    target = django.target(dialect="strict")
    ids = create_users(target, 3)
    group_id = group_with(target, "g", ids)
    patches = len(django.statuses("PATCH"))
    removals = [
        RemoveGroupMember(group="g", group_id=group_id, email=e, user_id=u, reason="t")
        for e, u in ids.items()
    ]
    report = apply(target, removals)
    assert len(report.failed) == 3
    assert 'scim_dialect = "strict" fixes the request forms' in str(report.failed[0].detail)
    assert django.statuses("PATCH")[patches:] == [501]
    assert django.members(group_id) == set(ids.values())
    assert django.recorded == []
    target.close()


def test_a_put_the_server_ignores_is_a_failure_not_a_success(tmp_path: Path) -> None:
    """django-scim2 answers 200 to a group PUT and keeps the members as they were: with the
    value array refused too, removing a member must fail, never report done."""
    server = start_django_scim(tmp_path / "django")
    provider = Provider(
        server.url, quirks=frozenset({"no-filter-removal", "no-value-array-removal"})
    )
    try:
        target = provider.target()
        ids = create_users(target, 1)
        group_id = group_with(target, "g", ids)
        ((email, user_id),) = ids.items()
        report = apply(
            target,
            [
                RemoveGroupMember(
                    group="g", group_id=group_id, email=email, user_id=user_id, reason="t"
                )
            ],
        )
        assert len(report.failed) == 1
        assert "did not make the change" in str(report.failed[0].detail)
        assert provider.members(group_id) == {user_id}
        assert [r.change for r in provider.recorded] == ["add_members"]
        target.close()
    finally:
        provider.close()
        server.stop()


def test_the_walk_reaches_put_with_if_match_on_a_strict_server(quirky: Provider) -> None:
    """filter: 501 (emulated); value array: 400 invalidValue (scim2-server's own refusal of
    a form RFC 7644 does not define); PUT with If-Match: done, and remembered."""
    target = quirky.target()
    ids = create_users(target, 3)
    group_id = group_with(target, "g", ids)
    keep = sorted(ids)[0]
    removals = [
        RemoveGroupMember(group="g", group_id=group_id, email=e, user_id=u, reason="t")
        for e, u in ids.items()
        if e != keep
    ]
    assert done(apply(target, removals))
    assert quirky.members(group_id) == {ids[keep]}
    assert quirky.statuses("PATCH")[-2:] == [501, 400]
    assert quirky.statuses("PUT") == [200]
    assert quirky.proxy.put_if_match[0]  # scim2-server has ETags: the PUT is guarded
    learned = {r.change: (r.form, r.reason) for r in quirky.recorded}
    assert learned["remove_members"] == (
        "put",
        "filter refused: HTTP 501; value_array refused: HTTP 400",
    )
    target.execute(RenameGroup(group="g2", previous_name="g", group_id=group_id, reason="t"))
    assert quirky.direct.get(f"/Groups/{group_id}").json()["displayName"] == "g2"
    assert learned != {r.change: (r.form, r.reason) for r in quirky.recorded}
    assert {r.change: r.form for r in quirky.recorded}["rename_group"] == "put"
    target.close()


def test_501_is_never_retried(quirky: Provider) -> None:
    """FAST allows 4 attempts: a 501 is still sent once (RFC 7644 §3.12, not implemented)."""
    target = quirky.target(dialect="strict")
    group_id = group_with(target, "g", {})
    with pytest.raises(UnsupportedRequest):
        target.execute(RenameGroup(group="x", previous_name="g", group_id=group_id, reason="t"))
    assert quirky.statuses("PATCH") == [501]
    target.close()
