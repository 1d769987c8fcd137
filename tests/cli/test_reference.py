"""docs/reference.md names everything the code offers: each command and option of the
parser, each configuration key of every model (built-in sources, targets, notify
channels and the fixed tables), and each metric with its labels.

Introspected from the code, so a new option, key or metric without its line in the
reference fails here instead of leaving the reference quietly behind.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from orgsync import config, connectors
from orgsync.cli._common import EXIT_CODES
from orgsync.cli._parser import build_parser
from orgsync.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")


def _section(heading: str, text: str = REFERENCE) -> str:
    """The text under the first heading that starts with `heading`, up to the next
    heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}.*$", text, re.MULTILINE)
    assert match is not None, f"docs/reference.md has no heading {heading!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def _named(name: str, text: str) -> bool:
    return f"`{name}`" in text or f"`{name} " in text


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def _own_options(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Option strings and positional names, less the global options and --help."""
    global_options = {"--config", "--log-level", "-q", "--quiet", "-v", "--verbose"}
    global_options |= {"--log-format", "-h", "--help"}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            yield from (o for o in action.option_strings if o not in global_options)
        else:
            yield action.dest


COMMANDS = list(_subcommands(build_parser()))


def test_the_parser_is_introspected() -> None:
    """Guards the test itself: a parser walk finding nothing would pass everything."""
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"sync", "validate", "daemon", "state migrate"} <= names
    assert "--allow-removals" in set(_own_options(dict(COMMANDS)[("sync",)]))


def test_every_global_option_is_documented() -> None:
    commands = _section("Commands")
    for action in build_parser()._actions:
        for option in action.option_strings:
            assert _named(option, commands), f"global option {option} missing from reference"


_LEAVES = [c for c in COMMANDS if c[0] != ("state",)]


@pytest.mark.parametrize(("path", "parser"), _LEAVES, ids=[" ".join(p) for p, _ in _LEAVES])
def test_every_command_and_option_is_documented(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    section = _section(f"`orgsync {' '.join(path)}")
    for option in _own_options(parser):
        assert _named(option, section), f"orgsync {' '.join(path)}: {option} not in reference"


def test_every_exit_code_is_documented() -> None:
    codes = _section("Exit codes")
    for code in re.findall(r"^  (\d+) ", EXIT_CODES, re.MULTILINE):
        assert re.search(rf"^\| {code} \|", codes, re.MULTILINE), f"exit code {code}"


def _keys(model: type[BaseModel], less: type[BaseModel] | None = None) -> list[str]:
    skip = set(less.model_fields) if less else set()
    return [f.alias or n for n, f in model.model_fields.items() if n not in skip]


def _check_keys(keys: list[str], *texts: str, where: str) -> None:
    missing = [k for k in keys if not any(_named(k, t) for t in texts)]
    assert not missing, f"{where}: keys missing from docs/reference.md: {missing}"


def test_every_fixed_table_key_is_documented() -> None:
    for table, model in {
        "[safety]": config.SafetyConfig,
        "[state]": config.StateConfig,
        "[schedule]": config.ScheduleConfig,
        "[server]": config.ServerConfig,
    }.items():
        _check_keys(_keys(model), _section(f"`{table}`"), where=table)


def test_every_secret_key_has_both_forms_documented() -> None:
    """A secret is `<key>_env` or `<key>_file`: the reference names both of each pair."""
    configuration = _section("Configuration")
    models: list[type[BaseModel]] = [config.StateConfig, config.ServerConfig]
    models += [connectors.source(t).settings for t in connectors.source_types()]
    models += [connectors.target(t).settings for t in connectors.target_types()]
    pairs = {n.removesuffix("_env") for m in models for n in m.model_fields if n.endswith("_env")}
    assert {"token", "api_key", "webhook_secret", "password"} <= pairs
    for key in pairs:
        _check_keys([f"{key}_env", f"{key}_file"], configuration, where="secrets")


@pytest.mark.parametrize("type_", connectors.source_types())
def test_every_source_key_is_documented(type_: str) -> None:
    sources = _section("`[source]`")
    shared = sources.split("####", 1)[0]
    own = _section(f'`type = "{type_}"`', sources)
    model = connectors.source(type_).settings
    _check_keys(_keys(model), shared, own, where=f'[source] type = "{type_}"')


@pytest.mark.parametrize("type_", connectors.target_types())
def test_every_target_key_is_documented(type_: str) -> None:
    targets = _section("`[[targets]]`")
    shared = targets.split("####", 1)[0]
    own = _section(f'`type = "{type_}"`', targets)
    _check_keys(_keys(config.TargetConfig), shared, where="[[targets]]")
    _check_keys(_keys(config.RoleRuleConfig), shared, where="[[targets.roles]]")
    _check_keys(_keys(config.GroupRuleConfig), shared, where="[[targets.groups]]")
    model = connectors.target(type_).settings
    _check_keys(_keys(model, config.TargetConfig), own, where=f'[[targets]] type = "{type_}"')


@pytest.mark.parametrize(
    ("type_", "model"),
    [
        ("webhook", config.WebhookNotify),
        ("slack", config.SlackNotify),
        ("teams", config.TeamsNotify),
        ("email", config.EmailNotify),
    ],
)
def test_every_notify_key_is_documented(type_: str, model: type[BaseModel]) -> None:
    notify = _section("`[[notify]]`")
    shared = notify.split("####", 1)[0]
    own = _section(f'`type = "{type_}"`', notify)
    _check_keys(_keys(config._NotifyEntry), shared, where="[[notify]]")
    _check_keys(_keys(model, config._NotifyEntry), own, where=f'[[notify]] type = "{type_}"')


def _exposed_metrics() -> dict[str, list[str]]:
    """Each metric as exposed (counters with `_total`) → its label names."""
    metrics = Metrics()
    found: dict[str, list[str]] = {}
    for collector in vars(metrics).values():
        name = getattr(collector, "_name", None)
        if name is None:
            continue
        kind = getattr(collector, "_type", "")
        exposed = f"{name}_total" if kind == "counter" else name
        found[exposed] = list(getattr(collector, "_labelnames", ()))
    return found


def test_every_metric_and_label_is_documented() -> None:
    metrics = _exposed_metrics()
    assert "orgsync_runs_total" in metrics and "orgsync_quarantined" in metrics
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `(orgsync_\w+)` \|.*$", _section("Metrics"), re.MULTILINE)
    }
    for name, labels in metrics.items():
        assert name in rows, f"metric {name} missing from docs/reference.md"
        for label in labels:
            assert f"`{label}`" in rows[name].split("|")[3], f"{name}: label {label} missing"
    stale = set(rows) - set(metrics)
    assert not stale, f"docs/reference.md lists metrics the code does not have: {stale}"


def test_the_readme_points_to_the_reference() -> None:
    assert "docs/reference.md" in (ROOT / "README.md").read_text(encoding="utf-8")
