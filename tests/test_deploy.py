"""The deployment examples (examples/deploy/): their manifests loaded as Kubernetes and
docker compose read them, the fields that matter checked, and their config checked by
`resc check` with the URL the manifests give it. Nothing runs Docker or Kubernetes here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hjson
import pytest
import yaml

from resc.config.redis_url import SentinelUrl, parse_redis_url
from tests.conftest import run_resc

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
CONFIG_PATH = "/etc/resc/resc.hjson"


def _kubernetes() -> dict[str, dict[str, Any]]:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    return {document["kind"]: document for document in documents}


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    return compose


def _config() -> dict[str, Any]:
    config: dict[str, Any] = hjson.loads((DEPLOY / "resc.hjson").read_text())
    return config


def _resc_check(config_text: str, tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "resc.hjson"
    path.write_text(config_text)
    done = run_resc("check", str(path), env=env)
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, f"{path}: OK"), done.stdout


def test_the_kubernetes_deployment_runs_three_resc_with_probes_on_the_config_port():
    manifests = _kubernetes()
    deployment = manifests["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == [CONFIG_PATH]
    [port] = container["ports"]
    host, _, listen_port = _config()["http"]["listen"].rpartition(":")
    assert (port["name"], port["containerPort"]) == ("http", int(listen_port))
    assert host == "0.0.0.0"  # the kubelet probes the pod's address, not its loopback
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_kubernetes_waits_the_grace_period_and_a_margin_before_killing_resc():
    pod = _kubernetes()["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == _config()["grace_period"] + 2


def test_the_config_comes_from_the_config_map_and_the_url_from_the_secret(tmp_path: Path):
    manifests = _kubernetes()
    config_map, secret = manifests["ConfigMap"], manifests["Secret"]
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    assert mount["name"] == volume["name"]
    assert str(Path(mount["mountPath"]) / "resc.hjson") == CONFIG_PATH
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    # The ConfigMap holds the example config, word for word.
    assert config_map["data"]["resc.hjson"] == (DEPLOY / "resc.hjson").read_text()
    env = {entry["name"]: entry for entry in container["env"]}
    secrets = {}
    for name in ("RESC_REDIS_URL", "RESC_PRODUCE_TOKEN", "RESC_CONSUME_TOKEN"):
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        secrets[name] = secret["stringData"][reference["key"]]
    assert isinstance(parse_redis_url(secrets["RESC_REDIS_URL"]), SentinelUrl)
    assert "redis" not in _config()  # the Secret's URL is the only one
    _resc_check(config_map["data"]["resc.hjson"], tmp_path, secrets)


def test_the_compose_file_runs_a_master_a_replica_three_sentinels_two_resc_and_a_worker():
    services = _compose()["services"]
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    rescs = sorted(name for name, s in services.items() if s.get("command") == [CONFIG_PATH])
    assert sentinels == ["sentinel-1", "sentinel-2", "sentinel-3"]
    assert rescs == ["resc-1", "resc-2"]
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis-master", "6379"]
    url = services["resc-1"]["environment"]["RESC_REDIS_URL"]
    target = parse_redis_url(url)
    assert isinstance(target, SentinelUrl)
    assert sorted(host for host, _ in target.sentinels) == sentinels
    for name in sentinels:
        script = services[name]["command"][-1]
        assert f"sentinel monitor {target.master_name} redis-master 6379 2" in script
        assert "port 26379" in script
        assert script.rstrip().endswith("--sentinel")
    for name in rescs:
        service = services[name]
        assert service["environment"]["RESC_REDIS_URL"] == url
        assert service["volumes"] == [f"./resc.hjson:{CONFIG_PATH}:ro"]
        assert service["stop_grace_period"] == f"{_config()['grace_period'] + 2}s"
        assert any(p.endswith(":9090") for p in service["ports"])
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
    worker = services["worker"]["command"]
    assert worker[0] == "work"
    assert worker[worker.index("--redis") + 1] == url
    assert worker[worker.index("--queue") + 1] == "trt/plantA/todo-queue"


def test_the_compose_config_passes_resc_check_with_its_environment(tmp_path: Path):
    environment = _compose()["services"]["resc-1"]["environment"]
    _resc_check((DEPLOY / "resc.hjson").read_text(), tmp_path, environment)


@pytest.mark.parametrize("loopback", ["127.0.0.1", "localhost", "::1"])
def test_the_image_points_at_no_redis_of_its_own(loopback: str):
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if not line.startswith("#")]
    assert not any(loopback in line for line in instructions)
    assert not any(line.startswith("ENV RESC_REDIS_URL") for line in instructions)
    assert 'ENTRYPOINT ["resc"]' in instructions
    assert "EXPOSE 9090" in instructions
