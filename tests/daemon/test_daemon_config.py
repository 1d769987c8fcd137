"""The daemon's configuration keys: refused whole when wrong, secrets never inline."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from orgsync.config import load_config, parse_listen
from orgsync.core.errors import ConfigError
from orgsync.daemon.service import resolve_secrets

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


def load(tmp_path: Path, extra: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "orgsync.toml"
    path.write_text(MINIMAL + extra, encoding="utf-8")
    return load_config(path)


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.schedule.quarantine_after == 3
    assert config.schedule.quarantine_max_interval == timedelta(days=1)
    assert config.server.debounce == timedelta(seconds=1)
    assert config.server.secret("webhook_secret") is None
    assert config.server.health_listen is None
    assert (config.server.header_timeout, config.server.body_timeout) == (
        timedelta(seconds=10),
        timedelta(seconds=30),
    )
    assert (config.server.max_connections, config.server.max_connections_per_client) == (256, 32)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[server]\nlisten = "8080"', r"server: .*not host:port"),
        ('[server]\nlisten = "localhost:http"', r"server: .*not host:port"),
        ('[server]\nwebhook_secret_env = "A"\nwebhook_secret_file = "b"', "not both"),
        ('[server]\nokta_authorization_env = "A"\nokta_authorization_file = "b"', "not both"),
        ('[server]\ndebounce = "2m"', "debounce"),
        ('[server]\nhealth_listen = "9090"', r"server: .*health_listen = '9090' is not host:port"),
        ('[server]\nhealth_listen = "127.0.0.1:8080"', "another address than listen"),
        ('[server]\nheader_timeout = "0s"', "header_timeout must be between 100ms and 5m"),
        ('[server]\nbody_timeout = "1h"', "body_timeout must be between 100ms and 5m"),
        ("[server]\nmax_connections = 0", "max_connections"),
        (
            "[server]\nmax_connections = 10\nmax_connections_per_client = 11",
            "max_connections_per_client must not exceed max_connections",
        ),
        (
            '[server]\nwebhook_secret = "inline"',
            r"server\.webhook_secret: a secret never sits in the configuration file",
        ),
        ('[schedule]\ninterval = "10s"\njitter = "10s"', "jitter"),
        ('[schedule]\ninterval = "500ms"', "at least 1s"),
        ('[schedule]\ninterval = "2h"\nquarantine_max_interval = "1h"', "quarantine_max"),
        ("[schedule]\nquarantine_after = 0", "quarantine_after"),
    ],
)
def test_wrong_values_are_refused_with_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, extra)


def test_listen_forms() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)


def test_secrets_resolve_from_the_environment_and_files(tmp_path: Path) -> None:
    (tmp_path / "okta").write_text("okta-value\n", encoding="utf-8")
    config = load(
        tmp_path,
        '[server]\nwebhook_secret_env = "WH"\nokta_authorization_file = "okta"\n',
    )
    secrets = resolve_secrets(
        config, {"WH": "generic-value", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert secrets.generic == b"generic-value"
    assert secrets.okta_authorization == "okta-value"
    assert secrets.entra_client_state is None
    with pytest.raises(ConfigError, match=r"server\.webhook_secret_env: environment variable WH"):
        resolve_secrets(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
