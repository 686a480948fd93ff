"""Locust users for treeserve: the gateway over HTTP and gRPC, and Triton directly over gRPC.

Run by ``treeserve loadtest`` (which writes the workload file and picks the user class), or by
hand, also distributed::

    locust -f loadtest/locustfile.py --master --headless -u 64 -r 16 -t 60s --expect-workers 2 \\
        --host http://gateway:8080 --json-file reports/stats GatewayHttpUser
    locust -f loadtest/locustfile.py --worker --master-host <master> GatewayHttpUser   # per worker

Without ``TREESERVE_LOADTEST_WORKLOAD`` each process builds the workload from the settings
(``TREESERVE_*`` variables; the demo data must be readable there).

Users run closed-loop (no think time): ``--users`` is the concurrency.
"""

from __future__ import annotations

# isort: off
# Locust first: it monkey-patches the standard library with gevent before anything else loads.
import locust
from locust import FastHttpUser, User, constant, events, task

# isort: on
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
import grpc.experimental.gevent as grpc_gevent

from loadtest.report import FINE_BUCKET_US
from loadtest.workload import (
    API_KEY_ENV,
    HISTOGRAM_ENV,
    TIMEOUT_ENV,
    WORKLOAD_ENV,
    RequestKind,
    Transport,
    Workload,
    draw_entity_ids,
    draw_kind,
    effective_weights,
    gateway_payload,
    triton_rows,
)

# gRPC's C core must yield to gevent, or one blocking call stalls every simulated user.
grpc_gevent.init_gevent()

log = logging.getLogger("treeserve.loadtest")

ENTITY_TENSOR_SHAPE_2D = False
"""Entity ids travel as a 1-D BYTES tensor ``[n]`` (KServe v2 convention for one column)."""


def _load_workload(target: str) -> Workload:
    path = os.environ.get(WORKLOAD_ENV)
    if path:
        return Workload.load(Path(path))
    from loadtest.prepare import build_workload
    from treeserve_app.settings import load_settings

    return build_workload(load_settings(), target=target)


_workloads: dict[str, Workload] = {}


def workload(target: str) -> Workload:
    """The workload of this process for ``target``, loaded once (from the runner's file or the settings)."""
    if target not in _workloads:
        _workloads[target] = _load_workload(target)
    return _workloads[target]


@events.init.add_listener
def _preload(environment: Any, **_: Any) -> None:
    # Build the workload before the clock starts (imports + parquet reads would eat the run time).
    if isinstance(environment.runner, locust.runners.MasterRunner):
        return
    for cls in environment.user_classes or []:
        target = getattr(cls, "target", None)
        if target:
            workload(target)
    # That blocked the loop: refresh its clock, or the --run-time timer starts already expired.
    gevent.get_hub().loop.update_now()


def _timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "10"))


# ---- a 10 µs latency histogram (Locust's own rounds to 1 ms below 100 ms) -------------------

_buckets: dict[int, int] = {}


@events.request.add_listener
def _record(response_time: float, **_: Any) -> None:
    b = int(response_time * 1000.0 / FINE_BUCKET_US)
    _buckets[b] = _buckets.get(b, 0) + 1


@events.report_to_master.add_listener
def _to_master(client_id: str, data: dict[str, Any]) -> None:
    data["treeserve_buckets"] = dict(_buckets)
    _buckets.clear()


@events.worker_report.add_listener
def _from_worker(client_id: str, data: dict[str, Any]) -> None:
    for k, v in (data.get("treeserve_buckets") or {}).items():
        _buckets[int(k)] = _buckets.get(int(k), 0) + int(v)


@events.test_start.add_listener
def _reset(**_: Any) -> None:
    _buckets.clear()


@events.quitting.add_listener
def _write_histogram(environment: Any, **_: Any) -> None:
    path = os.environ.get(HISTOGRAM_ENV)
    if not path or isinstance(environment.runner, locust.runners.WorkerRunner):
        return
    Path(path).write_text(json.dumps({"bucket_us": FINE_BUCKET_US, "buckets": _buckets}))


# ---- users ---------------------------------------------------------------------------------


class GatewayHttpUser(FastHttpUser):
    """POSTs to the gateway's predict endpoint with the configured mix of request kinds."""

    wait_time = constant(0)
    connection_timeout = 5.0
    target = "gateway"

    def on_start(self) -> None:
        self.network_timeout = _timeout_s()
        self.rng = random.Random()
        self.wl = workload(self.target)
        self.weights = effective_weights(self.wl, transport="http")
        self.path = f"/v1/models/{self.wl.model}/predict"
        key = os.environ.get(API_KEY_ENV)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    @task
    def predict(self) -> None:
        kind = draw_kind(self.rng, self.weights)
        body, _ = gateway_payload(self.rng, self.wl, kind)
        with self.client.post(
            self.path, json=body, headers=self.headers, name=f"predict {kind}", catch_response=True
        ) as resp:
            if resp.status_code == 0:  # no HTTP answer at all: say why (refused, reset, timeout)
                resp.failure(f"connection error: {resp.error!r}"[:200])
            elif resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")


class _GrpcUser(User):
    """A user with a ``tritonclient.grpc`` client; every call is reported as a Locust request."""

    abstract = True
    wait_time = constant(0)
    transport: Transport = "grpc-entities"
    target = "gateway-grpc"

    def on_start(self) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        url = (self.host or "").removeprefix("grpc://").removeprefix("http://").rstrip("/")
        self.client = grpcclient.InferenceServerClient(url=url)
        self.rng = random.Random()
        self.wl = workload(self.target)
        self.weights = effective_weights(self.wl, transport=self.transport)
        self.timeout_s = _timeout_s()

    def on_stop(self) -> None:
        self.client.close()

    def infer(self, name: str, inputs: list[Any], *, model_version: str = "") -> None:
        """One ModelInfer call, timed and reported through Locust's request event."""
        from tritonclient.utils import InferenceServerException

        start = time.perf_counter()
        exc: Exception | None = None
        length = 0
        try:
            result = self.client.infer(
                self.wl.model, inputs, model_version=model_version, client_timeout=self.timeout_s
            )
            length = result.get_response().ByteSize()
        except InferenceServerException as e:
            exc = e
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )


class GatewayGrpcUser(_GrpcUser):
    """Calls the gateway's KServe v2 gRPC port with entity ids (a BYTES tensor named after the key)."""

    @task
    def predict(self) -> None:
        import numpy as np

        kind: RequestKind = draw_kind(self.rng, self.weights)
        ids = draw_entity_ids(self.rng, self.wl, kind)
        data = np.array([i.encode() for i in ids], dtype=np.object_)
        if ENTITY_TENSOR_SHAPE_2D:
            data = data.reshape(-1, 1)
        inp = self._grpc.InferInput(self.wl.entity_key, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        self.infer(f"infer {kind}", [inp])


class TritonGrpcUser(_GrpcUser):
    """Calls Triton directly with FP32 feature rows (NaN = missing), version pinned."""

    transport: Transport = "features"
    target = "triton"

    @task
    def predict(self) -> None:
        import numpy as np

        from treeserve import contract

        kind: RequestKind = draw_kind(self.rng, self.weights)
        rows = np.asarray(triton_rows(self.rng, self.wl, kind), dtype=np.float32)
        inp = self._grpc.InferInput(contract.INPUT_TENSOR, list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)
        self.infer(f"infer {kind}", [inp], model_version=self.wl.model_version)


USER_CLASSES: dict[str, type[User]] = {
    "gateway": GatewayHttpUser,
    "gateway-grpc": GatewayGrpcUser,
    "triton": TritonGrpcUser,
}
