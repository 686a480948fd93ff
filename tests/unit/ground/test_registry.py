"""One MLflow error mapping and one champion history for every package."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

from tests.fixtures.registry import fresh_python
from treeserve.errors import NotFoundError, ServiceUnavailableError
from treeserve.registry import mlflow_client, mlflow_errors, previous_champions, read_model_state


class _Missing(NotFoundError):
    pass


def test_a_lookup_of_something_missing_raises_the_callers_not_found_error() -> None:
    with (
        pytest.raises(_Missing, match="no version 9"),
        mlflow_errors("read", not_found=_Missing("no version 9")),
    ):
        raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version not found"})
    with pytest.raises(NotFoundError, match="no alias"), mlflow_errors("read", not_found="no alias"):
        raise MlflowException(
            "Registered model alias champion not found.", error_code=INVALID_PARAMETER_VALUE
        )


def test_other_mlflow_errors_and_connection_errors_read_as_unavailable_in_one_line() -> None:
    with pytest.raises(ServiceUnavailableError) as e, mlflow_errors("registry read of 'm'"):
        raise MlflowException("database is locked\n<long server trace>", error_code=INTERNAL_ERROR)
    assert str(e.value) == "MLflow registry read of 'm' failed: database is locked"
    with pytest.raises(ServiceUnavailableError, match="refused"), mlflow_errors("read", not_found="x"):
        raise requests.exceptions.ConnectionError("connection refused")
    # Without a lookup, "does not exist" is not silently a NotFoundError.
    with pytest.raises(ServiceUnavailableError), mlflow_errors("write"):
        raise MlflowException("nope", error_code=RESOURCE_DOES_NOT_EXIST)


def test_a_fresh_sqlite_home_works_and_a_missing_model_is_named(tmp_path) -> None:
    client = mlflow_client("sqlite:///" + str(tmp_path / "fresh" / "mlflow.db"))
    assert (tmp_path / "fresh").is_dir()
    with pytest.raises(NotFoundError, match="'nobody' does not exist"):
        read_model_state(client, "nobody")


def test_rollback_target_is_the_newest_other_champion() -> None:
    assert previous_champions(["1", "2", "1", "3", "2"], "2") == ["3", "1"]
    assert previous_champions(["1"], "1") == []


def test_importing_the_ground_does_not_import_mlflow() -> None:
    code = "import sys, treeserve.registry, treeserve.errors; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mlflow_http_requests_do_not_load_feasts_header_provider() -> None:
    """Feast's provider would import all of Feast on the first request and send the pod's
    service-account token to the MLflow server."""
    code = (
        "import sys\n"
        "from treeserve.registry import mlflow_client\n"
        "mlflow_client('http://127.0.0.1:9')\n"
        "from mlflow.tracking.request_header.registry import _request_header_provider_registry, resolve_request_headers\n"
        "resolve_request_headers()\n"
        "print(sorted(type(p).__module__.split('.')[0] for p in _request_header_provider_registry))\n"
        "print('feast' in sys.modules)\n"
    )
    assert fresh_python(code) == ["['mlflow', 'mlflow']", "False"]
