"""The registry clients without MLflow answer like MlflowClient on the same registry.

SQLite here (a real MLflow database written by MlflowClient); the REST client against a real
``mlflow server`` is in tests/integration/test_registry_clients.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.fixtures.registry import missing_model_lookup
from treeserve.errors import NotFoundError, ServiceUnavailableError
from treeserve.registry import mlflow_errors, read_model_state, registry_client
from treeserve.registry_clients import (
    RegistryApiError,
    RestRegistryClient,
    SqliteRegistryClient,
)

MODEL = "churn"


def _error(call: Any) -> tuple[str, str]:
    """(error code, message) of the registry error ``call`` raises."""
    with pytest.raises((MlflowException, RegistryApiError)) as e:
        call()
    return str(e.value.error_code), str(e.value.message)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, MlflowClient]:
    """A SQLite registry with two versions (one deleted), tags and an alias, written by MLflow."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('reg')}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source="file:///tmp/model", run_id=None)
    client.delete_model_version(MODEL, "3")
    client.set_registered_model_tag(MODEL, "treeserve.champion_history", '["1"]')
    client.set_model_version_tag(MODEL, "2", "treeserve.features", '["a", "b"]')
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return uri, client


def test_sqlite_reads_match_mlflow(registry: tuple[str, MlflowClient]) -> None:
    uri, mlflow = registry
    light = SqliteRegistryClient(uri)
    rm, want = light.get_registered_model(MODEL), mlflow.get_registered_model(MODEL)
    assert (rm.aliases, rm.tags) == ({a: str(v) for a, v in want.aliases.items()}, dict(want.tags))
    for get in (
        lambda c: c.get_model_version(MODEL, "2"),
        lambda c: c.get_model_version_by_alias(MODEL, "challenger"),
    ):
        mv, want_mv = get(light), get(mlflow)
        assert (mv.version, mv.tags, mv.status, mv.run_id, mv.creation_timestamp, sorted(mv.aliases)) == (
            str(want_mv.version),
            want_mv.tags,
            want_mv.status,
            want_mv.run_id,
            want_mv.creation_timestamp,
            sorted(want_mv.aliases),
        )


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_registered_model("nobody"),
        lambda c: c.get_model_version("nobody", "1"),
        lambda c: c.get_model_version(MODEL, "9"),
        lambda c: c.get_model_version(MODEL, "3"),  # deleted
        lambda c: c.get_model_version(MODEL, "abc"),
        lambda c: c.get_model_version_by_alias(MODEL, "nope"),
        lambda c: c.get_model_version_by_alias("nobody", "champion"),
    ],
    ids=[
        "model",
        "version-of-missing-model",
        "version",
        "deleted-version",
        "not-a-number",
        "alias",
        "alias-of-missing-model",
    ],
)
def test_sqlite_lookup_errors_carry_mlflows_code_and_message(
    registry: tuple[str, MlflowClient], call: Any
) -> None:
    uri, mlflow = registry
    assert _error(lambda: call(SqliteRegistryClient(uri))) == _error(lambda: call(mlflow))


def test_sqlite_writes_are_what_mlflow_reads_back(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model(MODEL)
    for _ in range(2):
        mlflow.create_model_version(MODEL, source="file:///tmp/model", run_id=None)
    light = SqliteRegistryClient(uri)
    light.set_registered_model_alias(MODEL, "champion", "1")
    light.set_registered_model_alias(MODEL, "champion", "2")  # moved, not added
    light.set_registered_model_alias(MODEL, "challenger", "1")
    light.set_registered_model_tag(MODEL, "treeserve.champion_history", '["1"]')
    light.set_registered_model_tag(MODEL, "treeserve.champion_history", '["1", "2"]')
    light.set_model_version_tag(MODEL, "1", "treeserve.gate.passed", "true")
    assert mlflow.get_registered_model(MODEL).aliases == {"champion": 2, "challenger": 1}
    assert mlflow.get_registered_model(MODEL).tags == {"treeserve.champion_history": '["1", "2"]'}
    assert mlflow.get_model_version(MODEL, "1").tags == {"treeserve.gate.passed": "true"}
    assert str(mlflow.get_model_version_by_alias(MODEL, "champion").version) == "2"
    # MLflow then writes over what sqlite3 wrote, as over its own rows.
    mlflow.set_registered_model_alias(MODEL, "champion", "1")
    assert light.get_registered_model(MODEL).aliases["champion"] == "1"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.set_registered_model_alias(MODEL, "champion", "7"),
        lambda c: c.set_registered_model_alias("nobody", "champion", "1"),
        lambda c: c.set_registered_model_tag("nobody", "k", "v"),
        lambda c: c.set_model_version_tag(MODEL, "7", "k", "v"),
        lambda c: c.set_registered_model_alias(MODEL, "latest", "1"),  # reserved: MLflow judges
        lambda c: c.set_registered_model_alias(MODEL, "v1", "1"),
        lambda c: c.set_registered_model_tag(MODEL, "a/../b", "v"),
        lambda c: c.set_model_version_tag(MODEL, "1", "k" * 251, "v"),
    ],
    ids=[
        "missing-version",
        "missing-model",
        "tag-missing-model",
        "tag-missing-version",
        "latest",
        "v1",
        "bad-key",
        "long-key",
    ],
)
def test_sqlite_write_errors_are_mlflows(tmp_path: Path, call: Any) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model(MODEL)
    mlflow.create_model_version(MODEL, source="file:///tmp/model", run_id=None)
    assert _error(lambda: call(SqliteRegistryClient(uri))) == _error(lambda: call(mlflow))
    assert mlflow.get_registered_model(MODEL).aliases == {}  # nothing written by either


