"""The REST registry client against `mlflow server` on PostgreSQL answers like MlflowClient."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.registry import missing_model_lookup
from treeserve.errors import ServiceUnavailableError
from treeserve.registry import mlflow_errors
from treeserve.registry_clients import RegistryApiError, RestRegistryClient

pytestmark = pytest.mark.integration


def _error(call: Any) -> tuple[str, str]:
    """(error code, message) of the registry error ``call`` raises."""
    with pytest.raises((MlflowException, RegistryApiError)) as e:
        call()
    return str(e.value.error_code), str(e.value.message)


@pytest.fixture(scope="module")
def model(mlflow_server: MlflowServer) -> str:
    """A registered model with two versions, tags and aliases, written by MlflowClient."""
    name = f"rest-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name))
    for _ in range(2):
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_tag(name, "treeserve.champion_history", '["1"]')
    client.set_model_version_tag(name, "2", "treeserve.features", '["a"]')
    client.set_registered_model_alias(name, "champion", "1")
    return name


def test_reads_match_mlflow(mlflow_server: MlflowServer, model: str) -> None:
    mlflow = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    rest = RestRegistryClient(mlflow_server.url)
    rm, want = rest.get_registered_model(model), mlflow.get_registered_model(model)
    assert (rm.aliases, rm.tags) == (dict(want.aliases), dict(want.tags))
    for get in (
        lambda c: c.get_model_version(model, "2"),
        lambda c: c.get_model_version_by_alias(model, "champion"),
    ):
        mv, want_mv = get(rest), get(mlflow)
        assert (mv.version, mv.tags, mv.status, mv.run_id, mv.creation_timestamp, mv.aliases) == (
            want_mv.version,
            want_mv.tags,
            want_mv.status,
            want_mv.run_id,
            want_mv.creation_timestamp,
            want_mv.aliases,
        )


def test_lookup_errors_carry_mlflows_code_and_message(mlflow_server: MlflowServer, model: str) -> None:
    mlflow = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    rest = RestRegistryClient(mlflow_server.url)
    for call in (
        lambda c: c.get_registered_model("nobody"),
        lambda c: c.get_model_version(model, "9"),
        lambda c: c.get_model_version(model, "abc"),
        lambda c: c.get_model_version_by_alias(model, "nope"),
        lambda c: c.get_model_version_by_alias("nobody", "champion"),
        lambda c: c.set_registered_model_alias(model, "champion", "9"),
        lambda c: c.set_model_version_tag(model, "9", "k", "v"),
    ):
        assert _error(lambda: call(rest)) == _error(lambda: call(mlflow))  # noqa: B023 (called at once)


def test_writes_are_seen_by_mlflow(mlflow_server: MlflowServer, model: str) -> None:
    mlflow = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    rest = RestRegistryClient(mlflow_server.url)
    rest.set_registered_model_alias(model, "challenger", "2")
    rest.set_registered_model_tag(model, "k", "v")
    rest.set_model_version_tag(model, "2", "k2", "v2")
    assert mlflow.get_registered_model(model).aliases["challenger"] == "2"
    assert mlflow.get_registered_model(model).tags["k"] == "v"
    assert mlflow.get_model_version(model, "2").tags["k2"] == "v2"


def test_an_unreachable_server_is_unavailable_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from treeserve.procs import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    rest = RestRegistryClient(f"http://127.0.0.1:{free_port()}")
    with (
        pytest.raises(ServiceUnavailableError, match=r"^MLflow registry read of 'm' failed: "),
        mlflow_errors("registry read of 'm'", not_found="no model"),
    ):
        rest.get_registered_model("m")


def test_rollback_of_a_missing_model_never_imports_mlflow(mlflow_server: MlflowServer) -> None:
    assert missing_model_lookup(mlflow_server.url) == ["registered model 'nobody' does not exist", "False"]
