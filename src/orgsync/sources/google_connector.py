"""The `google` source type: Google Workspace's Directory API (domain-wide delegation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from orgsync.config import RemoteSourceConfig, SecretRef, check_url
from orgsync.connectors import Hooks, SourceConnector

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.ports import Source


class GoogleSourceConfig(RemoteSourceConfig):
    type: Literal["google"]
    customer: str = "my_customer"
    subject: str
    """The admin user the service account impersonates (domain-wide delegation)."""
    credentials_file: Path
    """The service account key (JSON); a secret: keep it 0600 or in $CREDENTIALS_DIRECTORY."""
    directory_url: str = "https://admin.googleapis.com/admin/directory/v1"
    reports_url: str = "https://admin.googleapis.com/admin/reports/v1"
    """The Reports API root: the change probe of incremental passes (its own token, scope
    `admin.reports.audit.readonly`; without that delegation passes read whole)."""
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    page_size: int = Field(default=500, ge=1, le=500)

    @model_validator(mode="after")
    def _check(self) -> GoogleSourceConfig:
        check_url(self.directory_url, "directory_url", allow_plaintext=self.allow_plaintext)
        check_url(self.reports_url, "reports_url", allow_plaintext=self.allow_plaintext)
        check_url(self.token_url, "token_url", allow_plaintext=self.allow_plaintext)
        return self

    @property
    def credentials(self) -> SecretRef:
        return SecretRef(key="source.credentials", file=self.credentials_file, document=True)


def build(config: GoogleSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.sources._remote import http_settings

    # PyJWT and cryptography take a while to import; only a Google source needs them.
    from orgsync.sources.google import GoogleSource, ServiceAccountKey

    urls = [config.directory_url, config.reports_url, config.token_url]
    settings = http_settings(config, hooks, urls)
    return GoogleSource(
        key=ServiceAccountKey.from_json(config.credentials.resolve(environ).get_secret_value()),
        subject=config.subject,
        customer=config.customer,
        directory_url=config.directory_url,
        reports_url=config.reports_url,
        token_url=config.token_url,
        page_size=config.page_size,
        settings=settings,
    )


CONNECTOR = SourceConnector(
    type="google",
    settings=GoogleSourceConfig,
    build=build,
    summary="Google Workspace (Directory API, domain-wide delegation)",
)
