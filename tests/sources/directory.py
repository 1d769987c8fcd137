"""One made-up organization, loaded into every real directory server the source tests start.

The same people and groups go into scim2-server, SCIMMY and slapd, so each source test
states its expectations once, in the terms of this module: people `u{i}` with address
`user{i}@example.test`, every 97th one (from u5) disabled; `group{j}` holding the people
with `i % groups == j`; `all-staff` holding every `group{j}` (nesting); `cycle-a` and
`cycle-b` holding each other (a cycle) and u0/u1; `openai-users` (u2..u11, u5 disabled,
and the group `team-ml` = u12..u16) and `openai-owners` (u2) for the end-to-end syncs;
`big` holding the first `big` people (a group with many members).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Person:
    key: str
    index: int
    active: bool

    @property
    def email(self) -> str:
        return f"user{self.index}@example.test"

    @property
    def given(self) -> str:
        return f"Given{self.index}"

    @property
    def family(self) -> str:
        return f"Family{self.index}"

    @property
    def display(self) -> str:
        return f"User {self.index}"


@dataclass(frozen=True, slots=True)
class Team:
    key: str
    members: tuple[str, ...]
    """Keys of people (`u{i}`) and of groups (their names)."""

    @property
    def name(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class Directory:
    people: tuple[Person, ...]
    groups: tuple[Team, ...]
    by_key: dict[str, Person | Team] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        items: tuple[Person | Team, ...] = (*self.people, *self.groups)
        for item in items:
            self.by_key[item.key] = item

    def group(self, name: str) -> Team:
        item = self.by_key[name]
        assert isinstance(item, Team)
        return item

    def flattened(self, name: str) -> set[str]:
        """Emails of the active people reachable from group `name` (cycles broken)."""
        out: set[str] = set()
        stack, seen = [name], set[str]()
        while stack:
            team = self.group(stack.pop())
            if team.key in seen:
                continue
            seen.add(team.key)
            for key in team.members:
                item = self.by_key[key]
                if isinstance(item, Team):
                    stack.append(key)
                elif item.active:
                    out.add(item.email)
        return out

    @property
    def inactive(self) -> int:
        return sum(1 for p in self.people if not p.active)


E2E_USERS = tuple(f"u{i}" for i in range(2, 12))
E2E_TEAM = tuple(f"u{i}" for i in range(12, 17))


def make_directory(people: int, groups: int, *, big: int = 0) -> Directory:
    assert people >= 20 and groups >= 1 and big <= people
    persons = tuple(Person(f"u{i}", i, active=i % 97 != 5) for i in range(people))
    teams = [
        Team(f"group{j}", tuple(f"u{i}" for i in range(j, people, groups))) for j in range(groups)
    ]
    teams.append(Team("all-staff", tuple(f"group{j}" for j in range(groups))))
    teams.append(Team("cycle-a", ("u0", "cycle-b")))
    teams.append(Team("cycle-b", ("u1", "cycle-a")))
    teams.append(Team("team-ml", E2E_TEAM))
    teams.append(Team("openai-users", (*E2E_USERS, "team-ml")))
    teams.append(Team("openai-owners", ("u2",)))
    if big:
        teams.append(Team("big", tuple(f"u{i}" for i in range(big))))
    return Directory(persons, tuple(teams))
