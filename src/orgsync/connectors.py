"""Connectors as plug-ins: what a source or target type declares, and the registry.

A target type is one package exporting one `TargetConnector`: its `type` tag, its
pydantic configuration model, how to build it, what it can do, and what `validate` says
about it. A source type is a `SourceConnector`: its model, how to build it, and (Okta,
Entra) how the daemon reads its event deliveries. The registry maps a `type` to the
module holding that descriptor and imports it on the first use of the type, never
before, so `orgsync --help` imports no connector.

Built-in connectors are listed here by module name. Third-party ones are installed
packages that declare an entry point in the group `orgsync.connectors` named
`target.<type>` or `source.<type>`, whose object is the descriptor (see
docs/connectors.md). A built-in type cannot be replaced by a package: an entry point
claiming one is ignored and shown by `validate`, so installing a package never silently
reroutes an existing configuration's credentials.

This module imports no connector (`importlib` by name only), nothing of the
configuration at run time, and nothing above the retry policy.
"""

from __future__ import annotations

import builtins
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, NamedTuple, TypeVar, cast

from orgsync.core.errors import ConfigError

if TYPE_CHECKING:
    # importlib.metadata (and the email package it loads) is imported only where some
    # installed package may declare a connector: `_declared_anywhere` (bench/startup.py).
    from importlib import metadata

    # Types only: the configuration imports this module, and must not pay for the plan
    # models (`core.ports` imports `core.plan`) to read a file.
    from orgsync.config import SecretRef, SourceConfig, TargetConfig
    from orgsync.core.forms import LearnedForm
    from orgsync.core.model import Capabilities, TargetSnapshot
    from orgsync.core.ports import Source, Target
    from orgsync.core.webhook import WebhookParser
    from orgsync.interrupt import ReadInterrupt
    from orgsync.retrying import RetrySettings

ENTRY_POINT_GROUP: Final = "orgsync.connectors"

BUILTIN_TARGETS: Final[Mapping[str, str]] = {
    "openai": "orgsync.targets.openai",
    "keycard": "orgsync.targets.keycard",
    "scim": "orgsync.targets.scim",
}
"""`type` → the package whose `CONNECTOR` describes it; in the order errors list them."""

BUILTIN_SOURCES: Final[Mapping[str, str]] = {
    "file": "orgsync.sources.file_connector",
    "scim": "orgsync.sources.scim_connector",
    "ldap": "orgsync.sources.ldap_connector",
    "okta": "orgsync.sources.okta_connector",
    "entra": "orgsync.sources.entra_connector",
    "google": "orgsync.sources.google_connector",
}


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the engine lends a connector being built: where HTTP responses are counted
    (`orgsync_http_requests_total`) and the stop signal that ends a read in flight."""

    on_response: Callable[[str, int], None] | None = None
    interrupt: ReadInterrupt | None = None


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """What `validate` adds for one reachable target: `notes` end its line (`; API key
    owner found`), `details` follow it, indented by the connector."""

    notes: tuple[str, ...] = ()
    details: tuple[str, ...] = ()


C = TypeVar("C", bound="TargetConfig")


def _no_probe(
    config: Any, target: Target, observed: TargetSnapshot, learned: Sequence[LearnedForm]
) -> ProbeReport:
    return ProbeReport()


@dataclass(frozen=True, slots=True)
class TargetConnector(Generic[C]):
    """Everything orgsync needs to know about one kind of organization API."""

    type: str
    """The `[[targets]] type` tag; the model's `type` field is `Literal[<this>]`."""
    settings: builtins.type[C]
    """Its `[[targets]]` keys: a subclass of `orgsync.config.TargetConfig`."""
    build: Callable[[C, Mapping[str, str], Hooks], Target]
    """A ready target; secrets are resolved here (from `environ`), never earlier."""
    capabilities: Capabilities
    """What it can do; the planner plans nothing beyond it, `validate` refuses more."""
    credentials: Callable[[C], Sequence[SecretRef]]
    """The secrets it needs, resolved by `validate --offline` without contacting it."""
    probe: Callable[[C, Target, TargetSnapshot, Sequence[LearnedForm]], ProbeReport] = _no_probe
    """Its own `validate` lines, after a successful read."""
    summary: str = ""
    """One line for `validate`'s list of connectors."""


S = TypeVar("S", bound="SourceConfig")


@dataclass(frozen=True, slots=True)
class SourceConnector(Generic[S]):
    """Everything orgsync needs to know about one kind of identity provider."""

    type: str
    """The `[source] type` tag; the model's `type` field is `Literal[<this>]`."""
    settings: builtins.type[S]
    """Its `[source]` keys: a subclass of `orgsync.config.SourceConfig`."""
    build: Callable[[S, Mapping[str, str], Hooks], Source]
    """A ready source; secrets are resolved here (from `environ`), never earlier."""
    reads_offline: bool = False
    """`validate --offline` still reads it (a local file contacts nobody)."""
    webhook: WebhookParser | None = None
    """How the daemon reads this provider's event deliveries (`/webhooks/<type>`), after
    checking what the vendor authenticates with outside the body."""
    summary: str = ""
    """One line for `validate`'s list of connectors."""


