"""The configuration file: TOML parsed into frozen pydantic models, refused whole when wrong.

Owns the key names of docs/reference.md "Configuration" and the secret rule: a secret is
never in the file, only the name of an environment variable (`*_env`) or a file path
(`*_file`, relative paths resolved in systemd's `$CREDENTIALS_DIRECTORY` when it is set).
Errors are `ConfigError`s whose message names the key path and the reason.
"""

# No `from __future__ import annotations`: pydantic would compile and evaluate each
# annotation's text when it creates a model, a part of every command's start-up.

import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    StrictBool,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from orgsync import connectors
from orgsync.core.errors import ConfigError, UsageError
from orgsync.core.model import email_problem
from orgsync.core.state_url import is_server_url, redact_state_url, state_url_problem

if TYPE_CHECKING:
    # The error path's own module (difflib, its patterns): a file that loads never needs it.
    from orgsync.config_errors import Schema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> timedelta:
    """`"90s"`, `"15m"`, `"1h"`, `"7d"`, `"250ms"`; a bare number is seconds."""
    match = _DURATION.match(text)
    if match is None:
        shown = repr(text) if len(text) <= 40 else "the value given"
        raise ValueError(f"{shown} is not a duration such as '30s', '15m', '1h' or '7d'")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        raise ValueError(f"{text.strip()!r} is too long a duration") from None


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


MAX_URL_LENGTH = 2048
"""Far above any API's base address; a longer value is a paste gone wrong."""


def _invisible(char: str) -> bool:
    """A control character, or one that shows as nothing (zero-width, bidi marks, line
    and paragraph separators): in an address it is a paste gone wrong or a disguise."""
    return unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}


_CREDENTIAL_PARAMETER = re.compile(
    r"(?i)^(.*[_-])?(token|key|apikey|secret|password|passwd|pwd|sig|signature|auth"
    r"|authorization|credentials?|code)\Z"
)
"""Query parameters that carry a credential (`?api_key=`, `?access_token=`, `?sig=`)."""


def _credential_field(query: str) -> str | None:
    """The first parameter of `query` whose name says it holds a credential."""
    for pair in query.split("&"):
        name = pair.partition("=")[0].strip()
        if name and _CREDENTIAL_PARAMETER.match(name):
            return name if _BARE_PARAMETER.match(name) else "a parameter"
    return None


_BARE_PARAMETER = re.compile(r"^[A-Za-z0-9_.-]{1,40}\Z")


