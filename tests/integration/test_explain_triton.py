"""Explanations served by Triton: the explainer companion equals XGBoost's pred_contribs, lives and dies with its version."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from exporter.install import export, write_model_config
from exporter.triton_server import TritonServer
from tests.fixtures.triton import UserRegistry
from treeserve import contract
from treeserve import repository as repo_mod

pytestmark = pytest.mark.integration

NAMES = {"binary": "explain-binary", "multiclass": "explain-multiclass", "regression": "explain-regressor"}


@pytest.fixture(scope="module")
def explained(
    triton_server: TritonServer, user_registry: UserRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The user models copied under names of this module, exported into the session Triton and loaded."""
    import mlflow.xgboost

    client = user_registry.client()
    for task, source in user_registry.models.items():
        client.copy_model_version(f"models:/{source}/1", NAMES[task])
    settings = user_registry.settings(tmp_path_factory.mktemp("explain-home"))
    for name in NAMES.values():
        export(settings, client, name, version=1, repository=triton_server.repository)
        assert triton_server.load_model(name) == [1]
    mlflow.set_tracking_uri(user_registry.tracking_uri)
    mlflow.set_registry_uri(user_registry.tracking_uri)
    boosters = {}
    for task, name in NAMES.items():
        model = mlflow.xgboost.load_model(f"models:/{name}/1")
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        best = getattr(model, "best_iteration", None)  # the export serves the early-stopped trees
        boosters[task] = booster[: best + 1] if best is not None else booster
    return {"settings": settings, "client": client, "boosters": boosters}


def _rows(reg: UserRegistry, n: int = 64) -> np.ndarray:
    x = reg.data[reg.features].to_numpy(dtype=np.float32)[-n:].copy()
    x[::4, 1] = np.nan
    x[::5, 3] = np.nan
    x[0, :] = np.nan
    return x


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_triton_contributions_equal_xgboost_pred_contribs(
    triton_server: TritonServer, explained: dict[str, Any], user_registry: UserRegistry, task: str
) -> None:
    x = _rows(user_registry)
    name = NAMES[task]
    got = triton_server.admin.infer(repo_mod.explainer_name(name), 1, x, [contract.OUTPUT_CONTRIBUTIONS])
    contributions = got[contract.OUTPUT_CONTRIBUTIONS].astype(np.float64)
    booster = explained["boosters"][task]
    dm = xgb.DMatrix(x, missing=np.nan)
    booster.feature_names = None
    width = len(user_registry.features) + 1
    want = np.asarray(booster.predict(dm, pred_contribs=True)).reshape(len(x), -1, width)
    margin = np.asarray(booster.predict(dm, output_margin=True)).reshape(len(x), -1)
    groups = 4 if task == "multiclass" else 1
    assert contributions.shape == (len(x), groups, width)
    scale = max(1.0, float(np.abs(margin).max()))  # XGBoost sums in float32 (regressor in the hundreds)
    assert np.abs(contributions - want).max() <= 1e-4 * scale
    assert np.abs(contributions.sum(axis=2) - margin).max() <= 1e-4 * scale


def test_export_stores_the_attribution_reference_and_the_canary_covers_the_explainer(
    triton_server: TritonServer, explained: dict[str, Any], user_registry: UserRegistry
) -> None:
    name = NAMES["binary"]
    meta = repo_mod.read_version_metadata(triton_server.repository, name, 1)
    assert set(meta.attribution) == set(user_registry.features)
    assert all(v >= 0 for v in meta.attribution.values()) and sum(meta.attribution.values()) > 0
    assert triton_server.canary(name, 1).rows > 0  # raises CanaryError when the companion differs


def test_companion_is_installed_loaded_and_removed_with_its_version(
    triton_server: TritonServer, explained: dict[str, Any]
) -> None:
    repo, name = triton_server.repository, NAMES["binary"]
    companion = repo_mod.explainer_name(name)
    client, settings = explained["client"], explained["settings"]
    client.copy_model_version(f"models:/{name}/1", name)  # version 2: same trees, its own directory
    export(settings, client, name, version=2, repository=repo)
    assert repo_mod.explainer_versions(repo, name) == [1, 2]
    assert sorted(triton_server.load_model(name)) == [1, 2]
    assert triton_server.admin.ready_versions(companion) == {"1", "2"}

    write_model_config(settings, repo, name, versions=[2], routing={"champion": "2"})
    triton_server.load_model(name)
    repo_mod.remove_version(repo, name, 1)

    assert repo_mod.installed_versions(repo, name) == [2]
    assert repo_mod.explainer_versions(repo, name) == [2]
    assert triton_server.admin.ready_versions(companion) == {"2"}
    assert companion not in repo_mod.list_models(repo)


@pytest.mark.parametrize("flavor", ["onnxruntime", "fil"])
def test_every_flavour_gets_the_same_companion(
    triton_server: TritonServer,
    explained: dict[str, Any],
    user_registry: UserRegistry,
    flavor: str,
) -> None:
    """The local Triton has neither the onnxruntime nor the FIL backend: the companion still serves."""
    client, settings = explained["client"], explained["settings"]
    name = f"explain-{flavor}"
    client.copy_model_version(f"models:/{user_registry.models['multiclass']}/1", name)
    export(settings, client, name, version=1, repository=triton_server.repository, flavor=flavor)
    assert repo_mod.read_model_config(triton_server.repository, name).flavor == flavor
    triton_server.admin.load_explainer(name)
    x = _rows(user_registry)
    got = triton_server.admin.infer(repo_mod.explainer_name(name), 1, x, [contract.OUTPUT_CONTRIBUTIONS])
    booster = explained["boosters"]["multiclass"]
    booster.feature_names = None
    want = booster.predict(xgb.DMatrix(x, missing=np.nan), pred_contribs=True)
    assert np.abs(got[contract.OUTPUT_CONTRIBUTIONS].astype(np.float64) - want).max() <= 1e-4
