"""The directory fakes' rate-limit switch (`okta`, `entra`, `google`): every Nth request
refused for its rate, as the vendor refuses it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class Throttle:
    """Every `every`-th API request is refused for its rate, asking to wait `seconds`.

    Okta answers 429 with its `X-Rate-Limit-*` headers, Microsoft Graph 429 with
    `Retry-After`, whatever `status` says. Google answers `status`: 403
    `userRateLimitExceeded` (what it usually sends, and the default), or 429
    `rateLimitExceeded` with `Retry-After: seconds`.
    """

    every: int
    seconds: int = 1
    status: Literal[403, 429] | None = None
    """None: what the vendor usually sends."""
