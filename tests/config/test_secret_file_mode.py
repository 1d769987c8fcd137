"""A key file every account on the host may read (mode 0644, the umask's default for a
file written with `echo "$KEY" > key`) is said when the key is read: by `validate`, a sync
and the daemon. Said, not refused: a chmod must not stop a running daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orgsync.config import SecretRef

KEY = "sk-admin-0123456789abcdefKEYVALUE"


@pytest.mark.parametrize(
    ("mode", "said"), [(0o644, True), (0o604, True), (0o640, False), (0o600, False)]
)
def test_a_world_readable_key_file_is_said_without_its_value(
    tmp_path: Path, mode: int, said: bool
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    key_file.chmod(mode)
    with capture_logs() as logs:
        value = SecretRef(key="api_key", file=key_file).resolve({})
    assert value.get_secret_value() == KEY
    warned = [e for e in logs if e["event"] == "config.secret_file_readable_by_all"]
    assert bool(warned) == said, logs
    if said:
        (entry,) = warned
        assert entry["key"] == "api_key_file" and entry["file"] == str(key_file)
        assert entry["mode"] == f"{mode:04o}"
        assert KEY not in repr(logs)


def test_a_world_readable_key_file_is_said_once_per_process(tmp_path: Path) -> None:
    """A daemon resolves its keys for every pass: one warning, not one per pass."""
    key_file = tmp_path / "key"
    key_file.write_text(KEY, encoding="utf-8")
    key_file.chmod(0o644)
    with capture_logs() as logs:
        for _ in range(3):
            SecretRef(key="api_key", file=key_file).resolve({})
    assert [e["event"] for e in logs] == ["config.secret_file_readable_by_all"]
