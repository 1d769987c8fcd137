"""`orgsync emulate VENDOR`: serve one vendor's fake to rehearse against (`orgsync.emulate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orgsync.cli._common import count

NAME = "emulate"
HELP = "serve an emulated organization to rehearse against"


def _listen(text: str) -> tuple[str, int]:
    from orgsync.emulate import parse_listen  # the emulators load only when asked for

    try:
        return parse_listen(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_listen.__name__ = "HOST:PORT"  # argparse names the converter in its messages


def add_arguments(emulate: argparse.ArgumentParser) -> None:
    emulate.add_argument(
        "kind",
        choices=["openai", "keycard", "okta", "entra", "google"],
        help="which organization API (openai, keycard) or directory (okta, entra, google)",
    )
    emulate.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to serve on (default: loopback, a free port)",
    )
    emulate.add_argument(
        "--people",
        type=count(0),
        default=0,
        metavar="N",
        help="add N members person1..N@example.com to the organization (to a directory: "
        "people in openai-users)",
    )
    emulate.add_argument(
        "--seed-file",
        type=Path,
        metavar="F",
        help="the organization's members, invitations and groups, or the directory's people "
        "and groups in the file source's format (JSON, README: Rehearse) instead of the "
        "demo's sample",
    )


def run(args: argparse.Namespace) -> int:
    from orgsync.emulate import run_emulator

    host, port = args.listen
    return run_emulator(
        args.kind, host=host, port=port, people=args.people, seed_file=args.seed_file
    )
