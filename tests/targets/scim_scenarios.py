"""The SCIM scenarios every provider must pass through the real CLI (issue 11), shared by
`tests/targets/test_scim_e2e.py` (which checks them) and `bench/scim_scenarios.py` (which
counts their requests).

One organization's life, one `orgsync sync` per step, each step's plan holding exactly that
step's changes (which also shows the step before it converged):

0. someone else creates a user directly on the server (never in the IdP): orgsync must
   leave it alone throughout;
1. `fresh`: six people, two teams mirrored as groups;
2. `deactivate`: p1 is disabled at the IdP: suspended (`on_removal = "suspend"`) and out
   of its group (a suspended person keeps no group access);
3. `leave`: p4 is deleted from the IdP: suspended and out of its group;
4. `move`: p2 moves from team-a to team-b;
5. `rename`: team-a is renamed at the IdP: the target group keeps its id;
6. `dry-run`: a second dry run plans nothing and exits 0.

`minimum` is the fewest requests any client needs for the step on a server that takes a
one-request form of each change: one page of users and one of groups (the state must be
read), plus one request per user created or suspended, per group created or renamed, and
per group whose members change in one direction (up to 100 members a request). Discovery
(`/ServiceProviderConfig`), refused forms, and the read that a PUT fallback needs are
what a provider's quirks cost above it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.targets.cli import directory

PROVIDERS = ("scim2-server", "scimmy", "django-scim2", "scim2-server+quirks")
"""`scim2-server+quirks`: scim2-server behind the proxy answering 501 to a filtered member
removal and to a displayName replace (both forms), as the provider of issue 11 did."""
QUIRKS = {"scim2-server+quirks": frozenset({"no-filter-removal", "no-display-name-replace"})}

FOREIGN = "someone.else@example.com"
READS = 2
"""One page of users, one of groups."""

Op = tuple[str, str, str]
"""(op, email or "", group or "") of a planned operation."""


@dataclass(frozen=True)
class Step:
    name: str
    document: dict[str, Any]
    expected: tuple[Op, ...]
    minimum: int
    dry_run: bool = False


def _teams(a: list[int], b: list[int], *, a_name: str = "team-a") -> dict[str, Any]:
    document = directory(6, teams={"team-a": a, "team-b": b})
    if a_name != "team-a":
        next(g for g in document["groups"] if g["id"] == "t-team-a")["name"] = a_name
    return document


def _without(document: dict[str, Any], person: str) -> dict[str, Any]:
    """`document` with `person` deleted from the IdP (gone from people and groups)."""
    result = copy.deepcopy(document)
    result["people"] = [p for p in result["people"] if p["id"] != person]
    for group in result["groups"]:
        group["members"] = [m for m in group["members"] if m != person]
    return result


def _inactive(document: dict[str, Any], person: str) -> dict[str, Any]:
    result = copy.deepcopy(document)
    for entry in result["people"]:
        if entry["id"] == person:
            entry["active"] = False
    return result


def email(index: int) -> str:
    return f"person{index}@example.com"


def steps() -> list[Step]:
    fresh = _teams([0, 1, 2], [3, 4])
    deactivated = _inactive(fresh, "p1")
    left = _without(deactivated, "p4")
    moved = _without(_inactive(_teams([0, 1], [2, 3, 4]), "p1"), "p4")
    renamed = _without(_inactive(_teams([0, 1], [2, 3, 4], a_name="team-c"), "p1"), "p4")
    return [
        Step(
            "fresh",
            fresh,
            (
                *(("create_user", email(i), "") for i in range(6)),
                ("create_group", "", "team-a"),
                ("create_group", "", "team-b"),
                *(("add_group_member", email(i), "team-a") for i in (0, 1, 2)),
                *(("add_group_member", email(i), "team-b") for i in (3, 4)),
            ),
            minimum=READS + 6 + 2 + 2,
        ),
        Step(
            "deactivate",
            deactivated,
            (("remove_group_member", email(1), "team-a"), ("suspend_member", email(1), "")),
            minimum=READS + 1 + 1,
        ),
        Step(
            "leave",
            left,
            (("remove_group_member", email(4), "team-b"), ("suspend_member", email(4), "")),
            minimum=READS + 1 + 1,
        ),
        Step(
            "move",
            moved,
            (
                ("add_group_member", email(2), "team-b"),
                ("remove_group_member", email(2), "team-a"),
            ),
            minimum=READS + 1 + 1,
        ),
        Step("rename", renamed, (("rename_group", "", "team-c"),), minimum=READS + 1),
        Step("dry-run", renamed, (), minimum=READS, dry_run=True),
    ]


def ops_of(plan: dict[str, Any]) -> list[Op]:
    return sorted(
        (op["op"], op.get("email") or "", op.get("group") or "") for op in plan["operations"]
    )


def create_foreign_user(upstream: str, token: str) -> dict[str, Any]:
    """A user someone else provisioned straight on the server (not in the IdP)."""
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": FOREIGN,
        "name": {"givenName": "Someone", "familyName": "Else"},
        "emails": [{"value": FOREIGN, "primary": True}],
        "active": True,
    }
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    response = httpx.post(f"{upstream}/Users", json=body, headers=headers, timeout=10)
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    return created


Runner = Callable[[Step], tuple[int, dict[str, Any]]]
"""Runs one step through the CLI: (exit code, the target's plan document)."""
