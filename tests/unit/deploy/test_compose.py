"""docker-compose.yml (and the GPU override) as a user runs them: valid and wired.

The commands themselves are run with ``--help`` in tests/integration/test_deploy_commands.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.unit.deploy.conftest import COMPOSE, COMPOSE_GPU, ENV_EXAMPLE, ROOT, command_of, compose_config


def test_compose_files_validate() -> None:
    for files in ((COMPOSE,), (COMPOSE, COMPOSE_GPU)):
        proc = compose_config(*files, quiet=True)
        assert proc.returncode == 0, f"docker-compose config -q {files}: {proc.stderr}"


def test_locust_services_run_the_projects_locustfile(compose: dict[str, Any]) -> None:
    source = (ROOT / "loadtest" / "locustfile.py").read_text()
    for name in ("locust-master", "locust-worker"):
        service = compose["services"][name]
        cmd = command_of(service)
        assert cmd[0] == "locust" and service["profiles"] == ["loadtest"]
        path = cmd[cmd.index("-f") + 1]
        assert path == "/app/loadtest/locustfile.py"  # the Dockerfile copies it there
        user_classes = [c for c in cmd[1:] if not c.startswith("-") and c != path]
        assert user_classes and all(re.search(rf"^class {c}\(", source, re.M) for c in user_classes), (
            user_classes
        )
    assert "--master" in command_of(compose["services"]["locust-master"])
    assert "--master-host=locust-master" in command_of(compose["services"]["locust-worker"])
    assert (
        "COPY --chown=treeserve:treeserve loadtest/locustfile.py loadtest/locustfile.py"
        in (ROOT / "Dockerfile").read_text()
    )


def test_profiles(compose: dict[str, Any]) -> None:
    profiles = {n: s.get("profiles", []) for n, s in compose["services"].items()}
    assert profiles["locust-master"] == profiles["locust-worker"] == ["loadtest"]
    assert profiles["drift"] == profiles["pipeline"] == ["jobs"]
    always = {
        "postgres",
        "redis",
        "mlflow",
        "triton",
        "sync",
        "sync-webhook",
        "gateway",
        "lb",
        "prometheus",
        "grafana",
    }
    assert all(not profiles[n] for n in always)


# ---- settings: every TREESERVE_* variable names a real setting and parses ---------------------


def _setting_exists(path: list[str]) -> bool:
    from treeserve_app.settings import Settings

    model: Any = Settings
    for i, part in enumerate(path):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            # A leaf: the path ends here, unless the field is a mapping (deeper keys are its entries).
            return i == len(path) - 1 or getattr(annotation, "__origin__", None) is dict
        model = annotation
    return True


def _treeserve_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if str(s.get("image", "")).startswith("treeserve")}


def test_every_treeserve_variable_is_a_setting(compose: dict[str, Any], compose_gpu: dict[str, Any]) -> None:
    unknown = set()
    for model in (compose, compose_gpu):
        for name, service in _treeserve_services(model).items():
            for key in service.get("environment", {}):
                # TREESERVE_LOADTEST_<NAME> (one underscore) are the locustfile's own variables.
                if key.startswith("TREESERVE_") and not re.match(r"TREESERVE_LOADTEST_[A-Z]", key):
                    path = key.removeprefix("TREESERVE_").lower().split("__")
                    if not _setting_exists(path):
                        unknown.add(f"{name}: {key}")
    assert not unknown, sorted(unknown)


def _settings_for(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from treeserve_app.settings import load_settings

    for key in list(os.environ):
        if key.startswith(("TREESERVE_", "MLFLOW_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in service.get("environment", {}).items():
        monkeypatch.setenv(key, "" if value is None else str(value))
    return load_settings()


def test_service_settings_parse_and_point_at_the_right_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = _treeserve_services(compose)
    for name, service in services.items():
        with monkeypatch.context() as m:
            s = _settings_for(service, m)
            if name == "mlflow":
                continue
            assert s.mlflow_tracking_uri == "http://mlflow:5000", name
            assert s.feast.online_store == "redis" and s.feast.redis_connection_string.startswith(
                "redis:6379"
            )
            assert (
                s.feast_registry_uri.startswith("postgresql+psycopg2://feast:")
                and "@postgres:5432/feast" in s.feast_registry_uri
            )
            assert str(s.exporter.repository) == "/models"
    with monkeypatch.context() as m:
        gw = _settings_for(services["gateway"], m)
        assert (gw.gateway.host, gw.gateway.port, gw.gateway.triton.transport()) == ("0.0.0.0", 8080, "http")
        assert gw.gateway.triton.endpoints() == ["triton:8000"]
    with monkeypatch.context() as m:
        sync = _settings_for(services["sync"], m)
        # model loads over gRPC: a load over HTTP would silence the gateways' HTTP hop
        assert sync.sync.triton_url == "grpc://triton:8001" and sync.sync.webhook_host == "0.0.0.0"
        assert sync.sync.webhook_secret


def test_cpu_triton_loads_the_onnxruntime_flavour_and_gpu_the_fil_flavour(
    compose: dict[str, Any], compose_gpu: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    triton = compose["services"]["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", triton["image"]), triton["image"]
    cmd = command_of(triton)
    assert "--model-control-mode=explicit" in cmd and "--strict-readiness=false" in cmd
    assert any(v["target"] == "/models" for v in _volumes(triton))
    with monkeypatch.context() as m:
        assert _settings_for(compose["services"]["sync"], m).exporter.flavor == "onnxruntime"
    for name in ("sync", "pipeline", "bootstrap"):
        with monkeypatch.context() as m:
            assert _settings_for(compose_gpu["services"][name], m).exporter.flavor == "fil", name
    devices = compose_gpu["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in triton or "resources" not in triton.get("deploy", {})


def _volumes(service: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target, *_ = [*v.split(":"), ""]
            out.append({"source": source, "target": target})
        else:
            out.append(v)
    return out


def test_sync_and_triton_share_the_repository_and_webhook_is_registered(compose: dict[str, Any]) -> None:
    services = compose["services"]
    repo = {n: [v for v in _volumes(s) if v["target"] == "/models"] for n, s in services.items()}
    assert repo["sync"][0]["source"] == repo["triton"][0]["source"] == repo["gateway"][0]["source"]
    hook = command_of(services["sync-webhook"])
    assert hook[:3] == ["treeserve", "sync", "register-webhook"]
    sync_port = services["sync"]["environment"]["TREESERVE_SYNC__WEBHOOK_PORT"]
    assert hook[3] == f"http://sync:{sync_port}/webhooks/mlflow"
    from exporter.sync.service import WEBHOOK_PATH

    assert hook[3].endswith(WEBHOOK_PATH)
    assert services["sync-webhook"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


# ---- start-up order, ports, secrets -----------------------------------------------------------


def test_depends_on_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if "healthcheck" in services[dep]:
                assert cond["condition"] == "service_healthy", f"{name} -> {dep}: {cond}"
    # No cycles.
    graph = {n: set(s.get("depends_on") or {}) for n, s in services.items()}
    done: set[str] = set()
    while graph:
        ready = {n for n, deps in graph.items() if deps <= done}
        assert ready, f"depends_on cycle among {sorted(graph)}"
        done |= ready
        graph = {n: d for n, d in graph.items() if n not in ready}
    for name in ("postgres", "redis", "mlflow", "triton", "sync", "gateway", "lb", "prometheus"):
        assert "healthcheck" in services[name], name


def test_published_ports_bind_loopback_by_default(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {port}"
    raw = COMPOSE.read_text()
    # Only the load balancer (the API) may be opened up, through TREESERVE_PUBLIC_BIND.
    assert len(re.findall(r'"\$\{TREESERVE_PUBLIC_BIND:-127\.0\.0\.1\}:', raw)) == 2
    assert "gateway" not in {n for n, s in compose["services"].items() if s.get("ports")}


def test_secrets_come_from_the_env_file(compose: dict[str, Any], compose_gpu: dict[str, Any]) -> None:
    raw = COMPOSE.read_text() + COMPOSE_GPU.read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", raw))
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", raw))
    assert {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
        "SYNC_WEBHOOK_SECRET",
    } <= required
    assert all(example[k] == "change-me" for k in required), "secrets in .env.example must be placeholders"
    # Resolved with .env.example, every secret-looking value is that placeholder (nothing literal).
    secretish = re.compile(r"PASSWORD|SECRET|ENCRYPTION_KEY|SECRET_ACCESS_KEY")
    for model in (compose, compose_gpu):
        for name, service in model["services"].items():
            for key, value in (service.get("environment") or {}).items():
                if secretish.search(key) and value:
                    assert value == "change-me", f"{name}: {key} does not come from .env"
                if "password=" in str(value) or ("://" in str(value) and "@" in str(value)):
                    assert "change-me" in str(value), f"{name}: {key} embeds a literal credential"
            cmd = " ".join(command_of(service))
            if "@" in cmd and "://" in cmd:
                assert "change-me" in cmd, f"{name}: credential in the command is not from .env"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/.env" in ignored or ".env" in ignored
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_postgres_init_creates_mlflow_and_feast_databases(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    init = [v for v in _volumes(pg) if v["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert init, "init script not mounted"
    script = Path(init[0]["source"]).read_text()
    assert "create mlflow" in script and "create feast" in script and "create airflow" in script
    proc = subprocess.run(["sh", "-n", init[0]["source"]], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_dockerfile_is_multi_stage_non_root_and_runtime_only() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2
    final = text.split("\nFROM ")[-1]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert "requirements/app.lock" in text and "requirements/app.in" in text
    for tool in ("pytest", "ruff", "mypy"):
        assert tool in text.split("grep -vE")[1].split("\n")[0], f"{tool} should be filtered out of the image"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", ".venv-triton", "var", "tests", ".git"} <= set(ignore)


def test_image_requirements_are_the_runtime_ones_and_all_pinned() -> None:
    """The Dockerfile's own filter, run here: no test/lint tools, every package pinned by the lock."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    pipeline = re.search(r"RUN (grep -vE .*?) > /tmp/runtime\.in", text)
    assert pipeline, "runtime requirements filter not found"
    proc = subprocess.run(
        ["sh", "-c", pipeline.group(1)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    names = [
        re.split(r"[\[<>=!~ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for line in proc.stdout.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {"mlflow", "feast", "tritonclient", "xgboost-cpu", "locust", "evidently"} <= set(names)
    assert not {"pytest", "pytest-timeout", "hypothesis", "schemathesis", "ruff", "mypy"} & set(names)
    assert "tritonclient[grpc,http]" in proc.stdout
    lock = ROOT / "requirements" / "app.lock"
    if lock.exists():
        pinned = {
            line.split("==")[0].strip().lower().replace("_", "-")
            for line in lock.read_text().splitlines()
            if "==" in line
        }
        assert set(names) <= pinned, f"not pinned by app.lock: {sorted(set(names) - pinned)}"


# ---- profile airflow: the pipeline DAG on Airflow's pinned image, metadata in PostgreSQL ------

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-dag-processor", "airflow-scheduler")


def test_airflow_profile_runs_the_dag_folder_on_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    dags = str(ROOT / "deploy" / "airflow" / "dags")
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service["profiles"] == ["airflow"], name
        assert service["build"]["target"] == "airflow", name
        env = service["environment"]
        conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert conn.startswith("postgresql+psycopg2://airflow:") and conn.endswith("@postgres:5432/airflow")
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW_VAR_TREESERVE_PYTHON"] == "/opt/venv/bin/python"
        if name != "airflow-init":
            assert {"source": dags, "target": "/opt/airflow/dags"} in [
                {k: v[k] for k in ("source", "target")} for v in _volumes(service)
            ], name
    assert command_of(services["airflow-init"]) == ["airflow", "db", "migrate"]
    assert command_of(services["airflow-scheduler"]) == ["airflow", "scheduler"]
    assert command_of(services["airflow-apiserver"]) == ["airflow", "api-server"]
    assert command_of(services["airflow-dag-processor"]) == ["airflow", "dag-processor"]
    for name in ("airflow-apiserver", "airflow-scheduler"):
        assert "healthcheck" in services[name], name
    # the scheduler runs the tasks: it sees the state the `pipeline` job sees, at the same paths
    job = {v["target"]: v["source"] for v in _volumes(services["pipeline"])}
    scheduler = {v["target"]: v["source"] for v in _volumes(services["airflow-scheduler"])}
    assert job.items() <= scheduler.items()


def test_airflow_image_is_the_locked_airflow_version_with_treeserve_beside_it() -> None:
    lock = (ROOT / "requirements" / "airflow.lock").read_text()
    version = re.search(r"^apache-airflow==(\S+)$", lock, re.M)
    assert version, "requirements/airflow.lock pins no apache-airflow"
    text = (ROOT / "Dockerfile").read_text()
    assert f"ARG AIRFLOW_IMAGE=apache/airflow:{version.group(1)}-python3.11" in text
    assert f"AIRFLOW_IMAGE=apache/airflow:{version.group(1)}-python3.11" in ENV_EXAMPLE.read_text()
    stage = text.split("AS airflow\n", 1)[1].split("\nFROM ", 1)[0]
    assert "COPY --from=build /opt/venv /opt/venv" in stage and "libgomp1" in stage
    assert text.split("\nFROM ")[-1].startswith("${PYTHON_IMAGE} AS runtime")  # the default target
