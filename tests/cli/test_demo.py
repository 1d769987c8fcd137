"""`orgsync demo`, the README's first command, ends with the organization in step."""

from __future__ import annotations

import os

from tests import cli


def test_demo_runs_dry_run_sync_and_ends_in_step() -> None:
    result = cli.run(None, "demo", env=os.environ)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "=> openai-demo: changes pending (exit 2)" in out
    assert "=> openai-demo: in sync (exit 0)" in out
    assert "=> openai-demo: nothing to do (exit 0)" in out
    assert "group    team-ml" in out
    assert "sk-admin-demo" not in out + result.stderr
