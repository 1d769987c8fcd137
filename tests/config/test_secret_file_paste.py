"""Red team: a credential pasted as a `*_file` value instead of a path.

`api_key_file = "sk-admin-…"` (the key itself where its file's path belongs) was repeated
back in the error: on stdout, in the log and, since connectors resolve their secrets when
a run builds them, in the run history (`runs.error`) in the state database, which is
meant never to hold a secret. The `*_env` mistake had been closed; this is its twin. A
value is repeated now only when it is unmistakably a path (absolute, or `./`, `../`,
`~`); otherwise the message names the key and the folders it was looked up in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.config import SecretRef
from orgsync.core.errors import ConfigError
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, Rig, directory
from tests.leaks import traces

PASTED = "sk-admin-PASTEDsecret0123456789abcdefXYZ"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        yield Rig(folder=tmp_path, emulator=emulator)


@pytest.mark.parametrize("environ", [{}, {"CREDENTIALS_DIRECTORY": "/run/credentials/x"}])
def test_a_pasted_secret_is_not_repeated_by_the_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        SecretRef(key="api_key", file=Path(PASTED)).resolve(environ)
    message = str(refused.value)
    assert traces(PASTED, message) == [], message
    assert message.startswith("api_key_file: cannot read the file it names")
    assert "No such file" in message


def test_a_path_is_still_named(tmp_path: Path) -> None:
    missing = tmp_path / "openai-admin-key"
    with pytest.raises(ConfigError, match=f"cannot read {missing}: No such file"):
        SecretRef(key="api_key", file=missing).resolve({})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        SecretRef(key="api_key", file=tmp_path / "empty").resolve({})


def test_a_sync_keeps_the_pasted_secret_out_of_output_and_history(rig: Rig) -> None:
    rig.write(directory(2))
    text = rig.config_path.read_text()
    rig.config_path.write_text(
        text.replace('api_key_env = "ORGSYNC_TEST_ADMIN_KEY"', f'api_key_file = "{PASTED}"')
    )
    assert f'api_key_file = "{PASTED}"' in rig.config_path.read_text()
    result = rig.orgsync("sync")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "api_key_file: cannot read the file it names" in result.stdout + result.stderr
    assert traces(PASTED, result.stdout + result.stderr) == []
    with sqlite3.connect(rig.folder / "state.db") as db:
        rows = db.execute("SELECT * FROM runs").fetchall()
    assert rows
    assert traces(PASTED, repr(rows)) == [], rows
