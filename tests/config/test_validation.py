"""`orgsync validate --offline` contacts nothing, but still checks every secret."""

from __future__ import annotations

from pathlib import Path

from orgsync.config import load_config
from orgsync.validation import validate

CONFIG = """
[source]
type = "ldap"
url = "ldap://127.0.0.1:9"
allow_plaintext = true
bind_dn = "cn=admin,dc=example,dc=org"
bind_password_env = "LDAP_PASSWORD"
users_base = "ou=people,dc=example,dc=org"
groups_base = "ou=groups,dc=example,dc=org"

[[targets]]
name = "openai-prod"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
allow_plaintext = true
api_key_env = "OPENAI_KEY"
"""


def test_offline_validation_checks_secrets_and_contacts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "orgsync.toml"
    path.write_text(CONFIG, encoding="utf-8")
    config = load_config(path)
    lines, ok = validate(config, environ={"LDAP_PASSWORD": "pw", "OPENAI_KEY": "sk"}, offline=True)
    assert ok, lines
    assert "source ldap: credentials present (not contacted: --offline)" in lines
    missing, ok = validate(config, environ={"OPENAI_KEY": "sk"}, offline=True)
    assert not ok
    assert any("source.bind_password_env" in line and "LDAP_PASSWORD" in line for line in missing)


def test_online_validation_reports_an_unreachable_source(tmp_path: Path) -> None:
    path = tmp_path / "orgsync.toml"
    path.write_text(
        CONFIG.replace(
            '"ldap://127.0.0.1:9"', '"ldap://127.0.0.1:9"\ntimeout = "1s"\nmax_attempts = 1'
        )
        # The target is unreachable too: one attempt, not the default retries with backoff.
        .replace('api_key_env = "OPENAI_KEY"', 'api_key_env = "OPENAI_KEY"\nmax_attempts = 1'),
        encoding="utf-8",
    )
    lines, ok = validate(
        load_config(path), environ={"LDAP_PASSWORD": "pw", "OPENAI_KEY": "sk"}, offline=False
    )
    assert not ok
    assert any(line.startswith("source ldap: FAILED") for line in lines)
