"""How a rule's group pattern matches an IdP group name: globs, case-insensitive, whole
name. Its own module so that `validate` checks the patterns against the source's groups
(`orgsync.rule_groups`) without importing the rules engine (`core.rules`, a start-up
cost of `validate --offline`, bench/startup.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from fnmatch import translate


def glob_pattern(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for a list of globs, or None when the list is empty."""
    parts = [translate(p.casefold()) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


def name_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether an IdP group name matches one of `patterns`, the way the rules match it
    (globs, case-insensitive, whole name)."""
    pattern = glob_pattern(patterns)
    if pattern is None:
        return lambda name: False
    return lambda name: pattern.fullmatch(name.casefold()) is not None
