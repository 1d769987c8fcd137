"""The channels: a signed JSON webhook, a Slack or a Teams incoming webhook, SMTP e-mail.

Each `send` is ONE attempt and says how it failed in the project's error vocabulary, so
that `orgsync.retrying` decides about retries as it does everywhere else:
`TransientError` (HTTP 429 and 5xx, timeouts, refused or reset connections, SMTP 4yz
replies) is retried; `RequestRejected` (any other HTTP 4xx or 3xx, SMTP 5yz replies,
a certificate that does not verify, a server without STARTTLS) is not.

No error message names a URL (a Slack webhook URL *is* the credential) or a password.

The generic webhook is signed exactly like the daemon's own `POST /webhooks/generic`:
`X-Orgsync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
so one verifier serves both directions.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Final, Protocol

from orgsync import __version__
from orgsync.core.errors import RequestRejected, TransientError
from orgsync.notify.events import Notification, clip
from orgsync.notify.render import (
    Delivery,
    Redactor,
    compose,
    email_message,
    slack_payload,
    teams_payload,
    webhook_document,
)

SIGNATURE_HEADER: Final = "X-Orgsync-Signature"
USER_AGENT: Final = f"orgsync/{__version__}"


class Channel(Protocol):
    """One configured destination."""

    kind: str

    def send(self, event: Notification, delivery: Delivery) -> None:
        """Deliver once; raise `TransientError` (worth retrying) or `RequestRejected`."""
        ...

    def close(self) -> None: ...


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Orgsync-Signature` value of `body` sent at `timestamp` (see module doc)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verification always on: `ca_file` read as the connectors read theirs
    (`orgsync.http.client.ssl_verify`), or else the system's trust store. Not the
    connectors' default (certifi's bundle): notifications often go to an internal
    receiver or mail relay whose CA only the system store holds, and trusting less
    than before would silence them after an upgrade."""
    if ca_file is None:
        return ssl.create_default_context()
    from orgsync.http.client import ssl_verify  # httpx: only when a CA file is configured

    return ssl_verify(str(ca_file))


ERROR_BODY_BYTES: Final = 4096
"""Bytes of an answer's body read (a receiver can answer gigabytes); a refusal's start
goes into the error message."""


class _HttpChannel:
    """POSTs JSON to one URL with orgsync's HTTP client; the URL is never put in an error.

    The client is `orgsync.http.client.new_client`'s (verification on, redirects never
    followed: one could carry the message somewhere else), and each POST goes through
    `send_capped` with this channel's bounds: the whole answer within `timeout` (httpx's
    timeouts bound each read, so a receiver trickling its answer a byte at a time held the
    entry's only sender thread for hours, every later message of the entry dropped), and
    at most `ERROR_BODY_BYTES` of its body read, raw (`Accept-Encoding: identity`).
    """

    kind = "http"

    def __init__(self, url: str, *, timeout: float, ca_file: Path | None, redact: Redactor) -> None:
        from orgsync.http.client import new_client  # only an HTTP channel needs httpx
        from orgsync.interrupt import ReadInterrupt

        self._url = url
        self._redact = redact
        self._timeout = timeout
        self._client = new_client(
            timeout=timeout,
            verify=tls_context(ca_file),
            user_agent=USER_AGENT,
            headers={"Accept": "*/*", "Accept-Encoding": "identity"},
            # Never set: it is what makes the transport read in slices, so that
            # `send_capped`'s deadline can end a read (see `orgsync.interrupt`).
            interrupt=ReadInterrupt(),
        )

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        status, retry_after, said = self._attempt(body, headers)
        if 200 <= status < 300:
            return
        detail = clip(self._redact(said.strip()), 200)
        message = f"the receiver answered {status}" + (f": {detail}" if detail else "")
        if status == 429 or status >= 500:
            raise TransientError(message, status=status, retry_after=retry_after)
        raise RequestRejected(message, status=status)

    def _attempt(self, body: bytes, headers: dict[str, str]) -> tuple[int, float | None, str]:
        """(status, Retry-After, the start of a refusal's body) of one POST."""
        import httpx

        from orgsync.http.client import send_capped
        from orgsync.http.responses import certificate_failure, retry_after

        try:
            request = self._client.build_request("POST", self._url, content=body, headers=headers)
            response = send_capped(
                self._client, request, within=self._timeout, limit=ERROR_BODY_BYTES, beyond="cut"
            )
        except httpx.TimeoutException:
            raise TransientError(f"no answer within {self._timeout:g}s") from None
        except httpx.TransportError as error:
            if (refused := certificate_failure(error)) is not None:
                raise RequestRejected(
                    f"TLS certificate not trusted: {refused.verify_message}"
                ) from None
            raise TransientError(f"cannot deliver: {type(error).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return status, None, ""
        said = response.content.decode("utf-8", "replace")
        return status, retry_after(response), said

    def close(self) -> None:
        self._client.close()


class WebhookChannel(_HttpChannel):
    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: bytes,
        timeout: float,
        ca_file: Path | None,
        redact: Redactor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(url, timeout=timeout, ca_file=ca_file, redact=redact)
        self._secret = secret
        self._clock = clock

    def send(self, event: Notification, delivery: Delivery) -> None:
        message = compose(event, delivery, self._redact)
        document = webhook_document(event, message, delivery, self._redact, delivery.id)
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            # Signed per attempt: a retry minutes later must still be inside the window.
            SIGNATURE_HEADER: sign(self._secret, int(self._clock()), body),
            "X-Orgsync-Event": event.kind,
            "X-Orgsync-Delivery": delivery.id,
        }
        self._post(body, headers)


