"""Secrets out of every message: the one scrubbing rule both HTTP layers apply.

A server that refuses a credential often quotes it back, and rarely as it was sent: a
401 body may hold the key URL-encoded (it was in a query string), base64-encoded (inside
a Basic `Authorization` value it echoes), or cut short ("sk-admin-abc…wxyz"). So a
secret is removed from a text in each of these forms, and so is any run of 8 or more
of its characters (`MIN_FRAGMENT`) in any of them; shorter secrets only when exact.
Pure: strings in, strings out.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus

REDACTED: Final = "[redacted]"
MIN_FRAGMENT: Final = 8
"""Characters of a secret that, found together in a text, are taken for an echo of it.
Eight characters of a random token do not occur by chance in an error message."""

AUTH_DETAIL_LIMIT: Final = 300
"""Characters of a server's message kept for a refused credential (401/403)."""


def _encodings(secret: str) -> set[str]:
    """The forms in which a server may quote `secret` back."""
    raw = secret.encode("utf-8")
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")}
    for shift in range(3):
        # base64 of the secret at each alignment inside a longer value ("id:secret"):
        # the characters that depend on the secret's bytes alone.
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + raw + b"\0\0").decode("ascii")
            first = 0 if shift == 0 else 4
            last = len(encoded) - 4
            if last - first >= MIN_FRAGMENT:
                forms.add(encoded[first:last])
    return {form for form in forms if form}


_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")
"""Characters of a token, a base64 value or a URL-encoded one: a redaction swallows the
ones it touches, so no tail of the secret (the last bits of a base64 group) is left."""


class Scrubber:
    """Removes a fixed set of secrets, in every form `_encodings` knows, from texts."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._short: list[str] = []
        self._fragments: set[str] = set()
        for secret in {s for s in secrets if s}:
            for form in _encodings(secret):
                if len(form) < MIN_FRAGMENT:
                    self._short.append(form)
                    continue
                for start in range(len(form) - MIN_FRAGMENT + 1):
                    self._fragments.add(form[start : start + MIN_FRAGMENT])
        self._short.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        hidden = [False] * len(text)
        for start in range(len(text) - MIN_FRAGMENT + 1):
            if text[start : start + MIN_FRAGMENT] in self._fragments:
                hidden[start : start + MIN_FRAGMENT] = [True] * MIN_FRAGMENT
        for form in self._short:
            start = text.find(form)
            while start >= 0:
                hidden[start : start + len(form)] = [True] * len(form)
                start = text.find(form, start + 1)
        if not any(hidden):
            return text
        for index in range(1, len(text)):  # swallow the rest of the word, rightwards…
            if hidden[index - 1] and not hidden[index] and text[index] in _WORD:
                hidden[index] = True
        for index in range(len(text) - 2, -1, -1):  # …and leftwards
            if hidden[index + 1] and not hidden[index] and text[index] in _WORD:
                hidden[index] = True
        out: list[str] = []
        for index, char in enumerate(text):
            if not hidden[index]:
                out.append(char)
            elif index == 0 or not hidden[index - 1]:
                out.append(REDACTED)
        return "".join(out)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` without any of `secrets`, in any form `Scrubber` knows."""
    return Scrubber(secrets)(text)


def auth_failure_detail(message: str) -> str:
    """A refused credential's server message, fit to keep: one line, capped.

    Called on a message already scrubbed; the cap keeps a misbehaving server's long body
    (which may quote request headers) out of logs and the run history.
    """
    line = " ".join(message.split())
    if len(line) <= AUTH_DETAIL_LIMIT:
        return line
    code = re.search(r"\s(\[[\w.:-]{1,60}\])$", line)
    suffix = f" {code.group(1)}" if code else ""
    return line[: AUTH_DETAIL_LIMIT - len(suffix) - 1].rstrip() + "…" + suffix
