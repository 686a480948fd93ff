"""Every command in docs/operations/deploy.md, and every command the Kubernetes manifests run.

Commands that need no cluster run as written. For the ones that need a cluster or a container
engine, the part that can run here runs (the Secret with ``--dry-run=client``, the render behind
``apply -k``, each ``treeserve`` command with ``--help``) and the objects they name must exist in
the rendered overlay. A command this file does not know fails the test: a new command in the docs
needs a check here.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.deploy.test_k8s import (
    K8S,
    NAMESPACE,
    OVERLAYS,
    ROOT,
    WORKLOADS,
    containers,
    find,
    kubectl,
    kustomize,
    one,
    rendered,
)
from tests.unit.docs.test_documented_commands import shell_lines

DOC = ROOT / "docs" / "operations" / "deploy.md"


def doc_commands() -> list[str]:
    """The command lines of the page's shell blocks."""
    return shell_lines(DOC)


def _treeserve_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def _production_secret_keys() -> set[str]:
    keys = set()
    for overlay in ("cpu", "gpu"):
        for w in (d for d in rendered(overlay) if d["kind"] in WORKLOADS):
            for c in containers(w):
                for var in c.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        keys.add(ref["key"])
    return keys


def check_treeserve_help(argv: list[str]) -> None:
    """``treeserve ARGV --help`` exits 0: the command and its options exist."""
    from treeserve_app.cli import app

    assert argv[0] == "treeserve", argv
    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    assert result.exit_code == 0, f"`{shlex.join(argv)}`: {result.output[-300:]}"


def _run_kustomize(argv: list[str]) -> None:
    assert argv[:2] == ["kubectl", "kustomize"] and len(argv) == 3, argv
    proc = subprocess.run(
        [kubectl(), *argv[1:]], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(proc.stdout) if d}
    assert {"Deployment", "Service"} <= kinds, argv


def _run_make_demo(argv: list[str]) -> None:
    # tests/integration/test_demo.py runs `treeserve demo` end to end; here: make demo is that command.
    assert argv == ["make", "demo"]
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and recipe.group(1).split()[-1] == "demo" and "treeserve" in recipe.group(1)
    assert '"demo"' in (ROOT / "tests" / "integration" / "test_demo.py").read_text()


def _run_docker_build(argv: list[str]) -> None:
    # No container engine here: the tag must be the image the manifests run, built from ./Dockerfile.
    assert argv[:3] == ["docker", "build", "-t"] and argv[-1] == "." and (ROOT / "Dockerfile").is_file()
    assert argv[3] == f"treeserve:{_treeserve_version()}"
    images = {
        c["image"] for o in OVERLAYS for w in rendered(o) if w["kind"] in WORKLOADS for c in containers(w)
    }
    assert argv[3] in images


def _run_secret(command: str) -> None:
    create, _, apply = command.partition("|")
    assert shlex.split(apply) == ["kubectl", "apply", "-f", "-"], apply
    argv = shlex.split(create)  # $VARS stay literal: values come from the caller's shell
    assert argv[:4] == ["kubectl", "create", "secret", "generic"] and "--dry-run=client" in argv
    proc = subprocess.run(
        ["bash", "-c", create.replace("kubectl ", f"{shlex.quote(kubectl())} ", 1)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "REDIS_PASSWORD": "r", "FEAST_DB_PASSWORD": "f", "SYNC_WEBHOOK_SECRET": "w"},
    )
    assert proc.returncode == 0, proc.stderr
    secret = yaml.safe_load(proc.stdout)
    assert (secret["kind"], secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "Secret",
        "treeserve-secrets",
        NAMESPACE,
    )
    assert set(secret["data"]) == _production_secret_keys()


def _run_apply(argv: list[str]) -> None:
    # `kubectl apply -k DIR` renders DIR first, exactly as `kubectl kustomize DIR` does.
    assert argv[:3] == ["kubectl", "apply", "-k"] and len(argv) == 4, argv
    proc = kustomize(ROOT / argv[3])
    assert proc.returncode == 0, proc.stderr


