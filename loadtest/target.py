"""Is the target serving? Checked before a load test starts, so a dead target is not "measured".

A gateway must answer ``/readyz`` 200 (the failing checks are named otherwise); a gRPC target
(the gateway's KServe v2 port or Triton) must be ready and have the workload's model (version)
ready.
"""

from __future__ import annotations

from loadtest.errors import LoadtestTargetError
from loadtest.workload import Workload


def check_target(target: str, host: str, workload: Workload, *, timeout_s: float = 5.0) -> None:
    """Raise LoadtestTargetError naming why ``target`` at ``host`` cannot serve ``workload``."""
    if target == "gateway":
        _check_http(host, timeout_s)
    else:
        _check_grpc(target, host, workload, timeout_s)


def _check_http(url: str, timeout_s: float) -> None:
    import httpx

    try:
        r = httpx.get(f"{url.rstrip('/')}/readyz", timeout=timeout_s)
    except httpx.HTTPError as e:
        raise LoadtestTargetError(f"the gateway at {url} is not reachable: {e or type(e).__name__}") from e
    if r.status_code == 200:
        return
    try:
        checks = r.json().get("checks", {})
        failing = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    except ValueError:
        failing = r.text[:200]
    raise LoadtestTargetError(
        f"the gateway at {url} is not ready (/readyz {r.status_code}): {failing or 'no reason given'}"
    )


def _check_grpc(target: str, host: str, workload: Workload, timeout_s: float) -> None:
    from tritonclient.grpc import InferenceServerClient
    from tritonclient.utils import InferenceServerException

    what = f"{target} at {host}"
    version = workload.model_version if target == "triton" else ""
    client = InferenceServerClient(url=host)
    try:
        try:
            ready = client.is_server_ready(client_timeout=timeout_s)
            model_ready = ready and client.is_model_ready(workload.model, version, client_timeout=timeout_s)
        except InferenceServerException as e:
            raise LoadtestTargetError(f"{what} is not reachable: {e.message()}") from e
    finally:
        client.close()
    if not ready:
        raise LoadtestTargetError(f"{what} is not ready")
    if not model_ready:
        pinned = f" version {version}" if version else ""
        raise LoadtestTargetError(f"{what} does not serve model {workload.model!r}{pinned} (not ready)")
