"""Exporting user-registered XGBoost models: parity, metadata, refusals, an untouched repository on failure."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from exporter.convert import onnx_metadata, run_onnx
from exporter.errors import ParityError, RepositoryError, UnsupportedModelError
from exporter.install import export, install_version
from tests.fixtures.triton import UserRegistry
from treeserve import contract
from treeserve.errors import NotFoundError
from treeserve.repository import installed_versions, read_model_config, read_reference
from treeserve_app import clikit

pytestmark = pytest.mark.integration


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 (what 'untouched' means)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows_with_nans(reg: UserRegistry) -> np.ndarray:
    X = reg.data[reg.features].to_numpy(dtype=np.float32)[:200].copy()
    X[::5, 0] = np.nan
    X[::7, 2] = np.nan
    X[-1, :] = np.nan
    return X


def _xgb_model(reg: UserRegistry, name: str) -> Any:
    import mlflow.xgboost

    return mlflow.xgboost.load_model(f"models:/{name}/1")


@pytest.fixture(scope="module")
def exported(user_registry: UserRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three user models exported once into one repository."""
    home = tmp_path_factory.mktemp("export-home")
    settings = user_registry.settings(home)
    client = user_registry.client()
    results = {task: export(settings, client, name, version=1) for task, name in user_registry.models.items()}
    return {"settings": settings, "repo": settings.path(settings.exporter.repository), "results": results}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_exported_onnx_reproduces_xgboost_on_rows_with_nans(
    exported: dict[str, Any], user_registry: UserRegistry, task: str
) -> None:
    import mlflow

    mlflow.set_tracking_uri(user_registry.tracking_uri)
    mlflow.set_registry_uri(user_registry.tracking_uri)
    name = user_registry.models[task]
    inst = exported["results"][task].installed
    onnx_bytes = (inst.path / "model.onnx").read_bytes()
    X = _rows_with_nans(user_registry)
    got = run_onnx(onnx_bytes, X)
    model = _xgb_model(user_registry, name)
    if task == "regression":
        want = model.predict(xgb.DMatrix(X, feature_names=user_registry.features))
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(got[contract.OUTPUT_PREDICTION].reshape(-1) - want).max() <= 1e-5 * scale
        assert got[contract.OUTPUT_PREDICTION].shape == (len(X), 1)
    else:
        import pandas as pd

        want = model.predict_proba(pd.DataFrame(X, columns=user_registry.features))
        assert np.abs(got[contract.OUTPUT_PROBABILITIES] - want).max() <= 1e-5
        assert got[contract.OUTPUT_LABEL].shape == (len(X), 1)
        assert got[contract.OUTPUT_LABEL].dtype == np.int64


def test_early_stopped_model_is_exported_at_its_best_iteration(exported: dict[str, Any]) -> None:
    meta = exported["results"]["binary"].installed.metadata
    assert meta.best_iteration is not None
    assert meta.best_iteration < 199  # the test above compares against predict_proba (best iteration)


def test_feature_list_comes_from_the_signature_and_is_recorded_everywhere(
    exported: dict[str, Any], user_registry: UserRegistry
) -> None:
    repo = exported["repo"]
    for task, name in user_registry.models.items():
        inst = exported["results"][task].installed
        assert inst.features == user_registry.features
        cfg = read_model_config(repo, name)
        assert cfg.features == user_registry.features
        assert cfg.task == task
        meta = json.loads((inst.path / contract.VERSION_METADATA_FILE).read_text())
        assert meta["features"] == user_registry.features
        assert meta["model"] == name and meta["version"] == "1" and meta["run_id"]
        onnx_meta = onnx_metadata((inst.path / "model.onnx").read_bytes())
        assert json.loads(onnx_meta[contract.TAG_FEATURES]) == user_registry.features
        assert onnx_meta["mlflow.model_name"] == name
        assert onnx_meta["source_sha256"] == meta["source_sha256"] and len(meta["source_sha256"]) == 64


def test_routing_follows_registry_aliases(exported: dict[str, Any], user_registry: UserRegistry) -> None:
    repo = exported["repo"]
    assert read_model_config(repo, user_registry.models["binary"]).routing == {"champion": "1"}
    assert read_model_config(repo, user_registry.models["regression"]).routing == {}
    assert read_model_config(repo, user_registry.models["binary"]).versions == [1]


def test_reference_is_stored_for_canary_checks(exported: dict[str, Any], user_registry: UserRegistry) -> None:
    ref = read_reference(exported["repo"], user_registry.models["multiclass"], 1)
    assert ref.inputs.dtype == np.float32 and ref.inputs.shape[1] == len(user_registry.features)
    assert np.isnan(ref.inputs).any(axis=1).sum() >= len(user_registry.features) + 1
    assert ref.outputs[contract.OUTPUT_PROBABILITIES].shape == (len(ref.inputs), 4)
    # no input example logged: rows were generated within the trees' ranges
    meta = exported["results"]["multiclass"].installed.metadata
    assert meta.parity["reference"] == "generated"
    assert exported["results"]["regression"].installed.metadata.parity["reference"] == "input_example"


def test_second_export_of_the_same_version_reuses_it(
    exported: dict[str, Any], user_registry: UserRegistry
) -> None:
    client = user_registry.client()
    again = install_version(
        exported["settings"],
        client,
        user_registry.models["regression"],
        1,
        repository=exported["repo"],
        flavor=None,
    )
    assert again.reused
    assert installed_versions(exported["repo"], user_registry.models["regression"]) == [1]


