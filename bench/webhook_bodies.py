"""The cost of the depth pre-scan that guards `json.loads` on webhook bodies.

Before `/webhooks/entra` can check `clientState` it must parse the body, so anyone can
make the daemon scan 1 MiB (`MAX_BODY`). For bodies shaped to be hard on each step of the
scan (escapes, quotes, brackets, deep balanced nesting) and for plain JSON, prints:
- the scan's time per MiB, and its ratio to `json.loads` on the same body (where that
  parses);
- time(1 MiB) / time(256 KiB): about 4 when the scan is linear (a quadratic one: 16);
  the machine's caches and allocator add noise, so read it as 'nearer 4 than 16'.

usage: .venv/bin/python bench/webhook_bodies.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from orgsync.daemon.webhooks import MAX_BODY, nesting_problem

SHAPES: dict[str, Callable[[int], bytes]] = {
    "plain JSON (Graph notifications)": lambda size: json.dumps(
        {
            "value": [
                {"clientState": "s", "resource": f"Users/{i:06}", "resourceData": {"id": "x"}}
                for i in range(size // 80)
            ]
        }
    ).encode(),
    "open brackets": lambda size: b"[" * size,
    "balanced deep nesting": lambda size: b"[" * (size // 2) + b"]" * (size // 2),
    "sibling arrays": lambda size: b"[" + b"[]," * (size // 3) + b"[]]",
    "quotes only": lambda size: b'"' * size,
    "escaped quotes": lambda size: b'"' + b'\\"' * (size // 2),
    "quoted brackets": lambda size: b'"[' * (size // 2),
    "backslashes": lambda size: b"\\" * size,
}


def best_of(runs: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    print(f"{'body':36} {'scan ms/MiB':>12} {'scan/loads':>11} {'1MiB/256KiB':>12}")
    for name, make in SHAPES.items():
        body, quarter = make(MAX_BODY), make(MAX_BODY // 4)
        scan = best_of(7, lambda body=body: nesting_problem(body))  # type: ignore[misc]
        scan_quarter = best_of(7, lambda quarter=quarter: nesting_problem(quarter))  # type: ignore[misc]
        try:
            json.loads(body)
            loads = best_of(7, lambda body=body: json.loads(body))  # type: ignore[misc]
            versus = f"{scan / loads:11.2f}"
        except (ValueError, RecursionError):
            versus = f"{'(invalid)':>11}"
        per_mib = scan * 1000 * (1024 * 1024) / len(body)
        print(f"{name:36} {per_mib:12.1f} {versus} {scan / max(scan_quarter, 1e-9):12.1f}")


if __name__ == "__main__":
    main()
