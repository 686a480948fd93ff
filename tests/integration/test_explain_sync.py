"""The sync installs, loads, canaries and removes a version's explainer companion with the version."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from exporter.sync.reconcile import reconcile_once
from exporter.triton_admin import TritonAdminClient
from tests.integration.test_sync import logged, mlflow_client, ready, register, routing, sync_settings
from treeserve import contract
from treeserve import repository as repo_mod

__all__ = ["logged"]  # the module-scoped fixture of the sync tests, shared


def test_companion_follows_its_version_through_promotion_and_retirement(
    tmp_path: Any, mlflow_server: Any, logged: Any, triton_server: Any
) -> None:
    model = f"explain-sync-{uuid.uuid4().hex[:8]}"
    companion = repo_mod.explainer_name(model)
    client = mlflow_client(mlflow_server.url)
    settings = sync_settings(tmp_path, mlflow_server.url, triton_server, model, keep_champions=0)
    repo = triton_server.repository

    v1 = register(client, model, logged[0])
    client.set_registered_model_alias(model, "champion", v1)
    first = reconcile_once(settings, client=client)
    assert first.ok, first.models[model].message
    assert repo_mod.explainer_versions(repo, model) == [int(v1)]
    assert ready(triton_server, companion) == {v1}
    reference = repo_mod.read_reference(repo, companion, v1)
    with TritonAdminClient(triton_server.http_url) as admin:
        got = admin.infer(companion, v1, reference.inputs[:16], [contract.OUTPUT_CONTRIBUTIONS])
    np.testing.assert_allclose(
        got[contract.OUTPUT_CONTRIBUTIONS], reference.outputs[contract.OUTPUT_CONTRIBUTIONS][:16], atol=1e-4
    )

    v2 = register(client, model, logged[1])
    client.set_registered_model_alias(model, "champion", v2)
    second = reconcile_once(settings, client=client)
    assert second.ok, second.models[model].message
    assert routing(settings, model) == {"champion": v2}
    assert repo_mod.installed_versions(repo, model) == [int(v2)]
    assert repo_mod.explainer_versions(repo, model) == [int(v2)], "the retired version's companion is gone"
    assert ready(triton_server, companion) == {v2}
