"""Red team of incremental passes shared by replicas on one PostgreSQL state database
(issue 13): a target's baseline and probe cursor are written by whichever replica ran
its last pass and trusted by the next one, whose clock may differ.

How it could hurt an administrator: a replica whose host clock runs fast runs a full pass
of an Okta source and stores a cursor in Okta's future; a replica with a good clock takes
the target over, its probe passes its own clock check, asks Okta for changes after that
cursor, and a leaver taken out of a group in between reads as quiet: they keep their
access until the next full pass (a day later).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orgsync.config import Config, parse_config
from orgsync.core.ports import Source
from orgsync.engine import Engine
from orgsync.results import RunOptions
from orgsync.sources.okta import OktaSource
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, holdings
from tests.engine.differential import one

OKTA_ENV = "OKTA_TOKEN_FOR_TEST"


def config(folder: Path, okta: OktaEmulator, openai: OpenAIEmulator, state: str) -> Config:
    document: dict[str, Any] = {
        "source": {"type": "okta", "url": okta.url, "token_env": OKTA_ENV, "allow_plaintext": True},
        "targets": [
            {
                "name": "t",
                "type": "openai",
                "base_url": openai.start(),
                "api_key_env": KEY_ENV,
                "allow_plaintext": True,
                "default_role": "reader",
                "scope_groups": ["openai-users"],
            }
        ],
        "safety": {"max_removals": 1000, "max_removal_ratio": 1.0},
        "state": {"url": state},
    }
    return parse_config(document, origin="test", base_dir=folder)


def replica(
    folder: Path,
    okta: OktaEmulator,
    openai: OpenAIEmulator,
    state: str,
    clock: Callable[[], datetime],
) -> Engine:
    """An engine as one replica runs it, reading Okta on its own host's clock."""

    def build(_config: Config, environ: Mapping[str, str], **_: object) -> Source:
        return OktaSource(okta.url, token=environ[OKTA_ENV], clock=clock)

    return Engine(
        config(folder, okta, openai, state),
        environ={KEY_ENV: API_KEY, OKTA_ENV: okta.token},
        source_factory=build,
    )


def test_a_replica_with_a_fast_clock_does_not_hide_a_leaver_from_the_next(
    tmp_path: Path, postgres_url: str
) -> None:
    start = datetime.now(UTC)
    with OktaEmulator() as okta, OpenAIEmulator(api_key=API_KEY) as openai:
        okta.clock = lambda: start - timedelta(days=1)
        ada = okta.add_user(email="ada@example.com", first_name="Ada")
        bob = okta.add_user(email="bob@example.com", first_name="Bob")
        group = okta.add_group("openai-users")
        okta.add_member(group, ada)
        okta.add_member(group, bob)
        okta.clock = lambda: start
        fast = replica(tmp_path, okta, openai, postgres_url, lambda: start + timedelta(minutes=10))
        try:
            assert one(fast.run(RunOptions(dry_run=False))).status == "ok"
        finally:
            fast.close()
        assert set(holdings(openai)) == {"ada@example.com", "bob@example.com"}

        okta.clock = lambda: start + timedelta(minutes=1)
        okta.remove_member(group, bob)  # a leaver, a minute after the fast replica's pass
        later = start + timedelta(minutes=30)
        okta.clock = lambda: later
        good = replica(tmp_path, okta, openai, postgres_url, lambda: later)
        try:
            result = one(good.run(RunOptions(dry_run=False, incremental=True)))
        finally:
            good.close()
        assert result.status == "ok", result.error
        assert set(holdings(openai)) == {"ada@example.com"}, (
            "the leaver kept their access: the good replica trusted the fast one's cursor"
        )
