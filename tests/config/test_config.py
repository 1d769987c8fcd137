"""The configuration file is refused whole, with the key path and the reason."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from orgsync.config import load_config, parse_duration
from orgsync.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[source]
type = "file"
path = "directory.json"

[[targets]]
name = "openai-prod"
type = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "KEY"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orgsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_configuration_documents_a_valid_file() -> None:
    config = load_config(ROOT / "config.example.toml")
    assert config.targets[0].roles[0].role == "owner"
    assert config.safety.removal_grace == timedelta(0)
    assert config.source.path == ROOT / "directory.json"


def test_minimal_configuration_gets_safe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.safety.max_removals == 10
    assert config.safety.remove_unmanaged is False
    assert config.state.path == tmp_path / "orgsync.db"


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"orgsync\.toml: line 2, column 8: not valid TOML"):
        load_config(write(tmp_path, "[source]\ntype = \n"))


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"targets\[0\]\.api_token: unknown key"):
        load_config(write(tmp_path, MINIMAL + 'api_token = "sk-oops"\n'))
    with pytest.raises(ConfigError, match=r"safety\.max_removal: unknown key"):
        load_config(write(tmp_path, MINIMAL + "[safety]\nmax_removal = 3\n"))


def test_a_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace('api_key_env = "KEY"', 'api_key = "sk-admin-123"')
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert "targets[0].api_key: a secret never sits in the configuration file" in str(error.value)
    assert "api_key_env" in str(error.value)
    assert "at least 1 item" not in str(error.value)
    assert "sk-admin-123" not in str(error.value)


def test_missing_secret_variable_names_the_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(
        ConfigError, match=r"targets\.openai-prod\.api_key_env: environment variable KEY is not set"
    ):
        config.targets[0].api_key.resolve({})
    assert config.targets[0].api_key.resolve({"KEY": "sk"}).get_secret_value() == "sk"


def test_secret_files_resolve_in_the_credentials_directory(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, MINIMAL.replace('api_key_env = "KEY"', 'api_key_file = "openai-key"'))
    )
    (tmp_path / "openai-key").write_text("sk-from-file\n")
    secret = config.targets[0].api_key.resolve({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert secret.get_secret_value() == "sk-from-file"
    with pytest.raises(ConfigError, match="api_key_file: cannot read"):
        config.targets[0].api_key.resolve({})


def test_plain_http_needs_allow_plaintext(tmp_path: Path) -> None:
    text = MINIMAL.replace("https://api.openai.com/v1", "http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match=r"targets\[0\]: .*plain HTTP.*allow_plaintext"):
        load_config(write(tmp_path, text))
    assert load_config(write(tmp_path, text + "allow_plaintext = true\n"))


def test_bad_values_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"safety\.max_removal_ratio: must be at most 1"):
        load_config(write(tmp_path, MINIMAL + "[safety]\nmax_removal_ratio = 5\n"))
    with pytest.raises(ConfigError, match=r"safety\.removal_grace: .*not a duration"):
        load_config(write(tmp_path, MINIMAL + '[safety]\nremoval_grace = "soon"\n'))
    with pytest.raises(ConfigError, match=r"targets\[0\]\.on_removal"):
        load_config(write(tmp_path, MINIMAL + 'on_removal = "delete"\n'))


def test_ldap_without_tls_is_refused_unless_plaintext_is_allowed(tmp_path: Path) -> None:
    ldap = """
[source]
type = "ldap"
url = "ldap://127.0.0.1:3389"
bind_dn = "cn=admin,dc=example,dc=org"
bind_password_env = "LDAP_PASSWORD"
users_base = "ou=people,dc=example,dc=org"
groups_base = "ou=groups,dc=example,dc=org"
"""
    targets = MINIMAL[MINIMAL.index("[[targets]]") :]
    with pytest.raises(ConfigError, match=r"source: .*sends the bind password in clear"):
        load_config(write(tmp_path, ldap + targets))
    config = load_config(write(tmp_path, ldap + "start_tls = true\n" + targets))
    assert config.source.type == "ldap"


def test_run_history_is_kept_for_a_documented_time(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).state.keep_runs == timedelta(days=90)
    assert load_config(ROOT / "config.example.toml").state.keep_runs == timedelta(days=90)
    kept = load_config(write(tmp_path, MINIMAL + '[state]\nkeep_runs = "30d"\n'))
    assert kept.state.keep_runs == timedelta(days=30)
    with pytest.raises(ConfigError, match=r"state: .*keep_runs must be at least 1h"):
        load_config(write(tmp_path, MINIMAL + '[state]\nkeep_runs = "10m"\n'))
    with pytest.raises(ConfigError, match=r"state: .*lease_ttl must be at least 1s"):
        load_config(write(tmp_path, MINIMAL + '[state]\nlease_ttl = "0s"\n'))


def test_duplicate_target_names_are_refused(tmp_path: Path) -> None:
    second = MINIMAL.split("[[targets]]")[1]
    with pytest.raises(ConfigError, match="target names must be unique; repeated: openai-prod"):
        load_config(write(tmp_path, MINIMAL + "[[targets]]" + second))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800), ("250ms", 0.25), ("5", 5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_a_target_without_credentials_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"targets\[0\]: .*api_key_env or api_key_file is required"
    ):
        load_config(write(tmp_path, MINIMAL.replace('api_key_env = "KEY"\n', "")))


def test_the_example_file_documents_every_key() -> None:
    """config.example.toml names every key each configuration model accepts."""
    import re

    from pydantic import BaseModel

    from orgsync import config as config_module

    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    written = set(re.findall(r"\b[a-z][a-z_]*\b", text))
    models = [
        value
        for value in vars(config_module).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == config_module.__name__
    ]
    missing = sorted(
        f"{model.__name__}.{name}"
        for model in models
        if model.__name__ not in {"SecretRef", "Config"}
        for name, field in model.model_fields.items()
        if (field.alias or name) not in written
    )
    assert missing == []


def test_every_safety_limit_comes_from_its_key(tmp_path: Path) -> None:
    """Issue 9.3: `[safety]` fills `SafetyLimits` in one place, every field by its key
    (`max_group_member_removals` used to bypass it)."""
    from dataclasses import fields

    from orgsync.policy import safety_limits

    safety = """
