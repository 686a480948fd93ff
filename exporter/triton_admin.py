"""The one administrative client of a Triton server: health, repository index, load/unload, infer, canary.

Used by ``treeserve export --load``, ``treeserve triton``, the sync and the demo (the gateway's
hot-path inference client, ``gateway.triton``, is separate). It speaks Triton's gRPC API
(``grpc://host:port``, through ``tritonclient.grpc``) or its HTTP API (``host:port`` or
``http://host:port``, through ``tritonclient.http``), both with explicit model control. gRPC is
what the local stack uses: while a model loads through the HTTP API, Triton answers no HTTP
request at all (measured: 1.4 s of silence per load), which a gateway on Triton's HTTP port would
see as a stall; a load over gRPC leaves both ports answering.

Errors from ``tritonclient`` and the network are mapped here, where they enter::

    ServiceUnavailableError
    └── TritonControlError          Triton refused a repository/inference call
        ├── TritonNotRunningError   nothing answers at the URL
        └── ModelLoadError          a load failed, or a version did not become READY
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from exporter.canary import CanaryResult, run_canary
from exporter.errors import CanaryError, ModelLoadError, TritonControlError, TritonNotRunningError
from treeserve import contract
from treeserve.endpoints import parse_admin_endpoint
from treeserve.repository import ReferenceData, explainer_name

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNREACHABLE_GRPC = {"StatusCode.UNAVAILABLE"}
"""gRPC statuses meaning nothing answered (connection refused, reset, no route)."""


class _HttpApi:
    """Triton's admin calls over ``tritonclient.http``, answered in the shapes the admin client reads."""

    def __init__(self, address: str, timeout_s: float, client: Any | None) -> None:
        if client is None:
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(
                url=address, connection_timeout=min(timeout_s, 5.0), network_timeout=timeout_s
            )
        self.client = client

    def live(self) -> bool:
        return bool(self.client.is_server_live())

    def ready(self) -> bool:
        return bool(self.client.is_server_ready())

    def index(self) -> list[dict[str, Any]]:
        return list(self.client.get_model_repository_index() or [])

    def version_ready(self, model: str, version: str) -> bool:
        return bool(self.client.is_model_ready(model, version))

    def stats(self, model: str) -> dict[str, Any]:
        return dict(self.client.get_inference_statistics(model) or {})

    def config(self, model: str) -> dict[str, Any]:
        return dict(self.client.get_model_config(model) or {})

    def load(self, model: str, config: str | None) -> None:
        if config is None:
            self.client.load_model(model)
        else:
            self.client.load_model(model, config=config)

    def unload(self, model: str) -> None:
        self.client.unload_model(model)

    def infer(
        self, model: str, version: str, name: str, x: np.ndarray, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        import tritonclient.http as httpclient

        inp = httpclient.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        req = [httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs]
        result = self.client.infer(model, [inp], model_version=version, outputs=req)
        return {o: result.as_numpy(o) for o in outputs}

    def close(self) -> None:
        self.client.close()


class _GrpcApi:
    """The same calls over ``tritonclient.grpc``; JSON answers are protobuf's (64-bit counts as strings)."""

    def __init__(self, address: str, timeout_s: float, client: Any | None) -> None:
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(url=address)
        self.client = client
        self.timeout_s = timeout_s

    def live(self) -> bool:
        return bool(self.client.is_server_live(client_timeout=self.timeout_s))

    def ready(self) -> bool:
        return bool(self.client.is_server_ready(client_timeout=self.timeout_s))

    def index(self) -> list[dict[str, Any]]:
        answer = self.client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s)
        return list((answer or {}).get("models", []))

    def version_ready(self, model: str, version: str) -> bool:
        return bool(self.client.is_model_ready(model, version, client_timeout=self.timeout_s))

    def stats(self, model: str) -> dict[str, Any]:
        return dict(
            self.client.get_inference_statistics(model, as_json=True, client_timeout=self.timeout_s) or {}
        )

    def config(self, model: str) -> dict[str, Any]:
        answer = self.client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)
        return dict((answer or {}).get("config", {}))

    def load(self, model: str, config: str | None) -> None:
        self.client.load_model(model, config=config, client_timeout=self.timeout_s)

    def unload(self, model: str) -> None:
        self.client.unload_model(model, client_timeout=self.timeout_s)

    def infer(
        self, model: str, version: str, name: str, x: np.ndarray, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        req = [grpcclient.InferRequestedOutput(o) for o in outputs]
        result = self.client.infer(
            model, [inp], model_version=version, outputs=req, client_timeout=self.timeout_s
        )
        return {o: result.as_numpy(o) for o in outputs}

    def close(self) -> None:
        self.client.close()


class TritonAdminClient:
    """Administrative calls against one Triton server (gRPC or HTTP API, chosen by the URL)."""

    def __init__(self, url: str, *, timeout_s: float = 60.0, client: Any | None = None) -> None:
        """``url``: ``grpc://host:port`` (gRPC), ``http://host:port`` or ``host:port`` (HTTP);
        ``client`` replaces the tritonclient of that transport (tests)."""
        self.url = parse_admin_endpoint(url)
        """The server as the settings and messages name it."""
        self.transport = "grpc" if self.url.startswith("grpc://") else "http"
        address = self.url.split("://", 1)[-1]  # tritonclient wants host:port
        self.timeout_s = timeout_s
        api = _GrpcApi if self.transport == "grpc" else _HttpApi
        self._api: _HttpApi | _GrpcApi = api(address, timeout_s, client)
        self._input_names: dict[str, str] = {}

    def close(self) -> None:
        """Release the connection (pool)."""
        self._api.close()

    def __enter__(self) -> TritonAdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- error mapping ------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, load: bool = False, **kwargs: Any) -> T:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as e:
            message = e.message() or str(e)
            if e.status() in _UNREACHABLE_GRPC:
                raise self._not_running(what, e) from e
            if load:
                raise ModelLoadError(f"Triton refused the {what}: {message}") from e
            raise TritonControlError(f"Triton at {self.url}: {what} failed: {message}") from e
        except (OSError, ConnectionError) as e:
            raise self._not_running(what, e) from e
        except Exception as e:  # gevent/geventhttpclient raise their own socket errors
            if type(e).__module__.startswith(("gevent", "geventhttpclient", "socket")):
                raise self._not_running(what, e) from e
            raise

    def _not_running(self, what: str, e: BaseException) -> TritonNotRunningError:
        return TritonNotRunningError(
            f"Triton at {self.url} is unreachable ({what}: {e}); "
            "if it is not running, start it with `treeserve triton start`"
        )

    # ---- health and index ---------------------------------------------------------------
    def live(self) -> bool:
        """True when the server answers its liveness probe."""
        try:
            return bool(self._call("health", self._api.live))
        except TritonControlError:
            return False

    def ready(self) -> bool:
        """True when the server answers its readiness probe with ready."""
        try:
            return bool(self._call("health", self._api.ready))
        except TritonControlError:
            return False

    def repository_index(self) -> list[dict[str, Any]]:
        """Every model/version Triton knows with its state (and reason when not READY)."""
        return self._call("repository index", self._api.index)

    def ready_versions(self, model: str) -> set[str]:
        """Versions of ``model`` that are READY (empty when not loaded)."""
        return {
            str(e["version"])
            for e in self.repository_index()
            if e.get("name") == model and e.get("state") == "READY" and e.get("version")
        }

    def version_ready(self, model: str, version: int | str) -> bool:
        """``model`` ``version`` is READY."""
        try:
            return bool(
                self._call(
                    f"readiness of {model!r} v{version}",
                    self._api.version_ready,
                    model,
                    str(int(version)),
                )
            )
        except TritonNotRunningError:
            raise
        except TritonControlError:
            return False

    def model_stats(self, model: str) -> dict[str, Any]:
        """``/v2/models/<m>/stats`` (inference and execution counts, batch sizes)."""
        return self._call(f"stats of {model!r}", self._api.stats, model)

    def model_config(self, model: str) -> dict[str, Any]:
        """The config Triton serves for ``model`` (JSON form)."""
        return self._call(f"config of {model!r}", self._api.config, model)

    def input_name(self, model: str) -> str:
        """The name of ``model``'s single input tensor, as its served config declares it."""
        if model not in self._input_names:
            inputs = self.model_config(model).get("input") or []
            if len(inputs) != 1:
                raise TritonControlError(
                    f"Triton at {self.url}: model {model!r} declares {len(inputs)} inputs, expected one"
                )
            self._input_names[model] = str(inputs[0]["name"])
        return self._input_names[model]

    # ---- load / unload ------------------------------------------------------------------
    def load(self, model: str, *, wait_for: Iterable[int | str] = (), timeout_s: float | None = None) -> None:
        """(Re)load ``model`` from the repository, then wait until the ``wait_for`` versions are READY.

        ModelLoadError with Triton's reason when the load fails or a version does not come up.
        """
        self._input_names.pop(model, None)
        self._call(f"load of {model!r}", self._api.load, model, None, load=True)
        for version in wait_for:
            self.wait_version_ready(model, version, timeout_s=timeout_s)
        self.load_explainer(model)

    def load_override(self, model: str, config: str) -> None:
        """Load ``model`` with ``config`` (JSON, e.g. naming only the routed versions) instead of its
        config.pbtxt; the explainer companion is left to the next plain :meth:`load`.

        ModelLoadError with Triton's reason when the load fails.
        """
        self._input_names.pop(model, None)
        self._call(f"load of {model!r}", self._api.load, model, config, load=True)

    def load_explainer(self, model: str) -> None:
        """(Re)load ``model``'s explainer companion when the repository has one (unload it when not).

        A companion that fails to load is logged, not raised: predictions do not depend on it,
        and the explainer canary reports it per version.
        """
        companion = explainer_name(model)
        entries = [e for e in self.repository_index() if e.get("name") == companion]
        if not entries:
            return
        try:
            self._call(f"load of {companion!r}", self._api.load, companion, None, load=True)
        except ModelLoadError as e:
            log.warning("explainer companion %s did not load: %s", companion, e)
            self.unload_explainer(model)

    def unload_explainer(self, model: str) -> None:
        """Unload the explainer companion of ``model`` (predictions are untouched)."""
        companion = explainer_name(model)
        if any(e.get("name") == companion and e.get("state") for e in self.repository_index()):
            try:
                self._call(f"unload of {companion!r}", self._api.unload, companion)
            except TritonControlError as e:
                log.warning("explainer companion %s did not unload: %s", companion, e)

    def unload(self, model: str) -> None:
        """Unload every version of ``model`` (and of its explainer companion)."""
        self._input_names.pop(model, None)
        self._call(f"unload of {model!r}", self._api.unload, model)
        self.unload_explainer(model)

    def wait_version_ready(self, model: str, version: int | str, *, timeout_s: float | None = None) -> None:
        """Block until ``model`` ``version`` is READY; ModelLoadError with Triton's reason otherwise."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            if self.version_ready(model, version):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        reason = ""
        for entry in self.repository_index():
            if entry.get("name") == model and str(entry.get("version")) == str(version):
                reason = f"{entry.get('state')}: {entry.get('reason', '')}"
        raise ModelLoadError(
            f"model {model!r} version {version} is not ready in Triton ({reason or 'unknown'})"
        )

    # ---- inference ----------------------------------------------------------------------
    def infer(
        self,
        model: str,
        version: int | str,
        inputs: np.ndarray,
        outputs: Sequence[str],
        *,
        input_name: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run float32 ``inputs`` [n, n_features] through one version; output name -> array.

        The input tensor's name comes from the model's served config unless given.
        """
        name = input_name or self.input_name(model)
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        return self._call(
            f"inference on {model!r} v{version}", self._api.infer, model, str(int(version)), name, x, outputs
        )

    def canary(
        self,
        model: str,
        version: int | str,
        reference: ReferenceData,
        *,
        outputs: Sequence[str] | None = None,
        batch_rows: int = 256,
        atol: float = 1e-5,
        rtol: float = 1e-5,
    ) -> CanaryResult:
        """Send ``reference``'s inputs to ``model`` ``version``; CanaryError when the outputs differ."""
        return run_canary(
            lambda x, names: self.infer(model, version, x, names),
            reference,
            model=model,
            version=version,
            outputs=outputs,
            batch_rows=batch_rows,
            atol=atol,
            rtol=rtol,
        )

    def explainer_canary(
        self,
        model: str,
        version: int | str,
        reference: ReferenceData,
        *,
        batch_rows: int = 256,
        atol: float = 1e-4,
    ) -> CanaryResult:
        """The explainer companion of ``model`` ``version`` must give the stored contributions.

        CanaryError (naming the companion) when it is not ready or its answer differs.
        """
        companion = explainer_name(model)
        try:
            return run_canary(
                lambda x, names: self.infer(companion, version, x, names),
                reference,
                model=companion,
                version=version,
                outputs=[contract.OUTPUT_CONTRIBUTIONS],
                batch_rows=batch_rows,
                atol=atol,
                rtol=atol,
            )
        except TritonNotRunningError:
            raise
        except TritonControlError as e:
            raise CanaryError(f"model {companion!r} version {version}: {e}") from e


