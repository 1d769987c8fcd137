"""The Grafana dashboard and the Prometheus alerts speak the metrics the daemon exposes.

- `deploy/prometheus/alerts.yaml` passes `promtool check rules`, and its unit tests
  (`alerts_test.yaml`, run by `promtool test rules`) show every alert firing and quiet;
  every alert tells the on-call person which target and which command to type next.
- `deploy/grafana/orgsync.json` is an importable dashboard: uid, title, a Prometheus
  data source variable every query uses, a target variable, unique panel ids, a grid
  without overlaps.
- Every metric and label that a dashboard query or an alert names is one the real
  registry (src/orgsync/metrics.py) exposes once each of its callbacks ran; every
  dashboard query parses (promtool, as recording rules) and returns data when Prometheus
  holds exactly those series (promtool's PromQL engine, `promql_expr_test`).

promtool comes from Debian's `prometheus` package, which .ci/run installs: without it
these tests skip on a workstation and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from orgsync.core.ports import OperationStatus
from orgsync.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "orgsync.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
# The receivers, and the sources' own webhook parsers (Okta's, Graph's), which name the
# results they refuse with.
WEBHOOKS_SOURCES = (
    ROOT / "src" / "orgsync" / "daemon" / "webhooks.py",
    ROOT / "src" / "orgsync" / "core" / "webhook.py",
    *sorted((ROOT / "src" / "orgsync" / "sources").glob("*_connector.py")),
)

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
TARGET = "openai-prod"
# What Prometheus adds to every scraped series; `up` is its own per scrape.
SCRAPE_LABELS = {"job": "orgsync", "instance": "orgsync:8080"}
PROMETHEUS_SERIES = {"up": frozenset(SCRAPE_LABELS)}
# Concrete values for Grafana's variables, so that a query is plain PromQL.
GRAFANA_VALUES = {"target": TARGET, "__rate_interval": "5m", "__range": "1h", "__interval": "1m"}
# Label values the daemon produces, for matchers that filter on them: the outcomes of
# operations (the enum the applier reports), run statuses (engine.py), and webhook
# results (webhooks.py: accepted, plus every `Refused` reason; checked below against
# that module's text so the list cannot drift unnoticed).
KNOWN_VALUES = {
    "orgsync_operations_total": {"result": {s.value for s in OperationStatus}},
    "orgsync_runs_total": {"result": {"ok", "held", "failed", "interrupted"}},
    "orgsync_webhooks_total": {
        "result": {
            "accepted",
            "verification",
            "duplicate",
            "bad_signature",
            "stale",
            "bad_client_state",
            "too_large",
            "replay",
            "timeout",
            "incomplete",
            "unavailable",
            "disabled",
            "unauthorized",
            "malformed",
        },
        "kind": {"generic", "okta", "entra"},
    },
    # notify/dispatcher.py: Dispatcher.tally's results.
    "orgsync_notifications_total": {
        "result": {"sent", "failed", "suppressed", "rate_limited", "dropped", "abandoned"}
    },
}


# --------------------------------------------------------------------------- promtool


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian: prometheus; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


# --------------------------------------------------------------------------- the real registry


def exercised_metrics() -> Metrics:
    """A registry with at least one sample of every metric, each through its callback."""
    metrics = Metrics()
    metrics.declare_target(TARGET)
    metrics.source_read(1500)
    for status in (200, 201, 401, 429, 503, 0):
        metrics.http_response(TARGET, status)
    metrics.operation_finished(TARGET, "invite", "done")
    metrics.operation_finished(TARGET, "remove_member", "failed")
    metrics.operation_finished(TARGET, "set_role", "skipped")
    metrics.run_finished(TARGET, "ok", held=0, seconds=1.5)
    metrics.run_finished(TARGET, "held", held=3, seconds=40.0)
    metrics.run_finished(TARGET, "failed", held=0, seconds=0.2)
    metrics.webhook("generic", "accepted")
    metrics.webhook("generic", "bad_signature")
    metrics.webhook("okta", "duplicate")
    metrics.quarantine(TARGET, quarantined=True, failures=3)
    metrics.connection_dropped("main", "header_timeout")
    metrics.notification("ops-slack", "sent")
    metrics.notification("ops-slack", "failed")
    metrics.lease(TARGET, held=True)
    metrics.queued_request(TARGET, "queued")
    metrics.queued_request(TARGET, "claimed")
    return metrics


def exposed_samples() -> list[tuple[str, dict[str, str]]]:
    text = exercised_metrics().exposition().decode()
    samples = []
    for family in text_string_to_metric_families(text):
        assert family.samples, f"{family.name} has no sample: exercise it in exercised_metrics()"
        samples += [(s.name, dict(s.labels)) for s in family.samples]
    return samples


def exposed_series() -> dict[str, frozenset[str]]:
    """Each sample name the daemon exposes and the labels it has once scraped."""
    series: dict[str, frozenset[str]] = dict(PROMETHEUS_SERIES)
    for name, labels in exposed_samples():
        series[name] = series.get(name, frozenset(SCRAPE_LABELS)) | frozenset(labels)
    return series


def exposed_families() -> set[str]:
    """The metrics, without prometheus-client's `*_created` creation-time twins."""
    text = exercised_metrics().exposition().decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    return {name for name in names if not name.endswith("_created")}


