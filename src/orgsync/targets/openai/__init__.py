"""The OpenAI Admin API target (organization members, invitations and roles)."""

from orgsync.targets.openai.target import OpenAITarget

__all__ = ["OpenAITarget"]
