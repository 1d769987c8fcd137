"""How servers quote a credential back, and how to look for any trace of one."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

ECHOES = ("exact", "url", "url-plus", "base64", "basic", "prefix", "suffix", "middle", "masked")


def echo(secret: str, how: str) -> str:
    """`secret` as a server might quote it in an error body."""
    raw = secret.encode()
    return {
        "exact": secret,
        "url": quote(secret, safe=""),
        "url-plus": quote_plus(secret),
        "base64": base64.b64encode(raw).decode(),
        "basic": base64.b64encode(b"client-id:" + raw).decode(),
        "prefix": secret[:10],
        "suffix": secret[-9:],
        "middle": secret[3:13],
        "masked": f"{secret[:12]}****{secret[-4:]}",
    }[how]


def traces(secret: str, text: str) -> list[str]:
    """Runs of 8 or more characters of `secret`, in any of the forms above, in `text`."""
    raw = secret.encode()
    forms = [secret, quote(secret, safe=""), quote_plus(secret)]
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            padded = encode(b"x" * shift + raw).decode()
            forms.append(padded[4 if shift else 0 : -4])
    return sorted(
        {form[i : i + 8] for form in forms for i in range(len(form) - 7) if form[i : i + 8] in text}
    )