def _check_url(url: str, key: str, *, allow_plaintext: bool, query_secrets: bool = False) -> None:
    """Refuse `url` unless it is an http(s) address without credentials, control
    characters or (without `allow_plaintext`) plain HTTP; `query_secrets` lets through
    a query parameter named like a credential (a notification webhook's `url`, which is
    redacted wherever it is shown)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{key} is not a valid URL (bad host or port)") from None
    if parts.username is not None or parts.password is not None:
        # Not repeated: the part before the @ is a credential.
        raise ValueError(
            f"{key} carries a user name or password; secrets never sit in the file: "
            "give them with the *_env or *_file keys"
        )
    secret_field = _credential_field(parts.query) or _credential_field(parts.fragment)
    if secret_field is not None and not query_secrets:
        # Not repeated: that parameter's value is a credential, and the URL is logged,
        # shown by `status` and kept in the state database as the target's address.
        raise ValueError(
            f"{key} carries a credential in its query ({secret_field}=, value not shown); "
            "secrets never sit in the file: give it with the *_env or *_file keys"
        )
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"{key} is longer than {MAX_URL_LENGTH} characters: not an address")
    hidden = next((c for c in url if _invisible(c)), None)
    if hidden is not None:
        # Not repeated: the character would act on the terminal; the HTTP client refused
        # such a URL only at the first request, with a traceback.
        raise ValueError(
            f"{key} has an invisible or control character (U+{ord(hidden):04X}) in it; "
            "retype the URL"
        )
    shown = url if len(url) <= 200 else url[:200] + "…"
    if parts.scheme not in {"http", "https"} or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"{key} = {shown!r} is not an http(s) URL such as https://host/path")
    if port == 0:
        raise ValueError(f"{key} = {shown!r}: port 0 is not a port")
    if parts.scheme == "http" and not allow_plaintext:
        raise ValueError(
            f"{key} = {shown} is plain HTTP; use https:// or set allow_plaintext = true "
            "(meant for loopback test rigs)"
        )


def _check_glob(pattern: str) -> str:
    """A glob over IdP group names; a `[` that never closes is a typo, not a literal."""
    if not pattern.strip():
        raise ValueError("a group pattern must not be empty")
    index = 0
    while index < len(pattern):
        if pattern[index] == "[":
            close = index + 1
            if close < len(pattern) and pattern[close] == "!":
                close += 1
            if close < len(pattern) and pattern[close] == "]":
                close += 1
            end = pattern.find("]", close)
            if end < 0:
                raise ValueError(
                    f"group pattern {pattern!r}: '[' opens a character class that is never "
                    "closed (write [[] for a literal '[')"
                )
            index = end
        index += 1
    return pattern


_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_CONVENTIONAL_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}\Z")


class _Strict(BaseModel):
    # Built on first use, not on import: a model's validator costs milliseconds to build,
    # and a file uses a few of the tables orgsync knows (bench/startup.py).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    @field_validator("*")
    @classmethod
    def _variable_names(cls, value: Any, info: ValidationInfo) -> Any:
        """A `*_env` key holds the NAME of an environment variable, never the secret.

        A pasted secret would otherwise travel on into error messages, logs, `status`
        and the state database; the refusal does not repeat it either.
        """
        name = info.field_name or ""
        if name.endswith("_env") and isinstance(value, str) and not _VARIABLE_NAME.match(value):
            secret = name.removesuffix("_env")
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits and _, not "
                f"starting with a digit), such as {secret.upper()}; the value given is not "
                "one, and may be the secret itself, so it is not shown: put the secret in "
                f"an environment variable and give its name, or use {secret}_file"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """`true` or `false` where a number or a duration belongs is refused, not read
        as 1 or 0: `removal_grace = true` was a grace of one second, and
        `max_removal_ratio = true` a ratio of 100%, the ratio guard off. (On the table,
        not on each field: a field validator running before the tag's would stop
        pydantic from choosing a `[[notify]]` entry's model by its `type`.)"""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(field.alias or name)
            if isinstance(value, bool):
                kind = _number_kind(field.annotation)
                if kind is not None:
                    raise ValueError(f"{name} must be {kind}, not {str(value).lower()}")
        return data


def _number_kind(annotation: Any) -> str | None:
    """What a field takes, when it is a number or a duration (None: anything else)."""
    choices = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    for choice in choices or (annotation,):
        if choice is bool:
            return None
        if choice is timedelta:
            return 'a duration such as "30s", "15m", "1h" or "7d"'
        if choice in (int, float):
            return "a number"
    return None


StrictModel = _Strict
"""The base of every configuration table: unknown keys refused, frozen, `*_env` checked,
its validator built on first use (`defer_build`)."""

BASE_ONLY = ConfigDict(defer_build=True)
"""`model_config` of a model only ever subclassed (`RemoteSourceConfig`): pydantic builds
no validator for it, and each subclass builds its own on first use rather than on import
(`validate --offline` pays only for the tables the file has, bench/startup.py). Every
`StrictModel` defers now; connectors' models still name it."""


class _Lazily:
    """A field validated by `validate` when a file has it, instead of by a schema built
    into `Config`'s: the model it calls is built on that first use, so a table the file
    does not have costs nothing (bench/startup.py).

    A `ValidationError` the function raises keeps its errors, each located under the
    field, exactly as a nested model's would be; a model's own `model_validate` raises
    the error a nested model would (`model_type` for a value that is not a table).
    """

    def __init__(self, validate: Callable[[Any], Any]) -> None:
        self._validate = validate

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        del source, handler  # never the field's own schema: building it is what is saved
        return core_schema.no_info_plain_validator_function(self._validate)


def _section(model: type[BaseModel]) -> _Lazily:
    return _Lazily(model.model_validate)


_SAID_WORLD_READABLE: set[Path] = set()
"""Key files already reported as readable by every account, in this process."""


class SecretRef(BaseModel):
    """Where a secret comes from; exactly one of `env` and `file` is set."""

    model_config = ConfigDict(frozen=True)

    key: str
    env: str | None = None
    file: Path | None = None
    document: bool = False
    """A document of several lines (a service account's JSON key), not a one-line secret."""

    def resolve(self, environ: Mapping[str, str]) -> SecretStr:
        if self.env is not None:
            # A name that does not look like one may be a pasted secret: not repeated.
            named = self.env if _shown_name(self.env) else "it names"
            where = f"{self.key}_env: environment variable {named}"
            value = _trimmed(environ.get(self.env) or "")
            if not value:
                raise ConfigError(f"{where} is not set or empty")
            return SecretStr(value if self.document else _one_line(value, where))
        assert self.file is not None
        path = self.file
        credentials = environ.get("CREDENTIALS_DIRECTORY")
        if not path.is_absolute() and credentials:
            path = Path(credentials) / path
        try:
            text = _read_secret_file(path).decode("utf-8")
            # Universal newlines, as a text read gives them: a document keeps its lines.
            value = _trimmed(text.replace("\r\n", "\n").replace("\r", "\n"))
        except OSError as error:
            raise ConfigError(
                f"{self.key}_file: cannot read {self._named(path, credentials)}: {error.strerror}"
            ) from error
        except _NotAKeyFile as error:
            where = self._named(path, credentials)
            raise ConfigError(f"{self.key}_file: {where} {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{self.key}_file: {self._named(path, credentials)} is not UTF-8 text"
            ) from error
        where = f"{self.key}_file: {self._named(path, credentials)}"
        if not value:
            raise ConfigError(f"{where} is empty")
        self._warn_if_world_readable(path, credentials)
        return SecretStr(value if self.document else _one_line(value, where))

    def _warn_if_world_readable(self, path: Path, credentials: str | None) -> None:
        """A key file every account on the host may read is a key every account holds:
        said, not refused (refusing would stop a running daemon over a chmod). Said once
        per file and process: a daemon resolves its keys again for every pass."""
        try:
            mode = path.stat().st_mode
        except OSError:
            return
        if mode & 0o004 and path not in _SAID_WORLD_READABLE:
            _SAID_WORLD_READABLE.add(path)
            import structlog

            structlog.get_logger("orgsync.config").warning(
                "config.secret_file_readable_by_all",
                key=f"{self.key}_file",
                file=self._named(path, credentials),
                mode=f"{mode & 0o777:04o}",
                advice="chmod 600 the file (or 640 with a group orgsync runs in)",
            )

    def _named(self, path: Path, credentials: str | None) -> str:
        """`path`, if the configured value is unmistakably one; else where it was looked
        for: a credential pasted where its file's path belongs must not be repeated (on
        the terminal, in the log, in the run history)."""
        assert self.file is not None
        given = str(self.file)
        if given.startswith(("/", "./", "../", "~")):
            return str(path)
        folder = credentials or f"the working directory {Path.cwd()}"
        return (
            f"the file it names (a relative name, looked for in {folder}; not repeated "
            "here, in case it is a pasted secret rather than a path)"
        )


MAX_SECRET_BYTES = 1 << 20
"""Far above any key, token or service account's JSON key (a few kilobytes): a bound on
what a mistyped path (a log file, a device) makes orgsync read into memory."""


class _NotAKeyFile(Exception):
    """A `*_file` that is not a regular file of a sensible size (the reason)."""


def _read_secret_file(path: Path) -> bytes:
    """The bytes of a key file, which must be a regular file of at most MAX_SECRET_BYTES.

    Opened without blocking: a FIFO (nobody writing) or a terminal named by mistake hung
    the command, and the daemon's start, for ever; a device (`/dev/zero`) was read until
    memory ran out. Key files are regular files (systemd credentials, Kubernetes and
    Docker secrets through their symlinks)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "not a file"
            )
            raise _NotAKeyFile(f"is {kind}, not a regular file holding the secret")
        data = handle.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise _NotAKeyFile(
            f"is larger than {MAX_SECRET_BYTES >> 20} MiB: not a key file (value not read)"
        )
    return data


_TOKEN_RUN = re.compile(r"[A-Za-z0-9]{16,}")


def _shown_name(name: str) -> bool:
    """Whether an environment variable's name may be repeated in a message: one written
    as names are (capitals, digits, `_`), with no long run of letters mixed with digits,
    which names seldom have and keys do (`AKIAIOSFODNN7EXAMPLE`, upper-case hex tokens):
    such a value pasted into `*_env` passes as a name and was repeated by the "not set"
    error, on the terminal and in the run history."""
    if not _CONVENTIONAL_NAME.match(name):
        return False
    return not any(
        any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
        for run in _TOKEN_RUN.findall(name)
    )


def _trimmed(value: str) -> str:
    """A secret as given less what editors and shells add around it: a byte-order mark
    (Notepad's UTF-8), the line ending (`\\n` or `\\r\\n`: `echo key > file`, a Windows
    editor, an `EnvironmentFile=` written on Windows) and surrounding blanks. Sent as is,
    a trailing `\\r` failed every request as an illegal header; a mark made a wrong key."""
    return value.lstrip("\ufeff").strip()


def _one_line(value: str, where: str) -> str:
    """`value`, refused when a control character (a line break, a tab) is left inside it:
    two lines in a key file, or two values glued together, would be sent as one
    credential, and fail as an illegal header or a wrong key the operator cannot tell
    from a revoked one. The value is never repeated, only where it came from."""
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        kind = "a line break" if bad in "\r\n" else f"a control character (U+{ord(bad):04X})"
        raise ConfigError(
            f"{where} has {kind} inside it (value not shown); a secret is one line: "
            "keep only the secret itself"
        )
    return value


def _secret(key: str, env: str | None, file: Path | None, *, required: bool) -> SecretRef | None:
    if env is not None and file is not None:
        raise ValueError(f"give either {key}_env or {key}_file, not both")
    if env is None and file is None:
        if required:
            raise ValueError(f"{key}_env or {key}_file is required (secrets never sit in the file)")
        return None
    return SecretRef(key=key, env=env, file=file)


class SourceConfig(_Strict):
    """The `[source]` table, whatever its type.

    Each source type's model (beside its reader in `orgsync.sources`, found through
    `orgsync.connectors`) subclasses this one, or `RemoteSourceConfig`, and narrows
    `type` to its tag; `Config.source` is an instance of the one its `type` names.
    """

    type: str

    def anchored(self, base_dir: Path) -> "SourceConfig":
        """Itself with the relative paths the reader opens taken from `base_dir`."""
        return self


class RemoteSourceConfig(SourceConfig):
    """Keys every network source shares: TLS trust, plaintext opt-in, timeouts, retries."""

    model_config = BASE_ONLY
    ca_file: Path | None = None
    allow_plaintext: StrictBool = False
    timeout: Duration = timedelta(seconds=30)
    max_attempts: int = Field(default=6, ge=1, le=20)
    max_retry_delay: Duration = timedelta(seconds=60)

    @model_validator(mode="after")
    def _check_timeout(self) -> "RemoteSourceConfig":
        _check_timeout(self.timeout)
        return self


MIN_TIMEOUT = timedelta(milliseconds=100)
MAX_TIMEOUT = timedelta(minutes=10)


def _check_timeout(timeout: timedelta) -> None:
    """A source's or target's per-request `timeout`: `"0s"` (or `0`) failed every request
    at once, as a connection error ("Operation now in progress") that named no key, and a
    day-long one let a hung server hold a `sync` for that long."""
    if not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise ValueError("timeout must be between 100ms and 10m (it bounds each request)")


def _source_model(value: Any) -> Any:
    """Validate the `[source]` table with the model of its `type`, loaded on first use;
    a missing or unknown type is reported as pydantic reports a discriminated union's."""
    if isinstance(value, SourceConfig) or not isinstance(value, dict):
        return SourceConfig.model_validate(value)  # not a table: "must be a table"
    tag = value.get("type")
    if tag is None:
        raise ValidationError.from_exception_data(
            "SourceConfig",
            [
                {
                    "type": "union_tag_not_found",
                    "loc": (),
                    "input": value,
                    "ctx": {"discriminator": "'type'"},
                }
            ],
        )
    if not isinstance(tag, str) or not connectors.is_type("source", tag):
        known = connectors.source_types()
        raise ValidationError.from_exception_data(
            "SourceConfig",
            [
                {
                    "type": "union_tag_invalid",
                    "loc": (),
                    "input": value,
                    "ctx": {
                        "discriminator": "'type'",
                        "tag": str(tag),
                        "expected_tags": ", ".join(repr(k) for k in known),
                    },
                }
            ],
        )
    return connectors.source(tag).settings.model_validate(value)


