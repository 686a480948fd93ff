"""Where the local Triton listens: the one answer for every client of ``treeserve triton start``.

``treeserve triton start`` records its ports in ``<triton.run_dir>/triton.json`` (with its pid).
The sync, the gateway, ``export --load``, the load tests and the demo ask ``local_triton(settings)``
whenever their own Triton address setting is empty: while that server runs they get its ports,
otherwise the ``triton.*`` settings. A URL set explicitly (``TREESERVE_SYNC__TRITON_URL``,
``TREESERVE_GATEWAY__TRITON__HTTP_URL`` or ``__GRPC_URL``, ``TREESERVE_LOADTEST__TRITON_GRPC_URL``)
always wins.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treeserve.procs import pid_alive

STATE_FILE = "triton.json"
"""In ``triton.run_dir``: pid, http/grpc/metrics ports, repository, shm prefix, start time."""


@dataclass(frozen=True)
class TritonEndpoints:
    """The addresses of one Triton server."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    pid: int | None = None
    """The running server's pid when read from its state file."""
    repository: str = ""

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP/REST endpoint (what the admin client takes)."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (what tritonclient.grpc takes)."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        """``grpc://host:port``: what the admin client takes to load models over gRPC."""
        return f"grpc://{self.grpc_url}"


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The state file of the server started from ``run_dir`` if that server is still running."""
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((Path(run_dir) / STATE_FILE).read_text())
        if isinstance(state, dict) and isinstance(state.get("pid"), int) and pid_alive(state["pid"]):
            return state
    return None


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Record a started server (atomically: readers never see half a file)."""
    path = Path(run_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def triton_grpc_url(settings: Any) -> str:
    """The gateway's Triton: ``gateway.triton.grpc_url`` when set, else the local Triton's gRPC address."""
    return settings.gateway.triton.grpc_url or local_triton(settings).grpc_url


def gateway_triton(settings: Any) -> Any:
    """``gateway.triton`` with its address filled in: the local Triton's, for the transport in use,
    when no address of that transport is set."""
    t = settings.gateway.triton
    transport = t.transport()
    if t.has_address(transport):
        return t
    local = local_triton(settings)
    url = local.http_url if transport == "http" else local.grpc_url
    return t.model_copy(update={f"{transport}_url": url})


def sync_triton_url(settings: Any) -> str:
    """The sync's Triton: ``sync.triton_url`` when set, else the local Triton's gRPC port
    (``grpc://host:port``: model loads over gRPC leave Triton's HTTP inference answering)."""
    return settings.sync.triton_url or local_triton(settings).admin_url


def local_triton(settings: Any) -> TritonEndpoints:
    """The running local Triton's ports (from its state file), else the ``triton.*`` settings."""
    t = settings.triton
    state = read_state(settings.path(t.run_dir))
    if state is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return TritonEndpoints(
                host=t.host,
                http_port=int(state["http_port"]),
                grpc_port=int(state["grpc_port"]),
                metrics_port=int(state["metrics_port"]),
                pid=int(state["pid"]),
                repository=str(state.get("repository", "")),
            )
    return TritonEndpoints(
        host=t.host, http_port=t.http_port, grpc_port=t.grpc_port, metrics_port=t.metrics_port
    )
