"""The metrics carry the names docs/reference.md "Metrics" binds, parse as Prometheus text, and count what happened."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from orgsync.metrics import SPEC_METRICS, Metrics


def families(metrics: Metrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = metrics.exposition().decode()
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_every_spec_metric_is_exposed_even_before_anything_happened() -> None:
    metrics = Metrics()
    metrics.declare_target("openai-prod")
    exposed = families(metrics)
    names = {n.removesuffix("_total") for n in SPEC_METRICS}
    assert names <= set(exposed)
    assert "orgsync_quarantined" in exposed


def test_observations_land_under_the_spec_labels() -> None:
    metrics = Metrics()
    metrics.source_read(42)
    metrics.http_response("openai-prod", 429)
    metrics.operation_finished("openai-prod", "invite", "done")
    metrics.run_finished("openai-prod", "held", held=3, seconds=1.5)
    metrics.webhook("generic", "bad_signature")
    metrics.quarantine("openai-prod", quarantined=True, failures=4)
    exposed = families(metrics)
    assert ("orgsync_source_people", {}, 42.0) in exposed["orgsync_source_people"]
    assert (
        "orgsync_http_requests_total",
        {"system": "openai-prod", "status": "429"},
        1.0,
    ) in exposed["orgsync_http_requests"]
    assert (
        "orgsync_operations_total",
        {"target": "openai-prod", "op": "invite", "result": "done"},
        1.0,
    ) in exposed["orgsync_operations"]
    assert (
        "orgsync_runs_total",
        {"target": "openai-prod", "result": "held"},
        1.0,
    ) in exposed["orgsync_runs"]
    assert ("orgsync_held_operations", {"target": "openai-prod"}, 3.0) in exposed[
        "orgsync_held_operations"
    ]
    success = exposed["orgsync_last_success_timestamp_seconds"]
    assert success[0][2] > 1.7e9  # a held run still succeeded
    assert (
        "orgsync_webhooks_total",
        {"kind": "generic", "result": "bad_signature"},
        1.0,
    ) in exposed["orgsync_webhooks"]
    assert ("orgsync_quarantined", {"target": "openai-prod"}, 1.0) in exposed["orgsync_quarantined"]


def test_a_failed_run_is_not_a_success() -> None:
    metrics = Metrics()
    metrics.run_finished("t", "failed", held=0, seconds=0.1)
    assert families(metrics)["orgsync_last_success_timestamp_seconds"] == []
