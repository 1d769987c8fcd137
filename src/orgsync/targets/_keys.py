"""The `api_key` a target authenticates with as a bearer token (`openai`, `scim`).

One model for the pair of keys (`api_key_env` or `api_key_file`, exactly one, required)
and the `SecretRef` built from them, so the types that use it check and name it alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import model_validator

from orgsync.config import BASE_ONLY, SecretRef, secret_ref
from orgsync.targets._shared_keys import SharedKeys


class ApiKeyTarget(SharedKeys):
    model_config = BASE_ONLY

    api_key_env: str | None = None
    """The variable holding the target's API key or bearer token (or api_key_file)."""
    api_key_file: Path | None = None

    @model_validator(mode="after")
    def _check_api_key(self) -> Self:
        secret_ref("api_key", self.api_key_env, self.api_key_file, required=True)
        return self

    @property
    def api_key(self) -> SecretRef:
        ref = self.secret("api_key")
        assert ref is not None  # required: the validator refused a table without one
        return ref
