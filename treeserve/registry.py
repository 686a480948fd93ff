"""The MLflow model registry as every treeserve package sees it.

The client factories (``mlflow_client`` for everything, ``registry_client`` for the registry
calls of promote, rollback and ``sync status``), one place where MLflow's errors become
treeserve's (``mlflow_errors``), and the champion history that the promotion gate writes and both
rollback and the sync's retention read (``read_model_state``, ``previous_champions``).

    MlflowException (RestException included), RegistryApiError (treeserve.registry_clients)
    ├── a lookup code (RESOURCE_DOES_NOT_EXIST, NOT_FOUND, INVALID_PARAMETER_VALUE)
    │     and the caller named what is missing       -> NotFoundError (or the caller's subclass)
    └── anything else                                -> ServiceUnavailableError
    OSError (requests' ConnectionError, timeouts)    -> ServiceUnavailableError

mlflow is imported inside the functions, and only by those that need it: importing this module
costs nothing, and ``registry_client`` and ``mlflow_errors`` never import it for an ``http(s)://``
or ``sqlite:///`` URI (``import mlflow`` alone takes 2-3 s of CPU on this machine).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treeserve import contract
from treeserve.errors import NotFoundError, ServiceUnavailableError, TreeserveError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from treeserve.registry_clients import RegistryClient

NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})
"""MLflow error codes that mean "no such model, version or alias" for a lookup."""

HISTORY_LIMIT = 50
"""How many past champions the registry tag ``contract.TAG_CHAMPION_HISTORY`` keeps."""


FAIL_FAST_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
"""MLflow client HTTP settings for long-running services (the sync): an unreachable server fails a
call in seconds. MLflow's defaults (7 retries, exponential backoff) block each call ~4 minutes."""


def fail_fast_registry() -> None:
    """Apply ``FAIL_FAST_HTTP`` to this process, except variables the environment already sets.

    MLflow reads them at every request, process-wide: call it at the entry point of a service that
    must keep answering (health checks, status) while the registry is down, not in a library.
    """
    for key, value in FAIL_FAST_HTTP.items():
        os.environ.setdefault(key, value)


FOREIGN_HEADER_PROVIDERS = ("feast",)
"""Packages whose ``mlflow.request_header_provider`` entry point MLflow must not load here.

Feast registers one for its own MLflow data sources. MLflow loads every such provider on its
first HTTP request, so each process paid the import of all of Feast (8 s on the benchmark
machine) before its first registry call, and the provider would add an ``Authorization`` header
with the pod's Kubernetes service-account token to every request to the MLflow server."""


def _header_providers_without_foreign() -> None:
    """Load MLflow's request-header registry without ``FOREIGN_HEADER_PROVIDERS`` (once per process).

    MLflow reads the entry points when its registry module is imported; the filter applies to
    that one import. A process that imported it already (the module is shared) keeps what it has.
    """
    if "mlflow.tracking.request_header.registry" in sys.modules:
        return
    from mlflow.utils import plugins

    original = plugins.get_entry_points

    def filtered(group: str) -> list[Any]:
        found = original(group)
        if group != "mlflow.request_header_provider":
            return found
        return [ep for ep in found if ep.module.split(".")[0] not in FOREIGN_HEADER_PROVIDERS]

    plugins.get_entry_points = filtered
    try:
        import mlflow.tracking.request_header.registry  # noqa: F401  (registers the providers)
    finally:
        plugins.get_entry_points = original


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient whose tracking and registry URIs are both ``tracking_uri``.

    A local ``sqlite:///`` database gets its folder created, so a fresh home works. MLflow's HTTP
    requests carry no header of ``FOREIGN_HEADER_PROVIDERS``.
    """
    from mlflow import MlflowClient

    _header_providers_without_foreign()
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def registry_client(tracking_uri: str) -> RegistryClient:
    """A client for reading the registry and moving aliases and tags, without ``import mlflow``.

    Lookups that fail (no such model, version, alias) answer in a fraction of a second. URIs and
    environments the light clients do not cover (``MLFLOW_TRACKING_AUTH``, other schemes) get an
    ``MlflowClient``, which has the same methods.
    """
    from treeserve import registry_clients

    if registry_clients.supported(tracking_uri):
        return registry_clients.for_uri(tracking_uri)
    return mlflow_client(tracking_uri)


@contextmanager
def mlflow_errors(what: str, *, not_found: TreeserveError | str | None = None) -> Iterator[None]:
    """Map MLflow errors raised inside the block to treeserve's (see the module docstring).

    ``what`` names the operation for the message ("registry read of 'churn'"). ``not_found``:
    for a lookup, the error (or the NotFoundError message) to raise when MLflow answers that the
    thing does not exist; without it every MLflow error reads as the registry being unavailable.
    """
    try:
        yield
    except Exception as e:
        if not _is_registry_error(e):
            if isinstance(e, OSError):
                raise ServiceUnavailableError(f"MLflow {what} failed: {e}") from e
            raise
        if not_found is not None and is_not_found(e):
            raise (NotFoundError(not_found) if isinstance(not_found, str) else not_found) from e
        raise ServiceUnavailableError(f"MLflow {what} failed: {first_line(e)}") from e


def _is_registry_error(e: BaseException) -> bool:
    """An MlflowException or a RegistryApiError; mlflow is not imported to tell (if it is not
    loaded, none of its exceptions can have been raised)."""
    from treeserve.registry_clients import RegistryApiError

    if isinstance(e, RegistryApiError):
        return True
    exceptions = sys.modules.get("mlflow.exceptions")
    return exceptions is not None and isinstance(e, exceptions.MlflowException)


def ensure_registered_model(client: Any, model: str) -> None:
    """Create the registered model ``model`` unless it exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model)
    except MlflowException as e:
        if str(getattr(e, "error_code", "")) != "RESOURCE_ALREADY_EXISTS":
            raise ServiceUnavailableError(f"MLflow registration of {model!r} failed: {first_line(e)}") from e


