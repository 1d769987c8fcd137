"""Building adapters from configuration: which source, which target, with which settings.

The one place that knows every adapter module. Secrets are resolved here, at the moment an
adapter is built, never earlier and never stored. Adapters whose libraries are slow to
import (scim2-models, PyJWT, psycopg) are imported only when configured. The state
database is opened here too (`open_state_store`), with its password if it has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

from orgsync.config import Config, SecretRef, StateConfig, TargetConfig
from orgsync.config import EntraSource as EntraSourceConfig
from orgsync.config import FileSource as FileSourceConfig
from orgsync.config import GoogleSource as GoogleSourceConfig
from orgsync.config import LdapSource as LdapSourceConfig
from orgsync.config import OktaSource as OktaSourceConfig
from orgsync.config import ScimSource as ScimSourceConfig
from orgsync.core.errors import ConfigError
from orgsync.retrying import RetrySettings
from orgsync.store import StateStore, check_state_path, check_state_url

if TYPE_CHECKING:
    from orgsync.core.ports import Source, Target
    from orgsync.interrupt import ReadInterrupt

# Each adapter is imported when configured, not here: the HTTP client, LDAP, the wire
# models and the SCIM and JWT libraries cost start-up time to every command that builds
# none of them (`validate --offline`, `--help`).

log = structlog.get_logger(__name__)


def build_source(
    config: Config,
    environ: Mapping[str, str],
    *,
    interrupt: ReadInterrupt | None = None,
    on_response: Callable[[str, int], None] | None = None,
) -> Source:
    """The configured identity provider's adapter; secrets are resolved here, not earlier.

    `interrupt` ends an HTTP source's read in flight when orgsync is told to stop (the
    LDAP and file sources finish their read); `on_response` counts its HTTP responses.
    """
    source = config.source
    if isinstance(source, FileSourceConfig):
        from orgsync.sources.file import FileSource

        return FileSource(source.path)
    if isinstance(source, ScimSourceConfig):
        return _scim_source(source, environ, interrupt, on_response)
    if isinstance(source, LdapSourceConfig):
        return _ldap_source(source, environ)
    if isinstance(source, OktaSourceConfig | EntraSourceConfig | GoogleSourceConfig):
        return _rest_source(source, environ, interrupt, on_response)
    raise ConfigError(f"source.type = {source.type!r} is not available in this version")


def _rest_source(
    config: OktaSourceConfig | EntraSourceConfig | GoogleSourceConfig,
    environ: Mapping[str, str],
    interrupt: ReadInterrupt | None,
    on_response: Callable[[str, int], None] | None,
) -> Source:
    """Okta, Entra ID or Google Workspace: the REST identity providers."""
    from orgsync.sources._http import HttpSettings

    settings = HttpSettings(
        timeout=config.timeout.total_seconds(),
        verify=str(config.ca_file) if config.ca_file else True,
        retry=RetrySettings(
            max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
        ),
        interrupt=interrupt,
        on_response=on_response,
    )
    if isinstance(config, OktaSourceConfig):
        urls = [config.url]
    elif isinstance(config, EntraSourceConfig):
        urls = [config.graph_url, config.login_url]
    else:
        urls = [config.directory_url, config.token_url]
    for url in urls:
        if url.startswith("http://"):
            log.warning("source.plaintext", source=config.type, url=url)
    if isinstance(config, OktaSourceConfig):
        from orgsync.sources.okta import OktaSource

        return OktaSource(
            config.url,
            token=config.token.resolve(environ).get_secret_value(),
            page_size=config.page_size,
            settings=settings,
        )
    if isinstance(config, EntraSourceConfig):
        from orgsync.sources.entra import EntraSource

        return EntraSource(
            tenant_id=config.tenant_id,
            client_id=config.client_id,
            client_secret=config.client_secret.resolve(environ).get_secret_value(),
            graph_url=config.graph_url,
            login_url=config.login_url,
            page_size=config.page_size,
            settings=settings,
        )
    # PyJWT and cryptography take a while to import; only a Google source needs them.
    from orgsync.sources.google import GoogleSource, ServiceAccountKey

    return GoogleSource(
        key=ServiceAccountKey.from_json(config.credentials.resolve(environ).get_secret_value()),
        subject=config.subject,
        customer=config.customer,
        directory_url=config.directory_url,
        token_url=config.token_url,
        page_size=config.page_size,
        settings=settings,
    )


def _scim_source(
    config: ScimSourceConfig,
    environ: Mapping[str, str],
    interrupt: ReadInterrupt | None,
    on_response: Callable[[str, int], None] | None,
) -> Source:
    from orgsync.sources.scim import ScimSource  # scim2-models takes a second to import

    token, password = config.token, config.password
    if config.url.startswith("http://"):
        log.warning("source.plaintext", source="scim", url=config.url)
    return ScimSource.connect(
        config.url,
        token=token.resolve(environ).get_secret_value() if token else None,
        username=config.username,
        password=password.resolve(environ).get_secret_value() if password else None,
        credential_key=_secret_key(token or password, "source.token"),
        page_size=config.page_size,
        timeout=config.timeout.total_seconds(),
        verify=str(config.ca_file) if config.ca_file else True,
        retry=RetrySettings(
            max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
        ),
        interrupt=interrupt,
        on_response=on_response,
    )


def _ldap_source(config: LdapSourceConfig, environ: Mapping[str, str]) -> Source:
    from orgsync.sources.ldap import LdapSettings, LdapSource

    ref = config.bind_password
    if config.url.startswith("ldap://") and not config.start_tls:
        log.warning("source.plaintext", source="ldap", url=config.url)
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
        credential_key=_secret_key(ref, "source.bind_password"),
    )
    retry = RetrySettings(
        max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
    )
    return LdapSource(settings, retry=retry)


def _secret_key(ref: SecretRef | None, default: str) -> str:
    """`source.token_env (IDP_TOKEN)`: the key an administrator must fix when refused."""
    if ref is None:
        return default
    return f"{ref.key}_env ({ref.env})" if ref.env else f"{ref.key}_file ({ref.file})"


def build_target(
    config: TargetConfig,
    environ: Mapping[str, str],
    *,
    on_response: Callable[[str, int], None] | None = None,
    interrupt: ReadInterrupt | None = None,
) -> Target:
    """The configured organization's adapter; secrets are resolved here, not earlier.

    `interrupt` ends a read of the organization in flight when orgsync is told to stop.
    """
    if config.type == "keycard":
        return _keycard_target(config, environ, on_response, interrupt)
    if config.type == "scim":
        return _scim_target(config, environ, on_response, interrupt)
    from orgsync.targets.http import ApiClient
    from orgsync.targets.openai import OpenAITarget

    api_key = config.api_key.resolve(environ).get_secret_value()
    if config.base_url.startswith("http://"):
        log.warning("target.plaintext", target=config.name, base_url=config.base_url)
    client = ApiClient(
        config.base_url,
        bearer_token=api_key,
        system=config.name,
        timeout=config.timeout.total_seconds(),
        verify=str(config.ca_file) if config.ca_file else True,
        requests_per_second=config.requests_per_second,
        retry=retry_settings(config),
        user_agent="orgsync",
        on_response=on_response,
        interrupt=interrupt,
    )
    projects = [(p.id, p.role) for p in config.invite_projects]
    return OpenAITarget(client, api_key=api_key, invite_projects=projects)


def _keycard_target(
    config: TargetConfig,
    environ: Mapping[str, str],
    on_response: Callable[[str, int], None] | None,
    interrupt: ReadInterrupt | None,
) -> Target:
    from orgsync.targets.keycard import KeycardTarget

    if config.client_id is None or config.organization_id is None:
        raise ConfigError(f"targets.{config.name}: keycard needs client_id and organization_id")
    secret = config.client_secret.resolve(environ).get_secret_value()
    if config.base_url.startswith("http://"):
        log.warning("target.plaintext", target=config.name, base_url=config.base_url)
    return KeycardTarget.connect(
        config.base_url,
        organization_id=config.organization_id,
        client_id=config.client_id,
        client_secret=secret,
        token_url=config.token_url,
        system=config.name,
        retry=retry_settings(config),
        timeout=config.timeout.total_seconds(),
        verify=str(config.ca_file) if config.ca_file else True,
        requests_per_second=config.requests_per_second,
        on_response=on_response,
        interrupt=interrupt,
    )


def _scim_target(
    config: TargetConfig,
    environ: Mapping[str, str],
    on_response: Callable[[str, int], None] | None,
    interrupt: ReadInterrupt | None,
) -> Target:
    from orgsync.targets.scim import ScimTarget  # scim2-models takes a second to import

    token = config.api_key.resolve(environ).get_secret_value()
    if config.base_url.startswith("http://"):
        log.warning("target.plaintext", target=config.name, base_url=config.base_url)
    return ScimTarget.connect(
        config.base_url,
        token=token,
        system=config.name,
        retry=retry_settings(config),
        dialect=config.scim_dialect,
        max_patch_operations=config.max_patch_operations,
        timeout=config.timeout.total_seconds(),
        verify=str(config.ca_file) if config.ca_file else True,
        requests_per_second=config.requests_per_second,
        on_response=on_response,
        interrupt=interrupt,
    )


def retry_settings(config: TargetConfig) -> RetrySettings:
    return RetrySettings(
        max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
    )


def open_state_store(
    state: StateConfig, environ: Mapping[str, str], *, create: bool = True
) -> StateStore:
    """The state database `[state]` names: the SQLite file at `path`, or the PostgreSQL
    database at `url` with the password of `password_env` / `password_file` (resolved
    now, handed to the connection, kept nowhere else). `create=False`: `NoStateDatabase`
    rather than a new database (reading commands)."""
    if state.url is None:
        return StateStore.open(state.path, create=create)
    password = state.password.resolve(environ).get_secret_value() if state.password else None
    return StateStore.open(state.url, password=password, create=create)


def check_state(state: StateConfig, environ: Mapping[str, str], *, offline: bool) -> str:
    """`validate`'s line about the state database: usable as it is, reading only
    (offline: its password is there, the server is not contacted)."""
    if state.url is None:
        return check_state_path(state.path)
    password = state.password.resolve(environ).get_secret_value() if state.password else None
    if offline:
        return f"{state.location}: not contacted (--offline)"
    return check_state_url(state.url, password=password)
