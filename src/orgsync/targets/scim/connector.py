"""The `scim` target type: its keys, how it is built, what `validate` says of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal

from pydantic import model_validator

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
    invites=False, create_users=True, suspend=True, roles=False, groups=True, change_emails=True
)


class ScimTargetConfig(ApiKeyTarget):
    """A SCIM 2.0 server; its `api_key` is the bearer token it issued."""

    type: Literal["scim"]

    @model_validator(mode="after")
    def _check(self) -> ScimTargetConfig:
        if self.default_role or self.roles:
            raise ValueError(
                "scim targets have no organization roles: scope alone decides who is "
                "provisioned, so default_role and [[targets.roles]] cannot be used"
            )
        return self


def build(config: ScimTargetConfig, environ: Mapping[str, str], hooks: Hooks) -> Target:
    from orgsync.targets.scim.target import ScimTarget  # scim2-models takes a second

    token = config.api_key.resolve(environ).get_secret_value()
    plaintext_warning(config)
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
        on_response=hooks.on_response,
        interrupt=hooks.interrupt,
    )


def probe(
    config: ScimTargetConfig,
    target: Target,
    observed: TargetSnapshot,
    learned: Sequence[LearnedForm],
) -> ProbeReport:
    """What `/ServiceProviderConfig` announced and the request forms orgsync asks in."""
    from orgsync.targets.scim.target import ScimTarget

    if not isinstance(target, ScimTarget):
        return ProbeReport()
    return ProbeReport(
        details=(
            f"  ServiceProviderConfig: {target.describe_features()}",
            f'  request forms (scim_dialect = "{config.scim_dialect}"): '
            f"{target.describe_forms(learned)}",
        )
    )


CONNECTOR = TargetConnector(
    type="scim",
    settings=ScimTargetConfig,
    build=build,
    capabilities=CAPABILITIES,
    credentials=lambda config: (config.api_key,),
    probe=probe,
    summary="SCIM 2.0 (RFC 7644): users, groups, group members of any conforming server",
)
