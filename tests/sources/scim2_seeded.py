"""scim2-server, seeded in memory from a JSON file before it listens on a free loopback port.

usage: python scim2_seeded.py SEED.json IDS_OUT.json TOKEN

The application is scim2-server's own (`BearerTokenApplication` over `InMemoryStorage`,
served by its threaded wsgiref server class) built from its public classes; only the
seeding is ours, because creating 10k users over HTTP takes 30 s and in memory 6 s.
SEED is `{"users": [{"key", "payload"}], "groups": [{"key", "payload", "members"}]}`
where `members` are keys; group members are filled in a second pass so that groups may
contain groups, cycles included. The server-assigned id of every key is written to
IDS_OUT, then `PORT <n>` is printed and the server serves until killed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from scim2_models import Resource, ScimProvider
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    seed_path, ids_path, token = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    config = load_default_service_provider_config()
    config.authentication_schemes = [*(config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(), load_default_resource_types().values(), config=config
    )
    storage = InMemoryStorage()
    app = BearerTokenApplication(
        storage, provider, service=ScimService(provider, secret="x" * 32), bearer_tokens=[token]
    )
    user_rt = next(rt for rt in provider.resource_types if rt.name == "User")
    group_rt = next(rt for rt in provider.resource_types if rt.name == "Group")
    user_model, group_model = provider.model_for(user_rt), provider.model_for(group_rt)
    assert user_model is not None and group_model is not None
    assert issubclass(user_model, Resource) and issubclass(group_model, Resource)
    seed = json.loads(seed_path.read_text())
    ids: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for user in seed["users"]:
        created = storage.create(user_rt, user_model.model_validate(user["payload"]))
        ids[user["key"]] = str(created.id)
        kinds[user["key"]] = "User"
    created_groups = {}
    for group in seed["groups"]:
        created = storage.create(group_rt, group_model.model_validate(group["payload"]))
        ids[group["key"]] = str(created.id)
        kinds[group["key"]] = "Group"
        created_groups[group["key"]] = created
    for group in seed["groups"]:
        resource = created_groups[group["key"]]
        members = [{"value": ids[key], "type": kinds[key]} for key in group["members"]]
        payload = {**group["payload"], "id": resource.id, "members": members}
        storage.update(group_rt, group_model.model_validate(payload))
    ids_path.write_text(json.dumps(ids))
    with make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_QuietHandler) as srv:
        print(f"PORT {srv.server_port}", flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    main()
