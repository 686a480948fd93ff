"""Training, the promotion gate and rollback against `mlflow server` on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.feast_data import DemoWorld
from tests.fixtures.mlflow_server import MlflowServer
from training.api import promote, rollback, train
from training.errors import ModelNotFoundError
from treeserve import contract
from treeserve_app.settings import MlflowSettings, Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_settings(demo_world: DemoWorld, mlflow_server: MlflowServer) -> Settings:
    """The demo world's Feast data, with a unique model on the PostgreSQL-backed server."""
    mlflow = MlflowSettings(
        tracking_uri=mlflow_server.url,
        experiment=f"gate-tests-{uuid.uuid4().hex[:6]}",
        model_name=f"churn-gate-{uuid.uuid4().hex[:8]}",
    )
    return demo_world.settings.model_copy(update={"mlflow": mlflow})


@pytest.fixture(scope="module")
def two_champions(server_settings: Settings) -> tuple[str, str]:
    """Two trained versions, each promoted through the gate in turn."""
    name = server_settings.mlflow.model_name
    first = train(server_settings)
    assert promote(server_settings, name, first.version).alias_moved
    second = _register_copy(server_settings, first.version)  # same model, a new version: ties pass
    gate = promote(server_settings, name, second)
    assert gate.passed, gate.reason
    return first.version, second


def _client(settings: Settings):
    from mlflow import MlflowClient

    return MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def _champion(settings: Settings) -> str:
    return str(_client(settings).get_model_version_by_alias(settings.mlflow.model_name, "champion").version)


def _register_copy(settings: Settings, version: str) -> str:
    """Register ``version``'s logged model again as a new version, with the same tags."""
    client = _client(settings)
    name = settings.mlflow.model_name
    base = client.get_model_version(name, version)
    tags = {k: v for k, v in base.tags.items() if not k.startswith(("treeserve.gate", "treeserve.promoted"))}
    copy = client.create_model_version(name, f"models:/{name}/{version}", run_id=base.run_id, tags=tags)
    return str(copy.version)


def _register_noise_version(settings: Settings, like_version: str) -> str:
    """A version that ranks at chance: trained on shuffled labels, with a real holdout artifact."""
    import mlflow
    import mlflow.xgboost
    import pandas as pd
    import xgboost as xgb

    client = _client(settings)
    name = settings.mlflow.model_name
    base = client.get_model_version(name, like_version)
    with tempfile.TemporaryDirectory() as tmp:
        holdout_path = client.download_artifacts(base.run_id, contract.ARTIFACT_HOLDOUT, tmp)
        holdout = pd.read_parquet(holdout_path)
        features = json.loads(base.tags[contract.TAG_FEATURES])
        noise = np.random.default_rng(1).integers(0, 2, len(holdout))
        booster = xgb.train(
            {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
            xgb.DMatrix(holdout[features], label=noise),
            num_boost_round=20,
        )
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        with mlflow.start_run(experiment_id=client.get_run(base.run_id).info.experiment_id):
            mlflow.log_artifact(holdout_path, artifact_path=str(Path(contract.ARTIFACT_HOLDOUT).parent))
            info = mlflow.xgboost.log_model(
                booster, name="model", registered_model_name=name, pip_requirements=["xgboost"]
            )
    version = str(info.registered_model_version)
    for key in (
        contract.TAG_FEATURES,
        contract.TAG_FEATURE_SERVICE,
        contract.TAG_ENTITY_KEYS,
        contract.TAG_TASK,
    ):
        client.set_model_version_tag(name, version, key, base.tags[key])
    return version


def _cli(args: list[str], world: DemoWorld, settings: Settings) -> subprocess.CompletedProcess[str]:
    env = world.subprocess_env(
        {
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "TREESERVE_MLFLOW__TRACKING_URI": settings.mlflow_tracking_uri,
            "TREESERVE_MLFLOW__MODEL_NAME": settings.mlflow.model_name,
        }
    )
    treeserve = str(Path(sys.executable).parent / "treeserve")
    return subprocess.run([treeserve, *args], env=env, capture_output=True, text=True, timeout=300)


def test_gate_promotes_and_records_champion_history(server_settings: Settings, two_champions) -> None:
    first, second = two_champions
    name = server_settings.mlflow.model_name
    client = _client(server_settings)
    assert _champion(server_settings) == second
    history = json.loads(client.get_registered_model(name).tags[contract.TAG_CHAMPION_HISTORY])
    assert history == [first, second]
    mv = client.get_model_version(name, second)
    assert mv.tags["treeserve.gate.status"] == "passed"
    assert json.loads(mv.tags["treeserve.promoted"])["previous"] == first
    assert json.loads(mv.tags[contract.TAG_ENTITY_KEYS]) == ["customer_id"]


def test_failing_gate_exits_1_with_reason_and_leaves_alias(
    demo_world: DemoWorld, server_settings: Settings, two_champions
) -> None:
    _, second = two_champions
    bad = _register_noise_version(server_settings, second)
    proc = _cli(["promote", server_settings.mlflow.model_name, bad], demo_world, server_settings)
    assert proc.returncode == 1
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in proc.stderr
    assert "vs_champion" in error_lines[0] and "unchanged" in error_lines[0]
    assert _champion(server_settings) == second
    tags = _client(server_settings).get_model_version(server_settings.mlflow.model_name, bad).tags
    assert tags["treeserve.gate.status"] == "failed"


def test_force_moves_alias_and_records_who_and_why_then_rollback_walks_back(
    server_settings: Settings, two_champions
) -> None:
    first, second = two_champions
    name = server_settings.mlflow.model_name
    bad = _register_noise_version(server_settings, second)
    result = promote(server_settings, name, bad, force=True, reason="incident 42: hotfix")
    assert result.forced and result.alias_moved and not result.passed
    assert _champion(server_settings) == bad
    tags = _client(server_settings).get_model_version(name, bad).tags
    assert tags["treeserve.gate.status"] == "forced"
    assert tags["treeserve.gate.force_reason"] == "incident 42: hotfix"
    assert tags["treeserve.gate.forced_by"]

    assert rollback(server_settings, name).to_version == second
    assert _champion(server_settings) == second
    assert "treeserve.rolled_back" in _client(server_settings).get_model_version(name, bad).tags
    assert rollback(server_settings, name).to_version == first
    with pytest.raises(ModelNotFoundError, match="no previous champion"):
        rollback(server_settings, name)
    assert _champion(server_settings) == first


def test_unknown_model_and_version_are_one_line_errors(
    demo_world: DemoWorld, server_settings: Settings
) -> None:
    from tests.integration.test_training_cli import invoke

    for args, needle in (
        (["promote", "no-such-model", "1"], "registered model 'no-such-model' not found"),
        (["promote", demo_world.model_name, "999"], "has no version 999"),
        (["rollback", "no-such-model"], "registered model 'no-such-model' not found"),
    ):
        result = invoke(
            args,
            {
                **demo_world.env,
                "MLFLOW_TRACKING_URI": server_settings.mlflow_tracking_uri,
                "TREESERVE_MLFLOW__TRACKING_URI": server_settings.mlflow_tracking_uri,
            }
            if args[1] == "no-such-model"
            else demo_world.env,
        )
        assert result.exit_code == 1, result.output
        assert needle in result.stderr
        assert result.stderr.strip().count("\n") == 0
