"""The `entra` source type: Microsoft Entra ID through Microsoft Graph."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from orgsync.config import RemoteSourceConfig, SecretRef, check_url, secret_ref
from orgsync.connectors import Hooks, SourceConnector
from orgsync.core.ports import Source


class EntraSourceConfig(RemoteSourceConfig):
    type: Literal["entra"]
    tenant_id: str
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    graph_url: str = "https://graph.microsoft.com/v1.0"
    login_url: str = "https://login.microsoftonline.com"
    page_size: int = Field(default=999, ge=1, le=999)

    @model_validator(mode="after")
    def _check(self) -> EntraSourceConfig:
        check_url(self.graph_url, "graph_url", allow_plaintext=self.allow_plaintext)
        check_url(self.login_url, "login_url", allow_plaintext=self.allow_plaintext)
        secret_ref("client_secret", self.client_secret_env, self.client_secret_file, required=True)
        return self

    @property
    def client_secret(self) -> SecretRef:
        ref = secret_ref(
            "client_secret", self.client_secret_env, self.client_secret_file, required=True
        )
        assert ref is not None
        return ref.model_copy(update={"key": "source.client_secret"})


def build(config: EntraSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.sources._remote import http_settings
    from orgsync.sources.entra import EntraSource

    settings = http_settings(config, hooks, [config.graph_url, config.login_url])
    return EntraSource(
        tenant_id=config.tenant_id,
        client_id=config.client_id,
        client_secret=config.client_secret.resolve(environ).get_secret_value(),
        graph_url=config.graph_url,
        login_url=config.login_url,
        page_size=config.page_size,
        settings=settings,
    )


CONNECTOR = SourceConnector(
    type="entra",
    settings=EntraSourceConfig,
    build=build,
    summary="Microsoft Entra ID (Microsoft Graph)",
)
