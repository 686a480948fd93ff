"""The custom resources in deploy/k8s against their vendored schemas, with ``check-jsonschema``.

ServiceMonitor and ScaledObject: upstream's CRDs (deploy/k8s/schemas/README.md says which release);
the prometheus-adapter rule file: the schema written from the adapter's config types.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.test_k8s import (
    ADAPTER_CONFIGMAP,
    K8S,
    OVERLAYS,
    find,
    is_builtin,
    one,
    rendered,
    venv_tool,
)

SCHEMAS = K8S / "schemas"
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
}
ADAPTER_SCHEMA = SCHEMAS / "prometheus-adapter-config.schema.json"


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """An openAPIV3Schema as the API server applies it: undeclared fields are errors.

    Objects that declare ``properties`` reject other keys unless they say
    ``x-kubernetes-preserve-unknown-fields`` or give ``additionalProperties`` themselves.
    Patterns are Go (RE2) regexes; the one construct Python's ``re`` reads differently, an inline
    flag group after ``^`` (``^(?i)(abort|warn)?$``), moves to the front, where Python needs it.
    """
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and (m := re.match(r"\^(\(\?[a-zA-Z]+\))", pattern)):
                node["pattern"] = m.group(1) + "^" + pattern[m.end() :]
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def crd_json_schema(path: Path, api_version: str, kind: str) -> dict[str, Any]:
    """The JSON Schema of one served version of a vendored CRD, apiVersion and kind fixed."""
    crd = yaml.safe_load(path.read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind, path.name
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = structural(served["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def check_jsonschema(schema: Path, instances: list[Path]) -> subprocess.CompletedProcess[str]:
    """``check-jsonschema --schemafile SCHEMA INSTANCE...``."""
    return subprocess.run(
        [
            venv_tool("check-jsonschema"),
            "--regex-variant",
            "python",
            "--schemafile",
            str(schema),
            *map(str, instances),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def _check_custom_resources(docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, int]:
    """Validate every custom resource of a render; how many of each kind were checked."""
    checked: dict[str, int] = {}
    for (api_version, kind), crd_file in CRDS.items():
        objs = [d for d in docs if d["apiVersion"] == api_version and d["kind"] == kind]
        if not objs:
            continue
        schema = write_json(
            tmp_path / f"{kind}.schema.json", crd_json_schema(SCHEMAS / crd_file, api_version, kind)
        )
        files = [write_json(tmp_path / f"{kind}-{i}.json", o) for i, o in enumerate(objs)]
        proc = check_jsonschema(schema, files)
        assert proc.returncode == 0, f"{kind}:\n{proc.stdout}{proc.stderr}"
        checked[kind] = len(objs)
    unknown = {(d["apiVersion"], d["kind"]) for d in docs if not is_builtin(d)} - set(CRDS)
    assert not unknown, f"custom resources without a vendored schema: {sorted(unknown)}"
    return checked


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crds(overlay: str, tmp_path: Path) -> None:
    checked = _check_custom_resources(rendered(overlay), tmp_path)
    assert checked.get("ServiceMonitor") == 2
    assert checked.get("PrometheusRule") == 1
    assert ("ScaledObject" in checked) == (overlay == "cpu-keda")


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(intervall="15s")),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval="15 seconds")),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(severity="warning")),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0].pop("name")),
        ("ScaledObject", lambda o: o["spec"].update(maxReplicas=3)),
        ("ScaledObject", lambda o: o["spec"]["triggers"][0].pop("type")),
    ],
)
def test_crd_check_rejects_a_broken_custom_resource(kind: str, breakage: Any, tmp_path: Path) -> None:
    docs = copy.deepcopy(rendered("cpu-keda"))
    (obj,) = find(docs, kind)[:1]
    breakage(obj)
    with pytest.raises(AssertionError, match=kind):
        _check_custom_resources(docs, tmp_path)


def _adapter_config(overlay: str) -> Any:
    return yaml.safe_load(one(rendered(overlay), "ConfigMap", ADAPTER_CONFIGMAP)["data"]["config.yaml"])


@pytest.mark.parametrize("overlay", ("cpu", "gpu", "dev"))
def test_adapter_rule_file_matches_the_adapter_config_schema(overlay: str, tmp_path: Path) -> None:
    proc = check_jsonschema(ADAPTER_SCHEMA, [write_json(tmp_path / "config.json", _adapter_config(overlay))])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_adapter_schema_rejects_an_unknown_key(tmp_path: Path) -> None:
    config = _adapter_config("cpu")
    config["rules"][0]["name"]["as_"] = config["rules"][0]["name"].pop("as")
    proc = check_jsonschema(ADAPTER_SCHEMA, [write_json(tmp_path / "config.json", config)])
    assert proc.returncode != 0 and "as_" in proc.stdout + proc.stderr


def test_vendored_crds_are_the_ones_the_readme_names() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    for crd_file in CRDS.values():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{crd_file}`")), None)
        assert row, f"{crd_file} has no row in schemas/README.md"
        digest = hashlib.sha256((SCHEMAS / crd_file).read_bytes()).hexdigest()
        assert digest in row, f"{crd_file}: sha256 {digest} differs from the README's"
        assert re.search(r"\| v\d+\.\d+\.\d+ \(commit [0-9a-f]{40}\)", row), row


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rule_of_the_rule_files_is_loaded_by_the_operator(overlay: str) -> None:
    """The PrometheusRule carries each recording rule and alert of deploy/prometheus/rules/ as is."""
    (rule,) = find(rendered(overlay), "PrometheusRule")
    deployed = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    written = [
        r
        for path in sorted((K8S.parent / "prometheus" / "rules").glob("*.yml"))
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
    ]
    assert deployed == written
    assert {r["alert"] for r in deployed if "alert" in r} >= {
        "TreeserveScoreMeanShift",
        "TreeserveDriftShareHigh",
    }
