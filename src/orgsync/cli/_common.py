"""What every command module shares: the usage-error parser, the global options, exit
codes, number parsing, loading the configuration, the state database for reading
commands, and stopping a run on a signal.

Stdlib only at import time: `orgsync --help` builds every command's parser.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from orgsync.config import Config
    from orgsync.store import StateStore

EXIT_USAGE = 64
"""BSD sysexits EX_USAGE: a mistyped command line is not an error of the run (1) and must
never read as "changes pending" (2) to a script."""

EXIT_CODES = """\
exit codes:
  0   nothing left to do
  1   error: bad configuration, unreachable source or target, failed operations
  2   changes pending (dry run)
  3   a safety guard held operations back, the rest was applied (--allow-removals N,
      --allow-additions N lift it for one run)
  64  usage error: unknown command or option, bad option value; nothing was read or changed
"""


class UsageParser(argparse.ArgumentParser):
    """argparse with usage errors on exit code 64 instead of argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: usage error: {message}\n")


MAX_COUNT = 1_000_000_000
"""The largest number an option takes: `runs --limit 99999999999999999999` reached
SQLite, which cannot hold it, and ended in a traceback with exit 1 instead of a usage
error; no organization, history or removal count comes near it."""


def count(minimum: int) -> Callable[[str], int]:
    """An argument type: a whole number of at least `minimum` and at most MAX_COUNT."""

    def parse(text: str) -> int:
        # ASCII digits only: int() would also take "1_000", "+5" and other scripts' digits.
        if re.fullmatch(r"-?[0-9]+", text) is None:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number")
        if len(text.lstrip("-0")) > len(str(MAX_COUNT)):  # before int(): 4,300 digits
            bound = f"{minimum} or more" if text.startswith("-") else f"at most {MAX_COUNT:,}"
            raise argparse.ArgumentTypeError(f"must be {bound}")
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        if value > MAX_COUNT:
            raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT:,}")
        return value

    parse.__name__ = "number"  # argparse names the converter in its messages
    return parse


def global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--config, --quiet, -v, --log-format and --log-level, accepted before and after the
    command (docs/reference.md "Commands").

    On the command's parser the defaults are suppressed, so a value given before the
    command is not overwritten by the command's own default.
    """
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="PATH",
        help="configuration file (default: $ORGSYNC_CONFIG, else ./orgsync.toml)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help="stderr log level (default: info; warning for demo, with --quiet, and for "
        "sync on a terminal, where progress bars show what happens)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="nothing on stdout on success (exit codes unchanged; when a run fails or a "
        "guard holds operations, exit 1 or 3, the report goes to stderr); no progress",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logs on stderr (same as --log-level debug)",
    )
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default=default,
        help="stderr log lines (default: console on a terminal, json otherwise)",
    )


def load(args: argparse.Namespace) -> Config:
    """The configuration `--config` (or its default) names, refused whole when wrong."""
    from orgsync.config import default_config_path, load_config

    return load_config(args.config or default_config_path())


def open_state(config: Config) -> StateStore | None:
    """The state database for reading commands, which never create one (None: none yet)."""
    from orgsync.factories import open_state_store
    from orgsync.store import NoStateDatabase

    try:
        store = open_state_store(config.state, os.environ, create=False)
    except NoStateDatabase as missing:
        print(f"orgsync: {missing}", file=sys.stderr)
        return None
    behind = store.behind()
    if behind is not None:
        # On stderr: `runs --json` and `status --json` stay parseable.
        print(f"orgsync: warning: {behind.summary}", file=sys.stderr)
    return store


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""SIGHUP too: the terminal a sync runs in went away (an SSH session dropped), which by
default ended the process on the spot, mid-apply included."""


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM, SIGINT or SIGHUP ends a sync cleanly: a read in flight ends at once, an
    apply finishes its calls in flight and starts no more, and the run is recorded
    `interrupted`. A second signal ends the process at once (the journal makes it safe)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        import structlog

        structlog.get_logger("orgsync.cli").warning(
            "sync.stopping", signal=signal.Signals(signum).name
        )
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers (an embedding caller's thread)
        return
    previous = {
        sig: signal.signal(sig, on_signal)
        for sig in STOP_SIGNALS
        # Under nohup SIGHUP is ignored on purpose: the sync must outlive its terminal.
        if not (sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
