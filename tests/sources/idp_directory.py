"""One vendor-neutral test directory, seeded into each IdP emulator, and the snapshot it must read as.

`build` makes people and groups with stable keys (`p0`, `g0`, …); `seed_okta`,
`seed_entra`, `seed_google` load it into an emulator and return the key → vendor id map;
`expected` and `observed` turn the directory and a `SourceSnapshot` into the same
key-based shape so a test compares them in one assertion. `request_budget` is the number
of calls a source may make for a directory: pages of people + pages of groups + pages of
members per group, and not one more.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from orgsync.core.model import SourceSnapshot
from orgsync.testing.entra import EntraEmulator
from orgsync.testing.google import GoogleEmulator
from orgsync.testing.okta import OktaEmulator

OKTA_ACTIVE = ("ACTIVE", "PROVISIONED", "RECOVERY", "PASSWORD_EXPIRED", "LOCKED_OUT")
OKTA_INACTIVE = ("STAGED", "SUSPENDED", "DEPROVISIONED")


@dataclass(frozen=True)
class Person:
    key: str
    email: str
    given: str
    family: str
    active: bool
    okta_status: str
    google_archived: bool = False

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}"


@dataclass
class Group:
    key: str
    name: str
    people: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass
class Directory:
    people: list[Person]
    groups: list[Group]

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)


def build(
    people: int,
    groups: int,
    *,
    nested: bool = True,
    inactive_every: int = 10,
    seed: int = 7,
) -> Directory:
    """`people` people (every `inactive_every`-th inactive, in every inactive flavour) and
    `groups` groups: `openai-users` (everyone), `openai-owners` (the first two), and
    `team-*` groups of 0..40 people. With `nested`, `team-0` ⊃ `team-1` ⊃ `team-2` ⊃
    `team-0` (a cycle) and `openai-users` ⊃ `team-0`."""
    rng = random.Random(seed)
    folks: list[Person] = []
    for i in range(people):
        active = i % inactive_every != inactive_every - 1
        flavours = OKTA_ACTIVE if active else OKTA_INACTIVE
        status = flavours[(i // inactive_every) % len(flavours)]
        folks.append(
            Person(
                key=f"p{i}",
                email=f"person{i}@example.com",
                given="Person",
                family=str(i),
                active=active,
                okta_status=status,
                google_archived=not active and (i // inactive_every) % 2 == 1,
            )
        )
    keys = [p.key for p in folks]
    result = [
        Group("g0", "openai-users", people=list(keys)),
        Group("g1", "openai-owners", people=keys[:2]),
    ]
    for j in range(2, groups):
        size = rng.randint(0, min(40, people))
        result.append(Group(f"g{j}", f"team-{j - 2}", people=rng.sample(keys, size)))
    if nested and groups >= 5:
        t0, t1, t2 = result[2], result[3], result[4]
        t0.groups.append(t1.key)
        t1.groups.append(t2.key)
        t2.groups.append(t0.key)
        result[0].groups.append(t0.key)
    return Directory(folks, result)


# --------------------------------------------------------------------------- seeding


def seed_okta(okta: OktaEmulator, directory: Directory) -> dict[str, str]:
    ids: dict[str, str] = {}
    for p in directory.people:
        ids[p.key] = okta.add_user(
            email=p.email, first_name=p.given, last_name=p.family, status=p.okta_status
        )
    for g in directory.groups:
        if g.groups:
            raise ValueError("Okta groups cannot contain groups")
        ids[g.key] = okta.add_group(g.name)
    for g in directory.groups:
        for member in g.people:
            okta.add_member(ids[g.key], ids[member])
    return ids


def seed_entra(entra: EntraEmulator, directory: Directory) -> dict[str, str]:
    ids: dict[str, str] = {}
    for n, p in enumerate(directory.people):
        # A third have no `mail`: their address must come from the UPN.
        ids[p.key] = entra.add_user(
            display_name=p.name,
            user_principal_name=p.email,
            mail=None if n % 3 == 2 else p.email,
            account_enabled=p.active,
            given_name=p.given,
            surname=p.family,
        )
    for g in directory.groups:
        ids[g.key] = entra.add_group(g.name)
    for g in directory.groups:
        for member in g.people + g.groups:
            entra.add_member(ids[g.key], ids[member])
    return ids


def seed_google(google: GoogleEmulator, directory: Directory) -> dict[str, str]:
    ids: dict[str, str] = {}
    for p in directory.people:
        ids[p.key] = google.add_user(
            primary_email=p.email,
            given_name=p.given,
            family_name=p.family,
            suspended=not p.active and not p.google_archived,
            archived=p.google_archived,
        )
    for g in directory.groups:
        ids[g.key] = google.add_group(g.name)
    for g in directory.groups:
        for member in g.people + g.groups:
            google.add_member(ids[g.key], ids[member])
    return ids


# --------------------------------------------------------------------------- comparing

Shape = tuple[dict[str, tuple[str, str, bool]], dict[str, frozenset[str]]]


def expected(directory: Directory) -> Shape:
    people = {p.key: (p.email, p.name, p.active) for p in directory.people}
    groups = {g.name: frozenset(g.people + g.groups) for g in directory.groups}
    return people, groups


def observed(snapshot: SourceSnapshot, ids: dict[str, str]) -> Shape:
    key_of = {vendor: key for key, vendor in ids.items()}
    people = {key_of[p.id]: (p.email, p.name, p.active) for p in snapshot.people}
    groups = {g.name: frozenset(key_of[m] for m in g.members) for g in snapshot.groups}
    return people, groups


def pages(count: int, size: int) -> int:
    """Pages a listing of `count` objects takes at `size` per page (an empty one is a page)."""
    return max(1, math.ceil(count / size))


def member_pages(directory: Directory, size: int, *, nested: bool = True) -> int:
    return sum(
        pages(len(g.people) + (len(g.groups) if nested else 0), size) for g in directory.groups
    )
