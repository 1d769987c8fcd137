"""The Keycard target (organization users, invitations, roles; soft disable).

`CONNECTOR` describes the type to orgsync; the target itself is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from orgsync.targets.keycard.connector import CAPABILITIES, CONNECTOR

if TYPE_CHECKING:
    from orgsync.targets.keycard.target import KeycardTarget

__all__ = ["CAPABILITIES", "CONNECTOR", "KeycardTarget"]


def __getattr__(name: str) -> Any:
    if name == "KeycardTarget":
        from orgsync.targets.keycard.target import KeycardTarget

        return KeycardTarget
    raise AttributeError(name)