AnySource = Annotated[SourceConfig, _Lazily(_source_model)]
"""The `[source]` table: an instance of its type's own model (serialized as that model)."""


Glob = Annotated[str, AfterValidator(_check_glob)]


def _check_address(email: str) -> str:
    """A protected person must be an address: a typo would silently protect nobody."""
    problem = email_problem(email)
    if problem is not None:
        # Without an @ it may be anything pasted in the wrong place, a key included.
        shown = repr(email) if len(email) <= 80 and "@" in email else "the value given"
        raise ValueError(f"{shown} is not an email address: {problem}")
    return email


Address = Annotated[str, AfterValidator(_check_address)]


class RoleRuleConfig(_Strict):
    group: Glob
    role: str = Field(min_length=1)


class GroupRuleConfig(_Strict):
    source: Glob
    """Glob over IdP group names."""
    name: str = "{source}"
    """Target group name template; `{source}` is the IdP group's name."""
    roles: tuple[str, ...] = ()
    """Roles the target group must hold (names from the target's role catalog)."""

    @field_validator("name")
    @classmethod
    def _template(cls, name: str) -> str:
        leftover = name.replace("{source}", "")
        if "{" in leftover or "}" in leftover:
            raise ValueError(f"{name!r}: the only placeholder a group name may use is {{source}}")
        if not name.strip():
            raise ValueError("a group name template must not be empty")
        return name


