"""Gateway unit fixtures: the real app and service with in-memory adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import build_predlog, create_app
from tests.unit.gateway.fakes import FakeFeatures, FakeTriton, write_repository
from treeserve_app.settings import load_settings

ROWS = {
    "cust-000001": [1.0, 2.0, 3.0],
    "cust-000002": [4.0, None, 0.5],
    "cust-000003": [0.0, 0.0, None],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Harness:
    """A running app (lifespan entered) with its fakes and an httpx client."""

    def __init__(
        self,
        app: Any,
        client: httpx.AsyncClient,
        features: FakeFeatures,
        triton: FakeTriton,
        home: Path,
        settings: Any,
    ) -> None:
        self.app = app
        self.client = client
        self.features = features
        self.triton = triton
        self.home = home
        self.settings = settings

    @property
    def service(self) -> Any:
        return self.app.state.service


@pytest.fixture
def make_gateway(treeserve_home: Path) -> Callable[..., Any]:
    """Factory: ``async with make_gateway(routing=..., **gateway_settings) as h``."""
    import contextlib

    @contextlib.asynccontextmanager
    async def _make(
        routing: dict[str, str] | None = None,
        version_features: dict[str, list[str]] | None = None,
        explainers: tuple[str, ...] = ("1", "2"),
        rows: dict[str, list[float | None]] | None = None,
        **gateway: Any,
    ) -> AsyncIterator[Harness]:
        repo = treeserve_home / "model_repository"
        write_repository(
            repo, routing or {"champion": "1"}, version_features=version_features, explainers=explainers
        )
        gw = {"grpc_port": 0, "routing_poll_interval_s": 0.05, **gateway}
        settings = load_settings(home=treeserve_home, gateway=gw)
        features = FakeFeatures(rows if rows is not None else ROWS)
        triton = FakeTriton()
        predlog = build_predlog(settings)
        app = create_app(settings, features=features, triton=triton, predlog=predlog)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Harness(app, client, features, triton, treeserve_home, settings)

    return _make
