"""The exception hierarchy. Adapters map their library errors into these at the boundary.

```
OrgsyncError                  anything orgsync raises on purpose
├── ConfigError               the configuration is unusable (names the key)
├── StateError                the state database is unusable
├── Interrupted               told to stop during a read: nothing may be planned from it
├── SourceError               the identity provider could not be read completely
│   └── SourceDataError       a record is malformed (names the record and the field)
└── ApiError                  one call to another system failed (`status`, `request_id`)
    │                         alias: TargetError, the name the target side uses
    ├── TransientError        429, 408, 5xx but 501, timeouts, resets: retryable
    ├── AuthError             401/403: the credential is refused; the run stops
    ├── ConflictError         409: it already exists (a create adopts it)
    ├── NotFoundError         404: it does not exist (a delete is done)
    └── RequestRejected       any other 4xx: this one operation is refused
        └── UnsupportedRequest  501, or a refusal of the request's form: ask another way
```

Retryability belongs to the error, never to the side that raised it: `ApiError.retryable`
is true for `TransientError` only, whether a source, a target, the directory server or a
mail relay raised it, and `orgsync.retrying` retries exactly those. The HTTP layer
(`orgsync.http`) decides the class from the answer in one place for sources and targets
alike. A source turns the error it finally gets (retries spent, or a permanent one) into
`SourceError`, because a read is complete or nothing; a target lets it through to the
applier, where each class decides behaviour in one place: `ConflictError` on a create
means "look it up and adopt it", `NotFoundError` on a delete means "already done",
`UnsupportedRequest` means "ask another way", `AuthError` stops the run, any other
`ApiError` fails that one operation with the server's message.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK, EXIT_ERROR, EXIT_PENDING, EXIT_HELD = 0, 1, 2, 3
"""The process exit codes of docs/reference.md "Exit codes" (here, beside the errors that
cause 1, so that a command can name them without importing the engine)."""


class OrgsyncError(Exception):
    """Base of every error orgsync raises on purpose."""


class ConfigError(OrgsyncError):
    """The configuration is unusable; the message names the key path and the reason."""


class UsageError(ConfigError):
    """A command-line value the configuration rules out (`--target` naming no configured
    target): a usage error (exit 64), found only once the configuration is read."""


class SourceError(OrgsyncError):
    """The identity provider could not be read completely; nothing may be planned."""


class SourceDataError(SourceError):
    """A source record is malformed; the message names the record and the field."""


class CursorExpired(SourceError):
    """A source's change cursor is no longer valid (Graph's 410 Gone, a server restarted):
    the caller reads the source whole instead."""


class StateError(OrgsyncError):
    """The state database is unusable (locked by another writer, corrupt, too new)."""


class ApiError(OrgsyncError):
    """A call to another system failed. `status` is the HTTP status, or None for transport
    errors (and for systems that are not HTTP)."""

    retryable: ClassVar[bool] = False
    """Whether the same call may succeed if sent again later (see the module doc)."""

    def __init__(
        self, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.insert(0, f"HTTP {self.status}:")
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


TargetError = ApiError
"""The name the target side and the applier use for `ApiError` ("a target API call
failed"); one class, so a target's error and a source's are classified alike."""


class TransientError(ApiError):
    """429, 408, 5xx but 501, timeouts and connection resets: worth retrying after
    `retry_after` seconds."""

    retryable: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.retry_after = retry_after

    @property
    def not_processed(self) -> bool:
        """The server says it did not act on the request: 429, or 503 with Retry-After
        (RFC 9110 §15.6.4: unavailable, try later). A create refused so needs no look-up
        before its retry; after a timeout, a reset or a 500 it might have happened."""
        return self.status == 429 or (self.status == 503 and self.retry_after is not None)


class AuthError(ApiError):
    """401/403: the credential is wrong or lacks permission; the whole run stops."""


class ConflictError(ApiError):
    """409: the object already exists."""


class NotFoundError(ApiError):
    """404: the object does not exist."""


class RequestRejected(ApiError):
    """Any other 4xx: the server refused this one operation."""


class UnsupportedRequest(RequestRejected):
    """The server does not implement this way of asking (HTTP 501, RFC 9110 §15.6.2; or a
    refusal whose code names the request's form, such as a SCIM 400 `invalidPath`).

    Permanent for the request as sent, so never retried, on either side; another request
    meaning the same change may succeed (the SCIM target falls back to one).
    """


class Interrupted(OrgsyncError):
    """orgsync was told to stop (SIGTERM, SIGINT) while reading a source or a target: the
    read ended early, so nothing may be planned from it. Not a failure of the system read:
    the run is recorded `interrupted`."""
