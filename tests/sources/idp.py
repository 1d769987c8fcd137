"""Fixtures of the IdP source tests: emulators on loopback, a service account key, recorders.
The fixtures reach the tests through `tests/sources/conftest.py`, which imports them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings
from orgsync.testing.entra import EntraEmulator
from orgsync.testing.google import GoogleEmulator
from orgsync.testing.okta import OktaEmulator

SERVICE_ACCOUNT = "orgsync-test@orgsync-test.iam.gserviceaccount.com"
KEY_ID = "0123456789abcdef0123456789abcdef01234567"
ADMIN = "admin@example.com"

FAST = HttpSettings(retry=RetrySettings(max_attempts=3, max_delay=5.0, base=0.01, cap=0.05))
"""Retry settings that give up quickly, for tests that expect a `SourceError`."""
PATIENT = HttpSettings(retry=RetrySettings(max_attempts=10, max_delay=60.0, base=0.01, cap=0.05))
"""For throttling: workers share one request counter, so a call may meet several 429s."""


@dataclass(frozen=True)
class ServiceAccount:
    """A service account key made at test time: the key file's JSON and the public half."""

    document: dict[str, str]
    public_pem: str

    @property
    def text(self) -> str:
        return json.dumps(self.document)

    def write(self, folder: Path) -> Path:
        path = folder / "service-account.json"
        path.write_text(self.text, encoding="utf-8")
        path.chmod(0o600)
        return path


@pytest.fixture(scope="session")
def service_account() -> ServiceAccount:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    document = {
        "type": "service_account",
        "project_id": "orgsync-test",
        "private_key_id": KEY_ID,
        "private_key": private,
        "client_email": SERVICE_ACCOUNT,
        "client_id": "100000000000000000001",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return ServiceAccount(document, public)


@pytest.fixture
def okta() -> Iterator[OktaEmulator]:
    with OktaEmulator() as running:
        yield running


@pytest.fixture
def entra() -> Iterator[EntraEmulator]:
    with EntraEmulator() as running:
        yield running


@pytest.fixture
def google(service_account: ServiceAccount) -> Iterator[GoogleEmulator]:
    with GoogleEmulator(admins=(ADMIN,)) as running:
        running.register_service_account(SERVICE_ACCOUNT, KEY_ID, service_account.public_pem)
        yield running


class Recorder(httpx.BaseTransport):
    """An httpx transport over the network that keeps every exchange (for contract checks)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.responses: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        response.read()
        self.responses.append(response)
        return response

    def close(self) -> None:
        self._inner.close()


class Sleeps(list[float]):
    """A fake `sleep` that records the waits the retry policy asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
