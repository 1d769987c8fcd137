"""Red team: a link row's member id belongs to the person it was linked for.

Links are keyed by address. When an address moved to another source id (reused for a
newcomer, or swapped between two people), the row kept the previous person's member id
under the new source id: the next run matched the newcomer to the previous person's
account by link (taking it over) and left the previous person unlinked. Both `link` (the
journal's, per operation) and `record_links` (after a plan) now drop it.
"""

from __future__ import annotations

from orgsync.store import LinkRow, StateStore


def test_an_address_linked_to_another_source_id_keeps_no_member_id() -> None:
    with StateStore.open(":memory:") as store:
        store.link("t", email_key="ada@x.com", source_id="ada", member_id="u1")
        store.link("t", email_key="ada@x.com", source_id="newcomer")
        assert "newcomer" not in store.memory("t").links
        assert store.memory("t").linked_sources == {"ada@x.com": "newcomer"}

        store.link("t", email_key="bob@x.com", source_id="bob", member_id="u2")
        store.record_links("t", [LinkRow("bob@x.com", "carol", None)])
        assert store.memory("t").links == {}

        # The same source id learning nothing new keeps its member id, as before.
        store.link("t", email_key="eve@x.com", source_id="eve", member_id="u3")
        store.link("t", email_key="eve@x.com", source_id="eve")
        store.record_links("t", [LinkRow("eve@x.com", "eve", None)])
        assert store.memory("t").links == {"eve": "u3"}
