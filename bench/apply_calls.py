"""A full sync against the OpenAI emulator: API calls against the minimum, time against the
rate-limit lower bound.

The organization starts with half the people as members (some with the wrong role) and the
rest to be invited; the emulator enforces a rate limit of RATE requests per second and
orgsync is configured with `requests_per_second` = RATE x CLIENT (CLIENT 1.2: a client
configured above the server's limit, which must adapt). Prints:
- requests made / minimum requests (every list page once, one call per operation);
- elapsed / ((minimum - burst) / rate), the rate-limit lower bound: the time the fewest
  requests possible take at the server's rate (its bucket starts full); the elapsed time
  includes reading and planning, which the bound does not count;
- 429 answers received (a client-side limiter that works keeps them to a few).

With a third argument the run reports progress as `orgsync sync` does: `events` (the
structlog progress events off a terminal) or `bars` (rich bars, drawn as on a terminal
into /dev/null); `none` (default) reports nothing. Compare the elapsed times at a high
RATE, where the rate limit does not hide the cost, to see what progress costs the apply.

usage: .venv/bin/python bench/apply_calls.py [PEOPLE] [RATE] [none|events|bars] [CLIENT]
       (default 400 people, 50 req/s, none, client 1.0)
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path

import _common
from orgsync.config import load_config
from orgsync.engine import Engine
from orgsync.logs import configure_logging
from orgsync.progress import ProgressBars, ProgressEvents
from orgsync.results import RunOptions
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator

KEY = _common.KEY


def _reporter(mode: str) -> ProgressBars | ProgressEvents | None:
    if mode == "events":
        return ProgressEvents()
    if mode == "bars":
        from rich.console import Console

        screen = Console(file=open(os.devnull, "w"), force_terminal=True, width=120)  # noqa: SIM115
        return ProgressBars(screen)
    return None


def main(people: int, rate: float, mode: str = "none", client: float = 1.0) -> None:
    # Progress events are info lines: at "info" they are rendered (into /dev/null, as
    # journald would take them), apply.op.done lines too, in every mode alike, so that
    # the modes differ by their progress reporting only.
    configure_logging("info", json=True)
    with tempfile.TemporaryDirectory() as tmp, OpenAIEmulator(api_key=KEY) as emulator:
        folder = Path(tmp)
        document = {
            "people": [{"id": f"p{i}", "email": f"p{i}@example.com"} for i in range(people)],
            "groups": [
                {"id": "u", "name": "openai-users", "members": [f"p{i}" for i in range(people)]},
                {
                    "id": "o",
                    "name": "openai-owners",
                    "members": [f"p{i}" for i in range(0, people, 50)],
                },
            ],
        }
        for i in range(0, people, 2):
            emulator.state.add_user(f"p{i}@example.com", "reader")
        (folder / "directory.json").write_text(json.dumps(document))
        (folder / "orgsync.toml").write_text(
            f"""
[source]
type = "file"
path = "directory.json"
[[targets]]
name = "bench"
type = "openai"
base_url = "{emulator.start()}"
api_key_env = "BENCH_KEY"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
requests_per_second = {rate * client}
max_concurrency = 4
[[targets.roles]]
group = "openai-owners"
role = "owner"
[safety]
max_removals = 1000
max_removal_ratio = 1.0
max_privilege_grants = 1000
[state]
path = "state.db"
"""
        )
        progress = _reporter(mode)
        engine = Engine(
            load_config(folder / "orgsync.toml"), environ={"BENCH_KEY": KEY}, progress=progress
        )
        emulator.faults = Faults(rate_limit=rate)
        before = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = before.ru_utime + before.ru_stime
        started = time.perf_counter()
        with open(os.devnull, "w") as devnull, redirect_stderr(devnull):
            (result,) = engine.run(RunOptions(dry_run=False))
        elapsed = time.perf_counter() - started
        engine.close()
        if progress is not None:
            progress.close()
        assert result.exit_code == 0, result.error
        assert result.plan is not None
        requests = emulator.requests
        members = people // 2 + 1  # the key owner too
        reads = math.ceil(members / 100) + 1 + 1 + 1  # users pages, invites, roles, keys
        reads += 1  # groups (none)
        writes = len(result.plan.operations)
        minimum = reads + writes
        limited = sum(1 for r in requests if r.injected_fault == "rate_limit")
        print(
            f"people {people}, operations {writes}, rate limit {rate:g} req/s, "
            f"client configured at {rate * client:g} req/s"
        )
        print(f"requests {len(requests)} / minimum {minimum} = {len(requests) / minimum:.2f}")
        # The emulator's bucket starts full (one second's worth), so that many go free.
        bound = max(0.0, minimum - rate) / rate
        ratio = f"{elapsed / bound:.2f}" if bound else "-"
        print(f"elapsed {elapsed:.1f} s / rate-limit bound {bound:.1f} s = {ratio}")
        print(f"429 answers {limited}")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu_before
        print(
            f"progress {mode}: elapsed {elapsed:.2f} s, process CPU {cpu:.2f} s (the emulator's "
            f"included), max RSS {usage.ru_maxrss / 1024:.0f} MiB"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 400,
        float(args[1]) if len(args) > 1 else 50.0,
        args[2] if len(args) > 2 else "none",
        float(args[3]) if len(args) > 3 else 1.0,
    )
