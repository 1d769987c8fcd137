"""Change probes in a row, as incremental passes make them (`core.ports.DetectsChanges`)."""

from __future__ import annotations

from orgsync.core.ports import DetectsChanges


class Prober:
    """Probes in a row, each from the cursor the last one gave, as passes do.

    `people` and `groups` are what the last whole read held (a pass records them; a test
    that deletes one lowers them as that pass would); `calls` are the last probe's.
    """

    def __init__(self, source: DetectsChanges, people: int = 0, groups: int = 0) -> None:
        self.source = source
        self.people = people
        self.groups = groups
        cursor = source.change_cursor()
        assert cursor is not None
        self.cursor = cursor
        self.calls = 0

    def changed(self) -> bool:
        probe = self.source.probe_changes(self.cursor, self.people, self.groups)
        assert probe.cursor is not None
        self.cursor, self.calls = probe.cursor, probe.calls
        return probe.changed
