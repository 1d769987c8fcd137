"""Requests per SCIM scenario against each real provider, against the minimum (issue 11).

Runs the scenarios of `tests/targets/scim_scenarios.py` (fresh provisioning, deactivation,
leaving, moving, rename, a second dry run; a user created by someone else throughout)
with the real `orgsync` command against scim2-server, SCIMMY, django-scim2 and
scim2-server answering 501 to filtered removal and displayName replace, each behind the
recording proxy, and prints per step: requests sent, the minimum (defined in
`tests/targets/scim_scenarios.py`: the two list pages plus one request per resource
change), their ratio, and the refusals among the requests (501 and 4xx). Then the request
forms each provider ended with (`orgsync status --json`).

usage: .venv/bin/python bench/scim_scenarios.py [--only scim2-server,scimmy,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.targets import scim_scenarios as scenarios
from tests.targets.cli import Rig, scim_target
from tests.targets.scim_servers import (
    TOKEN,
    Scim2Server,
    ScimProxy,
    ensure_scimmy_installed,
    start_django_scim,
    start_scimmy,
)


def run(name: str, upstream: str, folder: Path) -> tuple[int, int, dict[str, str]]:
    """Print one provider's rows; returns (requests, minimum, learned forms)."""
    scenarios.create_foreign_user(upstream, TOKEN)
    proxy = ScimProxy(upstream, quirks=scenarios.QUIRKS.get(name, frozenset()))
    total = minimum = 0
    try:
        rig = Rig(folder, [scim_target(proxy.url, on_removal="suspend")])
        for step in scenarios.steps():
            before = len(proxy.requests)
            rig.write(step.document)
            code, plans = rig.plans("--dry-run") if step.dry_run else rig.plans()
            if code != 0 or scenarios.ops_of(plans["scim-test"]) != sorted(step.expected):
                raise SystemExit(f"{name} {step.name}: exit {code}, not the expected plan")
            sent = proxy.requests[before:]
            refused = sum(1 for r in sent if r.status is not None and r.status >= 400)
            count = len(sent)
            total, minimum = total + count, minimum + step.minimum
            print(
                f"{name:<22} {step.name:<11} {count:>8} {step.minimum:>8} "
                f"{count / step.minimum:>6.2f} {refused:>8}"
            )
        status = rig.orgsync("status", "--json")
        (entry,) = json.loads(status.stdout)
        learned = {f["change"]: f"{f['form']} ({f['reason']})" for f in entry["learned_forms"]}
    finally:
        proxy.stop()
    print(f"{name:<22} {'all':<11} {total:>8} {minimum:>8} {total / minimum:>6.2f}")
    return total, minimum, learned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(scenarios.PROVIDERS))
    chosen = [p for p in parser.parse_args().only.split(",") if p]
    unknown = set(chosen) - set(scenarios.PROVIDERS)
    if unknown:
        raise SystemExit(f"unknown providers {sorted(unknown)}; known: {scenarios.PROVIDERS}")
    ensure_scimmy_installed()
    print(
        f"{'provider':<22} {'step':<11} {'requests':>8} {'minimum':>8} {'ratio':>6} {'refused':>8}"
    )
    learned: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scim2 = Scim2Server.start(root / "scim2-server-process")
        try:
            for name in chosen:
                folder = root / name.replace("+", "-")
                folder.mkdir()
                if name.startswith("scim2-server"):
                    learned[name] = run(name, scim2.tenant(), folder)[2]
                    continue
                start = start_scimmy if name == "scimmy" else start_django_scim
                server = start(folder / "server")
                try:
                    learned[name] = run(name, server.url, folder)[2]
                finally:
                    server.stop()
        finally:
            scim2.stop()
    print("\nrequest forms learned:")
    for name, forms in learned.items():
        print(f"  {name}:")
        for change, form in sorted(forms.items()):
            print(f"    {change:<15} {form}")


if __name__ == "__main__":
    main()
