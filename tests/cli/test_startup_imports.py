"""Start-up stays cheap by what it imports, checked on the import graph (not on a timing).

`orgsync --help` must import no third-party library at all, and `validate --offline` none
of the connectors, HTTP client, LDAP, SQLite helpers or rich: each was a measurable part
of a command's start-up (bench/startup.py measures the time). Each check runs in a fresh
interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orgsync.demo import DEMO_KEY, DEMO_KEY_ENV, demo_config
from tests import cli

HEAVY = ("httpx", "httpcore", "ldap3", "sqlite_utils", "rich", "scim2_models", "jwt")
CONNECTORS = ("orgsync.targets", "orgsync.sources.okta", "orgsync.sources.ldap")

PROBE = """
import contextlib, io, json, sys
before = set(sys.modules)
{action}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def imported(action: str, *, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """The modules a fresh interpreter imports to perform `action`."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(action=action)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    names: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return names


def within(names: list[str], packages: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(n == p or n.startswith(f"{p}.") for p in packages)]


def test_help_imports_no_third_party_library(tmp_path: Path) -> None:
    action = (
        "from orgsync.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass"
    )
    names = imported(action, cwd=tmp_path)
    third_party = sorted(
        {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"orgsync"}
    )
    assert third_party == []
    # The command modules are read to build the parser; each imports the rest of orgsync
    # only when its command runs.
    commands = sorted(n for n in within(names, ("orgsync.cli",)) if n != "orgsync.cli")
    assert "orgsync.cli.sync" in commands
    assert sorted(set(within(names, ("orgsync",))) - set(commands)) == [
        "orgsync",
        "orgsync.cli",
        "orgsync.core",
        "orgsync.core.errors",
    ]


def test_validate_offline_imports_only_the_configured_connectors_description(
    tmp_path: Path,
) -> None:
    # The configuration's own type has to be read (its descriptor holds the keys' model);
    # its implementation, the HTTP stack and every other connector must stay unloaded.
    config = demo_config(tmp_path, "http://127.0.0.1:9/v1")
    action = (
        "from orgsync.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main(['validate', '--offline', '--config', {str(config)!r}])\n"
        "assert code == 0, code"
    )
    env = {"PATH": "/usr/bin:/bin", DEMO_KEY_ENV: DEMO_KEY}
    names = imported(action, cwd=tmp_path, env=env)
    assert within(names, HEAVY) == []
    described = {
        "orgsync.targets",
        "orgsync.targets._keys",  # the api_key pair of the openai model
        "orgsync.targets._shared_keys",
        "orgsync.targets.openai",
        "orgsync.targets.openai.connector",
    }
    assert sorted(set(within(names, CONNECTORS)) - described) == []
    assert "orgsync.engine" not in names
    assert "orgsync.sources.file" in names  # the probe did run the offline checks
    # Issue 13 start-up: nothing on this path logs, checks a plan, notifies or opens the
    # state database (there is none yet), so none of their modules is loaded.
    assert within(names, OFFLINE_UNUSED) == []


OFFLINE_UNUSED = (
    "structlog",
    "asyncio",
    "tenacity",
    "orgsync.core.plan",
    "orgsync.notify",
    "orgsync.retrying",
    "orgsync.store.state",
    "orgsync.store.journal",
    # Issue 13, second pass: the fast path checks every address of this file, the state
    # path holds no database yet, and nothing logs.
    "email_validator",
    "idna",
    "sqlite3",
    "orgsync.store.db",
    "orgsync.store.migrations",
    "logging",
    "orgsync.config_errors",  # the error path's
    "difflib",
    # Third pass: no package declares a connector, and pydantic looks for no plugin, so
    # nothing reads the installed packages' metadata.
    "importlib.metadata",
    "importlib.abc",
    "email",
    # Fourth pass: the group patterns are checked by `core.globs` without the rules engine,
    # and a connector's module names the ports' types for the type checker only.
    "orgsync.core.rules",
    "orgsync.core.ports",
    "orgsync.core.forms",
)
"""Loaded by `validate --offline` before issue 13, each a measurable part of its start-up."""


def test_logging_configured_before_structlog_is_imported_applies_on_import(
    tmp_path: Path,
) -> None:
    """`configure_logging` defers to structlog's import; what is logged then is formatted
    and filtered as configured, and a later configuration still replaces it."""
    action = (
        "from orgsync.logs import configure_logging\n"
        "configure_logging('warning', json=True)\n"
        "assert 'structlog' not in sys.modules\n"
        "import structlog\n"
        "log = structlog.get_logger('probe')\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stderr(out):\n"
        "    log.info('filtered')\n"
        "    log.warning('kept', n=1)\n"
        "    configure_logging('info', json=True)\n"
        "    log.info('now kept')\n"
        "lines = [json.loads(line) for line in out.getvalue().splitlines()]\n"
        "assert [(l['event'], l['level']) for l in lines] == "
        "[('kept', 'warning'), ('now kept', 'info')], lines\n"
        "assert lines[0]['n'] == 1\n"
        "assert not [f for f in sys.meta_path if type(f).__name__ == '_ConfigureOnImport']"
    )
    assert "structlog" in imported(action, cwd=tmp_path)


def test_structlog_goes_without_rich_yet_rich_still_imports(tmp_path: Path) -> None:
    """Only structlog's own attempt is refused; anything else importing rich gets it."""
    pytest.importorskip("rich")  # installed with the development tools (import-linter)
    action = (
        "import orgsync, structlog\n"
        "assert structlog.dev.rich is None\n"
        "assert 'rich' not in sys.modules\n"
        "import rich.console"
    )
    assert "rich.console" in imported(action, cwd=tmp_path)


SPY_PLUGIN = """
from pathlib import Path

class _Spy:
    def new_schema_validator(self, *args, **kwargs):
        return None, None, None

Path(__file__).with_name("loaded").write_text("yes")
plugin = _Spy()
"""


@pytest.mark.parametrize("setting", [None, ""])
def test_pydantic_plugins_are_not_looked_for_unless_asked(
    tmp_path: Path, setting: str | None
) -> None:
    """Looking for pydantic plugins reads every installed package's metadata (start-up),
    and a plugin would see every value orgsync validates: orgsync loads none unless the
    administrator sets PYDANTIC_DISABLE_PLUGINS (empty: all of them)."""
    site = tmp_path / "site"
    (site / "spy_plugin").mkdir(parents=True)
    (site / "spy_plugin" / "__init__.py").write_text(SPY_PLUGIN, encoding="utf-8")
    dist = site / "spy_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: spy-plugin\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text("[pydantic]\nspy = spy_plugin:plugin\n", "utf-8")
    config = demo_config(tmp_path, "http://127.0.0.1:9/v1")
    env = {"PATH": "/usr/bin:/bin", DEMO_KEY_ENV: DEMO_KEY, "PYTHONPATH": str(site)}
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    done = cli.run(config, "validate", "--offline", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (site / "spy_plugin" / "loaded").exists() == (setting == "")


def test_pydantic_s_loader_is_stood_in_for_only_while_plugins_are_off(tmp_path: Path) -> None:
    """The stand-in answers "no plugins" as pydantic's loader does while they are off, and
    hands over to the real loader (which reads the packages' metadata) once they are not."""
    action = (
        "import os\n"
        "os.environ['PYDANTIC_DISABLE_PLUGINS'] = '__all__'\n"
        "from orgsync.cli import _without_plugin_lookup\n"
        "_without_plugin_lookup()\n"
        "from pydantic import BaseModel\n"
        "class Probe(BaseModel):\n"
        "    x: int\n"
        "assert Probe(x=1).x == 1\n"
        "loader = sys.modules['pydantic.plugin._loader']\n"
        "assert 'entry_points' not in vars(loader), 'the real loader'\n"
        "assert 'importlib.metadata' not in sys.modules\n"
        "os.environ['PYDANTIC_DISABLE_PLUGINS'] = ''\n"
        "assert list(loader.get_plugins()) == []\n"
        "assert hasattr(sys.modules['pydantic.plugin._loader'], 'entry_points')\n"
        "assert 'importlib.metadata' in sys.modules"
    )
    assert "pydantic" in {n.split(".")[0] for n in imported(action, cwd=tmp_path)}


def test_the_log_levels_are_the_standard_library_s() -> None:
    import logging

    from orgsync.logs import _LEVELS

    assert {name: logging.getLevelName(name.upper()) for name in _LEVELS} == _LEVELS
    assert sorted(_LEVELS) == ["debug", "error", "info", "warning"]


def test_pydantic_s_loader_stand_in_hands_any_other_name_to_the_real_loader(
    tmp_path: Path,
) -> None:
    """A pydantic release asking its loader for a name the stand-in lacks gets the real
    one, not an ImportError that would stop every command."""
    action = (
        "import os\n"
        "os.environ['PYDANTIC_DISABLE_PLUGINS'] = '__all__'\n"
        "from orgsync.cli import _without_plugin_lookup\n"
        "_without_plugin_lookup()\n"
        "from pydantic.plugin._loader import PYDANTIC_ENTRY_POINT_GROUP\n"
        "assert PYDANTIC_ENTRY_POINT_GROUP == 'pydantic'\n"
        "assert 'entry_points' in vars(sys.modules['pydantic.plugin._loader'])"
    )
    assert "importlib.metadata" in imported(action, cwd=tmp_path)


def test_every_connector_s_description_loads_without_the_ports_and_the_rules(
    tmp_path: Path,
) -> None:
    """`validate --offline` reads the configured connectors' descriptions (their keys'
    models) whatever the types: none of them may bring the ports' models, the rules
    engine or anything that talks to a server back onto that path."""
    action = (
        "from orgsync import connectors\n"
        "for kind in ('source', 'target'):\n"
        "    for type_ in connectors.types(kind):\n"
        "        getattr(connectors, kind)(type_)"
    )
    names = imported(action, cwd=tmp_path)
    assert "orgsync.targets.scim.connector" in names
    assert "orgsync.sources.ldap_connector" in names
    assert within(names, ("orgsync.core.ports", "orgsync.core.forms", "orgsync.core.rules")) == []
    assert within(names, HEAVY) == []
