"""The `okta` source type: Okta's Users and Groups APIs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from orgsync.config import RemoteSourceConfig, SecretRef, check_url, secret_ref
from orgsync.connectors import Hooks, SourceConnector
from orgsync.core.webhook import Refused, WebhookEvent, is_text, parse_json

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.ports import Source


class OktaSourceConfig(RemoteSourceConfig):
    type: Literal["okta"]
    url: str
    token_env: str | None = None
    token_file: Path | None = None
    page_size: int = Field(default=200, ge=1, le=1000)

    @model_validator(mode="after")
    def _check(self) -> OktaSourceConfig:
        check_url(self.url, "url", allow_plaintext=self.allow_plaintext)
        secret_ref("token", self.token_env, self.token_file, required=True)
        return self

    @property
    def token(self) -> SecretRef:
        ref = secret_ref("token", self.token_env, self.token_file, required=True)
        assert ref is not None
        return ref.model_copy(update={"key": "source.token"})


def build(config: OktaSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.sources._remote import http_settings
    from orgsync.sources.okta import OktaSource

    settings = http_settings(config, hooks, [config.url])
    return OktaSource(
        config.url,
        token=config.token.resolve(environ).get_secret_value(),
        page_size=config.page_size,
        settings=settings,
    )


def parse_webhook(body: bytes, secret: str = "") -> tuple[list[str], WebhookEvent]:
    """`(event uuids, event)` of an Okta event hook delivery.

    People are the `User` entries of each event's `target` list (`id` is the Okta user id,
    the source id of the `okta` source; `alternateId` the login, usually the email). An
    event naming no user (a group renamed, an app changed) asks for a full reconcile.
    """
    document = parse_json(body)
    data = document.get("data") if isinstance(document, dict) else None
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise Refused(400, "malformed", "expected an Okta event hook body with data.events")
    uuids: list[str] = []
    emails: set[str] = set()
    ids: set[str] = set()
    everybody = not events
    for event in events:
        uuid = event.get("uuid")
        if is_text(uuid) and uuid:
            uuids.append(uuid)
        targets = event.get("target") or []
        if not isinstance(targets, list):
            raise Refused(400, "malformed", "an Okta event's 'target' must be a list")
        users = [t for t in targets if isinstance(t, dict) and _is_user(t.get("type"))]
        if not users:
            everybody = True
        for user in users:
            user_id = user.get("id")
            if is_text(user_id) and user_id.strip():
                ids.add(user_id.strip())
            alternate = user.get("alternateId")
            if is_text(alternate) and "@" in alternate:
                emails.add(alternate.strip())
    if everybody:
        return uuids, WebhookEvent(kind="okta")
    return uuids, WebhookEvent("okta", frozenset(emails), frozenset(ids))


def _is_user(kind: object) -> bool:
    return isinstance(kind, str) and kind.lower() == "user"


CONNECTOR = SourceConnector(
    type="okta",
    settings=OktaSourceConfig,
    build=build,
    webhook=parse_webhook,
    summary="Okta (Users and Groups APIs)",
)