def test_onnxruntime_flavour_writes_only_the_onnx_file(user_registry: UserRegistry, tmp_path: Path) -> None:
    settings = user_registry.settings(tmp_path)
    result = export(
        settings,
        user_registry.client(),
        user_registry.models["binary"],
        alias="champion",
        flavor="onnxruntime",
    )
    assert sorted(p.name for p in result.installed.path.iterdir()) == [
        "model.onnx",
        contract.VERSION_REFERENCE_FILE,
        contract.VERSION_METADATA_FILE,
    ]
    assert 'platform: "onnxruntime_onnx"' in result.config_path.read_text()


def test_failed_parity_leaves_the_repository_untouched(
    exported: dict[str, Any], user_registry: UserRegistry, tmp_path: Path
) -> None:
    # float32 trees drift ~1e-4 on targets in the hundreds: a tolerance of 1e-12 cannot be met.
    strict = user_registry.settings(tmp_path, exporter={"regression_rtol": 1e-12})
    repo = tmp_path / "repo"  # (a served version is never re-exported in place: a fresh repository)
    repo.mkdir()
    before = _tree(repo)
    with pytest.raises(ParityError, match=r"user-regressor.*differ from XGBoost by .*nothing was installed"):
        install_version(
            strict, user_registry.client(), user_registry.models["regression"], 1, repository=repo
        )
    assert _tree(repo) == before
    assert not any((repo / ".staging").glob("*"))


def test_unwritable_repository_is_refused_by_path(user_registry: UserRegistry, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = user_registry.settings(tmp_path)
    with pytest.raises(RepositoryError, match="a-file/repo"):
        install_version(
            settings, user_registry.client(), user_registry.models["binary"], 1, repository=blocker / "repo"
        )


def test_unknown_model_alias_and_version_are_named(user_registry: UserRegistry, tmp_path: Path) -> None:
    settings = user_registry.settings(tmp_path)
    client = user_registry.client()
    with pytest.raises(NotFoundError, match="'no-such-model'"):
        export(settings, client, "no-such-model", alias="champion")
    with pytest.raises(NotFoundError, match="no alias 'challenger'"):
        export(settings, client, user_registry.models["binary"], alias="challenger")
    with pytest.raises(NotFoundError, match="no version 9"):
        export(settings, client, user_registry.models["binary"], version=9)
    assert not (tmp_path / "model_repository" / user_registry.models["binary"]).exists()


def _log_and_register(tracking_uri: str, name: str, model: Any, X: Any) -> None:
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run():
        mlflow.xgboost.log_model(
            model,
            name="model",
            signature=infer_signature(X),
            registered_model_name=name,
            pip_requirements=["xgboost"],
        )


def test_unsupported_models_are_refused_naming_the_reason(
    user_registry: UserRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    X = user_registry.data[user_registry.features].head(300).copy()
    y = (X["orders_30d"] > 2).astype(int)
    raw = xgb.train({"objective": "binary:logitraw", "max_depth": 2}, xgb.DMatrix(X, label=y), 5)
    _log_and_register(user_registry.tracking_uri, "user-logitraw", raw, X)

    Xc = X.copy()
    Xc["plan"] = pd.Categorical(np.where(X["orders_30d"] > 2, "pro", "basic"))
    cat = xgb.XGBClassifier(n_estimators=5, max_depth=2, enable_categorical=True, tree_method="hist")
    cat.fit(Xc, y)
    _log_and_register(user_registry.tracking_uri, "user-categorical", cat, Xc)

    settings = user_registry.settings(tmp_path)
    client = user_registry.client()
    with pytest.raises(UnsupportedModelError, match="binary:logitraw"):
        install_version(settings, client, "user-logitraw", 1)
    with pytest.raises(UnsupportedModelError, match="categorical splits on plan"):
        install_version(settings, client, "user-categorical", 1)
    assert installed_versions(settings.path(settings.exporter.repository), "user-logitraw") == []


def test_cli_export_reports_one_line_errors(
    user_registry: UserRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from treeserve_app.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", user_registry.tracking_uri)
    monkeypatch.setenv("TREESERVE_HOME", str(tmp_path))
    # Nothing listens on these ports: `--load` must say Triton is not running.
    monkeypatch.setenv("TREESERVE_TRITON__HTTP_PORT", str(_closed_port()))
    monkeypatch.setattr(clikit, "_settings", None)
    runner = CliRunner()

    bad = runner.invoke(app, ["export", user_registry.models["binary"], "--alias", "nope"])
    assert bad.exit_code == 1
    assert "has no alias 'nope'" in bad.output and "Traceback" not in bad.output

    monkeypatch.setattr(clikit, "_settings", None)
    res = runner.invoke(app, ["export", user_registry.models["binary"], "--alias", "champion", "--load"])
    assert res.exit_code == 1, res.output
    assert "installed at" in res.output
    assert "Triton is not running" in res.output
    assert (tmp_path / "model_repository" / user_registry.models["binary"] / "1" / "model.onnx").is_file()
    monkeypatch.setattr(clikit, "_settings", None)


def _closed_port() -> int:
    from treeserve.procs import free_port

    return free_port()


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
