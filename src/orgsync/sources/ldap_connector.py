"""The `ldap` source type: OpenLDAP or Active Directory over LDAPS or StartTLS."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, StrictBool, model_validator

from orgsync.config import RemoteSourceConfig, SecretRef, secret_ref
from orgsync.connectors import Hooks, SourceConnector, plaintext_source_warning, secret_key

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.ports import Source


class LdapSourceConfig(RemoteSourceConfig):
    type: Literal["ldap"]
    url: str
    start_tls: StrictBool = False
    bind_dn: str
    bind_password_env: str | None = None
    bind_password_file: Path | None = None
    users_base: str
    groups_base: str
    flavor: Literal["openldap", "ad"] = "openldap"
    user_filter: str | None = None
    group_filter: str | None = None
    id_attribute: str | None = None
    email_attribute: str = "mail"
    name_attribute: str | None = None
    disabled_filter: str | None = None
    """An LDAP filter matching disabled accounts (AD: userAccountControl is used by default)."""
    nested_groups: Literal["client", "in_chain"] = "client"
    page_size: int = Field(default=500, ge=1, le=5000)

    @model_validator(mode="after")
    def _check(self) -> LdapSourceConfig:
        secret_ref("bind_password", self.bind_password_env, self.bind_password_file, required=True)
        if "@" in urlsplit(self.url).netloc:
            # Not repeated: it was echoed by `validate`, by every connection error and
            # into the run history. LDAP binds with bind_dn and bind_password_*.
            raise ValueError(
                "url carries a user name or password before an @; secrets never sit in "
                "the file: give the user as bind_dn and the password with "
                "bind_password_env or bind_password_file"
            )
        if self.url.startswith("ldaps://"):
            return self
        if not self.url.startswith("ldap://"):
            raise ValueError(f"{self.url!r} is not an ldap:// or ldaps:// URL")
        if not self.start_tls and not self.allow_plaintext:
            raise ValueError(
                f"{self.url} without start_tls = true sends the bind password in clear; "
                "use ldaps://, start_tls = true, or allow_plaintext = true (loopback test rigs)"
            )
        return self

    @property
    def bind_password(self) -> SecretRef:
        ref = secret_ref(
            "bind_password", self.bind_password_env, self.bind_password_file, required=True
        )
        assert ref is not None
        return ref.model_copy(update={"key": "source.bind_password"})


def build(config: LdapSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.retrying import RetrySettings
    from orgsync.sources.ldap import LdapSettings, LdapSource

    ref = config.bind_password
    if config.url.startswith("ldap://") and not config.start_tls:
        plaintext_source_warning("ldap", config.url)
    settings = LdapSettings(
        url=config.url,
        bind_dn=config.bind_dn,
        password=ref.resolve(environ).get_secret_value(),
        users_base=config.users_base,
        groups_base=config.groups_base,
        start_tls=config.start_tls,
        flavor=config.flavor,
        user_filter=config.user_filter,
        group_filter=config.group_filter,
        id_attribute=config.id_attribute,
        email_attribute=config.email_attribute,
        name_attribute=config.name_attribute,
        disabled_filter=config.disabled_filter,
        nested_groups=config.nested_groups,
        page_size=config.page_size,
        ca_file=str(config.ca_file) if config.ca_file else None,
        allow_plaintext=config.allow_plaintext,
        timeout=config.timeout.total_seconds(),
        credential_key=secret_key(ref, "source.bind_password"),
    )
    retry = RetrySettings(
        max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
    )
    return LdapSource(settings, retry=retry, interrupt=hooks.interrupt)


CONNECTOR = SourceConnector(
    type="ldap",
    settings=LdapSourceConfig,
    build=build,
    summary="OpenLDAP or Active Directory (LDAPS or StartTLS)",
)
