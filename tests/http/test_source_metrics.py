"""A source's HTTP calls count in `orgsync_http_requests_total{system,status}` as a
target's do: the engine hands the metrics to both sides' clients (docs/reference.md "Metrics")."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from orgsync.config import parse_config
from orgsync.engine import Engine
from orgsync.metrics import Metrics
from orgsync.results import RunOptions
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV

OKTA_ENV = "ORGSYNC_TEST_OKTA_TOKEN"


def http_counts(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = metrics.exposition().decode()
    return {
        (sample.labels["system"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "orgsync_http_requests"
        for sample in family.samples
        if sample.name == "orgsync_http_requests_total"
    }


def test_source_requests_count_in_the_http_metric(tmp_path: Path) -> None:
    with OktaEmulator() as okta, OpenAIEmulator(api_key=API_KEY) as openai:
        group = okta.add_group("openai-users")
        for n in range(3):
            okta.add_member(group, okta.add_user(email=f"person{n}@example.com"))
        okta.start()
        config = parse_config(
            {
                "source": {
                    "type": "okta",
                    "url": okta.url,
                    "token_env": OKTA_ENV,
                    "allow_plaintext": True,
                    "page_size": 2,
                },
                "targets": [
                    {
                        "name": "openai-test",
                        "type": "openai",
                        "base_url": openai.start(),
                        "api_key_env": KEY_ENV,
                        "allow_plaintext": True,
                        "default_role": "reader",
                        "scope_groups": ["openai-*"],
                    }
                ],
                "state": {"path": "state.db"},
            },
            origin="test",
            base_dir=tmp_path,
        )
        metrics = Metrics()
        engine = Engine(config, environ={OKTA_ENV: okta.token, KEY_ENV: API_KEY}, observer=metrics)
        (result,) = engine.run(RunOptions(dry_run=True))
        assert result.status == "changes-pending", result.error
        okta_requests = len([r for r in okta.requests if r.path.startswith("/api/v1")])

    counts = http_counts(metrics)
    assert counts[("source:okta", "200")] == okta_requests > 1, "every page of every listing"
    assert counts[("openai-test", "200")] >= 1, "the target's calls count as before"
