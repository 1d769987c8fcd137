"""The only place that configures structlog: logs go to stderr, JSON unless on a terminal.

structlog is configured when it is first imported, not before: importing it (and the
asyncio it imports) is a good part of a command's start-up, and a command that logs
nothing on its path (`validate --offline`, `--help`) never needs it. Every module that
logs imports structlog, so it is configured before anything can log.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.abc import Loader, MetaPathFinder

    import structlog
else:
    # importlib.abc imports importlib.resources (tempfile, shutil, random...), a part of
    # `validate --offline`'s start-up; the import system needs only the methods.
    Loader = MetaPathFinder = object

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
"""The standard library's logging levels (`logging.DEBUG`...), without importing it: a
command that logs nothing (`validate --offline`) never loads it."""


class _Stderr:
    """Whatever `sys.stderr` is at the moment of writing, not when logging was set up:
    progress bars on a terminal swap it for a proxy that prints log lines above them."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Human-readable lines on a TTY, one JSON object per line otherwise
    (reference "Output and logs");
    `json` True or False forces one (`--log-format`). Now if structlog is imported
    already, else right after its import."""
    for finder in [f for f in sys.meta_path if isinstance(f, _ConfigureOnImport)]:
        sys.meta_path.remove(finder)
    if "structlog" in sys.modules:
        _configure(level, json)
    else:
        sys.meta_path.insert(0, _ConfigureOnImport(level, json))


class _ConfigureOnImport(MetaPathFinder):
    """Finds structlog as the other finders do, and configures it once it is loaded."""

    def __init__(self, level: str, json: bool | None) -> None:
        self.level = level
        self.json = json

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "structlog":
            return None
        sys.meta_path.remove(self)  # once, and not while it looks for structlog itself
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenConfigure(spec.loader, self.level, self.json)
        return spec


class _ThenConfigure(Loader):
    def __init__(self, inner: Loader, level: str, json: bool | None) -> None:
        self.inner = inner
        self.level = level
        self.json = json

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _configure(self.level, self.json)


def _inert(_logger: object, _name: str, event: dict[str, object]) -> dict[str, object]:
    """Escape control characters in the text values of a line written to a terminal.

    Log values carry text others control (a group's name from the IdP, a server's error
    message), and the console renderer writes a string as it is: an ESC sequence in a
    group name erased the lines above it on the operator's terminal, as it did in a plan
    before `core.text.visible`. JSON lines escape them already. A traceback keeps its
    line breaks."""
    from orgsync.core.text import visible

    for key, value in event.items():
        if isinstance(value, str) and key != "exception":
            event[key] = visible(value)
    return event


def _configure(level: str, json: bool | None) -> None:
    import structlog

    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        # Named, so that the lines are the same whether or not rich is installed.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *(() if as_json else (_inert,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, _LEVELS["info"])),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
