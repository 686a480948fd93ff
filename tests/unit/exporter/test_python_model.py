"""The python-ort ``model.py``: one ONNX Runtime call per dynamic batch, split back per request.

Triton's ``triton_python_backend_utils`` exists only inside the stub, so a minimal stand-in with the
same names is installed in ``sys.modules``; the ONNX model and ONNX Runtime are real.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from exporter.convert import convert_to_onnx, run_onnx
from exporter.flavors import VersionArtifacts, get_flavor
from exporter.source import SourceModel
from treeserve import contract
from treeserve.repository import TritonModelSpec, build_model_config


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: Any = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


def _fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = _Tensor  # type: ignore[attr-defined]
    mod.InferenceResponse = _Response  # type: ignore[attr-defined]
    mod.TritonError = str  # type: ignore[attr-defined]
    mod.get_input_tensor_by_name = lambda req, name: _Tensor(name, req[name])  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def model_py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, bytes]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
        xgb.DMatrix(X, label=rng.integers(0, 3, 200)),
        5,
    )
    src = SourceModel(
        name="m",
        version="1",
        run_id="",
        booster=booster,
        features=["a", "b", "c"],
        task="multiclass",
        n_classes=3,
        objective="multi:softprob",
        best_iteration=None,
        source_sha256="",
    )
    onnx_bytes = convert_to_onnx(src).SerializeToString()
    spec = TritonModelSpec(name="m", task="multiclass", features=("a", "b", "c"), n_classes=3, versions=(1,))
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    get_flavor("python-ort").write_version_files(
        VersionArtifacts(spec=spec, onnx_model=onnx_bytes), version_dir
    )

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    loaded = importlib.util.spec_from_file_location("treeserve_model_py", version_dir / "model.py")
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    from google.protobuf import json_format

    config = json_format.MessageToDict(
        build_model_config(spec, get_flavor("python-ort")), preserving_proto_field_name=True
    )
    model = module.TritonPythonModel()
    model.initialize(
        {"model_config": json.dumps(config), "model_repository": str(tmp_path / "m"), "model_version": "1"}
    )
    return model, onnx_bytes


def test_one_batch_of_requests_is_scored_once_and_split_back(model_py: tuple[Any, bytes]) -> None:
    model, onnx_bytes = model_py
    rng = np.random.default_rng(1)
    parts = [rng.normal(size=(n, 3)).astype(np.float32) for n in (1, 4, 2)]
    parts[1][0, 1] = np.nan
    calls = []
    real_run = model.session.run
    model.session = types.SimpleNamespace(run=lambda *a, **k: calls.append(1) or real_run(*a, **k))
    responses = model.execute([{contract.INPUT_TENSOR: p} for p in parts])
    assert len(calls) == 1
    assert [r.outputs[contract.OUTPUT_PROBABILITIES].shape for r in responses] == [(1, 3), (4, 3), (2, 3)]
    for part, resp in zip(parts, responses, strict=True):
        want = run_onnx(onnx_bytes, part)
        np.testing.assert_array_equal(
            resp.outputs[contract.OUTPUT_PROBABILITIES], want[contract.OUTPUT_PROBABILITIES]
        )
        np.testing.assert_array_equal(resp.outputs[contract.OUTPUT_LABEL], want[contract.OUTPUT_LABEL])


def test_a_failing_batch_answers_every_request_with_an_error(model_py: tuple[Any, bytes]) -> None:
    model, _ = model_py
    bad = np.zeros((2, 5), dtype=np.float32)  # wrong width
    responses = model.execute([{contract.INPUT_TENSOR: bad}, {contract.INPUT_TENSOR: bad}])
    assert len(responses) == 2
    assert all(r.error and "inference failed" in r.error for r in responses)
