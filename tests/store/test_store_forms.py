"""The learned request forms in the state database (`learned_forms`, migration 3)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orgsync.core.errors import StateError
from orgsync.core.forms import LearnedForm, describe
from orgsync.store import StateStore
from orgsync.store import migrations as migrations_module

SERVER = "https://scim.example.com/v2"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_form_is_remembered_replaced_and_forgotten(location: str) -> None:
    clock = Clock()
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        assert store.learned_forms("scim") == []
        store.learn_form("scim", LearnedForm("remove_members", "filter", SERVER, "accepted"))
        clock.now += timedelta(hours=1)
        refused = "filter refused: HTTP 501"
        store.learn_form("scim", LearnedForm("remove_members", "value_array", SERVER, refused))
        store.learn_form("scim", LearnedForm("rename_group", "put", SERVER, "path refused"))
        store.learn_form("other", LearnedForm("rename_group", "path", SERVER, "accepted"))
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        learned = store.learned_forms("scim")
        assert [(f.change, f.form, f.reason) for f in learned] == [
            ("remove_members", "value_array", refused),
            ("rename_group", "put", "path refused"),
        ]
        assert learned[0].learned_at == clock.now
        assert describe(learned) == (
            f"member removal value_array ({refused}); group rename put (path refused)"
        )
        assert store.forget_forms("scim") == 2
        assert store.learned_forms("scim") == []
        assert len(store.learned_forms("other")) == 1


def test_no_credential_of_the_base_url_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        url = "https://admin:hunter2@scim.example.com/v2/?access_token=abc#x"
        store.learn_form("scim", LearnedForm("rename_group", "put", url, "accepted"))
        assert store.learned_forms("scim")[0].server == SERVER
    assert b"hunter2" not in path.read_bytes()
    assert b"access_token" not in path.read_bytes()


def test_a_version_2_database_gains_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    with monkeypatch.context() as patch:
        patch.setattr(migrations_module, "MIGRATIONS", migrations_module.MIGRATIONS[:2])
        patch.setattr(migrations_module, "LATEST_VERSION", 2)
        with StateStore.open(path) as old:
            with pytest.raises(StateError, match="no such table: learned_forms"):
                old.learned_forms("scim")
    with StateStore.open(path) as store:
        store.learn_form("scim", LearnedForm("add_members", "put", SERVER, "accepted"))
        assert len(store.learned_forms("scim")) == 1
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, migrations_module.LATEST_VERSION + 1))
    assert 3 in versions  # the learned_forms migration
