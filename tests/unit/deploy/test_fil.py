"""The ``fil`` flavour: FIL config golden files, the version directory it writes, its wrapper."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from exporter import fil
from exporter.errors import ParityError
from exporter.flavors import VersionArtifacts, get_flavor
from treeserve import contract
from treeserve.repository import TritonModelSpec, parse_config, render_config

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "fil"
FEATURES = ("tenure_days", "orders_30d", "spend_30d", "support_tickets_90d")


def _spec(task: str, n_classes: int = 2) -> TritonModelSpec:
    return TritonModelSpec(
        name="churn-prediction",
        task=task,  # type: ignore[arg-type]
        features=FEATURES,
        n_classes=n_classes,
        versions=(3, 4),
        routing={"champion": "3", "challenger": "4"},
        feature_service="churn_model",
        entity_keys=("customer_id",),
        max_batch_size=1024,
        queue_delay_us=200,
    )


SPECS = {
    "binary": _spec("binary"),
    "multiclass": _spec("multiclass", 4),
    "regression": _spec("regression", 1),
}


def _golden(name: str, text: str) -> str:
    path = GOLDEN / name
    if os.environ.get("TREESERVE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    return path.read_text()


@pytest.mark.parametrize("task", sorted(SPECS))
def test_fil_config_matches_golden_file(task: str) -> None:
    text = fil.render_fil_config(SPECS[task])
    assert text == _golden(f"{task}.fil.pbtxt", text)


@pytest.mark.parametrize("task", sorted(SPECS))
def test_wrapper_config_matches_golden_file(task: str) -> None:
    text = render_config(SPECS[task], get_flavor("fil"))
    assert text == _golden(f"{task}.wrapper.pbtxt", text)


@pytest.mark.parametrize("task", sorted(SPECS))
def test_fil_config_is_a_fil_model_on_the_gpu(task: str) -> None:
    spec = SPECS[task]
    cfg = text_format.Parse(fil.render_fil_config(spec), mc.ModelConfig())
    assert cfg.backend == "fil"
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("input__0", mc.TYPE_FP32, [len(FEATURES)])
    ]
    width = spec.n_classes if task != "regression" else 1
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("output__0", mc.TYPE_FP32, [width])]
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert cfg.HasField("dynamic_batching")
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    classifier = "true" if task != "regression" else "false"
    expected = {
        "model_type": "xgboost_json",
        "output_class": classifier,
        "predict_proba": classifier,
        "use_experimental_optimizations": "false",
    }
    if task != "regression":
        expected["threshold"] = "0.5"  # the backend requires it whenever output_class is true
    assert params == expected
    # The JSON handed to Triton's load API is the same message.
    assert json_format.Parse(fil.fil_config_json(spec), mc.ModelConfig()) == cfg


@pytest.mark.parametrize("task", sorted(SPECS))
def test_wrapper_config_keeps_the_contract_and_round_trips(task: str) -> None:
    spec = SPECS[task]
    text = render_config(spec, get_flavor("fil"))
    cfg = text_format.Parse(text, mc.ModelConfig())
    assert cfg.backend == "python"
    assert [i.name for i in cfg.input] == [contract.INPUT_TENSOR]
    assert tuple(o.name for o in cfg.output) == spec.output_names
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    parsed, flavor = parse_config(text)
    assert flavor == "fil"
    assert parsed.routing == spec.routing and parsed.features == spec.features and parsed.task == spec.task


def test_get_flavor_finds_fil() -> None:
    assert get_flavor("fil").name == "fil"


# ---- the version directory ----------------------------------------------------------------


def _train(task: str, n_classes: int = 2, seed: int = 0):  # type: ignore[no-untyped-def]
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, len(FEATURES))).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    signal = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1])
    params: dict[str, object] = {"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed}
    if task == "binary":
        y = (signal + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
        params["objective"] = "binary:logistic"
    elif task == "multiclass":
        y = np.digitize(signal, np.quantile(signal, [0.25, 0.5, 0.75]))
        params.update(objective="multi:softprob", num_class=n_classes)
    else:
        y = signal * 3 + rng.normal(size=len(x))
        params["objective"] = "reg:squarederror"
    dtrain = xgb.DMatrix(x, label=y, missing=np.nan, feature_names=list(FEATURES))
    return xgb.train(params, dtrain, num_boost_round=15), x


def _source(task: str, n_classes: int):  # type: ignore[no-untyped-def]
    from exporter.source import SourceModel

    booster, x = _train(task, n_classes)
    return SourceModel(
        name="churn-prediction",
        version="3",
        run_id="run",
        booster=booster,
        features=list(FEATURES),
        task=task,
        n_classes=n_classes,
        objective=booster.attributes().get("objective", ""),
        best_iteration=None,
        source_sha256="0" * 64,
        reference=x[:200].astype(np.float64),
        xgboost_json=bytes(booster.save_raw("json")),
    )


def _install_like_the_exporter(tmp_path: Path, task: str, n_classes: int) -> tuple[Path, object]:
    """The same steps as ``exporter.install.install_version`` without MLflow: convert, parity, write."""
    from exporter.convert import convert_to_onnx
    from exporter.validate import check_parity, parity_inputs
    from treeserve import repository as repo_mod

    src = _source(task, n_classes)
    onnx_bytes = convert_to_onnx(src).SerializeToString()
    inputs = parity_inputs(src, rows=128)
    report = check_parity(src, onnx_bytes, inputs, proba_atol=1e-5, regression_rtol=1e-5)
    spec = TritonModelSpec(name=src.name, task=task, features=FEATURES, n_classes=n_classes, versions=(3,))  # type: ignore[arg-type]
    version_dir = tmp_path / "churn-prediction" / "3"
    version_dir.mkdir(parents=True)
    files = get_flavor("fil").write_version_files(
        VersionArtifacts(spec=spec, onnx_model=onnx_bytes, xgboost_model=src.xgboost_json), version_dir
    )
    repo_mod.write_reference(version_dir, inputs, report.outputs)
    assert sorted(files) == sorted(fil.FILES)
    return version_dir, src


@pytest.mark.parametrize(("task", "n_classes"), [("binary", 2), ("multiclass", 4), ("regression", 1)])
def test_xgboost_file_reproduces_the_reference_outputs(tmp_path: Path, task: str, n_classes: int) -> None:
    version_dir, _ = _install_like_the_exporter(tmp_path, task, n_classes)
    assert {p.name for p in version_dir.iterdir()} >= {"model.py", "xgboost.json", "fil_config.json"}
    max_diff = fil.check_fil_version(version_dir)
    assert max_diff <= 1e-5
    # And against the reference labels the exporter stored (classifiers).
    if task != "regression":
        with np.load(version_dir / contract.VERSION_REFERENCE_FILE) as ref:
            got = fil.xgboost_file_outputs(version_dir / "xgboost.json", task, ref["inputs"])
            assert np.array_equal(
                got[contract.OUTPUT_LABEL].reshape(-1), ref[contract.OUTPUT_LABEL].reshape(-1)
            )


def test_a_different_model_file_fails_the_check(tmp_path: Path) -> None:
    version_dir, _ = _install_like_the_exporter(tmp_path, "binary", 2)
    other, _ = _train("binary", seed=5)
    (version_dir / "xgboost.json").write_bytes(bytes(other.save_raw("json")))
    with pytest.raises(ParityError, match="differ from the reference"):
        fil.check_fil_version(version_dir)


def test_write_refuses_a_model_file_that_disagrees_with_the_onnx_model(tmp_path: Path) -> None:
    from exporter.convert import convert_to_onnx

    src = _source("binary", 2)
    other, _ = _train("binary", seed=9)
    spec = TritonModelSpec(name=src.name, task="binary", features=FEATURES, versions=(3,))
    with pytest.raises(ParityError):
        get_flavor("fil").write_version_files(
            VersionArtifacts(
                spec=spec,
                onnx_model=convert_to_onnx(src).SerializeToString(),
                xgboost_model=bytes(other.save_raw("json")),
            ),
            tmp_path,
        )


# ---- the wrapper model.py (runs inside Triton; its pure part is tested here) ----------------


@pytest.fixture
def wrapper(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.setitem(
        sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils")
    )
    path = Path(fil.__file__).with_name("fil_model.py.tmpl")
    spec = importlib.util.spec_from_loader("fil_wrapper", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def test_wrapper_maps_fil_binary_output_to_the_contract(wrapper: types.ModuleType) -> None:
    p = np.array([0.1, 0.7, 0.5], dtype=np.float32)
    for raw in (np.column_stack([1 - p, p]), p.reshape(-1, 1), p):
        out = wrapper.fil_outputs(raw, "binary", 2)
        assert out["probabilities"].shape == (3, 2) and out["probabilities"].dtype == np.float32
        np.testing.assert_allclose(out["probabilities"][:, 1], p, atol=1e-7)
        assert out["label"].dtype == np.int64 and out["label"].reshape(-1).tolist() == [0, 1, 0]


def test_wrapper_maps_multiclass_and_regression(wrapper: types.ModuleType) -> None:
    raw = np.array([[0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32)
    out = wrapper.fil_outputs(raw, "multiclass", 4)
    assert out["label"].reshape(-1).tolist() == [2, 0]
    reg = wrapper.fil_outputs(np.array([1.5, -2.0], dtype=np.float32), "regression", 1)
    assert reg["prediction"].shape == (2, 1)
    with pytest.raises(ValueError, match="columns"):
        wrapper.fil_outputs(raw, "multiclass", 3)


def test_fil_config_json_is_what_the_wrapper_reads(tmp_path: Path) -> None:
    data = json.loads(fil.fil_config_json(SPECS["binary"]))
    assert data["backend"] == "fil" and data["input"][0]["name"] == "input__0"
    assert fil.fil_model_name("churn-prediction", 3) == "churn-prediction__fil_v3"
