"""Registry clients that do not import MLflow, for commands that only read and move aliases.

``import mlflow`` alone takes 2-3 s of CPU on a busy two-core machine (it loads pandas, FastAPI
and the GenAI packages), and ``MlflowClient`` then opens the tracking store as well; ``treeserve
promote``, ``rollback`` and ``sync status`` need six registry calls. ``treeserve.registry.
registry_client`` picks one of these by URI and falls back to ``MlflowClient`` for the rest:

* ``RestRegistryClient`` (``http(s)://``): MLflow's REST API with MLflow's retry, timeout and
  credential variables. Writes go to the server, which validates them like any other client's.
* ``SqliteRegistryClient`` (``sqlite:///``): reads the registry tables of the local database
  read-only with ``sqlite3``. Writes of names and values that MLflow's validation accepts by
  construction (``plainly_valid_alias``/``plainly_valid_tag``: treeserve's own aliases and tags)
  are the same upserts MLflow's store makes, in one ``sqlite3`` transaction; anything else goes
  through MLflow's own registry store (imported then), so nothing MLflow would refuse is written.

Both expose the ``MlflowClient`` method names and signatures they implement, return small records
with the attributes treeserve reads, and raise ``RegistryApiError`` carrying MLflow's error code
where ``MlflowClient`` raises ``MlflowException``, so ``treeserve.registry.mlflow_errors`` maps
both alike.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import requests

STAGE_DELETED_INTERNAL = "Deleted_Internal"
"""``model_versions.current_stage`` of a deleted version that MLflow keeps (redacted)."""

DEFAULT_WORKSPACE = "default"
"""The workspace of every registry row when MLflow runs without workspaces."""

RETRY_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses MLflow's client retries (``mlflow.utils.request_utils``)."""

UNSUPPORTED_ENV = ("MLFLOW_TRACKING_AUTH", "MLFLOW_WORKSPACE")
"""MLflow client settings these clients do not implement: with any set, use ``MlflowClient``."""


_PLAIN_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
"""Aliases MLflow accepts whatever its rules' details: word characters and dashes, a letter first,
well under its 255-character limit (the reserved ``latest`` and ``v<N>`` are refused apart)."""
_PLAIN_TAG_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
"""Tag keys MLflow accepts: its name characters without '/', ' ' or ':', no empty or '..' segment."""
PLAIN_KEY_MAX = 250
"""MLflow's ``MAX_MODEL_REGISTRY_TAG_KEY_LENGTH``."""
PLAIN_VALUE_MAX = 5000
"""The ``registered_model_tags.value`` column (VARCHAR(5000)); MLflow's own limit is higher."""


def plainly_valid_alias(alias: str) -> bool:
    """True when MLflow's alias validation accepts ``alias`` (False: let MLflow decide)."""
    return (
        _PLAIN_ALIAS.fullmatch(alias) is not None
        and alias.lower() != "latest"
        and re.fullmatch(r"[vV]\d+", alias) is None
    )


def plainly_valid_tag(key: str, value: str) -> bool:
    """True when MLflow's tag validation accepts ``key``/``value`` (False: let MLflow decide)."""
    return (
        len(key) <= PLAIN_KEY_MAX
        and _PLAIN_TAG_KEY.fullmatch(key) is not None
        and isinstance(value, str)
        and len(value) <= PLAIN_VALUE_MAX
    )


class RegistryApiError(Exception):
    """An error answer of the registry, with MLflow's error code (``RESOURCE_DOES_NOT_EXIST``...)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class RegisteredModelRecord:
    """The parts of MLflow's ``RegisteredModel`` that treeserve reads."""

    name: str
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias -> version."""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersionRecord:
    """The parts of MLflow's ``ModelVersion`` that treeserve reads."""

    name: str
    version: str
    run_id: str | None
    status: str
    creation_timestamp: int
    """Milliseconds since the epoch."""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


class RegistryClient(Protocol):
    """The registry calls of ``MlflowClient`` that promote, rollback and ``sync status`` make."""

    def get_registered_model(self, name: str) -> Any: ...

    def get_model_version(self, name: str, version: str) -> Any: ...

    def get_model_version_by_alias(self, name: str, alias: str) -> Any: ...

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None: ...

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None: ...

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None: ...


