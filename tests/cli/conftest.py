from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, Rig


def _organization() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY, key_owner_email="key-owner@example.com") as running:
        running.start()
        yield running


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    yield from _organization()


@pytest.fixture
def second() -> Iterator[OpenAIEmulator]:
    """A second organization, for a configuration with two targets."""
    yield from _organization()


@pytest.fixture
def rig(tmp_path: Path, emulator: OpenAIEmulator) -> Rig:
    return Rig(folder=tmp_path, emulator=emulator)
