"""What the REST sources' connectors share: HTTP settings from their keys."""

from __future__ import annotations

from collections.abc import Iterable

from orgsync.config import RemoteSourceConfig
from orgsync.connectors import Hooks, plaintext_source_warning
from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings


def http_settings(config: RemoteSourceConfig, hooks: Hooks, urls: Iterable[str]) -> HttpSettings:
    """The client settings `config` asks for; a warning for each plain-HTTP URL."""
    for url in urls:
        if url.strip().lower().startswith("http://"):  # HTTP:// is plain too
            plaintext_source_warning(config.type, url)
    return HttpSettings(
        timeout=config.timeout.total_seconds(),
        verify=str(config.ca_file) if config.ca_file else True,
        retry=RetrySettings(
            max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
        ),
        interrupt=hooks.interrupt,
        on_response=hooks.on_response,
    )
