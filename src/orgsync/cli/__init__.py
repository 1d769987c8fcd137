"""The `orgsync` command: one module per command on a shared parser (docs/reference.md
"Commands", "Exit codes").

`main` parses (`_parser`: the global options and each command module's own), refuses
what argparse cannot express, sets up logging and runs the command's module. Human
output goes to stdout, logs to stderr. Exit codes: 0 nothing left to do, 1 error, 2
changes pending (dry run), 3 held by a safety guard, 64 usage error (nothing was read or
changed).

Everything beyond the standard library is imported by the command that needs it:
`orgsync --help` must not pay for pydantic, the connectors, the HTTP client, SQLite
helpers and structlog (docs/reference.md "Output and logs").
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence

from orgsync.cli._common import EXIT_USAGE
from orgsync.core.errors import EXIT_ERROR, OrgsyncError, UsageError

__all__ = ["EXIT_USAGE", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    # pydantic looks for plugins of its own in every installed package's metadata when the
    # first model is built (a sixth of `validate --offline`'s start-up, bench/startup.py),
    # and a plugin would see every value orgsync validates: the configuration and each
    # API response, people's addresses among them. orgsync uses none; an administrator
    # who wants one sets PYDANTIC_DISABLE_PLUGINS (empty: load them all).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from orgsync.cli._parser import build_parser, check_usage

    args = build_parser(lazy=True).parse_args(argv)
    check_usage(args)
    _without_plugin_lookup()
    from orgsync.logs import configure_logging

    configure_logging(_log_level(args), json=_log_json(args))
    try:
        if not args.quiet:
            code = _command(args)
        else:
            from orgsync.progress import quiet_stdout

            with quiet_stdout() as quiet:
                code = quiet.ended(_command(args))
        if sys.stdout is not None:  # None: started with descriptor 1 closed (a daemon)
            sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_closed()
    return code


def _stdout_closed() -> int:
    """The reader of stdout went away (`orgsync ... | head`): one line, not a traceback,
    and nothing more written there (the interpreter's last flush would fail again)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    print(
        "orgsync: stdout was closed before the output was written (a pipe's reader exited)",
        file=sys.stderr,
    )
    return EXIT_ERROR


_PLUGINS_OFF = ("__all__", "1", "true")
"""The PYDANTIC_DISABLE_PLUGINS values with which pydantic looks for no plugin at all."""
_LOADER = "pydantic.plugin._loader"


def _without_plugin_lookup() -> None:
    """Stand in for pydantic's plugin loader while plugins are off.

    pydantic imports its loader when it builds the first validator, and the loader
    imports importlib.metadata (and the email package) at the top, to find plugins it
    then does not look for when PYDANTIC_DISABLE_PLUGINS turns them off: a tenth of
    `validate --offline` (bench/startup.py). The stand-in answers as the loader does,
    no plugins, and should the setting change, hands over to the real loader.
    """
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS") not in _PLUGINS_OFF or _LOADER in sys.modules:
        return
    import types

    stand_in = types.ModuleType(_LOADER, "pydantic's plugin loader while plugins are off")

    def real_loader() -> types.ModuleType:
        import importlib

        if sys.modules.get(_LOADER) is stand_in:
            del sys.modules[_LOADER]
        return importlib.import_module(_LOADER)

    def get_plugins() -> Iterable[object]:
        if os.environ.get("PYDANTIC_DISABLE_PLUGINS") in _PLUGINS_OFF:
            return ()
        plugins: Iterable[object] = real_loader().get_plugins()
        return plugins

    def anything_else(name: str) -> object:
        # A pydantic release that asks its loader for another name gets the real one,
        # rather than an ImportError from a stand-in written for an older release. The
        # import system's own probes (__path__ and the like) are not such a request.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real_loader(), name)

    stand_in.get_plugins = get_plugins  # type: ignore[attr-defined]
    stand_in.__getattr__ = anything_else  # type: ignore[method-assign]
    sys.modules[_LOADER] = stand_in


def _log_level(args: argparse.Namespace) -> str:
    if args.log_level:
        return str(args.log_level)
    if args.verbose:
        return "debug"
    if args.quiet or args.command in ("demo", "emulate"):
        return "warning"
    if args.command == "sync" and sys.stderr.isatty() and _log_json(args) is not True:
        # A person at a terminal watches the bars and the plan; a line per operation
        # would bury them (1,500 invitations, 1,500 lines). Journals and pipes keep info.
        return "warning"
    return "info"


def _log_json(args: argparse.Namespace) -> bool | None:
    return None if args.log_format is None else args.log_format == "json"


def _command(args: argparse.Namespace) -> int:
    from orgsync.cli._parser import COMMANDS

    try:
        return COMMANDS[args.command].run(args)
    except UsageError as error:
        print(f"orgsync: usage error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OrgsyncError as error:
        print(f"orgsync: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
