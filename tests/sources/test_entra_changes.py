"""The Entra source's change probe (incremental passes) against the Graph emulator over
loopback: Graph delta queries (`/users/delta`, `/groups/delta`, `$deltatoken=latest`,
deltaLinks, `@removed`) report each change once, a quiet tenant costs two requests, and
an expired sync state (410 Gone, syncStateNotFound) is `CursorExpired`."""

from __future__ import annotations

import pytest

from orgsync.core.errors import CursorExpired
from orgsync.core.ports import DetectsChanges
from orgsync.testing.entra import EntraEmulator
from tests.sources.probing import Prober
from tests.sources.test_entra import source


def test_delta_queries_report_each_change_once(entra: EntraEmulator) -> None:
    entra.start()
    ada = entra.add_user(display_name="Ada", user_principal_name="ada@example.com")
    bob = entra.add_user(display_name="Bob", user_principal_name="bob@example.com")
    team = entra.add_group("openai-users")
    entra.add_member(team, ada)
    reader = source(entra)
    assert isinstance(reader, DetectsChanges)
    prober = Prober(reader)
    assert len(reader.read().people) == 2
    assert not prober.changed()
    assert prober.calls == 2

    entra.set_display_name(ada, "Ada L.")
    assert prober.changed()
    assert not prober.changed()

    entra.add_member(team, bob)
    assert prober.changed()
    assert not prober.changed()

    entra.remove_user(bob)  # listed as @removed
    assert prober.changed()
    assert not prober.changed()

    entra.add_user(display_name="Cy", user_principal_name="cy@example.com")
    assert prober.changed()

    entra.expire_delta_tokens()
    with pytest.raises(CursorExpired, match="410"):
        prober.changed()
    with pytest.raises(CursorExpired):
        reader.probe_changes("[]", 0, 0)
