"""Which change cursor an incremental pass keeps when its probe finds changes, against the
Graph emulator over loopback (its delta queries are the cursor: `$deltatoken=latest` for a
new one, the deltaLink a probe followed for the next).

How it could hurt an administrator: a cursor taken after the read started would make the
next probe start past a change written during that read (a joiner added to the scoped
group while the directory was being listed), which no incremental pass would then see
until the next full one. A second cursor taken for the read only spends source calls
(Entra: two delta rounds) on every changed pass, and one of the two is thrown away.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.core.model import SourceSnapshot
from orgsync.core.ports import Source
from orgsync.engine import Engine
from orgsync.results import RunOptions
from orgsync.testing.entra import EntraEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, holdings
from tests.engine.differential import one
from tests.sources.test_entra_incremental_redteam import SECRET_ENV, entra_config


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def entra() -> Iterator[EntraEmulator]:
    with EntraEmulator() as running:
        yield running


def delta_calls(entra: EntraEmulator, since: int) -> int:
    """Delta queries since request `since`: a probe's rounds and a new cursor's alike."""
    return sum(1 for r in entra.requests[since:] if r.path.endswith("/delta"))


def test_a_changed_pass_takes_one_cursor_before_its_read_and_misses_nothing_written_during_it(
    tmp_path: Path, emulator: OpenAIEmulator, entra: EntraEmulator
) -> None:
    entra.start()
    users = entra.add_group("openai-users")
    ada = entra.add_user(display_name="Ada", user_principal_name="ada@example.com")
    bob = entra.add_user(display_name="Bob", user_principal_name="bob@example.com")
    cy = entra.add_user(display_name="Cy", user_principal_name="cy@example.com")
    entra.add_member(users, ada)
    engine = Engine(
        entra_config(tmp_path, entra, emulator),
        environ={KEY_ENV: API_KEY, SECRET_ENV: entra.client_secret},
    )
    read_whole = engine.read_source
    during_read: list[str] = []

    def read_then_change(source: Source | None = None) -> SourceSnapshot:
        snapshot = read_whole(source)
        if not during_read:  # once: the groups were listed, the read has not returned yet
            entra.add_member(users, cy)
            during_read.append(cy)
        return snapshot

    try:
        assert one(engine.run(RunOptions(dry_run=False))).pass_kind == "full"
        assert sorted(holdings(emulator)) == ["ada@example.com"]

        entra.add_member(users, bob)  # the probe of the next pass finds this one
        engine.read_source = read_then_change  # type: ignore[method-assign]
        mark = len(entra.requests)
        changed = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert changed.pass_kind == "incremental"
        assert during_read == [cy]
        assert sorted(holdings(emulator)) == ["ada@example.com", "bob@example.com"]
        # The probe's two delta rounds and no more: its deltaLinks, taken before the read,
        # are the next cursor; no `$deltatoken=latest` pair is taken for the read.
        assert delta_calls(entra, mark) == 2

        # Cy was added while that read ran, after it listed the group: the next probe,
        # from the cursor kept, finds it.
        engine.read_source = read_whole  # type: ignore[method-assign]
        following = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert following.pass_kind == "incremental"
        assert sorted(holdings(emulator)) == [
            "ada@example.com",
            "bob@example.com",
            "cy@example.com",
        ]
        mark = len(entra.requests)
        quiet = one(engine.run(RunOptions(dry_run=False, incremental=True)))
        assert quiet.plan is None or quiet.plan.operations == ()
        assert delta_calls(entra, mark) == 2  # and nothing read: it was settled
        assert [r.path for r in entra.requests[mark:] if r.path.startswith("/v1.0/")] == [
            "/v1.0/users/delta",
            "/v1.0/groups/delta",
        ]
    finally:
        engine.close()
