"""The `keycard` target type: its keys, how it is built, what `validate` says of it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from pydantic import model_validator

from orgsync.config import SecretRef, secret_ref
from orgsync.connectors import Hooks, TargetConnector, plaintext_warning, retry_settings
from orgsync.core.errors import ConfigError
from orgsync.core.model import Capabilities
from orgsync.targets._shared_keys import SharedKeys

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.ports import Target

CAPABILITIES: Final = Capabilities(
    invites=True, create_users=False, suspend=True, roles=True, groups=False
)


class KeycardTargetConfig(SharedKeys):
    type: Literal["keycard"]
    client_id: str | None = None
    """The service account's OAuth client id (with client_secret_env/_file)."""
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    api_key_env: str | None = None
    """Refused: accepted as a key only to say what Keycard takes instead."""
    api_key_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> KeycardTargetConfig:
        if not self.client_id or not self.organization_id:
            raise ValueError("keycard targets need client_id and organization_id")
        secret_ref("client_secret", self.client_secret_env, self.client_secret_file, required=True)
        if self.api_key_env or self.api_key_file:
            raise ValueError(
                "keycard targets authenticate with client_id/client_secret, not api_key"
            )
        return self

    @property
    def client_secret(self) -> SecretRef:
        ref = self.secret("client_secret")
        assert ref is not None
        return ref


def build(config: KeycardTargetConfig, environ: Mapping[str, str], hooks: Hooks) -> Target:
    from orgsync.targets.keycard.target import KeycardTarget

    if config.client_id is None or config.organization_id is None:
        raise ConfigError(f"targets.{config.name}: keycard needs client_id and organization_id")
    secret = config.client_secret.resolve(environ).get_secret_value()
    plaintext_warning(config)
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
        on_response=hooks.on_response,
        interrupt=hooks.interrupt,
    )


CONNECTOR = TargetConnector(
    type="keycard",
    settings=KeycardTargetConfig,
    build=build,
    capabilities=CAPABILITIES,
    credentials=lambda config: (config.client_secret,),
    summary="Keycard: organization users, invitations, roles; soft disable",
)
