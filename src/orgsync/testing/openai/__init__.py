"""A local fake of the OpenAI Admin API, for tests and rehearsals (`orgsync emulate openai`).

`OpenAIEmulator` serves it (`emulator`: routes, bearer authentication, the spec's error
shape); `OrgState` is the organization behind it (`state`, with `groups`, `user_roles`,
`records`), which a test seeds and inspects directly.
"""

from orgsync.testing.openai.emulator import OpenAIEmulator
from orgsync.testing.openai.state import OrgState

__all__ = ["OpenAIEmulator", "OrgState"]
