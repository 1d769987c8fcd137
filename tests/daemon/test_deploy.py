"""The deployment files are valid for the tools that will read them, and say what we mean.

- the systemd unit passes `systemd-analyze verify` (which also checks that ExecStart
  exists: the test points it at this checkout's `orgsync`) with no warning, and its
  sandbox scores "OK" in `systemd-analyze security --offline`;
- the Containerfile passes hadolint and runs as a non-root user with state on a volume;
- the Kubernetes manifests validate against the Kubernetes schemas (kubernetes-validate,
  which bundles them: no network is used, and the test forbids it), and they describe
  one replica with Recreate, probes on the daemon's endpoints, and a ConfigMap holding a
  configuration that orgsync accepts and that points at the mounted volume and Secret.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from orgsync.config import parse_config, parse_listen

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "orgsync.service"
SHIPPED_EXEC = "/opt/orgsync/bin/orgsync"
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def tool(name: str) -> str:
    """A CLI tool from this environment's bin directory or PATH; its absence fails."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} is not installed (scripts/setup-system installs it)"
    return found


def unit_for_this_checkout(tmp_path: Path) -> Path:
    """The shipped unit, with ExecStart pointing at an orgsync that exists here."""
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={SHIPPED_EXEC} " in text
    copy = tmp_path / "orgsync.service"
    copy.write_text(text.replace(SHIPPED_EXEC, tool("orgsync")), encoding="utf-8")
    return copy


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