def is_not_found(e: BaseException) -> bool:
    """True when an MLflow error says the model, version or alias does not exist."""
    return str(getattr(e, "error_code", "")) in NOT_FOUND_CODES


def first_line(e: BaseException) -> str:
    """The first line of an MLflow error's message (their messages carry whole server replies)."""
    text = str(getattr(e, "message", "") or e)
    return text.splitlines()[0] if text else type(e).__name__


# ---- the champion history --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelState:
    """What the registry says about one registered model: its aliases and champion history."""

    model: str
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias -> version (strings)."""
    champion_history: list[str] = field(default_factory=list)
    """Versions that held ``champion``, oldest first, current last (the registry tag)."""

    @property
    def champion(self) -> str | None:
        """The version behind ``champion``, if set."""
        return self.aliases.get(contract.ALIAS_CHAMPION)

    def previous_champions(self) -> list[str]:
        """Earlier champions, newest first: what rollback moves to and what the sync keeps loaded."""
        return previous_champions(self.champion_history, self.champion)


def read_model_state(client: Any, model: str) -> ModelState:
    """Aliases and champion history of ``model``; NotFoundError when it is not registered."""
    with mlflow_errors(f"registry read of {model!r}", not_found=f"registered model {model!r} does not exist"):
        registered = client.get_registered_model(model)
    return ModelState(
        model=model,
        aliases={str(k): str(v) for k, v in (registered.aliases or {}).items()},
        champion_history=champion_history(dict(registered.tags or {})),
    )


def newest_versions(client: Any, model: str, *, limit: int) -> list[str]:
    """The ``limit`` highest version numbers of ``model`` whose registration is complete, newest first."""
    if limit <= 0:
        return []
    name = model.replace("'", "\\'")
    with mlflow_errors(f"version listing of {model!r}"):
        found = client.search_model_versions(
            f"name = '{name}'", order_by=["version_number DESC"], max_results=limit
        )
    return [str(mv.version) for mv in found if str(getattr(mv, "status", "READY") or "READY") == "READY"]


def champion_history(tags: Mapping[str, str]) -> list[str]:
    """The champion history from registered-model tags (empty when absent or malformed)."""
    try:
        history = json.loads(tags[contract.TAG_CHAMPION_HISTORY])
    except (KeyError, ValueError):
        return []
    return [str(v) for v in history] if isinstance(history, list) else []


def previous_champions(history: Sequence[str], champion: str | None) -> list[str]:
    """Distinct earlier champions, newest first, excluding the current one.

    The first entry is where ``treeserve rollback`` moves ``champion``; the sync keeps the first N
    loaded, so a rollback only switches the routing.
    """
    out: list[str] = []
    for v in reversed(history):
        if v != champion and v not in out:
            out.append(str(v))
    return out


def with_champion(history: Sequence[str], champion: str | None) -> list[str]:
    """``history`` with ``champion`` appended when it is not already the last entry (bounded)."""
    out = [str(v) for v in history]
    if champion is not None and (not out or out[-1] != str(champion)):
        out.append(str(champion))
    return out[-HISTORY_LIMIT:]


def record_champion(client: Any, state: ModelState, version: str) -> ModelState:
    """Make ``version`` the last entry of the registry's champion history (a no-op when it is).

    The promotion gate records every champion it sets; the sync records the champions it serves,
    so a ``champion`` alias moved outside the gate still has a previous champion to roll back to.
    """
    history = with_champion(state.champion_history, version)
    if history == state.champion_history:
        return state
    with mlflow_errors(f"champion history of {state.model!r}"):
        client.set_registered_model_tag(state.model, contract.TAG_CHAMPION_HISTORY, json.dumps(history))
    return ModelState(model=state.model, aliases=dict(state.aliases), champion_history=history)
