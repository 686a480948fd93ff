"""Triton's repository and inference API, as the sync needs it (HTTP, explicit model control).

Errors from ``tritonclient`` and the network are mapped to ``TritonControlError`` here, where
they enter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from exporter.sync.errors import TritonControlError
from treeserve import contract

log = logging.getLogger(__name__)


class TritonControl:
    """Load/unload, repository index and canary inference against one Triton server."""

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        import tritonclient.http as httpclient

        url = url.split("://", 1)[-1].rstrip("/")  # tritonclient wants host:port
        self.url = url
        self._client = httpclient.InferenceServerClient(
            url=url, connection_timeout=min(timeout_s, 5.0), network_timeout=timeout_s
        )

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as e:
            raise TritonControlError(f"Triton at {self.url}: {what} failed: {e.message()}") from e
        except (OSError, ConnectionError) as e:
            raise TritonControlError(f"Triton at {self.url} is unreachable ({what}): {e}") from e
        except Exception as e:  # gevent/geventhttpclient raise their own socket errors
            if type(e).__module__.startswith(("gevent", "geventhttpclient", "socket")):
                raise TritonControlError(f"Triton at {self.url} is unreachable ({what}): {e}") from e
            raise

    def live(self) -> bool:
        """True when the server answers its liveness probe."""
        try:
            return bool(self._call("health", self._client.is_server_live))
        except TritonControlError:
            return False

    def ready_versions(self, model: str) -> set[str]:
        """Versions of ``model`` that are READY (empty when not loaded)."""
        index = self._call("repository index", self._client.get_model_repository_index)
        return {
            str(e["version"])
            for e in index
            if e.get("name") == model and e.get("state") == "READY" and e.get("version")
        }

    def load(self, model: str) -> None:
        """(Re)load ``model`` from the repository; returns when the load finished."""
        self._call(f"load of {model}", self._client.load_model, model)

    def unload(self, model: str) -> None:
        """Unload every version of ``model``."""
        self._call(f"unload of {model}", self._client.unload_model, model)

    def infer(
        self, model: str, version: str, inputs: np.ndarray, outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Run ``inputs`` (float32 [n, n_features]) through one version; output name -> array."""
        import tritonclient.http as httpclient

        x = np.ascontiguousarray(inputs, dtype=np.float32)
        inp = httpclient.InferInput(contract.INPUT_TENSOR, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        req = [httpclient.InferRequestedOutput(name, binary_data=True) for name in outputs]
        result = self._call(
            f"inference on {model} v{version}",
            self._client.infer,
            model,
            [inp],
            model_version=version,
            outputs=req,
        )
        return {name: result.as_numpy(name) for name in outputs}


def compare_outputs(
    got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], *, atol: float, rtol: float
) -> str | None:
    """None when every expected output matches, else a one-line description of the worst miss."""
    for name, want in expected.items():
        have = got.get(name)
        if have is None:
            return f"output {name!r} missing"
        have = np.asarray(have).reshape(np.asarray(want).shape)
        if want.dtype.kind in "iub":
            bad = int(np.sum(have != want))
            if bad:
                return f"output {name!r}: {bad} of {want.size} values differ"
            continue
        scale = max(1.0, float(np.nanmax(np.abs(want)))) if want.size else 1.0
        diff = (
            float(np.nanmax(np.abs(have.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
        )
        if diff > atol + rtol * scale:
            return f"output {name!r}: max |diff| {diff:.3g} > tolerance {atol + rtol * scale:.3g}"
    return None
