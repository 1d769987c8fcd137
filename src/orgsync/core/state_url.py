"""Where the state lives when it is on a server: checking and showing a PostgreSQL URL.

Pure: the configuration checks `[state] url` with it, the store connects with it, and
`status`, `validate` and the logs show it through `redact_state_url`. A password never
sits in the URL: it comes from `password_env` / `password_file` or from libpq's own
environment (PGPASSWORD, PGPASSFILE), so a URL is safe to show once checked; the
redaction is there for a URL that was never checked (a command line, an error message).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from orgsync.core.redaction import REDACTED

SCHEMES: Final = ("postgresql", "postgres")

# libpq connection parameters that carry a secret when given in the URL's query.
_SECRET_PARAMETERS: Final = frozenset({"password", "sslpassword"})


def is_server_url(text: str) -> bool:
    """Whether `text` names a PostgreSQL database rather than a SQLite file."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def state_url_problem(url: str) -> str | None:
    """Why `url` cannot be used as `[state] url`, in words that never repeat a secret;
    None when it can."""
    if not is_server_url(url):
        return "must start with postgresql:// (for example postgresql://orgsync@db:5432/orgsync)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.password is not None:
        return (
            "holds a password: secrets never sit in the configuration; give its user only "
            "(postgresql://USER@HOST/DB) and the password with password_env or password_file"
        )
    secret = sorted(_SECRET_PARAMETERS & {k.lower() for k, _ in parse_qsl(parts.query)})
    if secret:
        return (
            f"holds {secret[0]}= in its query: secrets never sit in the configuration; "
            "use password_env or password_file"
        )
    if not parts.hostname and "host=" not in parts.query:
        return "names no host (postgresql://USER@HOST:PORT/DATABASE)"
    if not parts.path.strip("/"):
        return "names no database (postgresql://USER@HOST:PORT/DATABASE)"
    return None


def redact_state_url(url: str) -> str:
    """`url` with any password (in the user part or the query) replaced, for people."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url.partition('://')[0]}://{REDACTED}"
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        name = user.partition(":")[0]
        netloc = f"{name}:{REDACTED}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
        query = urlencode(
            [(k, REDACTED if k.lower() in _SECRET_PARAMETERS else v) for k, v in pairs],
            quote_via=quote,
            safe="[]",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