def supported(tracking_uri: str) -> bool:
    """Whether one of these clients serves ``tracking_uri`` with the environment as it is."""
    if any(os.environ.get(key) for key in UNSUPPORTED_ENV):
        return False
    if tracking_uri.startswith("sqlite:///"):
        return "?" not in tracking_uri  # SQLAlchemy URI options: a path this client cannot read
    return tracking_uri.startswith(("http://", "https://"))


def for_uri(tracking_uri: str) -> RegistryClient:
    """The client for ``tracking_uri`` (check ``supported`` first)."""
    if tracking_uri.startswith("sqlite:///"):
        return SqliteRegistryClient(tracking_uri)
    return RestRegistryClient(tracking_uri)


# ---- REST ----------------------------------------------------------------------------------------


class RestRegistryClient:
    """MLflow's model-registry REST API (``/api/2.0/mlflow/...``) over ``requests``.

    Retries, backoff and timeout follow MLflow's variables (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``..._BACKOFF_FACTOR``, ``..._BACKOFF_JITTER``, ``..._TIMEOUT``) with MLflow's defaults, so
    ``treeserve.registry.fail_fast_registry`` works the same; credentials and TLS follow
    ``MLFLOW_TRACKING_TOKEN``, ``..._USERNAME``/``..._PASSWORD``, ``..._INSECURE_TLS``,
    ``..._SERVER_CERT_PATH`` and ``..._CLIENT_CERT_PATH``.
    """

    def __init__(self, tracking_uri: str, *, session: requests.Session | None = None) -> None:
        self.base_url = tracking_uri.rstrip("/")
        self._session = session
        self.timeout_s = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))

    def get_registered_model(self, name: str) -> RegisteredModelRecord:
        """GET registered-models/get."""
        body = self._call("GET", "registered-models/get", {"name": name})
        return _registered_model(body.get("registered_model", {}))

    def get_model_version(self, name: str, version: str) -> ModelVersionRecord:
        """GET model-versions/get."""
        body = self._call("GET", "model-versions/get", {"name": name, "version": str(version)})
        return _model_version(body.get("model_version", {}))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersionRecord:
        """GET registered-models/alias."""
        body = self._call("GET", "registered-models/alias", {"name": name, "alias": alias})
        return _model_version(body.get("model_version", {}))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        """POST registered-models/alias."""
        self._call("POST", "registered-models/alias", {"name": name, "alias": alias, "version": str(version)})

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        """POST registered-models/set-tag."""
        self._call("POST", "registered-models/set-tag", {"name": name, "key": key, "value": value})

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        """POST model-versions/set-tag."""
        self._call(
            "POST",
            "model-versions/set-tag",
            {"name": name, "version": str(version), "key": key, "value": value},
        )

    def _call(self, method: str, endpoint: str, payload: dict[str, str]) -> dict[str, Any]:
        """One request; an error answer becomes RegistryApiError as MLflow's client words it.

        Transport failures stay ``requests`` exceptions (``OSError`` subclasses), as from MLflow's.
        """
        path = f"/api/2.0/mlflow/{endpoint}"
        kwargs: dict[str, Any] = {"params": payload} if method == "GET" else {"json": payload}
        response = self._http().request(method, self.base_url + path, timeout=self.timeout_s, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200:
            return body if isinstance(body, dict) else {}
        if isinstance(body, dict):
            # RestException: "<CODE>: <message>".
            code = str(body.get("error_code") or "INTERNAL_ERROR")
            text = body.get("message", f"Response: {body}")
            raise RegistryApiError(code, f"{code}: {text}")
        raise RegistryApiError(
            _HTTP_STATUS_CODES.get(response.status_code, "INTERNAL_ERROR"),
            f"API request to endpoint {path} failed with error code {response.status_code} != 200. "
            f"Response body: '{response.text}'",
        )

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = _session()
        return self._session


_HTTP_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""MLflow's error code for an error answer without a JSON body (``get_error_code``)."""


def _session() -> requests.Session:
    """A session retrying like MLflow's client, with its credentials and TLS settings."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    env = os.environ
    retries = int(env.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        redirect=retries,
        status=retries,
        status_forcelist=sorted(RETRY_STATUS_CODES),
        backoff_factor=int(env.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2")),
        backoff_jitter=float(env.get("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "1.0")),
        allowed_methods=None,
        raise_on_status=True,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if token := env.get("MLFLOW_TRACKING_TOKEN"):
        session.headers["Authorization"] = f"Bearer {token}"
    elif env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD"):
        session.auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        session.verify = False
    elif cert := env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        session.verify = cert
    if client_cert := env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        session.cert = client_cert
    return session


def _pairs(items: Any, key: str, value: str) -> dict[str, str]:
    return {str(i[key]): str(i.get(value, "")) for i in items or [] if key in i}


def _registered_model(rm: dict[str, Any]) -> RegisteredModelRecord:
    return RegisteredModelRecord(
        name=str(rm.get("name", "")),
        aliases=_pairs(rm.get("aliases"), "alias", "version"),
        tags=_pairs(rm.get("tags"), "key", "value"),
    )


def _model_version(mv: dict[str, Any]) -> ModelVersionRecord:
    return ModelVersionRecord(
        name=str(mv.get("name", "")),
        version=str(mv.get("version", "")),
        run_id=mv.get("run_id") or None,
        status=str(mv.get("status", "READY")),
        creation_timestamp=int(mv.get("creation_timestamp", 0) or 0),
        tags=_pairs(mv.get("tags"), "key", "value"),
        aliases=[str(a) for a in mv.get("aliases") or []],
    )


# ---- SQLite --------------------------------------------------------------------------------------


class SqliteRegistryClient:
    """MLflow's registry tables in a local SQLite database, with ``sqlite3``.

    Reads open the file read-only and ask what MLflow's ``SqlAlchemyStore`` asks (default
    workspace, deleted versions excluded) with its error codes and messages; a database that does
    not exist yet is an empty registry and is not created. Writes of plainly valid aliases and tags
    make the store's upserts (``session.merge`` on the same primary keys) after the same existence
    check, in one transaction; other writes use MLflow's ``ModelRegistryClient``, which validates.
    The schema is MLflow's (pinned in ``requirements/app.lock``): tests/unit/ground compares every
    read and write with ``MlflowClient`` on a database MLflow created.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.path = Path(tracking_uri.removeprefix("sqlite:///"))
        self._writer: Any = None

    def get_registered_model(self, name: str) -> RegisteredModelRecord:
        """The registered model with its tags and aliases."""
        with self._read() as db:
            self._require_model(db, name)
            tags = db.execute(
                "SELECT key, value FROM registered_model_tags WHERE name = ? AND workspace = ?",
                (name, DEFAULT_WORKSPACE),
            ).fetchall()
            aliases = db.execute(
                "SELECT alias, version FROM registered_model_aliases WHERE name = ? AND workspace = ?",
                (name, DEFAULT_WORKSPACE),
            ).fetchall()
        return RegisteredModelRecord(
            name=name,
            aliases={str(a): str(v) for a, v in aliases},
            tags={str(k): str(v) for k, v in tags},
        )

    def get_model_version(self, name: str, version: str) -> ModelVersionRecord:
        """The model version with its tags and aliases."""
        number = _version_number(version)
        with self._read() as db:
            return self._version(db, name, number)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersionRecord:
        """The version behind ``alias`` (MLflow's ``latest`` pseudo-alias is left to MLflow)."""
        if alias.lower() == "latest":
            return self._mlflow().get_model_version_by_alias(name, alias)  # type: ignore[no-any-return]
        with self._read() as db:
            self._require_model(db, name)
            row = db.execute(
                "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ? AND workspace = ?",
                (name, alias, DEFAULT_WORKSPACE),
            ).fetchone()
            if row is None:
                raise RegistryApiError(
                    "INVALID_PARAMETER_VALUE", f"Registered model alias {alias} not found."
                )
            return self._version(db, name, int(row[0]))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at an existing version (MLflow's store for an alias it must judge)."""
        if not plainly_valid_alias(alias):
            self._mlflow().set_registered_model_alias(name, alias, str(version))
            return
        number = _version_number(version)
        with self._write() as db:
            self._require_model(db, name)  # MLflow's not-found errors, model first
            self._version(db, name, number)
            db.execute(
                "INSERT INTO registered_model_aliases (workspace, name, alias, version) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (workspace, name, alias) DO UPDATE SET version = excluded.version",
                (DEFAULT_WORKSPACE, name, alias, number),
            )

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        """Set a tag of an existing model (MLflow's store for a key or value it must judge)."""
        if not plainly_valid_tag(key, value):
            self._mlflow().set_registered_model_tag(name, key, value)
            return
        with self._write() as db:
            self._require_model(db, name)
            db.execute(
                "INSERT INTO registered_model_tags (workspace, key, name, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (workspace, key, name) DO UPDATE SET value = excluded.value",
                (DEFAULT_WORKSPACE, key, name, value),
            )

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        """Set a tag of an existing version (MLflow's store for a key or value it must judge)."""
        if not plainly_valid_tag(key, value):
            self._mlflow().set_model_version_tag(name, str(version), key, value)
            return
        number = _version_number(version)
        with self._write() as db:
            self._version(db, name, number)
            db.execute(
                "INSERT INTO model_version_tags (workspace, key, name, version, value) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (workspace, key, name, version) DO UPDATE SET value = excluded.value",
                (DEFAULT_WORKSPACE, key, name, number, value),
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (committed after the block, rolled back on an error). A database
        that does not exist has no models: the lookup inside the block reports it, nothing is made."""
        if not self.path.exists():
            with self._read() as empty:
                yield empty
            return
        try:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise RegistryApiError("INTERNAL_ERROR", f"{self.path}: {e}") from e
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise RegistryApiError("INTERNAL_ERROR", f"{self.path}: {e}") from e
            raise
        finally:
            db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection, closed after the block; a missing database is an empty registry."""
        try:
            db = (
                sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
                if self.path.exists()
                else sqlite3.connect(":memory:")
            )
        except sqlite3.Error as e:
            raise RegistryApiError("INTERNAL_ERROR", f"{self.path}: {e}") from e
        try:
            yield db
        except sqlite3.Error as e:
            raise RegistryApiError("INTERNAL_ERROR", f"{self.path}: {e}") from e
        finally:
            db.close()

    @staticmethod
    def _require_model(db: sqlite3.Connection, name: str) -> None:
        try:
            found = db.execute(
                "SELECT 1 FROM registered_models WHERE name = ? AND workspace = ?", (name, DEFAULT_WORKSPACE)
            ).fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise RegistryApiError("INTERNAL_ERROR", str(e)) from e
            found = None  # a database MLflow has not set up yet: no models
        if found is None:
            raise RegistryApiError("RESOURCE_DOES_NOT_EXIST", f"Registered Model with name={name} not found")

    @staticmethod
    def _version(db: sqlite3.Connection, name: str, version: int) -> ModelVersionRecord:
        try:
            row = db.execute(
                "SELECT run_id, status, creation_time FROM model_versions "
                "WHERE name = ? AND version = ? AND workspace = ? AND current_stage != ?",
                (name, version, DEFAULT_WORKSPACE, STAGE_DELETED_INTERNAL),
            ).fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise RegistryApiError("INTERNAL_ERROR", str(e)) from e
            row = None
        if row is None:
            raise RegistryApiError(
                "RESOURCE_DOES_NOT_EXIST", f"Model Version (name={name}, version={version}) not found"
            )
        tags = db.execute(
            "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ? AND workspace = ?",
            (name, version, DEFAULT_WORKSPACE),
        ).fetchall()
        aliases = db.execute(
            "SELECT alias FROM registered_model_aliases WHERE name = ? AND version = ? AND workspace = ?",
            (name, version, DEFAULT_WORKSPACE),
        ).fetchall()
        run_id, status, created = row
        return ModelVersionRecord(
            name=name,
            version=str(version),
            run_id=str(run_id) if run_id else None,
            status=str(status or "READY"),
            creation_timestamp=int(created or 0),
            tags={str(k): str(v) for k, v in tags},
            aliases=[str(a) for (a,) in aliases],
        )

    def _mlflow(self) -> Any:
        """MLflow's registry client alone (no tracking store), created on the first write."""
        if self._writer is None:
            from mlflow.tracking._model_registry.client import ModelRegistryClient

            self._writer = ModelRegistryClient(self.tracking_uri, self.tracking_uri)
        return self._writer


def _version_number(version: str | int) -> int:
    """MLflow's check of a version argument (``_validate_model_version``)."""
    try:
        return int(version)
    except (TypeError, ValueError):
        raise RegistryApiError(
            "INVALID_PARAMETER_VALUE", f"Parameter 'version' must be an integer, got '{version}'."
        ) from None
