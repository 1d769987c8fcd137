"""`orgsync daemon`: the long-running service (`orgsync.daemon`), started and nothing more."""

from __future__ import annotations

import argparse

from orgsync.cli._common import load

NAME = "daemon"
HELP = "serve: scheduled reconciliation, webhooks, health and metrics"


def add_arguments(daemon: argparse.ArgumentParser) -> None:
    del daemon  # the daemon takes its settings from the configuration only


def run(args: argparse.Namespace) -> int:
    from orgsync.daemon import run_daemon

    return run_daemon(load(args))