Kind = Literal["source", "target"]


class Found(NamedTuple):
    """A connector the registry knows of, without importing it.

    (A named tuple rather than a dataclass, as `_Declared`: a dataclass costs start-up
    milliseconds to create, and these are only read.)"""

    kind: Kind
    type: str
    origin: str
    """`built-in`, or the distribution that declares it (`acme-orgsync 1.2`)."""
    ignored: str | None = None
    """Why it is not used (it claims a built-in or another package's type)."""


class _Declared(NamedTuple):
    entry_point: metadata.EntryPoint
    origin: str


_BUILTIN: Final[Mapping[Kind, Mapping[str, str]]] = {
    "source": BUILTIN_SOURCES,
    "target": BUILTIN_TARGETS,
}
_lock = threading.Lock()
_loaded: dict[tuple[Kind, str], object] = {}
_declared: dict[tuple[Kind, str], list[_Declared]] | None = None


def _origin(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    if dist is None:
        return f"module {entry_point.module}"
    return f"{dist.metadata['Name'] or dist.name} {dist.version}"


def _entry_point_files() -> Iterator[str] | None:
    """Every `entry_points.txt` importlib.metadata would read, by the rules it finds
    distributions with (`*.dist-info` and `*.egg-info` in each `sys.path` folder, an
    `.egg` folder's `EGG-INFO`); None when some distribution could be found another way
    (a zip file on the path, a finder of its own), which this does not follow."""
    from importlib.machinery import PathFinder

    if any(
        getattr(finder, "find_distributions", None) is not None and finder is not PathFinder
        for finder in sys.meta_path
    ):
        return None
    folders: list[tuple[str, list[str]]] = []
    for entry in sys.path:
        folder = entry or "."
        try:
            children = os.listdir(folder)
        except OSError:
            if os.path.exists(folder):
                return None  # a zip archive, or a folder that cannot be listed
            continue
        folders.append((folder, children))

    def files() -> Iterator[str]:
        for folder, children in folders:
            egg = os.path.basename(folder).lower().endswith(".egg")
            for child in children:
                low = child.lower()
                if low.endswith((".dist-info", ".egg-info")) or (egg and low == "egg-info"):
                    yield os.path.join(folder, child, "entry_points.txt")

    return files()


def _declared_anywhere() -> bool:
    """Whether any installed package may declare an `orgsync.connectors` entry point: a
    look at the raw `entry_points.txt` files, so that the common case, none, costs
    neither importlib.metadata's import nor its parse of every package's entry points
    (a tenth of `validate --offline`, bench/startup.py). True whenever unsure."""
    files = _entry_point_files()
    if files is None:
        return True
    needle = ENTRY_POINT_GROUP.encode()
    for path in files:
        try:
            with open(path, "rb") as file:
                if needle in file.read():
                    return True
        except OSError:
            continue  # no entry points (importlib.metadata reads none there either)
    return False


def _third_party() -> dict[tuple[Kind, str], list[_Declared]]:
    """`<kind>.<type>` entry points, read once (metadata only, nothing imported)."""
    global _declared  # noqa: PLW0603 - one read of the installed packages per process
    with _lock:
        if _declared is None and not _declared_anywhere():
            _declared = {}
        if _declared is None:
            from importlib import metadata

            found: dict[tuple[Kind, str], list[_Declared]] = {}
            for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                kind, _, tag = entry_point.name.partition(".")
                if kind not in _BUILTIN or not tag:
                    continue
                key = (cast(Kind, kind), tag)
                declared = _Declared(entry_point, _origin(entry_point))
                if declared not in found.get(key, []):
                    found.setdefault(key, []).append(declared)
            _declared = found
        return _declared


def refresh() -> None:
    """Forget what was found and loaded (tests that install a package at run time)."""
    global _declared  # noqa: PLW0603
    with _lock:
        _declared = None
        _loaded.clear()


def types(kind: Kind) -> list[str]:
    """Every type of `kind`: built-ins in their order, then third-party ones sorted (one
    declared by two packages too: using it says which, rather than "unknown type")."""
    builtin = _BUILTIN[kind]
    declared = sorted(tag for k, tag in _third_party() if k == kind and tag not in builtin)
    return [*builtin, *declared]


def is_type(kind: Kind, type_: str) -> bool:
    """Whether `type_` is a connector of `kind`; a built-in one is known without reading
    the installed packages' metadata (a start-up cost, bench/startup.py)."""
    return type_ in _BUILTIN[kind] or type_ in types(kind)


def target_types() -> list[str]:
    return types("target")


def source_types() -> list[str]:
    return types("source")


def found() -> list[Found]:
    """The connectors installed, for `validate`: built-in first, then each package's."""
    listed = [Found(kind, tag, "built-in") for kind, tags in _BUILTIN.items() for tag in tags]
    for (kind, tag), declared in sorted(_third_party().items()):
        for item in declared:
            ignored = None
            if tag in _BUILTIN[kind]:
                ignored = "a built-in type has this name"
            elif len(declared) > 1:
                others = ", ".join(d.origin for d in declared if d is not item)
                ignored = f"also declared by {others}"
            listed.append(Found(kind, tag, item.origin, ignored))
    return listed


def target(type_: str) -> TargetConnector[Any]:
    """The connector of `[[targets]] type = type_`, imported on first use.

    `ConfigError` when no installed package provides it, when two do, or when it fails
    to load (naming the package: the operator's fix is there, not in orgsync).
    """
    return cast(TargetConnector[Any], _connector("target", type_))


def source(type_: str) -> SourceConnector[Any]:
    """The connector of `[source] type = type_`, imported on first use (as `target`)."""
    return cast(SourceConnector[Any], _connector("source", type_))


def _connector(kind: Kind, type_: str) -> object:
    with _lock:
        cached = _loaded.get((kind, type_))
    if cached is not None:
        return cached
    builtin = _BUILTIN[kind]
    if type_ in builtin:
        connector = _check(kind, _load(builtin[type_], "CONNECTOR", "built-in"), type_, "")
    else:
        declared = _third_party().get((kind, type_), [])
        if not declared:
            raise ConfigError(
                f"type = {type_!r} is not a {kind} type; use one of: " + ", ".join(types(kind))
            )
        if len(declared) > 1:
            raise ConfigError(
                f"{kind} type {type_!r} is declared by several packages ("
                + ", ".join(d.origin for d in declared)
                + "); uninstall all but one"
            )
        origin = declared[0].origin
        loaded = _load_entry_point(declared[0].entry_point, origin)
        connector = _check(kind, loaded, type_, origin)
    with _lock:
        return _loaded.setdefault((kind, type_), connector)


def _load(module: str, attribute: str, origin: str) -> object:
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"connector {module} ({origin}) cannot be loaded: {error}") from error


