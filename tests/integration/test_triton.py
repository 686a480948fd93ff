"""The real local Triton: exported models answer over HTTP and gRPC like XGBoost, batching, errors."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import xgboost as xgb
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from exporter.errors import ModelLoadError, TritonNotRunningError, TritonStartError
from exporter.install import export, write_model_config
from exporter.triton_server import TritonServer
from tests.fixtures.triton import CHECKOUT, UserRegistry
from treeserve import contract
from treeserve.errors import TreeserveError
from treeserve.procs import free_port
from treeserve.repository import read_model_config
from treeserve_app import clikit

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(
    triton_server: TritonServer, user_registry: UserRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The three user models exported into the session Triton's repository and loaded."""
    import mlflow.xgboost

    home = tmp_path_factory.mktemp("triton-home")
    settings = user_registry.settings(home)
    client = user_registry.client()
    for name in user_registry.models.values():
        export(settings, client, name, version=1, repository=triton_server.repository)
        assert triton_server.load_model(name) == [1]
    mlflow.set_tracking_uri(user_registry.tracking_uri)
    mlflow.set_registry_uri(user_registry.tracking_uri)
    models = {
        task: mlflow.xgboost.load_model(f"models:/{name}/1") for task, name in user_registry.models.items()
    }
    return {"settings": settings, "xgb": models}


def _rows(reg: UserRegistry, n: int = 64) -> np.ndarray:
    X = reg.data[reg.features].to_numpy(dtype=np.float32)[-n:].copy()
    X[::4, 1] = np.nan
    X[0, :] = np.nan
    return X


def _expected(served: dict[str, Any], reg: UserRegistry, task: str, X: np.ndarray) -> np.ndarray:
    model = served["xgb"][task]
    if task == "regression":
        return np.asarray(model.predict(xgb.DMatrix(X, feature_names=reg.features))).reshape(-1, 1)
    return np.asarray(model.predict_proba(pd.DataFrame(X, columns=reg.features)))


def _close(task: str, got: np.ndarray, want: np.ndarray) -> bool:
    tol = 1e-5 * max(1.0, float(np.abs(want).max())) if task == "regression" else 1e-5
    return bool(np.abs(got.astype(np.float64) - want).max() <= tol)


