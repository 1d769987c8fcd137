"""Building adapters from configuration: which source, which target, with which settings.

Each source and target is built by its type's connector, found through the registry
(`orgsync.connectors`) and imported on first use, so adapters whose libraries are slow
to import (scim2-models, PyJWT) are imported only when configured. Secrets are resolved
at the moment an adapter is built, never earlier and never stored. The state database
is opened here too (`open_state_store`, psycopg only for PostgreSQL), with its password
if it has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from orgsync import connectors
from orgsync.config import Config, StateConfig, TargetConfig

# The state database's modules (SQLite, the store) are imported by the functions that
# open or check it: `validate --offline` without a database yet needs neither.
if TYPE_CHECKING:
    from datetime import datetime

    from orgsync.core.ports import Source, Target
    from orgsync.interrupt import ReadInterrupt
    from orgsync.store import StateStore


def build_source(
    config: Config,
    environ: Mapping[str, str],
    *,
    interrupt: ReadInterrupt | None = None,
    on_response: Callable[[str, int], None] | None = None,
) -> Source:
    """The configured identity provider's adapter, built by its type's connector
    (imported on first use); secrets are resolved there, not earlier.

    `interrupt` ends an HTTP source's read in flight when orgsync is told to stop (the
    LDAP and file sources finish their read); `on_response` counts its HTTP responses.
    """
    connector = connectors.source(config.source.type)
    hooks = connectors.Hooks(on_response=on_response, interrupt=interrupt)
    return connector.build(config.source, environ, hooks)


def build_target(
    config: TargetConfig,
    environ: Mapping[str, str],
    *,
    on_response: Callable[[str, int], None] | None = None,
    interrupt: ReadInterrupt | None = None,
) -> Target:
    """The configured organization's adapter, built by its type's connector (imported on
    first use); secrets are resolved there, not earlier.

    `interrupt` ends a read of the organization in flight when orgsync is told to stop.
    """
    connector = connectors.target(config.type)
    return connector.build(config, environ, connectors.Hooks(on_response, interrupt))


retry_settings = connectors.retry_settings


def open_state_store(
    state: StateConfig,
    environ: Mapping[str, str],
    *,
    create: bool = True,
    clock: Callable[[], datetime] | None = None,
) -> StateStore:
    """The state database `[state]` names: the SQLite file at `path`, or the PostgreSQL
    database at `url` with the password of `password_env` / `password_file` (resolved
    now, handed to the connection, kept nowhere else). `create=False`: `NoStateDatabase`
    rather than a new database (reading commands). `clock`: this host's (the store's on
    SQLite; on PostgreSQL the server's clock is the store's)."""
    from orgsync.store import StateStore
    from orgsync.store.db import utc_now

    host = clock or utc_now
    if state.url is None:
        return StateStore.open(state.path, create=create, clock=host)
    password = state.password.resolve(environ).get_secret_value() if state.password else None
    return StateStore.open(state.url, password=password, create=create, clock=host)


def check_state(state: StateConfig, environ: Mapping[str, str], *, offline: bool) -> str:
    """`validate`'s line about the state database: usable as it is, reading only
    (offline: its password is there, the server is not contacted)."""
    from orgsync.store.checkup import check_state_path, check_state_url

    if state.url is None:
        return check_state_path(state.path)
    password = state.password.resolve(environ).get_secret_value() if state.password else None
    if offline:
        return f"{state.location}: not contacted (--offline)"
    return check_state_url(state.url, password=password)