def _deployment(argv: list[str], ref: str) -> dict[str, Any]:
    assert argv[1:3] == ["-n", NAMESPACE], argv
    kind, _, name = ref.partition("/")
    assert kind == "deploy", ref
    return one(rendered("cpu"), "Deployment", name)


def _run_kubectl_cluster(argv: list[str]) -> None:
    if argv[3:5] == ["rollout", "status"]:
        _deployment(argv, argv[5])
        return
    assert argv[3] == "exec" and argv[5] == "--", argv
    workload = _deployment(argv, argv[4])
    assert containers(workload, init=False)[0]["image"].startswith("treeserve:")
    check_treeserve_help(argv[6:])


def runner_for(command: str) -> Callable[[], None]:
    """How this file checks one documented command."""
    argv = shlex.split(command)
    if "|" in argv:
        return lambda: _run_secret(command)
    if argv[:2] == ["kubectl", "kustomize"]:
        return lambda: _run_kustomize(argv)
    if argv[:3] == ["kubectl", "apply", "-k"]:
        return lambda: _run_apply(argv)
    if argv[:2] == ["kubectl", "-n"]:
        return lambda: _run_kubectl_cluster(argv)
    if argv[:2] == ["make", "demo"]:
        return lambda: _run_make_demo(argv)
    if argv[:2] == ["docker", "build"]:
        return lambda: _run_docker_build(argv)
    pytest.fail(f"no check for the documented command `{command}`: add one to {__file__}")


def test_every_documented_command_runs_or_is_checked() -> None:
    commands = doc_commands()
    rendered_overlays = {shlex.split(c)[2] for c in commands if c.startswith("kubectl kustomize ")}
    assert rendered_overlays == {f"deploy/k8s/overlays/{o}" for o in OVERLAYS}, (
        "one render command per overlay"
    )
    for command in commands:
        runner_for(command)()


def test_the_doc_names_every_overlay_and_the_headless_service_plan() -> None:
    text = DOC.read_text()
    for overlay in (p.name for p in (K8S / "overlays").iterdir()):
        assert f"`{overlay}`" in text, overlay
    for name in ("TREESERVE_SYNC__TRITON_DNS", "TREESERVE_GATEWAY__TRITON__HTTP_DNS", "ReadWriteMany"):
        assert name in text, name


# ---- the commands the manifests themselves run -------------------------------------------------


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), "x"), a) for a in args]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_treeserve_command_in_the_manifests_is_real(overlay: str) -> None:
    seen = 0
    for w in (d for d in rendered(overlay) if d["kind"] in WORKLOADS):
        for c in containers(w):
            args = [*c.get("command", []), *c.get("args", [])]
            if args and args[0] == "treeserve":
                seen += 1
                check_treeserve_help(_expand(args, {"POD_NAMESPACE": NAMESPACE}))
    assert seen == 3, "gateway, sync and the webhook registration"


def test_dev_mlflow_server_command_is_accepted() -> None:
    from click.testing import CliRunner as ClickRunner
    from mlflow.cli import cli as mlflow_cli

    docs = rendered("dev")
    (mlflow,) = containers(one(docs, "Deployment", "mlflow"))
    args = _expand(mlflow["args"], {})
    assert args[:2] == ["mlflow", "server"] and "postgresql+psycopg2://" in " ".join(args)
    result = ClickRunner().invoke(mlflow_cli, [*args[1:], "--help"])
    assert result.exit_code == 0, result.output
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"]["value"] == "http,https"
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"]["value"] == "true"
    assert "secretKeyRef" in env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]["valueFrom"]
    # The dev Fernet key must be one mlflow server accepts (32 url-safe base64 bytes).
    from cryptography.fernet import Fernet

    (secret,) = find(docs, "Secret")
    Fernet(base64.b64decode(secret["data"]["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]))
