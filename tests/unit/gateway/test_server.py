"""``gateway.server.run``: the uvicorn workers serve with the settings ``run`` was given."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from treeserve_app.commands.gateway import APP_FACTORY
from treeserve_app.settings import Settings, load_settings


def test_workers_get_every_programmatic_override(
    monkeypatch: pytest.MonkeyPatch, treeserve_home: Path
) -> None:
    import uvicorn

    import gateway.app
    from gateway import server

    monkeypatch.setattr(os, "environ", dict(os.environ))  # run() exports settings for its workers
    built: list[Settings] = []

    def create_app(settings: Settings, **_: Any) -> FastAPI:
        built.append(settings)
        return FastAPI()

    def uvicorn_run(target: str, *, factory: bool, **_: Any) -> None:
        # What a worker does: a fresh import of the factory, called with nothing but the environment.
        module, name = target.split(":")
        assert factory
        getattr(importlib.import_module(module), name)()

    monkeypatch.setattr(gateway.app, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", uvicorn_run)
    base = load_settings(home=treeserve_home)
    settings = base.model_copy(
        update={
            "gateway": base.gateway.model_copy(
                update={"max_entities": 7, "missing_policy": {"f_b": "fallback"}, "api_keys": ["k1"]}
            ),
            "feast": base.feast.model_copy(update={"feature_service": "other_service"}),
        }
    )
    server.run(settings, app_factory=APP_FACTORY)
    (seen,) = built
    assert seen.gateway.max_entities == 7
    assert seen.gateway.missing_policy == {"f_b": "fallback"} and seen.gateway.api_keys == ["k1"]
    assert seen.feast.feature_service == "other_service"
    assert seen == settings
