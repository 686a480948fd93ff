"""What the deploy tests read: the compose files as docker-compose resolves them, Prometheus, Grafana.

``docker-compose`` (the Debian package validates files without a Docker engine) must be on PATH:
the tests fail, not skip, when it is missing — ``.ci/run`` installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"


def docker_compose() -> str:
    """Path of the docker-compose binary; the test fails when there is none."""
    found = shutil.which("docker-compose")
    if not found:
        pytest.fail(
            "docker-compose is not installed (apt-get install -y docker-compose); it validates the compose files"
        )
    return found


def compose_config(*files: Path, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file .env.example -f ... config`` (all profiles are included)."""
    args = [docker_compose(), "--env-file", str(ENV_EXAMPLE), "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(f)]
    args += ["config"] + (["-q"] if quiet else [])
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def resolved(*files: Path) -> dict[str, Any]:
    """The merged, interpolated compose model."""
    proc = compose_config(*files)
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved(COMPOSE)


@pytest.fixture(scope="module")
def compose_gpu() -> dict[str, Any]:
    return resolved(COMPOSE, COMPOSE_GPU)


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


def command_of(service: dict[str, Any]) -> list[str]:
    """A service's command as a list (docker-compose may keep a string)."""
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