class TritonAdminGroup:
    """Several Triton servers sharing one repository, asked as one (e.g. "is it served everywhere?").

    ``urls`` is the list of servers or a function giving it, called again for every question (a
    DNS name listing the pods that exist now). A server that does not answer is left out, the way
    the sync leaves it out of a switch; when none answers, TritonNotRunningError names them all.
    """

    def __init__(
        self,
        urls: Sequence[str] | Callable[[], Sequence[str]],
        *,
        timeout_s: float = 5.0,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        """``client_factory`` (url -> admin client) replaces ``TritonAdminClient`` (tests)."""
        self._urls = urls if callable(urls) else (lambda fixed=list(urls): fixed)
        self._make = client_factory or (lambda url: TritonAdminClient(url, timeout_s=timeout_s))
        self._clients: dict[str, Any] = {}

    def _current(self) -> dict[str, Any]:
        urls = list(dict.fromkeys(self._urls()))
        for gone in set(self._clients) - set(urls):
            self._clients.pop(gone).close()
        for url in urls:
            if url not in self._clients:
                self._clients[url] = self._make(url)
        return {url: self._clients[url] for url in urls}

    def ready_versions(self, model: str) -> set[str]:
        """Versions of ``model`` READY on every server that answers."""
        found: list[set[str]] = []
        down: list[str] = []
        clients = self._current()
        for url, client in clients.items():
            try:
                found.append(client.ready_versions(model))
            except TritonControlError as e:
                down.append(f"{url}: {e}")
        if not found:
            why = "; ".join(down) or "no Triton server is configured (the name resolves to no address)"
            raise TritonNotRunningError(f"no Triton server answers ({why})")
        return set.intersection(*found)

    def close(self) -> None:
        """Release every client."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> TritonAdminGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
