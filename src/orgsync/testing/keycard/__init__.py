"""A local fake of the Keycard API, for tests and rehearsals (`orgsync emulate keycard`).

`KeycardEmulator` serves it (`emulator`: the service-account token endpoint, bearer
tokens that expire, the organization routes); `KeycardState` is the organization behind
it (`state`), which a test seeds and inspects directly.
"""

from orgsync.testing.keycard.emulator import KeycardEmulator
from orgsync.testing.keycard.state import KeycardState

__all__ = ["KeycardEmulator", "KeycardState"]
