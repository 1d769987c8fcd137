"""Member kind resolution: a group member is a user or a nested group by `type`, then by
`$ref`, and only then by the ids it matches (issue 11: a provider numbering users and
groups from separate sequences)."""

from __future__ import annotations

import pytest
from scim2_models import Context, Group

from orgsync.core.member_kinds import member_kind, user_ids_of
from orgsync.core.model import SourceId, SourcePerson
from orgsync.sources.scim import _groups

USERS = frozenset({"1", "2", "3"})
GROUPS = frozenset({"2", "7"})
"""Ids of a provider whose users and groups come from separate sequences: "2" is both."""


@pytest.mark.parametrize(
    ("type_", "ref", "expected"),
    [
        ("User", None, "User"),
        ("Group", None, "Group"),
        ("user", None, "User"),
        ("GROUP", None, "Group"),
        # type wins over a $ref that says otherwise
        ("User", "https://scim.example/v2/Groups/2", "User"),
        ("Group", "https://scim.example/v2/Users/2", "Group"),
    ],
)
def test_type_decides_first(type_: str, ref: str | None, expected: str) -> None:
    assert member_kind("2", type_=type_, ref=ref, user_ids=USERS, group_ids=GROUPS) == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("https://scim.example/scim/v2/Users/2", "User"),
        ("https://scim.example/scim/v2/Groups/2", "Group"),
        ("http://127.0.0.1:8000/scim/v2/Users/2/", "User"),
        ("../Groups/2", "Group"),
        ("/Users/2", "User"),
        # an unknown shape says nothing: the id lookup decides ("2" is both: a user)
        ("urn:something:2", "User"),
        ("https://scim.example/v2/Things/2", "User"),
    ],
)
def test_without_type_the_ref_decides(ref: str, expected: str) -> None:
    assert member_kind("2", type_=None, ref=ref, user_ids=USERS, group_ids=GROUPS) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", "User"),  # a user id only
        ("7", "Group"),  # a group id only
        ("2", "User"),  # both: a user (orgsync creates no nested groups)
        ("99", "User"),  # neither: a user that is gone (its removal is planned)
    ],
)
def test_with_neither_the_ids_decide(value: str, expected: str) -> None:
    assert member_kind(value, type_=None, ref=None, user_ids=USERS, group_ids=GROUPS) == expected


def test_an_unknown_type_falls_through_to_the_ref() -> None:
    kind = member_kind("2", type_="Device", ref="/v2/Groups/2", user_ids=USERS, group_ids=GROUPS)
    assert kind == "Group"


def test_colliding_ids_keep_the_user_whose_ref_says_so() -> None:
    """The django-scim2 shape: `{"value", "$ref", "display"}`, no `type`. User 2 is in the
    group although group 2 exists; the nested group 7 is not a user member."""
    group = Group.model_validate(
        {
            "id": "7",
            "displayName": "team",
            "members": [
                {"value": "2", "$ref": "http://h/scim/v2/Users/2", "display": "Ann"},
                {"value": "3", "$ref": "http://h/scim/v2/Users/3", "display": "Bo"},
                {"value": "2", "$ref": "http://h/scim/v2/Groups/2", "display": "nested"},
                {"value": "7", "display": "itself, no type, no ref"},
            ],
        },
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE,
    )
    members = [(m.value, m.type, m.ref) for m in group.members or []]
    assert user_ids_of(members, user_ids=USERS, group_ids=GROUPS) == {"2", "3"}


def test_the_scim_source_puts_nested_groups_apart_from_people() -> None:
    """The SCIM *source* reads the same shapes: a member typed Group, or whose `$ref` names
    /Groups/, is a nested group even when a person has that id; a dangling one is dropped."""
    listed = [
        Group.model_validate(body, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        for body in (
            {
                "id": "1",
                "displayName": "parent",
                "members": [
                    {"value": "2", "type": "Group"},
                    {"value": "3", "$ref": "https://idp/scim/v2/Users/3"},
                    {"value": "9", "type": "User"},
                ],
            },
            {"id": "2", "displayName": "child", "members": [{"value": "2", "$ref": "../Users/2"}]},
        )
    ]
    people = tuple(SourcePerson(id=SourceId(i), email=f"p{i}@x.com") for i in ("2", "3"))
    parent, child = _groups(listed, people)
    assert (parent.members, parent.subgroups) == (("3",), ("2",))
    assert (child.members, child.subgroups) == (("2",), ())