# --------------------------------------------------------------------------- PromQL, read lightly

# Enough of PromQL to see what a query names: metric names (every orgsync metric starts
# with `orgsync_`, plus Prometheus' `up`), their matchers, grouping and matching labels,
# and label_replace's destination and source labels.
SELECTOR = re.compile(r"\b(orgsync_[a-zA-Z0-9_]+|up)\b\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_REPLACE = re.compile(r',\s*"(\w+)"\s*,\s*"[^"]*"\s*,\s*"(\w+)"\s*,\s*"[^"]*"\s*\)')
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def label_problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """What `expr` names that the daemon does not expose, in words."""
    problems = []
    available: set[str] = set()
    named = SELECTOR.findall(expr)
    if not named:
        problems.append("names no orgsync metric")
    for name, selector in named:
        if name not in series:
            problems.append(f"{name} is not exposed")
            continue
        available |= series[name]
        for label, _, value in MATCHER.findall(selector):
            if label not in series[name]:
                problems.append(f"{name} has no label {label!r}")
            known = KNOWN_VALUES.get(name, {}).get(label)
            for alternative in value.split("|") if known else ():
                if alternative not in known:  # type: ignore[operator]
                    problems.append(f"{name}{{{label}}} is never {alternative!r}")
    for destination, source in LABEL_REPLACE.findall(expr):
        if source not in available:
            problems.append(f"label_replace reads {source!r}, which no series here has")
        available.add(destination)
    for group in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in available:
                problems.append(f"groups or matches on {label!r}, which no series here has")
    return problems


def as_promql(expr: str) -> str:
    """A Grafana query with its variables replaced by concrete values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name.isdigit():  # a label_replace capture reference, not a variable
            return match.group(0)
        assert name in GRAFANA_VALUES, f"unknown Grafana variable ${name} in {expr}"
        return GRAFANA_VALUES[name]

    return VARIABLE.sub(value, expr)


# --------------------------------------------------------------------------- the dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) of every PromQL query of the dashboard."""
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} query {target['refId']}", target["expr"]


def variable_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable, the PromQL inside its label_values) of every query variable."""
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert found, f"variable {variable['name']}: {variable['definition']}"
            yield variable["name"], f"group by ({found.group(2)}) ({found.group(1)})"


class TestDashboard:
    def test_it_has_what_an_import_needs(self) -> None:
        board = dashboard()
        assert board["uid"] == "orgsync"
        assert board["title"] == "orgsync"
        assert board["id"] is None  # Grafana assigns its own on import
        assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 39
        assert {"time", "templating", "panels", "annotations"} <= set(board)

    def test_the_data_source_and_the_target_are_variables(self) -> None:
        variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        target = variables["target"]
        assert target["type"] == "query"
        assert target["datasource"] == DATASOURCE_REF
        assert target["multi"] and target["includeAll"] and target["allValue"] == ".*"
        assert target["query"]["query"] == target["definition"]

    def test_every_panel_and_query_reads_the_chosen_data_source(self) -> None:
        board = dashboard()
        for panel in all_panels(board):
            if panel["type"] == "row":
                assert "targets" not in panel, panel["title"]
                continue
            assert panel["datasource"] == DATASOURCE_REF, panel["title"]
            assert panel["targets"], f"{panel['title']} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE_REF, panel["title"]
        # No data source is named by a uid of one particular Grafana.
        text = DASHBOARD.read_text(encoding="utf-8")
        uids = set(re.findall(r'"uid":\s*"([^"]*)"', text))
        assert uids == {"orgsync", "${datasource}", "-- Grafana --"}

    def test_panel_ids_are_unique_and_the_grid_has_no_overlap(self) -> None:
        panels = list(all_panels(dashboard()))
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), ids
        taken: dict[tuple[int, int], str] = {}
        for panel in panels:
            grid = panel["gridPos"]
            assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
            assert all(isinstance(v, int) and v >= 0 for v in grid.values()), panel["title"]
            assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] + grid["w"] <= 24, grid
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                    taken[(x, y)] = panel["title"]

    def test_every_metric_and_label_it_names_is_exposed_by_the_daemon(self) -> None:
        series = exposed_series()
        board = dashboard()
        problems = [
            f"{where}: {problem}"
            for where, expr in [*queries(board), *variable_queries(board)]
            for problem in label_problems(expr, series)
        ]
        assert problems == []

    def test_it_shows_every_metric_the_daemon_exposes(self) -> None:
        text = " ".join(expr for _, expr in queries(dashboard()))
        shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n, _ in SELECTOR.findall(text)}
        assert exposed_families() - shown == set()

    def test_the_variables_it_uses_are_defined(self) -> None:
        board = dashboard()
        for where, expr in queries(board):
            as_promql(expr)  # asserts every $variable is one we know a value for
            uses = len(re.findall(r"\$target\b", expr))
            assert uses == expr.count('=~"$target"'), f"{where}: a multi-value variable needs =~"
        defined = {v["name"] for v in board["templating"]["list"]}
        assert {name for name in GRAFANA_VALUES if not name.startswith("__")} <= defined

    def test_every_query_parses(self, tmp_path: Path) -> None:
        rules = [
            {"record": f"orgsync_dashboard:query_{n}", "expr": as_promql(expr)}
            for n, (_, expr) in enumerate([*queries(dashboard()), *variable_queries(dashboard())])
        ]
        path = tmp_path / "dashboard_rules.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = run_promtool("check", "rules", path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(rules)} rules found" in result.stdout

    def test_every_query_returns_data_from_the_daemons_series(self, tmp_path: Path) -> None:
        """Prometheus' own engine runs each query over exactly what the daemon exposes."""
        input_series = [
            {"series": series_selector(name, {**labels, **SCRAPE_LABELS}), "values": "1+1x60"}
            for name, labels in exposed_samples()
        ]
        board = dashboard()
        checks = [
            {
                "expr": f"group({as_promql(expr)})",
                "eval_time": "30m",
                "exp_samples": [{"labels": "{}", "value": 1}],
            }
            for _, expr in [*queries(board), *variable_queries(board)]
        ]
        test_file = tmp_path / "dashboard_test.yaml"
        test_file.write_text(
            yaml.safe_dump(
                {
                    "rule_files": [],
                    "evaluation_interval": "1m",
                    "tests": [
                        {"interval": "1m", "input_series": input_series, "promql_expr_test": checks}
                    ],
                }
            )
        )
        result = run_promtool("test", "rules", test_file)
        assert result.returncode == 0, result.stdout + result.stderr


