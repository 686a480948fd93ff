"""Booster -> ONNX conversion and the parity check, in process (no MLflow, no Triton)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from exporter.convert import convert_to_onnx, onnx_metadata, run_onnx
from exporter.errors import ParityError, UnsupportedModelError
from exporter.flavors import VersionArtifacts, get_flavor
from exporter.source import SourceModel, _describe
from exporter.validate import check_onnx, check_parity, generated_rows, parity_inputs
from treeserve import contract

FEATURES = ["age", "tenure", "spend", "visits"]


def _source(
    objective: str, *, rounds: int = 15, extra: dict | None = None, with_reference: bool = True
) -> SourceModel:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4))
    X[::9, 2] = np.nan
    if objective.startswith("multi"):
        y = rng.integers(0, 3, 400)
    elif objective.startswith("binary"):
        y = (X[:, 0] > 0).astype(int)
    else:
        y = 300 + 100 * X[:, 1]
    booster = xgb.train(
        {"objective": objective, "max_depth": 3, **(extra or {})},
        xgb.DMatrix(X, label=y, feature_names=FEATURES),
        rounds,
    )
    _, n_classes, task = _describe(booster, "m", "1")
    return SourceModel(
        name="m",
        version="1",
        run_id="r",
        booster=booster,
        features=FEATURES,
        task=task,
        n_classes=n_classes,
        objective=objective,
        best_iteration=None,
        source_sha256="0" * 64,
        reference=X[:100] if with_reference else None,
        reference_origin="reference_sample" if with_reference else "generated",
    )


@pytest.mark.parametrize(
    ("objective", "extra", "outputs"),
    [
        ("binary:logistic", {}, {contract.OUTPUT_PROBABILITIES: (None, 2), contract.OUTPUT_LABEL: (None, 1)}),
        (
            "multi:softprob",
            {"num_class": 3},
            {contract.OUTPUT_PROBABILITIES: (None, 3), contract.OUTPUT_LABEL: (None, 1)},
        ),
        ("reg:squarederror", {}, {contract.OUTPUT_PREDICTION: (None, 1)}),
    ],
)
def test_conversion_maps_outputs_to_the_contract_and_keeps_parity(
    objective: str, extra: dict, outputs: dict[str, tuple[int | None, int]]
) -> None:
    src = _source(objective, extra=extra)
    model_bytes = convert_to_onnx(src).SerializeToString()
    check_onnx(model_bytes, name="m")
    inputs = parity_inputs(src, rows=64)
    report = check_parity(src, model_bytes, inputs, proba_atol=1e-5, regression_rtol=1e-5)
    assert set(report.outputs) == set(outputs)
    for name, (_, width) in outputs.items():
        assert report.outputs[name].shape == (len(inputs), width)
    assert report.nan_rows >= len(FEATURES) + 1
    meta = onnx_metadata(model_bytes)
    assert json.loads(meta[contract.TAG_FEATURES]) == FEATURES
    assert meta["mlflow.model_version"] == "1"


def test_parity_inputs_cover_every_missing_feature_and_an_all_missing_row() -> None:
    src = _source("binary:logistic")
    inputs = parity_inputs(src, rows=32)
    assert inputs.dtype == np.float32
    assert np.isnan(inputs).all(axis=1).any()
    assert np.isnan(inputs).any(axis=0).all()  # every feature is missing somewhere


def test_models_without_data_get_rows_within_their_split_ranges() -> None:
    src = _source("reg:squarederror", with_reference=False)
    rows = generated_rows(src, rows=200)
    assert rows.shape == (200, 4)
    assert np.isfinite(rows).all()
    assert len(parity_inputs(src, rows=50)) > 50


def test_a_too_strict_tolerance_fails_parity_with_the_difference() -> None:
    src = _source("reg:squarederror", rounds=40)
    model_bytes = convert_to_onnx(src).SerializeToString()
    with pytest.raises(ParityError, match=r"regression outputs .* differ from XGBoost by"):
        check_parity(src, model_bytes, parity_inputs(src, rows=64), proba_atol=1e-5, regression_rtol=1e-15)


@pytest.mark.parametrize(
    ("objective", "extra", "reason"),
    [
        ("binary:logitraw", {}, "binary:logitraw"),
        ("multi:softmax", {"num_class": 3}, "multi:softprob"),
        ("rank:pairwise", {}, "rank:pairwise cannot be converted"),
        ("reg:squarederror", {"booster": "gblinear"}, "gblinear"),
    ],
)
def test_unsupported_models_are_refused_by_name(objective: str, extra: dict, reason: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    y = rng.integers(0, 2 if "multi" not in objective else 3, 50)
    dtrain = xgb.DMatrix(X, label=y)
    if objective.startswith("rank"):
        dtrain.set_group([50])
    booster = xgb.train({"objective": objective, **extra}, dtrain, 2)
    with pytest.raises(UnsupportedModelError, match=reason):
        _describe(booster, "m", "1")


def test_flavours_write_their_version_files(tmp_path: Path) -> None:
    src = _source("binary:logistic")
    model_bytes = convert_to_onnx(src).SerializeToString()
    from treeserve.repository import TritonModelSpec

    spec = TritonModelSpec(name="m", task="binary", features=tuple(FEATURES))
    art = VersionArtifacts(spec=spec, onnx_model=model_bytes)
    py = tmp_path / "py"
    py.mkdir()
    assert get_flavor("python-ort").write_version_files(art, py) == ["model.onnx", "model.py"]
    assert "TritonPythonModel" in (py / "model.py").read_text()
    ort_dir = tmp_path / "ort"
    ort_dir.mkdir()
    assert get_flavor("onnxruntime").write_version_files(art, ort_dir) == ["model.onnx"]
    assert run_onnx((ort_dir / "model.onnx").read_bytes(), np.zeros((2, 4)))[contract.OUTPUT_LABEL].shape == (
        2,
        1,
    )


def _with_infinite_thresholds(src: SourceModel) -> SourceModel:
    """``src`` with one split threshold of each tree pair set to -inf and +inf (as GPU ``hist`` can)."""
    import dataclasses

    model = json.loads(bytes(src.booster.save_raw("json")))
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    for i, tree in enumerate(trees[:4]):
        tree["split_conditions"][0] = float("-inf") if i % 2 == 0 else float("inf")  # node 0 is a split
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(model).encode()))
    return dataclasses.replace(src, booster=booster)


@pytest.mark.parametrize(
    ("objective", "extra", "with_reference"),
    [
        ("binary:logistic", {}, True),
        ("binary:logistic", {}, False),
        ("multi:softprob", {"num_class": 3}, True),
        ("reg:squarederror", {}, True),
    ],
)
def test_infinite_split_thresholds_export_with_parity(
    objective: str, extra: dict, with_reference: bool
) -> None:
    src = _with_infinite_thresholds(_source(objective, extra=extra, with_reference=with_reference))
    assert "-inf" in src.booster.get_dump(dump_format="json")[0]  # the dump onnxmltools cannot parse
    model_bytes = convert_to_onnx(src).SerializeToString()
    check_onnx(model_bytes, name="m")
    inputs = parity_inputs(src, rows=64)
    assert np.isfinite(inputs[~np.isnan(inputs)]).all()
    report = check_parity(src, model_bytes, inputs, proba_atol=1e-5, regression_rtol=1e-5)
    assert report.nan_rows >= len(FEATURES) + 1
    assert onnx_metadata(model_bytes)["treeserve.rewritten_inf_thresholds"] == "4"
    # every present value goes the same way as in XGBoost, however extreme
    big = np.float32(3e38)
    extreme = np.array([[-big] * 4, [big] * 4, [0.0] * 4], dtype=np.float32)
    check_parity(src, model_bytes, extreme, proba_atol=1e-5, regression_rtol=1e-5)
