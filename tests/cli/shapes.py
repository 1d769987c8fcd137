"""Reading `sync --json` whatever its top-level shape (issue 14 settles on one)."""

from __future__ import annotations

from typing import Any


def only_target(document: Any) -> dict[str, Any]:
    """The one target's plan document from `sync --json`, whichever shape holds it: the
    document itself, a list of documents, or an object with a `targets` list."""
    if isinstance(document, dict) and "targets" in document:
        document = document["targets"]
    if isinstance(document, list):
        (document,) = document
    assert isinstance(document, dict)
    return document
