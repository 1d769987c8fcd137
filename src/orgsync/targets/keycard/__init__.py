"""The Keycard target (organization users, invitations, roles; soft disable)."""

from orgsync.targets.keycard.target import CAPABILITIES, KeycardTarget

__all__ = ["CAPABILITIES", "KeycardTarget"]