class TargetConfig(_Strict):
    """The keys every `[[targets]]` table has, whatever its type.

    Each target type's own model (in its package, found through `orgsync.connectors`)
    subclasses this one and narrows `type` to its tag; `Config.targets` holds instances
    of those, chosen by `type` (a discriminated union whose members are loaded on first
    use of their type).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    type: str
    base_url: str
    default_role: str | None = None
    scope_groups: tuple[Glob, ...] = ()
    on_removal: Literal["remove", "suspend"] = "remove"
    roles: tuple[RoleRuleConfig, ...] = ()
    groups: tuple[GroupRuleConfig, ...] = ()
    allow_plaintext: StrictBool = False
    ca_file: Path | None = None
    timeout: Duration = timedelta(seconds=30)
    requests_per_second: float | None = Field(default=None, gt=0)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=6, ge=1, le=20)
    max_retry_delay: Duration = timedelta(seconds=60)

    @model_validator(mode="after")
    def _check_base_url(self) -> "TargetConfig":
        _check_url(self.base_url, "base_url", allow_plaintext=self.allow_plaintext)
        _check_timeout(self.timeout)
        return self

    def secret(self, key: str, *, required: bool = True) -> SecretRef | None:
        """`<key>_env` / `<key>_file` of this target as a `SecretRef` (None when neither is
        given and it is optional), named `targets.<name>.<key>` in errors."""
        ref = _secret(
            key, getattr(self, f"{key}_env"), getattr(self, f"{key}_file"), required=required
        )
        return ref.model_copy(update={"key": f"targets.{self.name}.{key}"}) if ref else None


def secret_ref(key: str, env: str | None, file: Path | None, *, required: bool) -> SecretRef | None:
    """Check a `<key>_env` / `<key>_file` pair (for a connector's model validator): one of
    them, not both; `required` refuses neither."""
    return _secret(key, env, file, required=required)


def check_url(url: str, key: str, *, allow_plaintext: bool) -> None:
    """Refuse a URL that is not http(s), carries a credential, or is plain HTTP unasked."""
    _check_url(url, key, allow_plaintext=allow_plaintext)


def _target_model(value: Any) -> Any:
    """Validate one `[[targets]]` table with the model of its `type`.

    The type's connector is imported here, on first use. An unknown type is reported as
    a choice among the installed ones, exactly as a fixed `Literal` would be.
    """
    if isinstance(value, TargetConfig) or not isinstance(value, dict):
        return TargetConfig.model_validate(value)  # not a table: "must be a table"
    tag = value.get("type")
    if tag is None:
        raise ValidationError.from_exception_data(
            "TargetConfig", [{"type": "missing", "loc": ("type",), "input": value}]
        )
    if not isinstance(tag, str) or not connectors.is_type("target", tag):
        known = connectors.target_types()
        expected = " or ".join(", ".join(repr(k) for k in known).rsplit(", ", 1))
        raise ValidationError.from_exception_data(
            "TargetConfig",
            [
                {
                    "type": "literal_error",
                    "loc": ("type",),
                    "input": tag,
                    "ctx": {"expected": expected},
                }
            ],
        )
    return connectors.target(tag).settings.model_validate(value)


AnyTarget = Annotated[TargetConfig, _Lazily(_target_model)]
"""A `[[targets]]` table: an instance of its type's own model (serialized as that model)."""


class SafetyConfig(_Strict):
    max_removals: int = Field(default=10, ge=0)
    max_removal_ratio: float = Field(default=0.05, ge=0, le=1)
    min_managed_for_ratio: int = Field(default=20, ge=0)
    """The ratios apply only once orgsync manages this many people in the organization."""
    max_additions: int | None = Field(default=None, ge=0)
    """Invitations and user creations per run and target; unset: no limit."""
    max_addition_ratio: float | None = Field(default=None, ge=0)
    """Of the people orgsync manages; unset: no limit."""
    min_source_users: int = Field(default=1, ge=0)
    max_privilege_grants: int = Field(default=10, ge=0)
    """Grants of an owner/admin-level role (invitations, users, role raises) per run and
    target; more are all held (`--allow-additions N` lifts it for one run)."""
    removal_grace: Duration = timedelta(0)
    protected: tuple[Address, ...] = ()
    remove_unmanaged: StrictBool = False
    max_group_member_removals: int = Field(default=50, ge=0)


class StateConfig(_Strict):
    path: Path = Path("orgsync.db")
    """SQLite, the embedded default."""
    url: str | None = None
    """A PostgreSQL database instead (`postgresql://USER@HOST:PORT/DB?sslmode=...`)."""
    password_env: str | None = None
    password_file: Path | None = None
    """The password of `url`'s user; without them, libpq's own environment (PGPASSWORD,
    PGPASSFILE, ~/.pgpass) or a password-less method (peer, certificates) is used."""
    lease_ttl: Duration = timedelta(seconds=30)
    """How long a target's lease lasts unless renewed (every third of it). On PostgreSQL a
    replica that stops renewing (dead, frozen, cut off) loses its targets after this."""
    keep_runs: Duration = timedelta(days=90)
    """Run history (and its operation journal) older than this is deleted; the newest run
    of each target, and its newest finished sync, are kept whatever their age."""

    @model_validator(mode="after")
    def _check(self) -> "StateConfig":
        if self.lease_ttl < timedelta(seconds=1):
            raise ValueError("lease_ttl must be at least 1s")
        if self.keep_runs < timedelta(hours=1):
            raise ValueError("keep_runs must be at least 1h")
        password = _secret("password", self.password_env, self.password_file, required=False)
        if self.url is None:
            if password is not None:
                raise ValueError("password_env/password_file need url (SQLite has no password)")
            return self
        if "path" in self.model_fields_set:
            raise ValueError("give either path (SQLite) or url (PostgreSQL), not both")
        problem = state_url_problem(self.url)
        if problem is not None:
            # Shown redacted, and only when it parses as PostgreSQL's: a password pasted
            # into it stays out of messages.
            shown = f" {redact_state_url(self.url)}" if is_server_url(self.url) else ""
            raise ValueError(f"url{shown} {problem}")
        return self

    @property
    def password(self) -> SecretRef | None:
        ref = _secret("password", self.password_env, self.password_file, required=False)
        return ref.model_copy(update={"key": "state.password"}) if ref else None

    @property
    def location(self) -> str:
        """Where the state is, for people: the file, or the URL without any secret."""
        return redact_state_url(self.url) if self.url is not None else str(self.path)


class ScheduleConfig(_Strict):
    interval: Duration = timedelta(minutes=15)
    """The daemon's incremental pass (source deltas) per target."""
    full_interval: Duration = timedelta(hours=24)
    """A full reconciliation (reads everything, corrects what was changed by hand) at
    least this often, and at start; `sync --incremental` is full past it too."""
    jitter: Duration = timedelta(seconds=30)
    quarantine_after: int = Field(default=3, ge=1)
    """Consecutive failed runs after which a target is quarantined (runs back off)."""
    quarantine_max_interval: Duration = timedelta(days=1)
    """The back-off of a quarantined target grows towards this, and no further."""
    stall_after: Duration = timedelta(minutes=30)
    """A daemon run with no progress this long (no answer from the source or the target,
    no operation done) is stalled: `/healthz` fails, the watchdog stops (a restart), and
    `/readyz` and the status page name it (`orgsync.daemon.liveness`)."""

    @model_validator(mode="after")
    def _check(self) -> "ScheduleConfig":
        if self.interval < timedelta(seconds=1):
            raise ValueError("interval must be at least 1s")
        if self.jitter < timedelta(0) or self.jitter >= self.interval:
            raise ValueError("jitter must be at least 0s and shorter than interval")
        if self.quarantine_max_interval < self.interval:
            raise ValueError("quarantine_max_interval must not be shorter than interval")
        if self.full_interval < self.interval:
            raise ValueError("full_interval must not be shorter than interval")
        if self.stall_after < timedelta(seconds=1):
            raise ValueError("stall_after must be at least 1s")
        return self


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:8080"
    webhook_secret_env: str | None = None
    webhook_secret_file: Path | None = None
    """HMAC-SHA256 key of `POST /webhooks/generic`; without it that endpoint answers 404."""
    okta_authorization_env: str | None = None
    okta_authorization_file: Path | None = None
    """The Authorization header value configured on the Okta event hook; enables
    `/webhooks/okta`."""
    entra_client_state_env: str | None = None
    entra_client_state_file: Path | None = None
    """The `clientState` given when creating the Graph subscription; enables
    `/webhooks/entra`."""
    debounce: Duration = timedelta(seconds=1)
    """Webhook events closer together than this are coalesced into one run."""
    health_listen: str | None = None
    """host:port of a listener of its own for `/healthz`, `/readyz` and `/metrics`, which
    keep answering however `listen` is flooded; unset, they are served on `listen`."""
    status_page: bool = True
    """Serve the read-only HTML status page at `GET /` (on `listen`, and on
    `health_listen` when set). It shows the emails and group names of held and failed
    operations: set false when `listen` is reachable by people who must not see them."""
    header_timeout: Duration = timedelta(seconds=10)
    """A request line and its headers must arrive within this (counted from the
    connection, or from the previous response); else 408 and the connection is closed."""
    body_timeout: Duration = timedelta(seconds=30)
    """A webhook body must arrive within this after its headers (else 408), and a response
    the client does not read is dropped after this."""
    max_connections: int = Field(default=256, ge=1, le=10_000)
    """Open connections per listener; more are answered 503 and closed at once."""
    max_connections_per_client: int = Field(default=32, ge=1, le=10_000)
    """Open connections per client address (IPv6: per /64) and listener; more get 503."""

    @model_validator(mode="after")
    def _check(self) -> "ServerConfig":
        host, port = parse_listen(self.listen)
        if self.health_listen is not None:
            health = parse_listen(self.health_listen, "health_listen")
            if port != 0 and health == (host, port):
                raise ValueError("health_listen must be another address than listen")
        for key in ("header_timeout", "body_timeout"):
            if not timedelta(milliseconds=100) <= getattr(self, key) <= timedelta(minutes=5):
                raise ValueError(f"{key} must be between 100ms and 5m")
        if self.max_connections_per_client > self.max_connections:
            raise ValueError("max_connections_per_client must not exceed max_connections")
        for key in ("webhook_secret", "okta_authorization", "entra_client_state"):
            _secret(key, getattr(self, f"{key}_env"), getattr(self, f"{key}_file"), required=False)
        if not timedelta(0) <= self.debounce <= timedelta(seconds=60):
            raise ValueError("debounce must be between 0s and 60s")
        return self

    def secret(self, key: str) -> SecretRef | None:
        """`webhook_secret`, `okta_authorization` or `entra_client_state`, if configured."""
        ref = _secret(
            key, getattr(self, f"{key}_env"), getattr(self, f"{key}_file"), required=False
        )
        return ref.model_copy(update={"key": f"server.{key}"}) if ref else None


def parse_listen(listen: str, key: str = "listen") -> tuple[str, int]:
    """`"127.0.0.1:8080"`, `"[::1]:8080"` or `"0.0.0.0:8080"` → (host, port)."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"{key} = {listen!r} is not host:port (e.g. 127.0.0.1:8080)")
    return host, int(port)


NotifyEvent = Literal["held", "failed", "quarantined", "recovered"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("held", "failed", "quarantined", "recovered")


class _NotifyEntry(_Strict):
    """Keys every `[[notify]]` entry shares: what it is sent, how often, how hard it tries.

    The models live here, beside `SecretRef` and `Duration`, because `orgsync.notify`
    (which sends) imports this module; the sender package never defines keys of its own.
    """

    model_config = BASE_ONLY

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS
    targets: tuple[str, ...] = ()
    """Only events of these targets; empty: every target."""
    timeout: Duration = timedelta(seconds=10)
    max_attempts: int = Field(default=3, ge=1, le=10)
    max_per_hour: int = Field(default=12, ge=1, le=3600)
    repeat_after: Duration = timedelta(hours=6)
    allow_plaintext: bool = False
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _check_common(self) -> "_NotifyEntry":
        if not self.events:
            raise ValueError("events must name at least one of " + ", ".join(NOTIFY_EVENTS))
        if not timedelta(0) < self.timeout <= timedelta(minutes=2):
            raise ValueError("timeout must be more than 0s and at most 2m")
        if self.repeat_after < timedelta(minutes=1):
            raise ValueError("repeat_after must be at least 1m")
        return self


_CREDENTIAL_URL = re.compile(
    r"(?i)^[a-z]+://(?:[^/?#]*@)?"
    r"(hooks\.slack\.com/|[^/?#]*\.webhook\.office\.com/|outlook\.office(?:365)?\.com/webhook"
    r"|[^/?#]*\.logic\.azure\.com(?::\d+)?/workflows/|(?:discord|discordapp)\.com/api/webhooks/"
    r"|chat\.googleapis\.com/)"
)


def _is_credential_url(url: str) -> bool:
    """A chat service's incoming-webhook URL: whoever has it can post (the path or the
    query is the token), so it is a secret, never a plain `url`."""
    return _CREDENTIAL_URL.match(url.strip()) is not None


class WebhookNotify(_NotifyEntry):
    """A JSON POST signed like `POST /webhooks/generic` (`X-Orgsync-Signature`).

    Its URL is `url` in the file, or `url_env`/`url_file` when it carries a token (a
    Teams workflow's `sig=`, a catch-hook path): then it is a secret like Slack's."""

    type: Literal["webhook"]
    url: str | None = None
    url_env: str | None = None
    url_file: Path | None = None
    secret_env: str | None = None
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> "WebhookNotify":
        given = [k for k in ("url", "url_env", "url_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give one of url, url_env or url_file (url_env/url_file when the URL "
                f"carries a token){'; got ' + ', '.join(given) if given else ''}"
            )
        if self.url is not None and _is_credential_url(self.url):
            # Not repeated, and refused before `_check_url` could quote it: it is a secret.
            raise ValueError(
                "url is an incoming-webhook URL of a chat service (Slack, Teams, Discord, "
                "Google Chat), which is itself a credential and must not sit in the file; "
                "give it with url_env or url_file (for Slack or a Slack-compatible "
                'service, as type = "slack"; for Teams, as type = "teams")'
            )
        if self.url is not None:
            _check_url(self.url, "url", allow_plaintext=self.allow_plaintext, query_secrets=True)
        _secret("secret", self.secret_env, self.secret_file, required=True)
        return self

    @property
    def secret(self) -> SecretRef:
        ref = _secret("secret", self.secret_env, self.secret_file, required=True)
        assert ref is not None
        return ref.model_copy(update={"key": f"notify.{self.name}.secret"})

    @property
    def url_secret(self) -> SecretRef | None:
        """`url_env`/`url_file` as a secret; None when the URL is the plain `url`."""
        ref = _secret("url", self.url_env, self.url_file, required=False)
        return ref.model_copy(update={"key": f"notify.{self.name}.url"}) if ref else None


class _SecretUrlNotify(_NotifyEntry):
    """An entry whose URL is the credential (a chat's incoming webhook): a secret, given
    only by `url_env` or `url_file`."""

    url_env: str | None = None
    url_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _secret("url", self.url_env, self.url_file, required=True)
        return self

    @property
    def url(self) -> SecretRef:
        ref = _secret("url", self.url_env, self.url_file, required=True)
        assert ref is not None
        return ref.model_copy(update={"key": f"notify.{self.name}.url"})


class SlackNotify(_SecretUrlNotify):
    """A Slack-compatible incoming webhook."""

    type: Literal["slack"]


class TeamsNotify(_SecretUrlNotify):
    """A Microsoft Teams incoming webhook (a Workflows "When a Teams webhook request is
    received" URL, or a Microsoft 365 connector's): an Adaptive Card. The URL (with its
    `sig`) is the credential, as Slack's."""

    type: Literal["teams"]


class EmailNotify(_NotifyEntry):
    """SMTP: STARTTLS (default) or implicit TLS; `tls = "none"` only with allow_plaintext."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: 587 for starttls, 465 for implicit, 25 for none."""
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    sender: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$")
    recipients: tuple[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")], ...] = Field(
        alias="to", min_length=1, max_length=50
    )
    subject_prefix: str = Field(default="[orgsync]", max_length=40)

    @model_validator(mode="after")
    def _check(self) -> "EmailNotify":
        if self.tls == "none" and not self.allow_plaintext:
            raise ValueError(
                'tls = "none" sends the message (and any password) in clear; use "starttls" '
                'or "implicit", or set allow_plaintext = true (loopback test rigs)'
            )
        password = _secret("password", self.password_env, self.password_file, required=False)
        if (password is None) != (self.username is None):
            raise ValueError("username and password_env/password_file go together")
        if "\n" in self.subject_prefix or "\r" in self.subject_prefix:
            raise ValueError("subject_prefix must be one line")
        return self

    @property
    def password(self) -> SecretRef | None:
        ref = _secret("password", self.password_env, self.password_file, required=False)
        return ref.model_copy(update={"key": f"notify.{self.name}.password"}) if ref else None

    @property
    def smtp_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"starttls": 587, "implicit": 465, "none": 25}[self.tls]


NotifyConfig = Annotated[
    WebhookNotify | SlackNotify | TeamsNotify | EmailNotify, Field(discriminator="type")
]

_notify_entries: TypeAdapter[tuple[NotifyConfig, ...]] | None = None


def _notify(value: Any) -> Any:
    """`[[notify]]`, validated by its union's adapter, built when a file has the table."""
    global _notify_entries  # noqa: PLW0603 - built once, on first use
    if _notify_entries is None:
        _notify_entries = TypeAdapter(tuple[NotifyConfig, ...])
    return _notify_entries.validate_python(value)


def _default(model: type[_Strict]) -> Any:
    """A table's default when the file has none: its declared defaults, without building
    its validator (`cls()` would build it; tests/config hold the two equal)."""
    return Field(default_factory=model.model_construct)


_DEFAULT_PORTS = {"https": 443, "http": 80}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _address_key(url: str) -> tuple[str, str, int | None, str, str]:
    """An address as the server sees it, for comparing two: the scheme's own port
    written or not (`:443`), a fully qualified host's final dot, the case of scheme and
    host, the names of this host's loopback (`localhost`, `127.0.0.1`, `::1`) and a
    trailing slash all reach the same organization; compared as written, two spellings
    of one address passed as two organizations, and their targets undid each other's
    changes every run (tests/cli/test_config_redteam.py)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if host in _LOOPBACK_NAMES:
        host = "loopback"
    port = parts.port if parts.port != _DEFAULT_PORTS.get(scheme) else None
    return (scheme, host, port, re.sub("/+", "/", parts.path).rstrip("/"), parts.query)


def _organization_identity(target: TargetConfig) -> tuple[object, ...]:
    """What names the organization a target table administers: its type, its address
    (scheme and host case-insensitive, no trailing slash) and every key its connector adds
    to the ones all targets share (credentials, an organization or workspace id), since
    any of those may pick another organization behind one address. The shared keys are
    the rules and limits, which two tables for one organization would fight over."""
    address = _address_key(target.base_url)
    own = sorted(set(type(target).model_fields) - set(TargetConfig.model_fields))
    keys = tuple((key, str(getattr(target, key))) for key in own)
    return (target.type, address, keys)


class Config(_Strict):
    # Each table is validated by its own model, built when the file has the table (and
    # `Config`'s own schema holds none of them): `validate --offline` builds the models
    # of the tables a file has, not of every table orgsync knows (bench/startup.py).
    source: AnySource
    targets: tuple[AnyTarget, ...]
    safety: Annotated[SafetyConfig, _section(SafetyConfig)] = _default(SafetyConfig)
    state: Annotated[StateConfig, _section(StateConfig)] = _default(StateConfig)
    schedule: Annotated[ScheduleConfig, _section(ScheduleConfig)] = _default(ScheduleConfig)
    server: Annotated[ServerConfig, _section(ServerConfig)] = _default(ServerConfig)
    notify: Annotated[tuple[NotifyConfig, ...], _Lazily(_notify)] = ()

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: tuple[TargetConfig, ...]) -> tuple[TargetConfig, ...]:
        if not targets:
            raise ValueError("at least one [[targets]] table is required")
        names = [t.name for t in targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"target names must be unique; repeated: {', '.join(duplicates)}")
        seen: dict[tuple[object, ...], str] = {}
        for target in targets:
            first = seen.setdefault(_organization_identity(target), target.name)
            if first != target.name:
                # Two sets of rules and two memories for one organization fight for ever:
                # each run replaces the other's invitations and flips roles back.
                raise ValueError(
                    f"targets {first} and {target.name} are the same organization (same "
                    "type, base_url and credentials): each would undo the other's changes "
                    "on every run; configure it once, with all its rules in one table"
                )
        return targets

    @model_validator(mode="after")
    def _check_notify(self) -> "Config":
        names = [n.name for n in self.notify]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"notify names must be unique; repeated: {', '.join(repeated)}")
        known = {t.name for t in self.targets}
        for index, entry in enumerate(self.notify):
            unknown = sorted(set(entry.targets) - known)
            if unknown:
                raise ValueError(
                    f"notify[{index}].targets: no such target {', '.join(unknown)} "
                    f"(configured: {', '.join(sorted(known))})"
                )
        return self

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.targets)
        from orgsync.core.text import visible  # the name is as typed: made inert

        raise UsageError(f"--target {visible(name)}: no such target (configured: {known})")


def parse_config(
    document: Mapping[str, Any], *, origin: str, base_dir: Path, text: str = ""
) -> Config:
    """Validate a parsed TOML document; relative paths are taken from `base_dir`.

    `text`, the file as written, lets the errors give line numbers.
    """
    try:
        config = Config.model_validate(document)
    except ValidationError as error:
        from orgsync.config_errors import explain

        raise explain(error, origin=origin, text=text, schema=_schema(document)) from None
    config = _anchor_paths(config, base_dir)
    problems = _ca_file_problems(config)
    if problems:
        from orgsync.config_errors import located

        raise located(problems, origin=origin, text=text)
    return config


def _schema(document: Mapping[str, Any]) -> "Schema":
    """The models the explanation of `document`'s errors needs, with the model of each
    `[[targets]]` table, so that key hints speak of the right type's keys. Only on the
    error path: it loads every built-in target type (to say which type a misplaced key
    belongs to) and those named."""
    from orgsync.config_errors import Schema

    tables = document.get("targets")
    tables = tables if isinstance(tables, list) else []
    named = [t.get("type") for t in tables if isinstance(t, dict)]
    known = connectors.target_types()
    models: dict[str, type[BaseModel]] = {}
    for tag in (*connectors.BUILTIN_TARGETS, *named):
        if isinstance(tag, str) and tag in known and tag not in models:
            try:
                models[tag] = connectors.target(tag).settings
            except ConfigError:
                continue
    by_index: list[type[BaseModel] | None] = []
    for table in tables:
        tag = table.get("type") if isinstance(table, dict) else None
        by_index.append(models.get(tag) if isinstance(tag, str) else None)
    sources: dict[str, type[BaseModel]] = {}
    declared = document.get("source")
    named_source = declared.get("type") if isinstance(declared, dict) else None
    source_types = connectors.source_types()
    for tag in (*connectors.BUILTIN_SOURCES, named_source):
        if isinstance(tag, str) and tag in source_types and tag not in sources:
            try:
                sources[tag] = connectors.source(tag).settings
            except ConfigError:
                continue
    return Schema(
        root=Config,
        notify={
            "webhook": WebhookNotify,
            "slack": SlackNotify,
            "teams": TeamsNotify,
            "email": EmailNotify,
        },
        sections={
            "[targets]": TargetConfig,
            "safety": SafetyConfig,
            "state": StateConfig,
            "schedule": ScheduleConfig,
            "server": ServerConfig,
        },
        sources=sources,
        source_types=tuple(source_types),
        source=sources.get(named_source) if isinstance(named_source, str) else None,
        targets=tuple(by_index),
        target_types=models,
    )


def _anchor_paths(config: Config, base_dir: Path) -> Config:
    def anchored(path: Path) -> Path:
        return path if path.is_absolute() else base_dir / path

    def ca_anchored(model: Any) -> Any:
        # A private CA beside the configuration (`ca_file = "corp-ca.pem"`) is found there
        # whatever the working directory: it was looked for in the working directory,
        # which is / under systemd, so a file that worked by hand failed as a service.
        ca_file = getattr(model, "ca_file", None)
        if ca_file is None or ca_file.is_absolute():
            return model
        return model.model_copy(update={"ca_file": anchored(ca_file)})

    source = ca_anchored(config.source.anchored(base_dir))
    state = config.state
    if str(state.path) != ":memory:":
        state = state.model_copy(update={"path": anchored(state.path)})
    return config.model_copy(
        update={
            "source": source,
            "state": state,
            "targets": tuple(ca_anchored(target) for target in config.targets),
            "notify": tuple(ca_anchored(entry) for entry in config.notify),
        }
    )


def _ca_file_problems(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Each `ca_file` that is not a readable bundle of PEM certificates, by key path: it
    was first opened by the first connection, where a missing or wrong file ended the
    run (or `validate`) in a traceback after `validate --offline` had said all was well."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    tables: list[tuple[tuple[str | int, ...], Any]] = [(("source",), config.source)]
    tables += [(("targets", i), target) for i, target in enumerate(config.targets)]
    tables += [(("notify", i), entry) for i, entry in enumerate(config.notify)]
    for location, table in tables:
        ca_file = getattr(table, "ca_file", None)
        if ca_file is not None:
            problem = _ca_file_problem(Path(ca_file))
            if problem is not None:
                found.append(((*location, "ca_file"), problem))
    return found


def _ca_file_problem(path: Path) -> str | None:
    """Why `path` cannot serve as the CA bundle of a TLS client, or None."""
    import ssl

    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    if not stat.S_ISREG(mode):
        return f"{path} is not a file of PEM certificates"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError:
        return f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----) to trust"
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    return None


MAX_CONFIG_BYTES = 16 << 20
"""Far above any configuration (the documented example is a few dozen kilobytes): a
bound on what a mistyped `--config` (a log file, an endless pipe) makes orgsync read."""


def _refuse_if_anyone_can_edit(path: Path, mode: int) -> None:
    """A configuration every account on the host can change (the file writable by all,
    or a folder writable by all without the sticky bit, where a file can be renamed over
    it) hands every credential it names to any local user: `base_url` pointed at their
    own server receives the admin key with the next request. Refused, as a reviewed plan
    in such a place is (cli/plan_files.py); a group the operator chose may still write."""
    if mode & stat.S_IWOTH:
        raise ConfigError(
            f"{path}: writable by every account on this host, who could point a target's "
            "base_url at their own server and receive its key; nothing was run (chmod o-w "
            "the file)"
        )
    # The folder of the name given (a symlink there can be replaced) and of the file.
    for folder in dict.fromkeys((path.absolute().parent, path.resolve().parent)):
        held = folder.stat().st_mode
        if held & stat.S_IWOTH and not held & stat.S_ISVTX:
            raise ConfigError(
                f"{path}: in {folder}, a folder every account can write without the "
                "sticky bit: anyone could replace the configuration and receive the "
                "targets' keys; nothing was run (move it, or chmod o-w the folder)"
            )


def load_config(path: Path) -> Config:
    """Read and validate the configuration file at `path`.

    A regular file, or a pipe (`--config <(envsubst < orgsync.toml.in)`); a device
    (`/dev/zero`) was read until memory ran out, ending in a traceback."""
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                raise ConfigError(f"{path}: a device, not a configuration file")
            if stat.S_ISREG(mode):
                _refuse_if_anyone_can_edit(path, mode)
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration: {error.strerror}") from error
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, not a configuration file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        from orgsync.config_errors import toml_error

        raise toml_error(str(path), error, text) from None
    config = parse_config(document, origin=str(path), base_dir=path.resolve().parent, text=text)
    _refuse_state_over_an_input(config, path, text)
    return config


def _same_file(one: Path, other: Path) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them does not exist (yet): compare the names
        pass
    try:
        return one.resolve() == other.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the state's own check names it
        return False


def _refuse_state_over_an_input(config: Config, path: Path, text: str) -> None:
    """`[state] path` naming the configuration itself or the file source's directory
    (a copy-paste of the line above it): the run refused it as "unreadable, not a
    database" and advised moving it aside to start a new database, which moves the
    configuration (or the directory export) away instead."""
    if config.state.url is not None or str(config.state.path) == ":memory:":
        return
    inputs = [("the configuration file itself", path)]
    source_path = getattr(config.source, "path", None)
    if config.source.type == "file" and isinstance(source_path, Path):
        inputs.append(("the [source] directory file", source_path))
    for what, other in inputs:
        if _same_file(config.state.path, other):
            from orgsync.config_errors import located

            raise located(
                [
                    (
                        ("state", "path"),
                        f"names {what} ({other}); give the state database a file of "
                        'its own, e.g. "orgsync.db"',
                    )
                ],
                origin=str(path),
                text=text,
            )


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    # Set but empty (`Environment=ORGSYNC_CONFIG=` in a unit, a template left blank) is
    # unset: Path("") is the working directory, refused as "." being a directory.
    return Path(environ.get("ORGSYNC_CONFIG") or "orgsync.toml")
