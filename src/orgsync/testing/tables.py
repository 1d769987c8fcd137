"""Record tables of the emulators that keep their list order between requests.

A list walk asks for a page at a time; sorting (or copying) the whole table for each page
makes a walk over N records cost N²/page, and then a benchmark measures the emulator
instead of orgsync. A `Table` is the dictionary of records by id that the emulators used
before, plus `rows()`: its values in list order, computed once after a change and reused
by every page until the next one. Records are mutable and are the same objects in the
dictionary and in `rows()`, so a change to a record (a role, a status) needs no
invalidation; only adding or removing records does, and every mutating method of the
dictionary does it.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import Any, TypeVar, overload

_V = TypeVar("_V")
_T = TypeVar("_T")


class Table(MutableMapping[str, _V]):
    """Records by id; `rows()` lists them sorted by `order` (stable), cached until a change.

    A `MutableMapping`: `pop`, `update`, `setdefault`, `clear` and the rest all go through
    `__setitem__`/`__delitem__`, which drop the cached order.
    """

    def __init__(self, order: Callable[[_V], Any]) -> None:
        self._records: dict[str, _V] = {}
        self._order = order
        self._rows: list[_V] | None = None

    def rows(self) -> list[_V]:
        """The records in list order. Callers must not modify the list."""
        if self._rows is None:
            self._rows = sorted(self._records.values(), key=self._order)
        return self._rows

    def __setitem__(self, key: str, value: _V) -> None:
        self._rows = None
        self._records[key] = value

    def __delitem__(self, key: str) -> None:
        del self._records[key]
        self._rows = None

    def __getitem__(self, key: str) -> _V:
        return self._records[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    # Reads straight from the dictionary (the mixins would go through __getitem__).

    def __contains__(self, key: object) -> bool:
        return key in self._records

    @overload
    def get(self, key: str, /) -> _V | None: ...
    @overload
    def get(self, key: str, default: _V | _T, /) -> _V | _T: ...
    def get(self, key: str, default: object = None, /) -> object:
        return self._records.get(key, default)

    def keys(self) -> KeysView[str]:
        return self._records.keys()

    def values(self) -> ValuesView[_V]:
        return self._records.values()

    def items(self) -> ItemsView[str, _V]:
        return self._records.items()


def by_id(record: Any) -> str:
    """Sort key of tables listed by id (OpenAI users and invites)."""
    return str(record.id)


def by_seq(record: Any) -> int:
    """Sort key of tables listed in creation order (roles, groups, memberships)."""
    return int(record.seq)
