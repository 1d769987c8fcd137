"""A benchmark runs from a clean clone: it imports orgsync (its `testing` helpers
included) and `bench/_common.py`, never the test tree's internals.

A ratchet: the benches below still import `tests` (their servers, LDAP and SCIM, live in
tests/sources/servers.py and tests/targets/scim_servers.py, with fixtures of their own
folders); no other bench may start to, and one that stops must leave this list.
"""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
STILL_IMPORTING_TESTS = {"incremental.py", "scim_scenarios.py", "source_read.py"}


def imports_tests(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(name == "tests" or name.startswith("tests.") for name in names):
            return True
    return False


def test_no_bench_imports_the_test_tree_beyond_the_known_ones() -> None:
    found = {path.name for path in BENCH.glob("*.py") if imports_tests(path)}
    assert found == STILL_IMPORTING_TESTS
