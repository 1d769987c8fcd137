"""The one guard every cursor walk runs its pages through, sources and targets alike.

A list read page by page is complete only if the sequence moves forward and ends. A server
that sends us back to a cursor we already followed would loop forever, or read some people
twice while missing others; one that mints fresh cursors for empty pages forever, or
never stops, would never end the read. Each is refused, with a message naming the listing
and the page, as an error the caller chooses (a source's read fails as `SourceError`; a
target's as `TransientError`, since the next run may find the server consistent again).

This module imports only the standard library and `orgsync.core`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from orgsync.core.errors import TransientError

__all__ = ["MAX_EMPTY_PAGES", "MAX_PAGES", "PageGuard"]

MAX_EMPTY_PAGES: Final = 20
"""Consecutive empty pages that still point to a next page before the sequence is called
inconsistent."""
MAX_PAGES: Final = 100_000
"""Pages of one listing before it is called endless: at the smallest page any vendor
serves (100), ten million objects, far beyond any organization."""


class PageGuard:
    """Checks that a page sequence moves forward: no cursor twice, no endless empty pages,
    no endless listing.

    Args:
        listing: names the list in messages ("GET /users").
        error: builds the exception raised, from the message.
        max_empty: consecutive empty pages tolerated that point to another page.
        max_pages: pages tolerated in all.
    """

    def __init__(
        self,
        listing: str,
        *,
        error: Callable[[str], Exception] = TransientError,
        max_empty: int = MAX_EMPTY_PAGES,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self._listing = listing
        self._error = error
        self._max_empty = max_empty
        self._max_pages = max_pages
        self._seen: set[str] = set()
        self._empty_run = 0
        self.pages = 0

    def page(self, items: int, next_cursor: str | None) -> None:
        """Record one page of `items` objects and the cursor it points to (None: last)."""
        self.pages += 1
        if next_cursor is None:
            return
        if next_cursor in self._seen:
            raise self._error(
                f"{self._listing}: page {self.pages} points back to a page already read "
                "(inconsistent pagination: the server repeats cursors)"
            )
        self._seen.add(next_cursor)
        self._empty_run = self._empty_run + 1 if items == 0 else 0
        if self._empty_run > self._max_empty:
            raise self._error(
                f"{self._listing}: {self._empty_run} empty pages in a row that each point to "
                "another page (inconsistent pagination)"
            )
        if self.pages >= self._max_pages:
            raise self._error(
                f"{self._listing}: still more after {self.pages} pages (endless pagination)"
            )
