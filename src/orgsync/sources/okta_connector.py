"""The `okta` source type: Okta's Users and Groups APIs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from orgsync.config import RemoteSourceConfig, SecretRef, check_url, secret_ref
from orgsync.connectors import Hooks, SourceConnector
from orgsync.core.ports import Source


class OktaSourceConfig(RemoteSourceConfig):
    type: Literal["okta"]
    url: str
    token_env: str | None = None
    token_file: Path | None = None
    page_size: int = Field(default=200, ge=1, le=1000)

    @model_validator(mode="after")
    def _check(self) -> OktaSourceConfig:
        check_url(self.url, "url", allow_plaintext=self.allow_plaintext)
        secret_ref("token", self.token_env, self.token_file, required=True)
        return self

    @property
    def token(self) -> SecretRef:
        ref = secret_ref("token", self.token_env, self.token_file, required=True)
        assert ref is not None
        return ref.model_copy(update={"key": "source.token"})


def build(config: OktaSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.sources._remote import http_settings
    from orgsync.sources.okta import OktaSource

    settings = http_settings(config, hooks, [config.url])
    return OktaSource(
        config.url,
        token=config.token.resolve(environ).get_secret_value(),
        page_size=config.page_size,
        settings=settings,
    )


CONNECTOR = SourceConnector(
    type="okta",
    settings=OktaSourceConfig,
    build=build,
    summary="Okta (Users and Groups APIs)",
)
