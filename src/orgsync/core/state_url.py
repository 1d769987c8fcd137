"""Where the state lives when it is on a server: checking and showing a PostgreSQL URL.

Pure: the configuration checks `[state] url` with it, the store connects with it, and
`status`, `validate` and the logs show it through `redact_state_url`. A password never
sits in the URL: it comes from `password_env` / `password_file` or from libpq's own
environment (PGPASSWORD, PGPASSFILE), so a URL is safe to show once checked; the
redaction is there for a URL that was never checked (a command line, an error message).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

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


# libpq's sslmode values that encrypt nothing or check nothing of who answers.
UNVERIFIED_SSLMODES: Final = frozenset({"disable", "allow", "prefer", "require"})
DEFAULT_SSLMODE: Final = "verify-full"


def state_url_hosts(url: str) -> list[str]:
    """The hosts (names, addresses, socket folders) `url` connects to: those of its
    authority part and of its `host=` / `hostaddr=` query parameters; empty when it names
    none (libpq then takes PGHOST, else its default socket)."""
    parts = urlsplit(url)
    hosts: list[str] = []
    authority = parts.netloc.rpartition("@")[2]
    for item in authority.split(","):
        host = unquote(item)
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else host[1:]
        elif not host.startswith("/"):
            host = host.rpartition(":")[0] if ":" in host else host
        if host:
            hosts.append(host)
    for key, value in parse_qsl(parts.query):
        if key in ("host", "hostaddr"):
            hosts += [h for h in value.split(",") if h]
    return hosts


def is_local_host(host: str) -> bool:
    """A Unix socket folder (or an abstract socket) or a loopback name or address: what
    travels there never leaves this machine, so TLS has nothing to protect."""
    if host.startswith(("/", "@")) or host.lower() == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def tls_settings(
    url: str, environ: Mapping[str, str], *, root_certificate_configured: bool
) -> dict[str, str]:
    """The TLS parameters orgsync adds to libpq's for `url` (none when the URL or the
    environment chose, or when every host is local).

    libpq's own default is `prefer`: encrypted when the server offers it, but nobody's
    certificate checked, so a man in the middle reads every e-mail address and can answer
    for the lease table. orgsync's rule is that TLS verification stays on unless said
    otherwise: `verify-full` (the certificate must chain to a trusted root and name the
    host), with the system's trusted roots (`sslrootcert=system`) when no root
    certificate is configured (`sslrootcert` in the URL, PGSSLROOTCERT, or libpq's
    ~/.postgresql/root.crt, which `root_certificate_configured` says)."""
    query = {key for key, _ in parse_qsl(urlsplit(url).query)}
    if "sslmode" in query or environ.get("PGSSLMODE"):
        return {}
    hosts = state_url_hosts(url) or [h for h in environ.get("PGHOST", "").split(",") if h]
    if not hosts or all(is_local_host(h) for h in hosts):
        return {}  # libpq's default socket, or loopback only
    settings = {"sslmode": DEFAULT_SSLMODE}
    configured = (
        root_certificate_configured or "sslrootcert" in query or environ.get("PGSSLROOTCERT")
    )
    if not configured:
        settings["sslrootcert"] = "system"
    return settings


def unverified_tls(url: str, environ: Mapping[str, str]) -> str | None:
    """The sslmode `url` (or PGSSLMODE) sets when it leaves a remote server unverified
    (`disable` ... `require`), for a warning; None when verified or local only."""
    pairs = dict(parse_qsl(urlsplit(url).query))
    mode = pairs.get("sslmode") or environ.get("PGSSLMODE")
    if mode is None or mode not in UNVERIFIED_SSLMODES:
        return None
    hosts = state_url_hosts(url) or [h for h in environ.get("PGHOST", "").split(",") if h]
    if not hosts or all(is_local_host(h) for h in hosts):
        return None
    return mode
