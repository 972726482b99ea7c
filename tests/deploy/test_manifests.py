"""deploy/: the Kubernetes manifests, the container's entrypoint and the image definition.

The manifests are checked against the Kubernetes API schemas bundled with
kubernetes-validate (offline, strict: unknown fields fail), then for the facts the cluster
depends on: stable names through the headless Service, one volume per node, probes on
/health at the node's port. The entrypoint runs under bash with a fake HOSTNAME and a stub
`kv` that prints its arguments, and the flags it derives go through `kv serve`'s own
configuration checks together with the ConfigMap's TOML.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kvstore import config
from tests.cluster import READY_S, STOP_S, free_ports
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
K8S_VERSION = "1.28"  # the oldest API the manifests promise to fit
BASH = shutil.which("bash")


def load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]
    assert len(docs) == 1, f"{name} holds one resource"
    return docs[0]


def validate(resource: dict) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def sts() -> dict:
    return load("statefulset.yaml")


@pytest.fixture(scope="module")
def container(sts: dict) -> dict:
    (only,) = sts["spec"]["template"]["spec"]["containers"]
    return only


# -- schema validation -------------------------------------------------------------------

def test_manifests_are_the_expected_set() -> None:
    kinds = sorted(load(p.name)["kind"] for p in MANIFESTS)
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_passes_strict_schema_validation(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        validate(doc)


def test_a_broken_field_fails_validation(sts: dict) -> None:
    """The validator can fail: a wrong type, an unknown field and a missing one each fail."""
    wrong_type = copy.deepcopy(sts)
    wrong_type["spec"]["replicas"] = "five"
    misspelt = copy.deepcopy(sts)
    probe = misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGet"]["pth"] = probe["httpGet"].pop("path")
    missing = copy.deepcopy(sts)
    del missing["spec"]["selector"]
    for broken in (wrong_type, misspelt, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)
    validate(sts)  # the original still passes: the copies were independent


# -- what the cluster depends on ---------------------------------------------------------

def test_statefulset_names_pods_through_the_headless_service(sts: dict) -> None:
    headless = load("service-headless.yaml")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"] == "ringlock"
    assert sts["metadata"]["name"] == "ringlock"  # pods ringlock-0, ringlock-1, ...
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # peers resolve while starting
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"  # pod 0 creates the ring first


def test_services_and_budget_select_the_pods(sts: dict, container: dict) -> None:
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for name in ("service-headless.yaml", "service-client.yaml"):
        service = load(name)
        assert service["spec"]["selector"].items() <= pod_labels.items(), name
        (port,) = service["spec"]["ports"]
        assert ports[port["targetPort"]] == port["port"] == 7000, name
    assert load("service-client.yaml")["spec"].get("clusterIP") != "None"
    pdb = load("poddisruptionbudget.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1  # N=3, W=2 and 3 lock voters tolerate one


def test_probes_ask_health_on_the_container_port(container: dict) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    for kind in ("readinessProbe", "livenessProbe"):
        get = container[kind]["httpGet"]
        assert get["path"] == "/health", kind
        assert ports.get(get["port"], get["port"]) == 7000 == int(env["RINGLOCK_PORT"]), kind
    assert container["livenessProbe"]["failureThreshold"] > 1  # one slow answer is no death


def test_each_node_has_its_own_volume_and_the_config(sts: dict, container: dict,
                                                     tmp_path: Path) -> None:
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    toml = load("configmap.yaml")["data"]["ringlock.toml"]
    settings = config_settings(toml, tmp_path)
    assert mounts[claim["metadata"]["name"]] == settings["data"] == "/data"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RINGLOCK_CONFIG"] == f"{mounts['config']}/ringlock.toml"
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == load("configmap.yaml")["metadata"]["name"]
    namespace = next(e for e in container["env"] if e["name"] == "POD_NAMESPACE")
    assert namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def config_settings(toml: str, tmp: Path) -> dict:
    """The settings `kv serve --config` reads from `toml` (unknown keys raise ConfigError)."""
    path = tmp / "settings.toml"
    path.write_text(toml)
    return config.read_toml(str(path))


def test_configmap_binds_all_interfaces_on_the_container_port(tmp_path: Path) -> None:
    settings = config_settings(load("configmap.yaml")["data"]["ringlock.toml"], tmp_path)
    assert settings["listen"] == "0.0.0.0:7000"
    assert "name" not in settings and "join" not in settings  # per node: the entrypoint's
    image_default = config_settings((DEPLOY / "ringlock.toml").read_text(), tmp_path)
    assert image_default == settings  # the image's default file says what the ConfigMap says


# -- the entrypoint ----------------------------------------------------------------------

def run_entrypoint(tmp_path: Path, hostname: str, *extra: str,
                   **env: str) -> subprocess.CompletedProcess:
    """deploy/entrypoint.sh under bash, with a stub `kv` that prints one argument a line."""
    stub = tmp_path / "bin" / "kv"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    stub.chmod(0o755)
    environ = {"PATH": f"{stub.parent}:/usr/bin:/bin", "HOSTNAME": hostname,
               "POD_NAMESPACE": "prod", **env}
    return subprocess.run([BASH, str(DEPLOY / "entrypoint.sh"), *extra], env=environ,
                          capture_output=True, text=True, timeout=10)


def argv_of(tmp_path: Path, hostname: str, *extra: str, **env: str) -> list[str]:
    done = run_entrypoint(tmp_path, hostname, *extra, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def dns(ordinal: int) -> str:
    return f"ringlock-{ordinal}.ringlock.prod.svc.cluster.local:7000"


PEERS = f"1={dns(0)},2={dns(1)},3={dns(2)}"
CONF = "/etc/ringlock/ringlock.toml"


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize(("ordinal", "expected"), [
    (0, ["serve", "--config", CONF, "--name", dns(0), "--lock-peers", PEERS, "--lock-id", "1"]),
    (1, ["serve", "--config", CONF, "--name", dns(1), "--join", dns(0),
         "--lock-peers", PEERS, "--lock-id", "2"]),
    (3, ["serve", "--config", CONF, "--name", dns(3), "--join", dns(0),
         "--lock-peers", PEERS]),
])
def test_entrypoint_derives_name_seed_and_lock_voter(tmp_path: Path, ordinal: int,
                                                     expected: list[str]) -> None:
    assert argv_of(tmp_path, f"ringlock-{ordinal}") == expected


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize("ordinal", [0, 1, 3])
def test_derived_flags_and_configmap_make_a_valid_node_config(tmp_path: Path,
                                                              ordinal: int) -> None:
    """What the pod would run passes `kv serve`'s own checks (lock-id names this node)."""
    toml = tmp_path / "ringlock.toml"
    toml.write_text(load("configmap.yaml")["data"]["ringlock.toml"])
    argv = argv_of(tmp_path, f"ringlock-{ordinal}", RINGLOCK_CONFIG=str(toml))
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    cfg = config.from_args(parser.parse_args(argv[1:]))
    assert (cfg.name, cfg.listen, cfg.data, cfg.port) == (dns(ordinal), "0.0.0.0:7000",
                                                          "/data", 7000)
    assert cfg.join == (None if ordinal == 0 else dns(0))
    assert cfg.lock_id == (ordinal + 1 if ordinal < 3 else None)
    assert sorted(cfg.lock_peers) == [1, 2, 3]


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_entrypoint_passes_extra_flags_and_follows_its_environment(tmp_path: Path) -> None:
    argv = argv_of(tmp_path, "store-12", "--log-level", "DEBUG", RINGLOCK_SERVICE="peers",
                   RINGLOCK_PORT="7100", RINGLOCK_LOCK_VOTERS="0",
                   RINGLOCK_CLUSTER_DOMAIN="k8s.example")
    assert argv == ["serve", "--config", CONF,
                    "--name", "store-12.peers.prod.svc.k8s.example:7100",
                    "--join", "store-0.peers.prod.svc.k8s.example:7100",
                    "--log-level", "DEBUG"]
    rebuilding_seed = argv_of(tmp_path, "ringlock-0", RINGLOCK_SEED_ORDINAL="1")
    assert rebuilding_seed[3:6] == ["--name", dns(0), "--join"]
    assert rebuilding_seed[6] == dns(1)  # pod 0 joins through pod 1 ...
    assert "--join" not in argv_of(tmp_path, "ringlock-1", RINGLOCK_SEED_ORDINAL="1")  # ... alone
    outside = argv_of(tmp_path, "laptop", RINGLOCK_NAME="db1.example:7000")
    assert outside == ["serve", "--config", CONF, "--name", "db1.example:7000"]


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize(("hostname", "env"), [
    ("laptop", {}),                        # no ordinal
    ("ringlock-01", {}),                   # not a StatefulSet ordinal (would read as octal)
    ("ringlock-1; rm -rf x", {}),          # shell text in the hostname
    ("", {}),
    ("ringlock-1", {"RINGLOCK_PORT": "70x0"}),
    ("ringlock-1", {"RINGLOCK_LOCK_VOTERS": "$(id)"}),
    ("ringlock-1", {"RINGLOCK_SEED_ORDINAL": "-1"}),
    ("ringlock-1", {"RINGLOCK_PORT": "07000"}),
])
def test_entrypoint_refuses_what_it_cannot_derive(tmp_path: Path, hostname: str,
                                                  env: dict[str, str]) -> None:
    done = run_entrypoint(tmp_path, hostname, **env)
    assert done.returncode == 64
    assert done.stdout == ""  # kv never ran
    assert re.search(r"entrypoint: .+", done.stderr)


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_entrypoint_starts_a_real_node_under_its_derived_name(tmp_path: Path) -> None:
    """The container's start path with the real `kv`: pod 0 of namespace `t` serves /health
    under its DNS name, bound to the config's listen address, and stops cleanly on SIGTERM
    (bash execs kv, so the signal reaches the node)."""
    (port,) = free_ports(1)
    conf = tmp_path / "ringlock.toml"
    toml = load("configmap.yaml")["data"]["ringlock.toml"]
    conf.write_text(toml.replace('"0.0.0.0:7000"', f'"127.0.0.1:{port}"')
                    .replace('"/data"', f'"{tmp_path / "data"}"'))
    kv_bin = Path(sys.executable).parent
    env = {"PATH": f"{kv_bin}:/usr/bin:/bin", "HOSTNAME": "ringlock-0", "POD_NAMESPACE": "t",
           "RINGLOCK_CONFIG": str(conf)}
    log = (tmp_path / "node.log").open("wb")
    node = subprocess.Popen([BASH, str(DEPLOY / "entrypoint.sh")], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        health = {}

        def answers() -> bool:
            nonlocal health
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.load(r)
            except OSError:
                return node.poll() is not None  # stop waiting if the node died
            return True

        assert wait_until(answers, READY_S)
        assert health == {"status": "ok", "node": dns(0).replace(".prod.", ".t.")}
        assert (tmp_path / "data" / "ring").is_file()
        assert (tmp_path / "data" / "lock").is_dir()  # pod 0 hosts lock voter 1
        node.send_signal(signal.SIGTERM)
        assert node.wait(STOP_S) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        log.close()


# -- the image definition ----------------------------------------------------------------

def test_containerfile_builds_a_non_root_image_with_one_volume() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    by = {}
    for line in lines:
        by.setdefault(line.split()[0], []).append(line.split(None, 1)[1])
    assert by["FROM"] == ["python:3.11-slim"]
    assert by["USER"][-1].split(":")[0] not in ("0", "root")
    assert by["VOLUME"] == ['["/data"]']
    assert by["EXPOSE"] == ["7000"]
    assert by["ENTRYPOINT"] == ['["/usr/local/bin/ringlock-entrypoint"]']
    assert any("deploy/entrypoint.sh /usr/local/bin/ringlock-entrypoint" in c
               for c in by["COPY"])
    for copy_line in by["COPY"]:  # every source exists in the build context (the repo root)
        *sources, _ = copy_line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    packages = {s for c in by["COPY"] for s in c.split()[:-1] if (ROOT / s).is_dir()}
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = re.search(r"include = \[(.*?)\]", pyproject).group(1)
    assert {p.strip(' "*') for p in declared.split(",")} == packages
