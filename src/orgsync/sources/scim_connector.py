"""The `scim` source type: an identity provider's SCIM 2.0 endpoint, read in full."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from orgsync.config import RemoteSourceConfig, SecretRef, check_url, secret_ref
from orgsync.connectors import Hooks, SourceConnector, secret_key

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.ports import Source


class ScimSourceConfig(RemoteSourceConfig):
    type: Literal["scim"]
    url: str
    token_env: str | None = None
    token_file: Path | None = None
    username: str | None = None
    """With `password_env`/`password_file`: HTTP basic auth instead of a bearer token."""
    password_env: str | None = None
    password_file: Path | None = None
    page_size: int = Field(default=100, ge=1, le=1000)

    @model_validator(mode="after")
    def _check(self) -> ScimSourceConfig:
        check_url(self.url, "url", allow_plaintext=self.allow_plaintext)
        bearer = secret_ref("token", self.token_env, self.token_file, required=False)
        basic = secret_ref("password", self.password_env, self.password_file, required=False)
        if (bearer is None) == (basic is None):
            raise ValueError(
                "give token_env/token_file, or username with password_env/password_file"
            )
        if basic is not None and not self.username:
            raise ValueError("password_env/password_file needs username")
        return self

    @property
    def token(self) -> SecretRef | None:
        ref = secret_ref("token", self.token_env, self.token_file, required=False)
        return ref.model_copy(update={"key": "source.token"}) if ref else None

    @property
    def password(self) -> SecretRef | None:
        ref = secret_ref("password", self.password_env, self.password_file, required=False)
        return ref.model_copy(update={"key": "source.password"}) if ref else None


def build(config: ScimSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.sources._remote import http_settings
    from orgsync.sources.scim import ScimSource  # scim2-models takes a second to import

    settings = http_settings(config, hooks, [config.url])
    token, password = config.token, config.password
    return ScimSource.connect(
        config.url,
        token=token.resolve(environ).get_secret_value() if token else None,
        username=config.username,
        password=password.resolve(environ).get_secret_value() if password else None,
        credential_key=secret_key(token or password, "source.token"),
        page_size=config.page_size,
        settings=settings,
    )


CONNECTOR = SourceConnector(
    type="scim",
    settings=ScimSourceConfig,
    build=build,
    summary="an identity provider's SCIM 2.0 endpoint",
)
