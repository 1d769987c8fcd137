"""Red team: a secret as a hurried administrator hands it over.

Harm: every run fails with a message that does not say why (lost reconciliation), or the
value is repeated where it must not be (a leaked key). Tried:

- an `EnvironmentFile=` saved with Windows line endings, or `export KEY="$(cat key)\\n"`:
  the variable ends in `\\r` or `\\n`. It used to be sent as is: every request failed with
  "Illegal header value", which tells an operator nothing (a key file was trimmed, a
  variable was not). Now both are trimmed the same way;
- a key file saved by Notepad (a UTF-8 byte-order mark, CRLF): the mark was sent as part
  of the key, answered 401 like a revoked key. Now dropped;
- a variable holding only blanks: was sent, answered 401; now "not set or empty";
- two values in one file or variable (a key and a comment line, two keys pasted): refused
  naming the key and the line break, the value never shown;
- a service account's JSON key (Google) keeps its lines: it is a document, not a line.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.config import SecretRef
from orgsync.core.errors import ConfigError
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory
from tests.leaks import traces

SECRET = "sk-admin-Trimmed0123456789abcdefXYZ"


@pytest.mark.parametrize(
    "given",
    [SECRET + "\n", SECRET + "\r\n", SECRET + "\r", f"  {SECRET}\t", "\ufeff" + SECRET + "\r\n"],
    ids=["lf", "crlf", "cr", "blanks", "bom-crlf"],
)
def test_line_endings_blanks_and_a_byte_order_mark_are_trimmed_from_both_forms(
    tmp_path: Path, given: str
) -> None:
    assert SecretRef(key="api_key", env="KEY").resolve({"KEY": given}).get_secret_value() == SECRET
    (tmp_path / "key").write_text(given, encoding="utf-8", newline="")
    assert SecretRef(key="api_key", file=tmp_path / "key").resolve({}).get_secret_value() == SECRET


def test_a_variable_of_blanks_is_empty() -> None:
    with pytest.raises(ConfigError, match="api_key_env: environment variable KEY is not set"):
        SecretRef(key="api_key", env="KEY").resolve({"KEY": " \r\n"})


@pytest.mark.parametrize(
    "given",
    [f"{SECRET}\nsk-admin-second-key", f"{SECRET}\r\n# rotated 2026-11", f"{SECRET}\x00"],
    ids=["two-keys", "comment-line", "nul"],
)
def test_two_lines_in_one_secret_are_refused_unshown(tmp_path: Path, given: str) -> None:
    (tmp_path / "key").write_text(given, encoding="utf-8", newline="")
    for ref, environ in (
        (SecretRef(key="api_key", env="KEY"), {"KEY": given}),
        (SecretRef(key="api_key", file=tmp_path / "key"), {}),
    ):
        with pytest.raises(ConfigError) as refused:
            ref.resolve(environ)
        message = str(refused.value)
        assert "a secret is one line" in message, message
        assert (
            traces(SECRET, message) == [] and "second" not in message and "rotated" not in message
        )
        assert message.startswith("api_key_env: environment variable KEY has") or (
            message.startswith(f"api_key_file: {tmp_path / 'key'} has")
        ), message


def test_a_document_keeps_its_lines(tmp_path: Path) -> None:
    document = '{\r\n  "type": "service_account",\r\n  "private_key": "x"\r\n}\r\n'
    (tmp_path / "sa.json").write_text(document, encoding="utf-8", newline="")
    (tmp_path / "sa.json").chmod(0o600)
    ref = SecretRef(key="source.credentials", file=tmp_path / "sa.json", document=True)
    assert ref.resolve({}).get_secret_value() == document.strip().replace("\r\n", "\n")


def test_a_key_file_that_is_not_text_is_named() -> None:
    with pytest.raises(ConfigError, match="api_key_file: /proc/self/exe is not UTF-8 text"):
        SecretRef(key="api_key", file=Path("/proc/self/exe")).resolve({})


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with OpenAIEmulator(api_key=API_KEY, key_owner_email="key-owner@example.com") as emulator:
        yield Rig(folder=tmp_path, emulator=emulator)


def test_a_sync_with_a_windows_environment_file_works(rig: Rig) -> None:
    """The variable as systemd's `EnvironmentFile=` reads a CRLF file: the key plus `\\r`."""
    rig.write(directory(3))
    rig.env = {KEY_ENV: API_KEY + "\r"}
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rig.holdings()) == 3


def test_a_sync_with_two_lines_in_its_key_file_fails_saying_why_and_storing_nothing(
    rig: Rig,
) -> None:
    rig.write(directory(3))
    key = rig.folder / "admin-key"
    key.write_text(f"{API_KEY}\n{API_KEY[::-1]}\n", encoding="utf-8")
    key.chmod(0o600)
    text = rig.config_path.read_text()
    rig.config_path.write_text(
        text.replace(f'api_key_env = "{KEY_ENV}"', f'api_key_file = "{key}"')
    )
    result = rig.orgsync("sync")
    assert result.returncode == 1
    assert f"api_key_file: {key} has a line break inside it" in result.stdout
    assert "Illegal header" not in result.stdout + result.stderr
    assert rig.holdings() == {}
    stored = "".join(p.read_bytes().decode("latin-1") for p in rig.folder.glob("state.db*"))
    for shown in (result.stdout, result.stderr, stored):
        assert traces(API_KEY, shown) == [] and traces(API_KEY[::-1], shown) == []
    with sqlite3.connect(rig.folder / "state.db") as db:
        (error,) = db.execute("SELECT error FROM runs").fetchone()
    assert "line break" in error
