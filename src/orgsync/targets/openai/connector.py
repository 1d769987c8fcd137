"""The `openai` target type: its keys, how it is built, what `validate` says of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal

from orgsync.connectors import (
    Hooks,
    ProbeReport,
    TargetConnector,
    plaintext_warning,
    retry_settings,
)
from orgsync.core.model import Capabilities
from orgsync.targets._keys import ApiKeyTarget

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.forms import LearnedForm
    from orgsync.core.model import TargetSnapshot
    from orgsync.core.ports import Target

CAPABILITIES: Final = Capabilities(
    invites=True, create_users=False, suspend=False, roles=True, groups=True
)


ORGANIZATION_HEADER: Final = "openai-organization"
"""The response header naming the organization a request was served for (OpenAI API
reference, "Debugging requests": an API meta information header returned with responses).
The admin key is bound to one organization, so it tells which one this target is."""


class OpenAITargetConfig(ApiKeyTarget):
    """An OpenAI organization; its `api_key` is an admin API key."""

    type: Literal["openai"]


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
        identity_header=ORGANIZATION_HEADER,
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