class SlackChannel(_HttpChannel):
    kind = "slack"

    def send(self, event: Notification, delivery: Delivery) -> None:
        payload = slack_payload(compose(event, delivery, self._redact))
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._post(body, {"Content-Type": "application/json"})


class TeamsChannel(_HttpChannel):
    """A Teams incoming webhook. A Workflows URL answers 202 once it has queued the
    message: a flow that fails after that is seen in Teams, not here."""

    kind = "teams"

    def send(self, event: Notification, delivery: Delivery) -> None:
        payload = teams_payload(compose(event, delivery, self._redact))
        # UTF-8, not \u escapes: six bytes a character would pass Teams' 28 KB limit.
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        self._post(body, {"Content-Type": "application/json"})


class _Smtp(smtplib.SMTP):
    """An SMTP client that keeps its TCP socket, for the deadline to shut down."""

    raw: socket.socket | None = None

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # The name TLS verifies (STARTTLS and implicit): smtplib sets it only when the
        # constructor connects, and this client connects later.
        self._host = host
        self.raw = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        return self.raw


class _SmtpSsl(smtplib.SMTP_SSL, _Smtp):
    """Implicit TLS; `_Smtp` records the TCP socket before SMTP_SSL wraps it."""


class EmailChannel:
    kind = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: str,
        sender: str,
        recipients: Sequence[str],
        subject_prefix: str,
        username: str | None,
        password: str | None,
        timeout: float,
        ca_file: Path | None,
        redact: Redactor,
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._sender, self._recipients = sender, tuple(recipients)
        self._prefix = subject_prefix
        self._username, self._password = username, password
        self._timeout = timeout
        self._context = tls_context(ca_file)
        self._redact = redact

    def send(self, event: Notification, delivery: Delivery) -> None:
        mail = email_message(
            compose(event, delivery, self._redact),
            sender=self._sender,
            recipients=self._recipients,
            prefix=self._prefix,
            at=event.at,
        )
        smtp = self._client()
        expired = threading.Event()

        def expire() -> None:
            # smtplib's timeout bounds each read: a server sending its greeting a line at
            # a time held the entry's thread as long as it liked. Shutting the socket
            # down ends the blocked read.
            expired.set()
            if smtp.raw is not None:
                with contextlib.suppress(OSError):
                    smtp.raw.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self._timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            self._deliver(smtp, mail)
        except (TransientError, RequestRejected):
            if expired.is_set():
                raise TransientError(f"no answer within {self._timeout:g}s") from None
            raise
        finally:
            timer.cancel()
            smtp.close()

    def _deliver(self, smtp: smtplib.SMTP, mail: EmailMessage) -> None:
        try:
            smtp.connect(self._host, self._port)
            if self._tls == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise RequestRejected(
                        f"{self._host}:{self._port} offers no STARTTLS; not sending in clear"
                    )
                smtp.starttls(context=self._context)
                smtp.ehlo()
            if self._username is not None and self._password is not None:
                smtp.login(self._username, self._password)
            smtp.send_message(mail)
            with contextlib.suppress(smtplib.SMTPException, OSError):  # sent is sent
                smtp.quit()
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            text = f"every recipient refused (SMTP {', '.join(map(str, sorted(set(codes))))})"
            if all(400 <= code < 500 for code in codes):
                raise TransientError(text) from None
            raise RequestRejected(text) from None
        except smtplib.SMTPResponseException as error:
            reply = error.smtp_error
            said = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
            text = f"SMTP {error.smtp_code}: {clip(self._redact(said), 200)}"
            if 400 <= error.smtp_code < 500:
                raise TransientError(text) from None
            raise RequestRejected(text) from None
        except smtplib.SMTPServerDisconnected:
            raise TransientError("the SMTP server closed the connection") from None
        except smtplib.SMTPException as error:
            raise RequestRejected(f"SMTP: {type(error).__name__}") from None
        except ssl.SSLCertVerificationError as error:
            raise RequestRejected(f"TLS certificate not trusted: {error.verify_message}") from None
        except ssl.SSLError as error:
            raise RequestRejected(f"TLS failed: {error.reason}") from None
        except TimeoutError:
            raise TransientError(f"no answer within {self._timeout:g}s") from None
        except OSError as error:
            raise TransientError(
                f"cannot reach {self._host}:{self._port}: {error.strerror}"
            ) from None

    def _client(self) -> _Smtp | _SmtpSsl:
        """An unconnected client (connected in `_deliver`, under the deadline)."""
        # gethostname, not smtplib's default getfqdn: that can wait on DNS for seconds.
        local = socket.gethostname()
        if self._tls == "implicit":
            return _SmtpSsl(local_hostname=local, timeout=self._timeout, context=self._context)
        return _Smtp(local_hostname=local, timeout=self._timeout)

    def close(self) -> None:
        pass
