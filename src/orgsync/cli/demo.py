"""`orgsync demo`: a complete sync against a local emulator (`orgsync.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = "a complete sync against a local emulator"


def add_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--json", action="store_true", help="print plans as JSON")
    demo.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="leave the demo's configuration, directory file and state database in DIR "
        "(new or empty) and print the commands to go on with",
    )


def run(args: argparse.Namespace) -> int:
    from orgsync.demo import run_demo

    return run_demo(as_json=args.json, keep=args.keep)