[safety]
max_removals = 7
max_removal_ratio = 0.25
min_managed_for_ratio = 3
max_group_member_removals = 4
max_additions = 9
max_addition_ratio = 1.5
min_source_users = 2
"""
    config = load_config(write(tmp_path, MINIMAL + safety))
    limits = safety_limits(config)
    for field in fields(limits):
        assert getattr(limits, field.name) == getattr(config.safety, field.name), field.name
    assert limits.max_group_member_removals == 4
    assert config.safety.max_additions == 9


def test_additions_are_unlimited_unless_configured(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.safety.max_additions is None
    assert config.safety.max_addition_ratio is None
    assert config.safety.min_managed_for_ratio == 20
    with pytest.raises(ConfigError, match=r"safety\.max_additions: must be at least 0"):
        load_config(write(tmp_path, MINIMAL + "[safety]\nmax_additions = -1\n"))


def test_state_url_keys(tmp_path: Path) -> None:
    url = "postgresql://orgsync@db.internal:5432/orgsync?sslmode=verify-full"
    config = load_config(
        write(tmp_path, MINIMAL + f'[state]\nurl = "{url}"\npassword_file = "pg.pw"\n')
    )
    assert config.state.url == url
    assert config.state.location == url
    assert config.state.password is not None
    assert config.state.password.key == "state.password"
    # Without a password key, libpq's own environment (PGPASSWORD, ~/.pgpass) is used.
    bare = load_config(write(tmp_path, MINIMAL + f'[state]\nurl = "{url}"\n'))
    assert bare.state.password is None


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ('url = "postgresql://orgsync:hunter2-pw@db/orgsync"', "holds a password"),
        ('url = "postgresql://orgsync@db/orgsync?password=hunter2-pw"', "holds password="),
        ('url = "postgresql://orgsync@db/orgsync?sslpassword=hunter2-pw"', "holds sslpassword="),
        ('url = "https://hunter2-pw@db/orgsync"', "must start with postgresql://"),
        ('url = "postgresql://orgsync@db:port/orgsync"', "not a valid URL"),
        ('url = "postgresql://orgsync@db"', "names no database"),
        ('url = "postgresql:///orgsync"', "names no host"),
        ('url = "postgresql://o@db/x"\npath = "x.db"', "either path .SQLite. or url"),
        ('password_env = "PGPW"', "need url"),
        ('url = "postgresql://o@db/x"\npassword_env = "A"\npassword_file = "b"', "not both"),
        ('url = "postgresql://o@db/x"\npassword_env = "hunter2-pw!"', "NAME of an environment"),
    ],
)
def test_bad_state_urls_are_refused_without_their_secret(
    tmp_path: Path, state: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(write(tmp_path, MINIMAL + f"[state]\n{state}\n"))
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("table", ["safety", "state", "schedule", "server"])
def test_a_table_the_file_lacks_is_its_validated_defaults(table: str) -> None:
    # A missing table is made from its declared defaults without building its validator
    # (start-up); it must be what validating an empty table gives, and an empty table
    # must still go through the validator.
    import tomllib

    from orgsync.config import Config

    document = tomllib.loads(MINIMAL)
    absent = getattr(Config.model_validate(document), table)
    model = type(absent)
    empty = getattr(Config.model_validate({**document, table: {}}), table)
    assert absent == model() == empty
    assert absent.model_dump() == model().model_dump() == empty.model_dump()
    assert absent.model_fields_set == empty.model_fields_set == set()
    assert Config.model_fields[table].annotation is model  # config_errors' key hints
