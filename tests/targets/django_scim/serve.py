"""Serve django-scim2 (PyPI, unchanged) over a fresh SQLite database on a loopback port.

usage: python -m tests.targets.django_scim.serve FOLDER   (token in SCIM_TEST_TOKEN)

The database goes to FOLDER/provider.sqlite3; the tables are created (`migrate
--run-syncdb`) before the first request. Prints "PORT <n>" once it listens; base URL
`http://127.0.0.1:<n>/scim/v2`. Served by the standard library's WSGI server, one request
at a time (SQLite takes one writer anyway), until terminated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    server: WSGIServer = make_server("127.0.0.1", 0, _not_ready, handler_class=_QuietHandler)
    port = server.server_port
    os.environ["SCIM_TEST_DB"] = str(folder / "provider.sqlite3")
    os.environ["SCIM_TEST_NETLOC"] = f"127.0.0.1:{port}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.targets.django_scim.settings"
    import django
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)
    server.set_app(get_wsgi_application())
    print(f"PORT {port}", flush=True)
    server.serve_forever()


def _not_ready(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


if __name__ == "__main__":
    main(Path(sys.argv[1]))
