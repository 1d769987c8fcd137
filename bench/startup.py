"""Start-up cost of the `orgsync` command: `--help` and `validate --offline`, fresh processes.

Each sample is a new process of the installed `orgsync` command (the console script
beside the interpreter, which imports `orgsync.cli` and calls `main`; `python -m orgsync`
where there is none, which also pays for `runpy`), so nothing is cached in memory between
samples beyond the operating system's page cache (the first, cold sample, which also
compiles the bytecode, is discarded). Prints, per command, the median wall time and the
median CPU time (user + system, from `wait4`) of N samples, and the ratio of the wall
median to the issue's goal (`--help` 0.2 s, `validate --offline` on the demo's
configuration 0.3 s). The machine is shared: the CPU figure is the steadier one when
other work runs, the wall figure is what an administrator waits.

The same medians follow for a bare interpreter and for the floor of `validate`: importing
what no configuration can be read without (pydantic, as far as building a model imports
it: `pydantic.types`, with `secrets` and OpenSSL's hashes), which no change to orgsync
can lower.

With `--instructions` (needs valgrind), each command runs once more under callgrind and
the instructions it executed are printed: a figure the machine's load does not move, for
comparing two versions on a busy machine (hash randomisation is pinned,
PYTHONHASHSEED=0, so that one version gives one figure).

usage: .venv/bin/python bench/startup.py [N] [--instructions]   (default 15)
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orgsync.demo import DEMO_KEY, DEMO_KEY_ENV, demo_config

GOALS = {"--help": 0.2, "validate --offline": 0.3}
# An installed orgsync has its bytecode compiled: without .pyc files every sample would
# measure the compiler. The cold sample writes them.
ENVIRON = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    DEMO_KEY_ENV: DEMO_KEY,
}


def sample(command: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh process running `command`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=ENVIRON,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        error = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{' '.join(command)} exited {code}: {error}")
    if process.stderr:
        process.stderr.close()
    process.returncode = code
    return wall, usage.ru_utime + usage.ru_stime


FLOOR = (
    "from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, "
    "ValidationError, field_validator, model_validator"
)
"""What reading any configuration imports before orgsync's own code runs (importing
pydantic.fields, which creating a model does, imports pydantic.types). orgsync reads no
importlib.metadata unless a package declares a connector or pydantic plugins are on."""


def instructions(command: list[str], cwd: Path) -> int | None:
    """Instructions `command` executes, counted by valgrind's callgrind; None without it."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        cwd=cwd,
        env={**ENVIRON, "PYTHONHASHSEED": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    return int(match.group(1)) if match else None


def _load() -> str:
    """The load averages: on a shared machine the wall figures mean little without them."""
    return " ".join(f"{figure:.1f}" for figure in os.getloadavg())


def main(samples: int, *, count: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = demo_config(folder, "http://127.0.0.1:9/v1")  # --offline: never contacted
        script = Path(sys.executable).with_name("orgsync")
        orgsync = [str(script)] if script.is_file() else [sys.executable, "-m", "orgsync"]
        commands = {
            "--help": [*orgsync, "--help"],
            "validate --offline": [
                *orgsync,
                "validate",
                "--offline",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ],
        }
        print(f"median of {samples} fresh processes ({' '.join(orgsync)}), load {_load()}")
        commands["(bare interpreter)"] = [sys.executable, "-c", "pass"]
        commands["(pydantic floor)"] = [sys.executable, "-c", FLOOR]
        for name, command in commands.items():
            sample(command, folder)  # cold: page cache, .pyc files
            walls, cpus = zip(*(sample(command, folder) for _ in range(samples)), strict=True)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            goal = GOALS.get(name)
            label = name if name.startswith("(") else f"orgsync {name}"
            line = f"{label:<28} wall {wall:.3f} s  cpu {cpu:.3f} s"
            if goal is not None:
                line += f"   goal {goal:.1f} s: wall {wall / goal:.2f}x, cpu {cpu / goal:.2f}x"
            print(line)
        print(f"load {_load()} at the end")
        if not count:
            return
        for name, command in commands.items():
            counted = instructions(command, folder)
            if counted is None:
                print("instructions: valgrind is not installed")
                return
            label = name if name.startswith("(") else f"orgsync {name}"
            print(f"{label:<28} {counted / 1e6:,.0f} M instructions")


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if a != "--instructions"]
    main(int(numbers[0]) if numbers else 15, count="--instructions" in sys.argv[1:])
