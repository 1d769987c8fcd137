"""The OpenAI Admin API target (organization members, invitations and roles).

`CONNECTOR` describes the type to orgsync; the target itself is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from orgsync.targets.openai.connector import CONNECTOR

if TYPE_CHECKING:
    from orgsync.targets.openai.target import OpenAITarget

__all__ = ["CONNECTOR", "OpenAITarget"]


def __getattr__(name: str) -> Any:
    if name == "OpenAITarget":
        from orgsync.targets.openai.target import OpenAITarget

        return OpenAITarget
    raise AttributeError(name)
