"""What is printed to a person's terminal, made inert.

Text orgsync prints comes partly from systems others control: a source record an IdP
user may edit, a target's group names, a server's error message. A control character in
it reaches the terminal as a command: ESC sequences move the cursor and erase lines (a
removal in a reviewed plan hidden from view), OSC 52 writes the clipboard, bidirectional
overrides reorder what is read. `visible` writes each such character as an escape
(`\\x1b`, `\\u202e`) instead. Pure: strings in, strings out.
"""

from __future__ import annotations

import re
from typing import Final

_INERT: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control, line-breaking and direction-changing character escaped."""
    return _INERT.sub(_escape, text)
