"""Connectors as plug-ins: what a target package declares, and the registry that finds it.

A target is one package exporting one `TargetConnector`: its `type` tag, its pydantic
configuration model, how to build it, what it can do, and what `validate` says about
it. The registry maps a `type` to the module holding that descriptor and imports it on
the first use of the type, never before, so `orgsync --help` imports no connector.

Built-in connectors are listed here by module name. Third-party ones are installed
packages that declare an entry point in the group `orgsync.connectors` named
`target.<type>`, whose object is the descriptor (see docs/connectors.md). A built-in
type cannot be replaced by a package: an entry point claiming one is ignored and shown
by `validate`, so installing a package never silently reroutes an existing
configuration's credentials.

This module imports no connector (`importlib` by name only), nothing of the
configuration at run time, and nothing above the retry policy.
"""

from __future__ import annotations

import builtins
import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from orgsync.core.errors import ConfigError
from orgsync.core.forms import LearnedForm
from orgsync.core.model import Capabilities, TargetSnapshot
from orgsync.core.ports import Target

if TYPE_CHECKING:
    from orgsync.config import SecretRef, TargetConfig
    from orgsync.interrupt import ReadInterrupt
    from orgsync.retrying import RetrySettings

ENTRY_POINT_GROUP: Final = "orgsync.connectors"

BUILTIN_TARGETS: Final[Mapping[str, str]] = {
    "openai": "orgsync.targets.openai",
    "keycard": "orgsync.targets.keycard",
    "scim": "orgsync.targets.scim",
}
"""`type` → the package whose `CONNECTOR` describes it; in the order errors list them."""


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


@dataclass(frozen=True, slots=True)
class Found:
    """A connector the registry knows of, without importing it."""

    kind: str
    type: str
    origin: str
    """`built-in`, or the distribution that declares it (`acme-orgsync 1.2`)."""
    ignored: str | None = None
    """Why it is not used (it claims a built-in or another package's type)."""


@dataclass(frozen=True, slots=True)
class _Declared:
    entry_point: metadata.EntryPoint
    origin: str


_lock = threading.Lock()
_loaded: dict[str, TargetConnector[Any]] = {}
_declared: dict[str, list[_Declared]] | None = None


def _origin(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    if dist is None:
        return f"module {entry_point.module}"
    return f"{dist.metadata['Name'] or dist.name} {dist.version}"


def _third_party() -> dict[str, list[_Declared]]:
    """`target.<type>` entry points by type, read once (metadata only, nothing imported)."""
    global _declared  # noqa: PLW0603 - one read of the installed packages per process
    with _lock:
        if _declared is None:
            found: dict[str, list[_Declared]] = {}
            for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                kind, _, tag = entry_point.name.partition(".")
                if kind != "target" or not tag:
                    continue
                declared = _Declared(entry_point, _origin(entry_point))
                if declared not in found.get(tag, []):
                    found.setdefault(tag, []).append(declared)
            _declared = found
        return _declared


def refresh() -> None:
    """Forget what was found and loaded (tests that install a package at run time)."""
    global _declared  # noqa: PLW0603
    with _lock:
        _declared = None
        _loaded.clear()


def target_types() -> list[str]:
    """Every target type: built-ins in their order, then third-party ones sorted (one
    declared by two packages too: using it says which, rather than "unknown type")."""
    declared = sorted(tag for tag in _third_party() if tag not in BUILTIN_TARGETS)
    return [*BUILTIN_TARGETS, *declared]


def found() -> list[Found]:
    """The connectors installed, for `validate`: built-in first, then each package's."""
    listed = [Found("target", tag, "built-in") for tag in BUILTIN_TARGETS]
    for tag, declared in sorted(_third_party().items()):
        for item in declared:
            ignored = None
            if tag in BUILTIN_TARGETS:
                ignored = "a built-in type has this name"
            elif len(declared) > 1:
                others = ", ".join(d.origin for d in declared if d is not item)
                ignored = f"also declared by {others}"
            listed.append(Found("target", tag, item.origin, ignored))
    return listed


def target(type_: str) -> TargetConnector[Any]:
    """The connector of `[[targets]] type = type_`, imported on first use.

    `ConfigError` when no installed package provides it, when two do, or when it fails
    to load (naming the package: the operator's fix is there, not in orgsync).
    """
    with _lock:
        cached = _loaded.get(type_)
    if cached is not None:
        return cached
    if type_ in BUILTIN_TARGETS:
        connector = _check(_load(BUILTIN_TARGETS[type_], "CONNECTOR", "built-in"), type_, "")
    else:
        declared = _third_party().get(type_, [])
        if not declared:
            raise ConfigError(
                f"type = {type_!r} is not a target type; use one of: " + ", ".join(target_types())
            )
        if len(declared) > 1:
            raise ConfigError(
                f"target type {type_!r} is declared by several packages ("
                + ", ".join(d.origin for d in declared)
                + "); uninstall all but one"
            )
        origin = declared[0].origin
        connector = _check(_load_entry_point(declared[0].entry_point, origin), type_, origin)
    with _lock:
        return _loaded.setdefault(type_, connector)


def _load(module: str, attribute: str, origin: str) -> object:
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"connector {module} ({origin}) cannot be loaded: {error}") from error


def _load_entry_point(entry_point: metadata.EntryPoint, origin: str) -> object:
    try:
        return entry_point.load()
    except Exception as error:  # any failure of foreign code is the package's to fix
        raise ConfigError(
            f"connector {entry_point.name} = {entry_point.value} ({origin}) cannot be "
            f"loaded: {type(error).__name__}: {error}"
        ) from error


def _check(candidate: object, type_: str, origin: str) -> TargetConnector[Any]:
    """A foreign entry point is trusted only once it is what it claims to be."""
    from_where = f" ({origin})" if origin else ""
    if not isinstance(candidate, TargetConnector):
        raise ConfigError(
            f"connector target.{type_}{from_where} is not an orgsync.connectors."
            f"TargetConnector but {type(candidate).__name__}"
        )
    if candidate.type != type_:
        raise ConfigError(f"connector target.{type_}{from_where} describes type {candidate.type!r}")
    from orgsync.config import TargetConfig

    settings = candidate.settings
    if not (isinstance(settings, type) and issubclass(settings, TargetConfig)):
        raise ConfigError(
            f"connector target.{type_}{from_where}: settings is not a subclass of "
            "orgsync.config.TargetConfig"
        )
    return candidate


def retry_settings(config: TargetConfig) -> RetrySettings:
    """The retry policy a target's keys ask for (`max_attempts`, `max_retry_delay`)."""
    from orgsync.retrying import RetrySettings

    return RetrySettings(
        max_attempts=config.max_attempts, max_delay=config.max_retry_delay.total_seconds()
    )


def plaintext_warning(config: TargetConfig) -> None:
    """The warning SPEC asks for when a target is reached without TLS."""
    if config.base_url.startswith("http://"):
        import structlog

        structlog.get_logger("orgsync.factories").warning(
            "target.plaintext", target=config.name, base_url=config.base_url
        )