def _load_entry_point(entry_point: metadata.EntryPoint, origin: str) -> object:
    try:
        loaded = entry_point.load()
        _build_settings(loaded)
    except Exception as error:  # any failure of foreign code is the package's to fix
        raise ConfigError(
            f"connector {entry_point.name} = {entry_point.value} ({origin}) cannot be "
            f"loaded: {type(error).__name__}: {error}"
        ) from error
    return loaded


def _build_settings(candidate: object) -> None:
    """Build a foreign model's validator now: a configuration model defers it to first
    use (`config.StrictModel`), and a model pydantic cannot build must be refused as the
    package's fault, as it was when the models were built on import."""
    from pydantic import BaseModel

    settings = getattr(candidate, "settings", None)
    if isinstance(settings, type) and issubclass(settings, BaseModel):
        settings.model_rebuild(raise_errors=False)


def _check(kind: Kind, candidate: object, type_: str, origin: str) -> object:
    """A foreign entry point is trusted only once it is what it claims to be."""
    from orgsync.config import SourceConfig, TargetConfig

    descriptor, base = {
        "source": (SourceConnector, SourceConfig),
        "target": (TargetConnector, TargetConfig),
    }[kind]
    name = f"connector {kind}.{type_}" + (f" ({origin})" if origin else "")
    if not isinstance(candidate, TargetConnector | SourceConnector) or not isinstance(
        candidate, descriptor
    ):
        raise ConfigError(
            f"{name} is not an orgsync.connectors.{descriptor.__name__} but "
            f"{type(candidate).__name__}"
        )
    if candidate.type != type_:
        raise ConfigError(f"{name} describes type {candidate.type!r}")
    settings = candidate.settings
    if not (isinstance(settings, type) and issubclass(settings, base)):
        raise ConfigError(f"{name}: settings is not a subclass of orgsync.config.{base.__name__}")
    return candidate


def retry_settings(config: TargetConfig) -> RetrySettings:
    """The retry policy a target's keys ask for (`max_attempts`, `max_retry_delay`)."""
    from orgsync.retrying import RetrySettings

    return RetrySettings(
        max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
    )


def plaintext_warning(config: TargetConfig) -> None:
    """Warn when a target is reached without TLS (`allow_plaintext = true`): each URL key
    of its table, `base_url` and any other (Keycard's `token_url`, to which the client
    secret is sent, went unsaid when only it was plain HTTP)."""
    for key in type(config).model_fields:
        url = getattr(config, key)
        if not (key.endswith("_url") and isinstance(url, str)):
            continue
        if url.strip().lower().startswith("http://"):
            import structlog

            structlog.get_logger("orgsync.factories").warning(
                "target.plaintext", target=config.name, key=key, url=url
            )


def plaintext_source_warning(source: str, url: str) -> None:
    """Warn when a source is reached without TLS (`allow_plaintext = true`)."""
    import structlog

    structlog.get_logger("orgsync.factories").warning("source.plaintext", source=source, url=url)


def secret_key(ref: SecretRef | None, default: str) -> str:
    """`source.token_env (IDP_TOKEN)`: the key an administrator must fix when refused."""
    if ref is None:
        return default
    return f"{ref.key}_env ({ref.env})" if ref.env else f"{ref.key}_file ({ref.file})"
