"""deploy/k8s as a user renders it: every overlay builds, the built-in kinds validate strictly, and
the manifests are wired to the settings tree, the images, the probes and the autoscaling metric.

``kubectl`` (with its built-in kustomize) must be on PATH: the tests fail, not skip, without it.
The custom resources are checked against their schemas in test_k8s_schemas.py.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.conftest import DEPLOY, ROOT
from tests.unit.deploy.test_compose import _setting_exists
from tests.unit.deploy.test_observability import TRITON_METRICS

K8S = DEPLOY / "k8s"
OVERLAYS = ("cpu", "gpu", "dev", "cpu-keda")
NAMESPACE = "treeserve"
# Oldest and newest Kubernetes releases the built-in kinds are validated against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
ADAPTER_CONFIGMAP = "prometheus-adapter-treeserve"


def kubectl() -> str:
    """Path of kubectl; the test fails when there is none."""
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is not installed; it renders deploy/k8s (kubectl kustomize)")
    return found


def kustomize(path: Path) -> subprocess.CompletedProcess[str]:
    """``kubectl kustomize PATH``, as the docs tell a user to run it."""
    return subprocess.run(
        [kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@functools.cache
def rendered_text(overlay: str) -> str:
    """The YAML stream ``kubectl kustomize deploy/k8s/overlays/<overlay>`` prints."""
    proc = kustomize(K8S / "overlays" / overlay)
    assert proc.returncode == 0, f"kubectl kustomize overlays/{overlay}: {proc.stderr}"
    return proc.stdout


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The rendered objects of one overlay."""
    return [d for d in yaml.safe_load_all(rendered_text(overlay)) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Objects of a kind (and name)."""
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single object of a kind and name."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a workload."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    """A workload's containers (init containers first when asked)."""
    spec = pod_spec(workload)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter (requirements/app.lock pins it)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {path.parent} (make venv installs requirements/app.lock)")
    return str(path)


def is_builtin(doc: dict[str, Any]) -> bool:
    """A kind Kubernetes itself serves (core, apps, autoscaling, policy, *.k8s.io), not a CRD."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def adapter_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prometheus-adapter rules of the ConfigMap."""
    config = yaml.safe_load(one(docs, "ConfigMap", ADAPTER_CONFIGMAP)["data"]["config.yaml"])
    rules: list[dict[str, Any]] = config["rules"]
    return rules


# ---- rendering and validation -----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(overlay: str) -> None:
    kinds = {d["kind"] for d in rendered(overlay)}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    } <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_pass_kubernetes_validate_strict(overlay: str, tmp_path: Path) -> None:
    builtin = [d for d in rendered(overlay) if is_builtin(d)]
    assert len(builtin) < len(rendered(overlay)), "the custom resources are checked in test_k8s_schemas.py"
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(yaml.safe_dump_all(builtin))
    for version in KUBERNETES_VERSIONS:
        proc = subprocess.run(
            [venv_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"{overlay} against {version}:\n{proc.stdout}{proc.stderr}"


def test_kubernetes_validate_strict_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The strict check has teeth: a misspelt field in a rendered Deployment fails it."""
    gateway = one(rendered("cpu"), "Deployment", "gateway")
    gateway["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    out = tmp_path / "bad.yaml"
    out.write_text(yaml.safe_dump(gateway))
    proc = subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", "--quiet", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "readinessprobe" in proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_lands_in_the_treeserve_namespace(overlay: str) -> None:
    for d in rendered(overlay):
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']}"


# ---- settings ---------------------------------------------------------------------------------


def _env_names(docs: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for cm in find(docs, "ConfigMap"):
        if cm["metadata"]["name"] != ADAPTER_CONFIGMAP:
            names |= set(cm.get("data", {}))
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        for c in containers(w):
            names |= {e["name"] for e in c.get("env", [])}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_treeserve_variable_is_a_setting(overlay: str) -> None:
    names = {n for n in _env_names(rendered(overlay)) if n.startswith("TREESERVE_")}
    assert {"TREESERVE_SYNC__TRITON_DNS", "TREESERVE_GATEWAY__TRITON__HTTP_DNS"} <= names
    unknown = sorted(
        n for n in names if not _setting_exists(n.removeprefix("TREESERVE_").lower().split("__"))
    )
    assert not unknown, f"not in the settings tree: {unknown}"


def _secret_values(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out = {}
    for s in find(docs, "Secret"):
        out[s["metadata"]["name"]] = {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
    return out


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment kubelet would give a container (secrets the operator creates: placeholders)."""
    maps = {c["metadata"]["name"]: c.get("data", {}) for c in find(docs, "ConfigMap")}
    secrets = _secret_values(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
            continue
        ref = var["valueFrom"]
        if "configMapKeyRef" in ref:
            env[var["name"]] = maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]["key"]
            env[var["name"]] = secrets.get(ref["secretKeyRef"]["name"], {}).get(
                key, "[]" if key.endswith("KEYS") else "s3cret"
            )
        elif "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.namespace"
            env[var["name"]] = NAMESPACE
    return env


def settings_of(
    docs: list[dict[str, Any]], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The treeserve settings a container's environment builds."""
    from treeserve_app.settings import load_settings

    for key in list(os.environ):
        if key.startswith(("TREESERVE_", "MLFLOW_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in container_env(docs, container).items():
        monkeypatch.setenv(key, value)
    return load_settings()


def _mounts(workload: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """mount path -> PVC claim name (or the volume kind) for a container."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    out = {}
    for m in container.get("volumeMounts", []):
        v = volumes[m["name"]]
        out[m["mountPath"]] = (
            v["persistentVolumeClaim"]["claimName"] if "persistentVolumeClaim" in v else m["name"]
        )
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_parse_and_point_at_the_services_and_volumes(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered(overlay)
    triton_svc = one(docs, "Service", "triton")
    ports = {p["name"]: p["port"] for p in triton_svc["spec"]["ports"]}
    gateway, sync = one(docs, "Deployment", "gateway"), one(docs, "Deployment", "sync")
    triton = one(docs, "Deployment", "triton")
    repo_claim = _mounts(triton, containers(triton)[0])["/models"]
    with monkeypatch.context() as m:
        gw = settings_of(docs, gateway["spec"]["template"]["spec"]["containers"][0], m)
        assert gw.gateway.triton.transport() == "http"
        assert gw.gateway.triton.dns() == f"triton:{ports['http']}"
        assert gw.gateway.host == "0.0.0.0"
        cports = {
            p["name"]: p["containerPort"]
            for p in gateway["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert (gw.gateway.port, gw.gateway.grpc_port) == (cports["http"], cports["grpc"])
        mounts = _mounts(gateway, containers(gateway)[0])
        assert mounts[str(gw.exporter.repository)] == repo_claim
        assert mounts[str(gw.path(gw.gateway.predlog_dir))] == "predlog"
        # Pushes append to the offline copy of the activity source: a shared, writable volume.
        assert mounts[str(gw.path(gw.data.data_dir))] == "feature-data"
        assert gw.feast.online_store == "redis" and ",password=" in gw.feast.redis_connection_string
        assert gw.feast_registry_uri.startswith("postgresql+psycopg2://feast:")
        assert gw.mlflow_tracking_uri.startswith("http://")
    with monkeypatch.context() as m:
        main = containers(sync, init=False)[0]
        s = settings_of(docs, main, m)
        assert s.sync.triton_dns == f"grpc://triton:{ports['grpc']}"  # loads over gRPC
        assert s.exporter.flavor == ("fil" if overlay == "gpu" else "onnxruntime")
        mounts = _mounts(sync, main)
        assert mounts[str(s.exporter.repository)] == repo_claim
        state = {p: c for p, c in mounts.items() if c == "sync-state"}
        assert len(state) == 1
        (state_dir,) = state
        assert s.path(s.sync.lock_file).parent == s.path(s.sync.status_file).parent == Path(state_dir)
        assert s.sync.webhook_host == "0.0.0.0" and s.sync.webhook_secret
        assert {p["containerPort"] for p in main["ports"]} == {s.sync.webhook_port}
    with monkeypatch.context() as m:
        init = pod_spec(sync)["initContainers"][0]
        s = settings_of(docs, init, m)
        url = init["args"][-1].replace("$(POD_NAMESPACE)", container_env(docs, init)["POD_NAMESPACE"])
        from exporter.sync.service import WEBHOOK_PATH

        assert url == f"http://sync.{NAMESPACE}.svc.cluster.local:{s.sync.webhook_port}{WEBHOOK_PATH}"
        assert init["args"][:3] == ["treeserve", "sync", "register-webhook"] and s.sync.webhook_secret


def test_triton_loads_the_model_the_gateway_serves_with_explicit_control_except_on_gpu() -> None:
    docs = rendered("cpu")
    triton = containers(one(docs, "Deployment", "triton"))[0]
    args = [
        re.sub(r"\$\((\w+)\)", lambda m: container_env(docs, triton)[m.group(1)], a) for a in triton["args"]
    ]
    assert args[0] == "tritonserver"
    assert {"--model-control-mode=explicit", "--strict-readiness=false", "--model-repository=/models"} <= set(
        args
    )
    settings = one(docs, "ConfigMap", "treeserve-settings")["data"]
    assert f"--load-model={settings['TREESERVE_GATEWAY__MODEL']}" in args
    assert yaml.safe_load(settings["TREESERVE_SYNC__MODELS"]) == [settings["TREESERVE_GATEWAY__MODEL"]]
    # The fil wrapper loads its FIL model from initialize(): not during Triton's own start-up.
    gpu = containers(one(rendered("gpu"), "Deployment", "triton"))[0]
    assert not [a for a in gpu["args"] if a.startswith("--load-model")]
    assert set(gpu["args"]) == set(triton["args"]) - {"--load-model=$(SERVED_MODEL)"}


def test_gpu_overlay_asks_for_a_gpu_and_cpu_does_not() -> None:
    gpu = containers(one(rendered("gpu"), "Deployment", "triton"))[0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"
    for overlay in ("cpu", "dev"):
        for w in (d for d in rendered(overlay) if d["kind"] in WORKLOADS):
            for c in containers(w):
                assert "nvidia.com/gpu" not in c["resources"].get("limits", {}), (
                    overlay,
                    w["metadata"]["name"],
                )


def test_external_services_are_addressed_in_one_configmap() -> None:
    docs = rendered("cpu")
    external = one(docs, "ConfigMap", "treeserve-external")["data"]
    assert set(external) == {"MLFLOW_TRACKING_URI", "REDIS_ADDRESS", "POSTGRES_ADDRESS"}
    # No other rendered object names a host of Redis, PostgreSQL or MLflow.
    text = yaml.safe_dump_all([d for d in docs if d["metadata"]["name"] != "treeserve-external"])
    for value in external.values():
        host = re.sub(r"^\w+://", "", value).split(":")[0]
        assert host not in text, host
    dev = one(rendered("dev"), "ConfigMap", "treeserve-external")["data"]
    dev_services = {s["metadata"]["name"]: s for s in find(rendered("dev"), "Service")}
    for value in dev.values():
        host, port = re.sub(r"^\w+://", "", value).split(":")
        assert int(port) in {p["port"] for p in dev_services[host]["spec"]["ports"]}, value


def test_secret_keys_are_the_documented_ones_and_dev_generates_them() -> None:
    wanted = set()
    for overlay in OVERLAYS:
        for w in (d for d in rendered(overlay) if d["kind"] in WORKLOADS):
            for c in containers(w):
                for var in c.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"].startswith("treeserve-secrets")
                        wanted.add(ref["key"])
    dev_keys = set(_secret_values(rendered("dev")))
    (dev_secret,) = dev_keys
    assert wanted <= set(_secret_values(rendered("dev"))[dev_secret])
    assert not find(rendered("cpu"), "Secret") and not find(rendered("gpu"), "Secret"), (
        "production secrets are the operator's"
    )
    env_example = (ROOT / ".env.example").read_text()
    assert all(re.search(rf"^{k}=", env_example, re.M) for k in wanted), "same names as .env.example"


def test_dev_postgres_init_script_is_the_compose_one() -> None:
    dev = (K8S / "overlays" / "dev" / "postgres-init-databases.sh").read_text()
    assert dev == (DEPLOY / "postgres" / "init-databases.sh").read_text()


# ---- images, probes, resources, security ------------------------------------------------------

_EXACT_TAG = re.compile(r"^(v?\d+\.\d+\.\d+([-.][A-Za-z0-9.]+)?|\d{2}\.\d{2}-py3)$")
# Projects whose releases are numbered major.minor (PostgreSQL 17.5 is a release, not a series).
_TWO_PART_RELEASES = re.compile(r"^(postgres):\d+\.\d+(-[a-z]+)?$")


def image_is_pinned(image: str) -> bool:
    """A digest, or an exact version tag (x.y.z[-suffix], NGC yy.mm-py3); never latest or a major tag."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and bool(_EXACT_TAG.match(tag) or _TWO_PART_RELEASES.match(image))


def test_image_pin_rule() -> None:
    assert image_is_pinned("nvcr.io/nvidia/tritonserver:26.07-py3")
    assert image_is_pinned("redis:7.4.5-bookworm") and image_is_pinned("treeserve:0.1.0")
    assert image_is_pinned("redis@sha256:" + "a" * 64) and image_is_pinned("postgres:17.5-bookworm")
    for bad in (
        "treeserve",
        "treeserve:latest",
        "redis:7.4-bookworm",
        "postgres:17-bookworm",
        "postgres:17",
        "localhost:5000/treeserve",
    ):
        assert not image_is_pinned(bad), bad


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_treeserve_is_this_version(overlay: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for w in (d for d in rendered(overlay) if d["kind"] in WORKLOADS):
        for c in containers(w):
            assert image_is_pinned(c["image"]), f"{w['metadata']['name']}/{c['name']}: {c['image']}"
            if c["image"].split("/")[-1].startswith("treeserve:"):
                assert c["image"].endswith(f":{version}"), c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_requests_limits_and_runs_unprivileged(overlay: str) -> None:
    for w in (d for d in rendered(overlay) if d["kind"] in WORKLOADS):
        where = w["metadata"]["name"]
        pod = pod_spec(w)["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        for c in containers(w, init=False):
            assert "readinessProbe" in c and "livenessProbe" in c, f"{where}/{c['name']}"
        for c in containers(w):
            res = c["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{where}/{c['name']} {part}"
            sec = c["securityContext"]
            assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"]["drop"] == ["ALL"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_pods_and_monitors_reach_services(overlay: str) -> None:
    docs = rendered(overlay)
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    for svc in find(docs, "Service"):
        sel = svc["spec"]["selector"]
        (target,) = [
            w for w in workloads if sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        named = {p["name"] for c in containers(target, init=False) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= named, svc["metadata"]["name"]
    assert one(docs, "Service", "triton")["spec"]["clusterIP"] == "None", "Triton's Service is headless"
    scraped = set()
    for mon in find(docs, "ServiceMonitor"):
        sel = mon["spec"]["selector"]
        for svc in find(docs, "Service"):
            labels = svc["metadata"].get("labels", {})
            ok = sel.get("matchLabels", {}).items() <= labels.items() and all(
                labels.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", [])
            )
            if ok:
                ports = {p["name"] for p in svc["spec"]["ports"]}
                assert {e["port"] for e in mon["spec"]["endpoints"]} <= ports, svc["metadata"]["name"]
                scraped.add(svc["metadata"]["name"])
    assert {"triton", "gateway", "sync"} <= scraped


def test_sync_is_one_replica_recreated_and_pdbs_cover_the_serving_pods() -> None:
    docs = rendered("cpu")
    sync = one(docs, "Deployment", "sync")
    assert sync["spec"]["replicas"] == 1 and sync["spec"]["strategy"] == {"type": "Recreate"}
    assert not [
        h for h in find(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == "sync"
    ]
    covered = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in find(docs, "PodDisruptionBudget")
    }
    assert covered == {"triton", "gateway"}
    access = {p["metadata"]["name"]: p["spec"]["accessModes"] for p in find(docs, "PersistentVolumeClaim")}
    assert access["model-repository"] == ["ReadWriteMany"]


# ---- Triton autoscaling -----------------------------------------------------------------------


def produced_metric(rule: dict[str, Any]) -> str:
    """The custom-metric name prometheus-adapter gives a rule's series (``name.matches`` / ``name.as``)."""
    series = re.match(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)\{", rule["seriesQuery"])
    assert series, f"seriesQuery names no metric: {rule['seriesQuery']}"
    found = re.search(rule["name"]["matches"], series.group(1))
    assert found, f"{rule['name']['matches']!r} does not match {series.group(1)}"
    template = rule["name"].get("as") or ("$1" if found.re.groups else found.group(0))
    return re.sub(r"\$\{?(\d+)\}?", lambda m: found.group(int(m.group(1))), template)


def test_produced_metric_follows_the_adapter_naming() -> None:
    rule = {"seriesQuery": 'http_requests_total{pod!=""}', "name": {"matches": "^(.*)_total$"}}
    assert produced_metric(rule) == "http_requests"
    rule["name"]["as"] = "${1}_per_second"
    assert produced_metric(rule) == "http_requests_per_second"


@pytest.mark.parametrize("overlay", ("cpu", "gpu", "dev"))
def test_triton_hpa_scales_on_the_metric_the_adapter_rule_produces(overlay: str) -> None:
    docs = rendered(overlay)
    hpa = one(docs, "HorizontalPodAutoscaler", "triton")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "triton"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    produced = {produced_metric(r): r for r in adapter_rules(docs)}
    name = metric["pods"]["metric"]["name"]
    assert name in produced, f"HPA asks for {name}, the adapter produces {sorted(produced)}"
    rule = produced[name]
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    query = rule["metricsQuery"]
    assert "nv_inference_queue_duration_us{<<.LabelMatchers>>}" in query
    assert "nv_inference_request_success{<<.LabelMatchers>>}" in query and "<<.GroupBy>>" in query
    assert set(re.findall(r"\bnv_\w+", query + rule["seriesQuery"])) <= TRITON_METRICS


def test_keda_overlay_replaces_the_hpa_with_a_scaled_object_on_the_same_signal() -> None:
    docs, base = rendered("cpu-keda"), rendered("cpu")
    assert not find(docs, "HorizontalPodAutoscaler", "triton") and not find(
        docs, "ConfigMap", ADAPTER_CONFIGMAP
    )
    assert find(docs, "HorizontalPodAutoscaler", "gateway")
    for overlay in ("cpu", "gpu", "dev"):
        assert not find(rendered(overlay), "ScaledObject"), overlay
    so = one(docs, "ScaledObject", "triton")
    assert so["spec"]["scaleTargetRef"]["name"] == "triton"
    (trigger,) = so["spec"]["triggers"]
    hpa = one(base, "HorizontalPodAutoscaler", "triton")
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    assert trigger["metadata"]["threshold"] == hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
    )
    query = trigger["metadata"]["query"]
    selectors = re.findall(r"(nv_\w+)\{([^}]*)\}", query)
    assert {m for m, _ in selectors} == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    for _, labels in selectors:
        assert f'namespace="{so["metadata"]["namespace"]}"' in labels and 'service="triton"' in labels
