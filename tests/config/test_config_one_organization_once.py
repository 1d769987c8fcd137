"""Red team: one organization configured twice, under two target names.

Both targets plan the same organization with their own rules and their own memory; they
fight for ever: measured against the OpenAI emulator with two names for one organization
(one `default_role = "reader"`, the other `"owner"`), every sync replaced three pending
invitations (a fresh invitation e-mail to each person, every run), flipped their roles,
and still said "in sync (exit 0)"; with different scope groups each target removes the
other's people as out of scope. `validate --offline` said ok. The configuration is now
refused before anything runs when two targets share type, address and credentials.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orgsync.config import load_config
from orgsync.core.errors import ConfigError


def openai(name: str, *, url: str = "https://api.openai.com/v1", key: str = "KEY") -> str:
    return f"""
[[targets]]
name = "{name}"
type = "openai"
base_url = "{url}"
api_key_env = "{key}"
"""


def keycard(name: str, organization: str, *, client_id: str = "sa_1") -> str:
    return f"""
[[targets]]
name = "{name}"
type = "keycard"
base_url = "https://api.keycard.example"
client_id = "{client_id}"
client_secret_env = "KC_SECRET"
organization_id = "{organization}"
"""


SOURCE = '[source]\ntype = "file"\npath = "directory.json"\n'


def load(tmp_path: Path, *targets: str) -> object:
    path = tmp_path / "orgsync.toml"
    path.write_text(SOURCE + "".join(targets), encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize(
    "second",
    [
        openai("openai-copy"),
        # The same address written differently is the same organization.
        openai("openai-copy", url="https://API.openai.com/v1/"),
    ],
)
def test_the_same_organization_under_two_names_is_refused(tmp_path: Path, second: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, openai("openai-prod"), second)
    message = str(refused.value)
    assert "openai-prod" in message and "openai-copy" in message
    assert "same organization" in message


def test_distinct_organizations_are_accepted(tmp_path: Path) -> None:
    # One API, two keys (OpenAI admin keys belong to one organization each).
    load(tmp_path, openai("openai-prod"), openai("openai-research", key="RESEARCH_KEY"))
    # One Keycard service account administering two organizations.
    load(tmp_path, keycard("kc-a", "org-a"), keycard("kc-b", "org-b"))


def test_the_same_keycard_organization_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="same organization"):
        load(tmp_path, keycard("kc-a", "org-a"), keycard("kc-again", "org-a"))