def _output(task: str) -> str:
    return contract.OUTPUT_PREDICTION if task == "regression" else contract.OUTPUT_PROBABILITIES


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_http_answers_equal_xgboost(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry, task: str
) -> None:
    X = _rows(user_registry)
    client = httpclient.InferenceServerClient(url=f"{triton_server.host}:{triton_server.http_port}")
    inp = httpclient.InferInput(contract.INPUT_TENSOR, list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    result = client.infer(user_registry.models[task], [inp], model_version="1")
    got = result.as_numpy(_output(task))
    assert _close(task, got, _expected(served, user_registry, task, X))
    if task != "regression":
        labels = result.as_numpy(contract.OUTPUT_LABEL).reshape(-1)
        assert (labels == got.argmax(axis=1)).all()
    client.close()


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_grpc_answers_equal_xgboost(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry, task: str
) -> None:
    X = _rows(user_registry, 33)
    client = grpcclient.InferenceServerClient(url=triton_server.grpc_url)
    inp = grpcclient.InferInput(contract.INPUT_TENSOR, list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    result = client.infer(user_registry.models[task], [inp], model_version="1")
    assert _close(task, result.as_numpy(_output(task)), _expected(served, user_registry, task, X))
    client.close()


def test_canary_matches_the_stored_reference(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry
) -> None:
    for name in user_registry.models.values():
        result = triton_server.canary(name, 1)
        assert result.rows > 16 and result.max_abs_diff <= 1e-5


def test_concurrent_single_row_requests_are_batched(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry
) -> None:
    name = user_registry.models["binary"]
    before = triton_server.admin.model_stats(name)["model_stats"][0]
    X = _rows(user_registry, 256)
    done = threading.Semaphore(0)
    errors: list[Exception] = []
    client = grpcclient.InferenceServerClient(url=triton_server.grpc_url)

    def callback(result: Any, error: Exception | None) -> None:
        if error is not None:
            errors.append(error)
        done.release()

    for row in X:
        inp = grpcclient.InferInput(contract.INPUT_TENSOR, [1, X.shape[1]], "FP32")
        inp.set_data_from_numpy(row.reshape(1, -1))
        client.async_infer(name, [inp], callback, model_version="1")
    for _ in X:
        assert done.acquire(timeout=60)
    client.close()
    assert not errors
    after = triton_server.admin.model_stats(name)["model_stats"][0]
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == len(X)
    assert executions < inferences  # the dynamic batcher merged requests
    sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
    assert max(sizes) > 1


def test_request_above_max_batch_size_gets_a_clear_error(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry
) -> None:
    name = user_registry.models["regression"]
    limit = read_model_config(triton_server.repository, name).spec.max_batch_size
    X = np.zeros((limit + 1, len(user_registry.features)), dtype=np.float32)
    client = grpcclient.InferenceServerClient(url=triton_server.grpc_url)
    inp = grpcclient.InferInput(contract.INPUT_TENSOR, list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    with pytest.raises(InferenceServerException, match=f"batch-size must be <= {limit}"):
        client.infer(name, [inp], model_version="1")
    client.close()


def test_config_routing_is_visible_in_triton(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry
) -> None:
    name = user_registry.models["binary"]
    client = httpclient.InferenceServerClient(url=f"{triton_server.host}:{triton_server.http_port}")
    cfg = client.get_model_config(name)
    client.close()
    params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
    assert json.loads(params[contract.PARAM_ROUTING]) == {"champion": "1"}
    assert json.loads(params[contract.PARAM_FEATURES]) == user_registry.features
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] > 0


def test_a_broken_version_is_refused_and_the_server_stays_ready(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry
) -> None:
    repo = triton_server.repository
    source = user_registry.models["regression"]
    broken = "broken-regressor"
    shutil.copytree(repo / source / "1", repo / broken / "1")
    (repo / broken / "1" / "model.onnx").write_bytes(b"not an onnx model")
    write_model_config(served["settings"], repo, broken, versions=[1], routing={"champion": "1"})
    with pytest.raises(ModelLoadError, match="broken-regressor"):
        triton_server.load_model(broken, timeout_s=30)
    assert triton_server.is_ready()
    assert triton_server.admin.version_ready(source, 1)


def _copy_model(repo: Path, source: str, target: str) -> Path:
    shutil.rmtree(repo / target, ignore_errors=True)
    shutil.copytree(repo / source, repo / target)
    config = repo / target / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{source}"', f'name: "{target}"', 1))
    return config


def test_the_canary_sends_the_input_name_the_config_declares(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry
) -> None:
    repo = triton_server.repository
    name = "renamed-input"
    config = _copy_model(repo, user_registry.models["binary"], name)
    config.write_text(config.read_text().replace(f'name: "{contract.INPUT_TENSOR}"', 'name: "x"', 1))
    model_py = repo / name / "1" / "model.py"
    model_py.write_text(
        model_py.read_text().replace("get_input_tensor_by_name(r, INPUT)", 'get_input_tensor_by_name(r, "x")')
    )
    assert triton_server.load_model(name) == [1]
    result = triton_server.canary(name, 1)
    assert result.rows > 0 and result.max_abs_diff <= 1e-5


def test_a_config_treeserve_cannot_read_is_reported_as_such(
    triton_server: TritonServer, served: dict[str, Any], user_registry: UserRegistry
) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    name = "no-feature-list"
    config = _copy_model(triton_server.repository, user_registry.models["binary"], name)
    cfg = text_format.Parse(config.read_text(), mc.ModelConfig())
    del cfg.parameters[contract.PARAM_FEATURES]
    config.write_text(text_format.MessageToString(cfg))
    with pytest.raises(TreeserveError, match=r"no-feature-list/config.pbtxt.*empty feature list"):
        triton_server.load_model(name)


def test_start_refuses_a_taken_port_and_a_missing_venv(triton_server: TritonServer, tmp_path: Path) -> None:
    taken = TritonServer(
        venv=CHECKOUT / ".venv-triton",
        repository=tmp_path / "repo",
        run_dir=tmp_path / "run",
        http_port=free_port(),
        grpc_port=triton_server.grpc_port,
        metrics_port=free_port(),
    )
    with pytest.raises(TritonStartError, match=f"gRPC port {triton_server.grpc_port} .* already in use"):
        taken.start()
    missing = TritonServer(venv=tmp_path / "no-venv", repository=tmp_path / "repo", run_dir=tmp_path / "run2")
    with pytest.raises(TritonStartError, match="no-venv is missing"):
        missing.start()


def test_talking_to_a_server_that_is_not_running_says_so(tmp_path: Path) -> None:
    ghost = TritonServer(
        venv=CHECKOUT / ".venv-triton", repository=tmp_path, run_dir=tmp_path / "run", http_port=free_port()
    )
    assert not ghost.status().running
    with pytest.raises(TritonNotRunningError, match="treeserve triton start"):
        ghost.load_model("anything")


def test_cli_start_status_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI life cycle on its own ports: PID file, status, stop."""
    from treeserve_app.cli import app

    monkeypatch.setenv("TREESERVE_HOME", str(tmp_path))
    monkeypatch.setenv("TREESERVE_TRITON__VENV", str(CHECKOUT / ".venv-triton"))
    monkeypatch.setattr(clikit, "_settings", None)
    ports = [str(free_port()) for _ in range(3)]
    runner = CliRunner()
    try:
        res = runner.invoke(
            app,
            ["triton", "start", "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
        )
        assert res.exit_code == 0, res.output
        assert f"HTTP http://127.0.0.1:{ports[0]}" in res.output
        pid_file = tmp_path / "var" / "triton" / "triton.pid"
        assert pid_file.is_file()
        status = runner.invoke(app, ["triton", "status"])
        assert status.exit_code == 0 and "ready=True" in status.output
        stop = runner.invoke(app, ["triton", "stop"])
        assert stop.exit_code == 0 and "stopped" in stop.output
        assert not pid_file.exists()
        down = runner.invoke(app, ["triton", "status"])
        assert down.exit_code == 1 and "not running" in down.output
    finally:
        TritonServer(
            venv=CHECKOUT / ".venv-triton", repository=tmp_path, run_dir=tmp_path / "var" / "triton"
        ).stop()
        monkeypatch.setattr(clikit, "_settings", None)