def test_plain_names_are_a_subset_of_what_mlflow_accepts() -> None:
    from mlflow.utils import validation as v

    from treeserve.registry_clients import (
        PLAIN_KEY_MAX,
        PLAIN_VALUE_MAX,
        plainly_valid_alias,
        plainly_valid_tag,
    )

    assert PLAIN_KEY_MAX == v.MAX_MODEL_REGISTRY_TAG_KEY_LENGTH
    assert PLAIN_VALUE_MAX <= v.MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
    for alias in ("champion", "challenger", "shadow-2", "a_b"):
        assert plainly_valid_alias(alias)
        v._validate_model_alias_name(alias)
        v._validate_model_alias_name_reserved(alias)
    for key in ("treeserve.champion_history", "treeserve.gate.passed", "k", "a-b_c.d"):
        assert plainly_valid_tag(key, "x" * PLAIN_VALUE_MAX)
        v._validate_registered_model_tag(key, "x" * PLAIN_VALUE_MAX)
        v._validate_model_version_tag(key, "x" * PLAIN_VALUE_MAX)
    for alias in ("latest", "LATEST", "v3", "", "a b", "-x"):
        assert not plainly_valid_alias(alias)
    for key in ("a/b", "a..b", ".a", "a.", "", "a b", "k" * 251):
        assert not plainly_valid_tag(key, "v")
    assert not plainly_valid_tag("k", "x" * (PLAIN_VALUE_MAX + 1))


def test_a_fresh_home_reads_as_an_empty_registry_without_importing_mlflow(tmp_path: Path) -> None:
    db = tmp_path / "var" / "mlflow" / "mlflow.db"
    assert missing_model_lookup(f"sqlite:///{db}") == ["registered model 'nobody' does not exist", "False"]
    assert not db.parent.exists()  # a read creates nothing


def test_the_factory_picks_by_uri_and_falls_back_to_mlflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert isinstance(registry_client("http://mlflow:5000"), RestRegistryClient)
    assert isinstance(registry_client(f"sqlite:///{tmp_path}/m.db"), SqliteRegistryClient)
    assert isinstance(registry_client(f"sqlite:///{tmp_path}/m.db?timeout=30"), MlflowClient)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "some-plugin")
    assert isinstance(registry_client("http://mlflow:5000"), MlflowClient)


def test_registry_api_errors_map_like_mlflow_errors(registry: tuple[str, MlflowClient]) -> None:
    uri, _ = registry
    with pytest.raises(NotFoundError, match="'nobody' does not exist"):
        read_model_state(SqliteRegistryClient(uri), "nobody")
    with pytest.raises(ServiceUnavailableError) as e, mlflow_errors("registry read of 'm'"):
        raise RegistryApiError("INTERNAL_ERROR", "database is locked\n<trace>")
    assert str(e.value) == "MLflow registry read of 'm' failed: database is locked"


class _Session:
    """A transport that answers every request with one canned response."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content = self.status, self.body.encode()
        return response


def test_rest_errors_are_worded_like_mlflows_rest_client() -> None:
    json_error = _Session(
        404, '{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model with name=x not found"}'
    )
    client = RestRegistryClient("http://mlflow:5000", session=json_error)  # type: ignore[arg-type]
    assert _error(lambda: client.get_registered_model("x")) == (
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_DOES_NOT_EXIST: Registered Model with name=x not found",
    )
    proxy = RestRegistryClient("http://mlflow:5000", session=_Session(403, "<html>denied</html>"))  # type: ignore[arg-type]
    code, message = _error(lambda: proxy.get_registered_model("x"))
    assert code == "PERMISSION_DENIED"
    assert message.startswith(
        "API request to endpoint /api/2.0/mlflow/registered-models/get failed with error code 403"
    )
