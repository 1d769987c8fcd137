"""A full sync against the OpenAI emulator: API calls against the minimum, time against the
rate-limit lower bound.

The organization starts with half the people as members (some with the wrong role) and the
rest to be invited; the emulator enforces a rate limit of RATE requests per second and
orgsync is configured with `requests_per_second` = RATE x CLIENT (CLIENT 1.2: a client
configured above the server's limit, which must adapt). Prints:
- requests made / minimum requests (every list page once, one call per operation);
- elapsed / ((minimum - burst) / rate), the rate-limit lower bound: the time the fewest
  requests possible take at the server's rate (its bucket starts full);
- 429 answers received (a client-side limiter that works keeps this at zero).

usage: .venv/bin/python bench/apply_calls.py [PEOPLE] [RATE] [CLIENT]
       (default 400 people, 50 req/s, client 1.0)
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

from orgsync.config import load_config
from orgsync.emulators.faults import Faults
from orgsync.emulators.openai_admin import OpenAIEmulator
from orgsync.engine import Engine, RunOptions
from orgsync.logs import configure_logging

KEY = "sk-admin-bench-0000000000000000000000000000000000000000"


def main(people: int, rate: float, client: float) -> None:
    configure_logging("warning")
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
[state]
path = "state.db"
"""
        )
        engine = Engine(load_config(folder / "orgsync.toml"), environ={"BENCH_KEY": KEY})
        emulator.faults = Faults(rate_limit=rate)
        started = time.perf_counter()
        (result,) = engine.run(RunOptions(dry_run=False))
        elapsed = time.perf_counter() - started
        engine.close()
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
        print(f"elapsed {elapsed:.1f} s / rate-limit bound {bound:.1f} s = {elapsed / bound:.2f}")
        print(f"429 answers {limited}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 400,
        float(args[1]) if len(args) > 1 else 50.0,
        float(args[2]) if len(args) > 2 else 1.0,
    )