def series_selector(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


# --------------------------------------------------------------------------- the alerts


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


class TestAlerts:
    def test_promtool_check_rules_passes(self) -> None:
        result = run_promtool("check", "rules", ALERTS)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout

    def test_promtool_unit_tests_pass(self) -> None:
        result = run_promtool("test", "rules", ALERTS_TEST)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_the_unit_tests_show_every_alert_firing_and_quiet(self) -> None:
        tests = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
        cases = [case for test in tests for case in test.get("alert_rule_test", [])]
        for rule in alert_rules():
            mine = [case for case in cases if case["alertname"] == rule["alert"]]
            assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} never fires"
            assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} never quiet"

    def test_the_required_alerts_are_there(self) -> None:
        exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
        assert "time() - orgsync_last_success_timestamp_seconds > 3 * 15 * 60" in exprs.values()
        assert "orgsync_held_operations > 0" in exprs.values()
        assert "orgsync_quarantined == 1" in exprs.values()
        assert any("orgsync_webhooks_total" in expr for expr in exprs.values())

    def test_every_metric_and_label_an_alert_names_is_exposed_by_the_daemon(self) -> None:
        series = exposed_series()
        problems = [
            f"{rule['alert']}: {problem}"
            for rule in alert_rules()
            for problem in label_problems(rule["expr"], series)
        ]
        assert problems == []

    def test_every_alert_names_its_target_and_the_next_command(self) -> None:
        series = exposed_series()
        for rule in alert_rules():
            annotations = rule["annotations"]
            assert set(annotations) >= {"summary", "description"}, rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            description = annotations["description"]
            assert re.search(r"`orgsync (status|sync --dry-run|validate|runs)", description), (
                f"{rule['alert']}: no command to type next"
            )
            names = [name for name, _ in SELECTOR.findall(rule["expr"])]
            per = {
                label
                for name in names
                for label in ("target", "system")
                if label in series.get(name, ())
            }
            for label in per:
                assert f"{{{{ $labels.{label} }}}}" in annotations["summary"], rule["alert"]
                assert f"--target {{{{ $labels.{label} }}}}`" in description, rule["alert"]


def test_the_known_webhook_results_are_the_receivers_own_words() -> None:
    source = "\n".join(path.read_text(encoding="utf-8") for path in WEBHOOKS_SOURCES)
    for result in KNOWN_VALUES["orgsync_webhooks_total"]["result"]:
        assert f'"{result}"' in source, result
    refusals = set(re.findall(r'Refused\(\s*\d+,\s*"(\w+)"', source))
    assert refusals <= KNOWN_VALUES["orgsync_webhooks_total"]["result"]
