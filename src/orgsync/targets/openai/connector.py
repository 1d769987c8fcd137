"""The `openai` target type: its keys, how it is built, what `validate` says of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

from pydantic import model_validator

from orgsync.config import SecretRef, secret_ref
from orgsync.connectors import (
    Hooks,
    ProbeReport,
    TargetConnector,
    plaintext_warning,
    retry_settings,
)
from orgsync.core.forms import LearnedForm
from orgsync.core.model import Capabilities, TargetSnapshot
from orgsync.core.ports import Target
from orgsync.targets._shared_keys import SharedKeys

CAPABILITIES: Final = Capabilities(
    invites=True, create_users=False, suspend=False, roles=True, groups=True
)


class OpenAITargetConfig(SharedKeys):
    type: Literal["openai"]
    api_key_env: str | None = None
    """The organization's admin API key (or api_key_file)."""
    api_key_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> OpenAITargetConfig:
        secret_ref("api_key", self.api_key_env, self.api_key_file, required=True)
        return self

    @property
    def api_key(self) -> SecretRef:
        ref = self.secret("api_key")
        assert ref is not None
        return ref


def build(config: OpenAITargetConfig, environ: Mapping[str, str], hooks: Hooks) -> Target:
    from orgsync.targets.http import ApiClient
    from orgsync.targets.openai.target import OpenAITarget

    api_key = config.api_key.resolve(environ).get_secret_value()
    plaintext_warning(config)
    client = ApiClient(
        config.base_url,
        bearer_token=api_key,
        system=config.name,
        timeout=config.timeout.total_seconds(),
        verify=str(config.ca_file) if config.ca_file else True,
        requests_per_second=config.requests_per_second,
        retry=retry_settings(config),
        user_agent="orgsync",
        on_response=hooks.on_response,
        interrupt=hooks.interrupt,
    )
    projects = [(p.id, p.role) for p in config.invite_projects]
    return OpenAITarget(client, api_key=api_key, invite_projects=projects)


def probe(
    config: OpenAITargetConfig,
    target: Target,
    observed: TargetSnapshot,
    learned: Sequence[LearnedForm],
) -> ProbeReport:
    # The only API that says whose key it is: that member is protected from removal.
    found = observed.key_owner_id is not None
    return ProbeReport(
        notes=("API key owner " + ("found" if found else "NOT found (it will not be protected)"),)
    )


CONNECTOR = TargetConnector(
    type="openai",
    settings=OpenAITargetConfig,
    build=build,
    capabilities=CAPABILITIES,
    credentials=lambda config: (config.api_key,),
    probe=probe,
    summary="OpenAI Admin API: organization members, invitations, roles, groups",
)
