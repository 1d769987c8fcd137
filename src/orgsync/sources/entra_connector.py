"""The `entra` source type: Microsoft Entra ID through Microsoft Graph."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from pydantic import Field, model_validator

from orgsync.config import RemoteSourceConfig, SecretRef, check_url, secret_ref
from orgsync.connectors import Hooks, SourceConnector
from orgsync.core.webhook import UNNAMED, Refused, WebhookEvent, is_text, parse_json

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.ports import Source

_GRAPH_USER: Final = re.compile(r"^/?users/([^/?]+)$", re.IGNORECASE)


class EntraSourceConfig(RemoteSourceConfig):
    type: Literal["entra"]
    tenant_id: str
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    graph_url: str = "https://graph.microsoft.com/v1.0"
    login_url: str = "https://login.microsoftonline.com"
    page_size: int = Field(default=999, ge=1, le=999)

    @model_validator(mode="after")
    def _check(self) -> EntraSourceConfig:
        check_url(self.graph_url, "graph_url", allow_plaintext=self.allow_plaintext)
        check_url(self.login_url, "login_url", allow_plaintext=self.allow_plaintext)
        secret_ref("client_secret", self.client_secret_env, self.client_secret_file, required=True)
        return self

    @property
    def client_secret(self) -> SecretRef:
        ref = secret_ref(
            "client_secret", self.client_secret_env, self.client_secret_file, required=True
        )
        assert ref is not None
        return ref.model_copy(update={"key": "source.client_secret"})


def build(config: EntraSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.sources._remote import http_settings
    from orgsync.sources.entra import EntraSource

    settings = http_settings(config, hooks, [config.graph_url, config.login_url])
    return EntraSource(
        tenant_id=config.tenant_id,
        client_id=config.client_id,
        client_secret=config.client_secret.resolve(environ).get_secret_value(),
        graph_url=config.graph_url,
        login_url=config.login_url,
        page_size=config.page_size,
        settings=settings,
    )


def parse_webhook(body: bytes, client_state: str) -> tuple[list[str], WebhookEvent]:
    """`(notification keys, event)` of a Microsoft Graph change notification delivery.

    Every notification must carry the configured `clientState` (else 401: someone who
    knows the URL but not the secret). A user resource (`Users/<id>`) names that user's
    object id, the source id of the `entra` source; any other resource (a group's
    members changed) asks for a full reconcile.
    """
    document = parse_json(body)
    items = document.get("value") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise Refused(400, "malformed", "expected a Graph notification body with 'value'")
    keys: list[str] = []
    ids: set[str] = set()
    everybody = False
    for item in items:
        state = item.get("clientState")
        if not is_text(state) or not hmac.compare_digest(state.encode(), client_state.encode()):
            raise Refused(401, "bad_client_state", "clientState does not match")
        # The key leaves the secret out: it is stored (as a digest) to refuse replays.
        keyed = {name: value for name, value in item.items() if name != "clientState"}
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
        named = is_text(item.get("id")) and bool(str(item.get("id")).strip())
        keys.append(digest if named else UNNAMED + digest)
        resource = item.get("resource")
        data = item.get("resourceData") if isinstance(item.get("resourceData"), dict) else {}
        odata_type = str(data.get("@odata.type", "")).lower()
        match = _GRAPH_USER.match(resource) if is_text(resource) else None
        user_id = data.get("id")
        if match is not None:
            ids.add(match.group(1))
        elif odata_type.endswith(".user") and is_text(user_id) and user_id.strip():
            ids.add(user_id.strip())
        else:
            everybody = True
    if everybody:
        return keys, WebhookEvent(kind="entra")
    return keys, WebhookEvent("entra", source_ids=frozenset(ids))


CONNECTOR = SourceConnector(
    type="entra",
    settings=EntraSourceConfig,
    build=build,
    webhook=parse_webhook,
    summary="Microsoft Entra ID (Microsoft Graph)",
)
