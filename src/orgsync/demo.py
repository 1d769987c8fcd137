"""`orgsync demo`: a rehearsal that needs no account anywhere.

`demo` starts the OpenAI Admin API emulator on loopback with a sample organization,
writes a sample directory and configuration into a temporary folder (or `--keep DIR`),
runs a dry run, a sync and a second dry run through the real engine, prints all three,
and stops what it started; with `--keep` it leaves the folder and says what to type next.
(`orgsync emulate`, in `orgsync.emulate`, serves the same organization until Ctrl-C.)
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orgsync.config import load_config
from orgsync.core.errors import OrgsyncError
from orgsync.emulate import (
    DEMO_KEY,
    DEMO_KEY_ENV,
    DEMO_KEY_OWNER,
    sample_directory,
    seed_organization,
)
from orgsync.engine import Engine
from orgsync.report import Style, render_results, sync_json
from orgsync.results import RunOptions, TargetResult, worst_exit_code
from orgsync.testing.openai import OpenAIEmulator

__all__ = ["DEMO_KEY", "DEMO_KEY_ENV", "demo_config", "run_demo"]


def demo_config(folder: Path, base_url: str) -> Path:
    (folder / "directory.json").write_text(json.dumps(sample_directory(), indent=2))
    path = folder / "orgsync.toml"
    path.write_text(
        f"""
[source]
type = "file"
path = "directory.json"

[[targets]]
name = "openai-demo"
type = "openai"
base_url = "{base_url}"
api_key_env = "{DEMO_KEY_ENV}"
allow_plaintext = true      # the emulator listens on loopback without TLS
default_role = "reader"
scope_groups = ["openai-*"]
[[targets.roles]]
group = "openai-owners"
role = "owner"
[[targets.groups]]          # IdP teams mirrored as groups holding a role
source = "team-*"
roles = ["ml-engineer"]

[safety]
max_removals = 5
max_removal_ratio = 0.5
protected = ["breakglass@example.com"]

[state]
path = "orgsync.db"
""",
        encoding="utf-8",
    )
    return path


def _show(title: str, results: list[TargetResult], *, dry_run: bool, as_json: bool) -> None:
    print(f"\n=== {title} ===")
    if as_json:
        print(json.dumps(sync_json(results, dry_run=dry_run), indent=2))
    else:
        print(render_results(results, dry_run=dry_run, style=Style.for_stream(sys.stdout)))


@contextmanager
def _folder(keep: Path | None) -> Iterator[Path]:
    """A temporary folder, or `keep` (created, and refused if it holds a demo already)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="orgsync-demo-") as tmp:
            yield Path(tmp)
        return
    taken = [n for n in ("orgsync.toml", "directory.json", "orgsync.db") if (keep / n).exists()]
    if taken:
        raise OrgsyncError(
            f"--keep {keep}: already holds {', '.join(taken)}; nothing was overwritten "
            "(give an empty or new folder)"
        )
    try:
        keep.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OrgsyncError(f"--keep {keep}: cannot create the folder: {error.strerror}") from None
    yield keep.resolve()


def run_demo(*, as_json: bool = False, keep: Path | None = None) -> int:
    """Dry run, sync, dry run again; exit 0 when the organization ends in step."""
    with (
        _folder(keep) as folder,
        OpenAIEmulator(api_key=DEMO_KEY, key_owner_email=DEMO_KEY_OWNER) as emulator,
    ):
        tmp = str(folder)
        seed_organization(emulator)
        config = load_config(demo_config(folder, emulator.start()))
        engine = Engine(config, environ={DEMO_KEY_ENV: DEMO_KEY})
        try:
            print(f"orgsync demo: OpenAI Admin API emulator on {emulator.start()}")
            kept = "kept afterwards" if keep is not None else "removed afterwards"
            print(f"directory and state in {tmp} ({kept})")
            before = engine.run(RunOptions(dry_run=True))
            _show("1. dry run (changes nothing)", before, dry_run=True, as_json=as_json)
            applied = engine.run(RunOptions(dry_run=False))
            _show("2. sync", applied, dry_run=False, as_json=as_json)
            after = engine.run(RunOptions(dry_run=True))
            _show("3. dry run again", after, dry_run=True, as_json=as_json)
        finally:
            engine.close()
        print("\n=== the organization now ===")
        for user in sorted(emulator.state.users(), key=lambda u: str(u.get("email"))):
            print(f"  member   {user.get('email')!s:<28} {user.get('role')}")
        for invite in sorted(emulator.state.invites(), key=lambda i: str(i.get("email"))):
            if invite.get("status") == "pending":
                print(f"  invited  {invite.get('email')!s:<28} {invite.get('role')}")
        emails = {u["id"]: u.get("email") for u in emulator.state.users()}
        for group in emulator.state.groups():
            members = ", ".join(sorted(str(emails.get(m)) for m in group["members"]))
            print(f"  group    {group['name']!s:<28} members: {members or '-'}")
        if keep is not None:
            _print_next_steps(folder, emulator.start())
    return worst_exit_code([r.exit_code for r in after])


def _print_next_steps(folder: Path, base_url: str) -> None:
    listen = base_url.removeprefix("http://").removesuffix("/v1")
    config = shlex.quote(str(folder / "orgsync.toml"))
    print(f"\n=== kept in {folder} ===")
    print("  orgsync.toml     the configuration (target openai-demo on the emulator)")
    print("  directory.json   the file source: edit it to try your own rules (README: Rehearse)")
    print("  orgsync.db       the state database: whom orgsync links, invited and owns")
    print("\nNext: start the emulator again, with the organization the demo started from:")
    print(f"  orgsync emulate openai --listen {listen}")
    print("and in another terminal:")
    print(f"  export {DEMO_KEY_ENV}={DEMO_KEY}")
    print(f"  orgsync --config {config} sync --dry-run")
    print(f"  orgsync --config {config} sync")
    print(f"  orgsync --config {config} status")