class TestSystemdUnit:
    def test_systemd_analyze_verify_passes_without_a_warning(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [tool("systemd-analyze"), "verify", "--man=no", str(unit_for_this_checkout(tmp_path))],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode, result.stdout + result.stderr) == (0, "")

    def test_the_sandbox_scores_ok(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [
                tool("systemd-analyze"),
                "security",
                "--offline=true",
                "--no-pager",
                str(unit_for_this_checkout(tmp_path)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match, result.stdout + result.stderr
        assert float(match.group(1)) <= 2.0, result.stdout

    def test_it_is_a_notify_service_with_a_watchdog_state_and_credentials(self) -> None:
        settings = unit_settings()
        assert settings["Type"] == ["notify"]
        assert settings["DynamicUser"] == ["yes"]
        assert settings["StateDirectory"] == ["orgsync"]
        assert settings["WatchdogSec"] and settings["TimeoutStopSec"]
        assert settings["ExecStart"][0].endswith(" daemon")
        credentials = [c.split(":")[0] for c in settings["LoadCredential"]]
        assert credentials == ["openai-admin-key", "webhook-secret"]
        assert "Environment" not in settings or not any(
            "KEY" in e or "SECRET" in e for e in settings["Environment"]
        )


class TestContainerfile:
    def test_hadolint_passes(self) -> None:
        result = subprocess.run(
            [tool("hadolint"), "--no-color", str(DEPLOY / "Containerfile")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode, result.stdout + result.stderr) == (0, "")

    def test_non_root_state_on_a_volume_and_a_health_check(self) -> None:
        text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
        final_stage = text.rsplit("\nFROM ", 1)[1]
        user = re.search(r"^USER (\S+)", final_stage, re.MULTILINE)
        assert user and not user.group(1).startswith(("0", "root"))
        assert 'VOLUME ["/var/lib/orgsync"]' in final_stage
        assert "HEALTHCHECK" in final_stage and "/healthz" in final_stage
        assert "EXPOSE 8080 9090" in final_stage  # listen and health_listen
        assert re.search(r'^CMD \["daemon"\]', final_stage, re.MULTILINE)


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found[document["kind"]] = document
    return found


class TestKubernetes:
    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_every_manifest_validates_offline(
        self, version: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_network(*args: object, **kwargs: object) -> None:
            raise AssertionError("schema validation tried to use the network")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        documents = manifests()
        assert set(documents) == {
            "ConfigMap",
            "Deployment",
            "PersistentVolumeClaim",
            "Secret",
            "Service",
        }
        for document in documents.values():
            kubernetes_validate.validate(document, version, strict=True)

    def test_a_broken_manifest_is_caught(self) -> None:
        broken = manifests()["Deployment"]
        broken["spec"]["replicas"] = "one"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)

    def test_one_replica_recreated_with_probes_on_the_endpoints(self) -> None:
        deployment = manifests()["Deployment"]["spec"]
        assert deployment["replicas"] == 1
        assert deployment["strategy"] == {"type": "Recreate"}
        (container,) = deployment["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # On the probe listener, which a flood of the webhook port does not reach.
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "health", probe
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert deployment["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

    def test_the_configmap_holds_a_configuration_orgsync_accepts(self) -> None:
        documents = manifests()
        text = documents["ConfigMap"]["data"]["orgsync.toml"]
        config = parse_config(tomllib.loads(text), origin="configmap", base_dir=Path("/"))
        mounts = {
            m["name"]: m["mountPath"]
            for m in documents["Deployment"]["spec"]["template"]["spec"]["containers"][0][
                "volumeMounts"
            ]
        }
        assert config.state.path.parent == Path(mounts["state"])
        assert config.server.listen.startswith("0.0.0.0:")
        container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert parse_listen(config.server.listen) == ("0.0.0.0", ports["http"])
        assert config.server.health_listen is not None
        assert parse_listen(config.server.health_listen) == ("0.0.0.0", ports["health"])
        service_ports = {p["targetPort"] for p in documents["Service"]["spec"]["ports"]}
        assert service_ports == {"http", "health"}
        secret_keys = set(documents["Secret"]["stringData"])
        files = [config.targets[0].api_key_file, config.server.webhook_secret_file]
        for file in files:
            assert file is not None
            assert file.parent == Path(mounts["secrets"])
            assert file.name in secret_keys


# --------------------------------------------------------------------------- replicas


def ha_manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes-ha").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert document["kind"] not in found, f"two {document['kind']} in kubernetes-ha"
            found[document["kind"]] = document
    return found


def served_paths(tmp_path: Path) -> set[str]:
    """The paths the daemon's probe listener really serves (its app, built as the
    daemon builds it, over a real state database)."""
    from orgsync.daemon.http import Readiness, build_app
    from orgsync.metrics import Metrics
    from orgsync.store import StateStore

    with StateStore.open(tmp_path / "state.db") as store:
        app = build_app(
            metrics=Metrics(),
            readiness=Readiness(store, ["t"], instance=None),
            alive=dict,
            webhook_routes=[],
        )
        return {route.path for route in app.routes if hasattr(route, "path")}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # no expressions to evaluate here
    wanted: dict[str, str] = selector["matchLabels"]
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


class TestKubernetesReplicas:
    """deploy/kubernetes-ha: several replicas on a PostgreSQL state database (issue 15)."""

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_every_manifest_validates_offline(
        self, version: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_network(*args: object, **kwargs: object) -> None:
            raise AssertionError("schema validation tried to use the network")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        documents = ha_manifests()
        assert set(documents) == {
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        }
        for document in documents.values():
            kubernetes_validate.validate(document, version, strict=True)

    def test_three_replicas_rolled_one_at_a_time_and_a_budget_that_keeps_two(self) -> None:
        documents = ha_manifests()
        spec = documents["Deployment"]["spec"]
        assert spec["replicas"] == 3
        assert spec["strategy"]["type"] == "RollingUpdate"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
        labels = spec["template"]["metadata"]["labels"]
        assert matches(spec["selector"], labels)
        budget = documents["PodDisruptionBudget"]["spec"]
        assert matches(budget["selector"], labels)
        # Either form, as long as a drain leaves at least two replicas serving.
        if "maxUnavailable" in budget:
            assert spec["replicas"] - budget["maxUnavailable"] >= 2
        else:
            assert 2 <= budget["minAvailable"] < spec["replicas"]
        assert matches({"matchLabels": documents["Service"]["spec"]["selector"]}, labels)
        # Spread over nodes: a node loss takes one replica, not the service.
        spread = spec["template"]["spec"]["topologySpreadConstraints"]
        assert any(
            c["topologyKey"] == "kubernetes.io/hostname"
            and c["whenUnsatisfiable"] == "DoNotSchedule"
            and matches(c["labelSelector"], labels)
            for c in spread
        )
        # No volume a second replica could not mount: the state is on the server.
        volumes = spec["template"]["spec"]["volumes"]
        assert not [v for v in volumes if "persistentVolumeClaim" in v]

    def test_probes_point_at_endpoints_the_daemon_serves(self, tmp_path: Path) -> None:
        documents = ha_manifests()
        (container,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
        served = served_paths(tmp_path)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in served, (probe, get["path"], served)
            assert get["port"] == "health", probe
        config = parse_config(
            tomllib.loads(documents["ConfigMap"]["data"]["orgsync.toml"]),
            origin="configmap",
            base_dir=Path("/"),
        )
        assert config.server.health_listen is not None
        assert parse_listen(config.server.health_listen) == ("0.0.0.0", ports["health"])
        assert parse_listen(config.server.listen) == ("0.0.0.0", ports["http"])
        service_ports = {p["targetPort"] for p in documents["Service"]["spec"]["ports"]}
        assert service_ports <= set(ports)

    def test_the_state_is_on_postgresql_with_its_password_from_the_secret_only(self) -> None:
        documents = ha_manifests()
        text = documents["ConfigMap"]["data"]["orgsync.toml"]
        config = parse_config(tomllib.loads(text), origin="configmap", base_dir=Path("/"))
        state = config.state
        assert state.url is not None and state.url.startswith("postgresql://")
        netloc = state.url.split("://", 1)[1].split("/", 1)[0]
        assert ":" not in netloc.split("@", 1)[0], "a password in the URL"
        assert "sslmode=verify-full" in state.url
        assert state.password_env is not None
        (container,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert all("value" not in e for e in env.values()), "a literal value in the env"
        reference = env[state.password_env]["valueFrom"]["secretKeyRef"]
        secret = documents["Secret"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
        # No secret value anywhere but in the Secret (placeholders to replace).
        for value in secret["stringData"].values():
            assert value.startswith("REPLACE-")
            for kind, document in documents.items():
                if kind != "Secret":
                    assert value not in yaml.safe_dump(document), kind
        assert "password =" not in text and "PGPASSWORD" not in text
        # The files named by the configuration are the Secret's, mounted where it says.
        template = documents["Deployment"]["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        (volume,) = [v for v in template["volumes"] if v["name"] == "secrets"]
        files = {item["path"] for item in volume["secret"]["items"]}
        for file in (config.targets[0].api_key_file, config.server.webhook_secret_file):
            assert file is not None
            assert file.parent == Path(mounts["secrets"])
            assert file.name in files
        # The database password is an environment variable, not a file beside the others.
        assert reference["key"] not in files
