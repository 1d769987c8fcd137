"""Keys the built-in target types accept from one another, so existing files still load.

Before each type had its own model, every `[[targets]]` table accepted every built-in
type's keys; a key that meant nothing to its type (`invite_projects` on a SCIM target,
`scim_dialect` on an OpenAI one) was checked, then ignored. Refusing them now would
stop a daemon whose file loaded yesterday, so the built-in models keep accepting (and
checking) them. A new connector does not use this: its model holds its own keys only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from orgsync.config import BASE_ONLY, StrictModel, TargetConfig, check_url


class InviteProject(StrictModel):
    id: str = Field(min_length=1)
    role: Literal["member", "owner"] = "member"


class SharedKeys(TargetConfig):
    model_config = BASE_ONLY

    organization_id: str | None = None
    """Keycard: the organization's id or label."""
    token_url: str | None = None
    """Keycard: OAuth token endpoint (default: base_url + /service-account-token)."""
    invite_projects: tuple[InviteProject, ...] = ()
    """OpenAI: projects an invitation grants; always sent explicitly (none by default)."""
    max_patch_operations: int = Field(default=100, ge=1, le=10000)
    """SCIM: most member changes one PATCH carries (AWS accepts 100)."""
    scim_dialect: Literal["auto", "strict", "aws", "azure", "loose"] = "auto"
    """SCIM: `auto` learns the request forms the server accepts; a named dialect fixes them
    and the known quirks of a class of servers (see README)."""

    @model_validator(mode="after")
    def _check_token_url(self) -> SharedKeys:
        if self.token_url is not None:
            check_url(self.token_url, "token_url", allow_plaintext=self.allow_plaintext)
        return self
