"""The repository on disk: atomic config writes, staging, installed versions, routing updates."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from exporter.errors import ModelNotInRepositoryError, RepositoryError
from exporter.flavors import get_flavor
from treeserve import contract
from treeserve import repository as repo_mod
from treeserve.repository import TritonModelSpec

SPEC = TritonModelSpec(
    name="churn-prediction",
    task="binary",
    features=("a", "b", "c"),
    versions=(3,),
    routing={"champion": "3"},
    feature_service="churn_model",
    entity_keys=("customer_id",),
)


def _install(repo: Path, version: int, *, marker: str = "x") -> Path:
    with repo_mod.staging(repo, SPEC.name, version) as stage:
        (stage / "model.onnx").write_text(marker)
        repo_mod.write_reference(
            stage, np.zeros((2, 3)), {"probabilities": np.zeros((2, 2), dtype=np.float32)}
        )
        repo_mod.write_version_metadata(
            stage, {"model": SPEC.name, "version": str(version), "features": ["a", "b", "c"]}
        )
        return repo_mod.install_staged(stage, repo, SPEC.name, version)


def test_config_round_trip_through_the_repository(tmp_path: Path) -> None:
    repo_mod.write_config(tmp_path, SPEC, get_flavor("python-ort"))
    model = repo_mod.read_model_config(tmp_path, SPEC.name)
    assert model.spec == replace(SPEC, routing_generation=1)
    assert model.flavor == "python-ort"
    assert model.routing == {"champion": "3"}
    assert model.features == ["a", "b", "c"]
    assert model.entity_keys == ["customer_id"]
    assert model.feature_service == "churn_model"
    assert model.version_for("champion") == "3" and model.version_for("challenger") is None
    assert repo_mod.list_models(tmp_path) == [SPEC.name]


def test_config_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    repo_mod.write_config(tmp_path, SPEC, get_flavor("python-ort"))
    repo_mod.write_config(tmp_path, SPEC.with_routing({"champion": "3"}), get_flavor("onnxruntime"))
    assert sorted(p.name for p in (tmp_path / SPEC.name).iterdir()) == ["config.pbtxt"]


def test_missing_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInRepositoryError, match="'nope' is not in the repository"):
        repo_mod.read_model_config(tmp_path, "nope")


def test_installed_versions_counts_only_complete_directories(tmp_path: Path) -> None:
    _install(tmp_path, 3)
    _install(tmp_path, 10)
    (tmp_path / SPEC.name / "7").mkdir()  # a half-copied directory without treeserve.json
    assert repo_mod.installed_versions(tmp_path, SPEC.name) == [3, 10]
    assert repo_mod.installed_versions(tmp_path, "other") == []


def test_reinstall_replaces_the_version_and_cleans_staging(tmp_path: Path) -> None:
    _install(tmp_path, 3, marker="old")
    path = _install(tmp_path, 3, marker="new")
    assert (path / "model.onnx").read_text() == "new"
    assert list((tmp_path / repo_mod.STAGING_DIR).iterdir()) == []
    assert repo_mod.read_version_metadata(tmp_path, SPEC.name, 3).version == "3"
    ref = repo_mod.read_reference(tmp_path, SPEC.name, 3)
    assert ref.inputs.dtype == np.float32 and set(ref.outputs) == {"probabilities"}


def test_a_failure_in_staging_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), repo_mod.staging(tmp_path, SPEC.name, 4) as stage:
        (stage / "model.onnx").write_text("partial")
        raise RuntimeError("conversion blew up")
    assert not (tmp_path / SPEC.name).exists()
    assert list((tmp_path / repo_mod.STAGING_DIR).iterdir()) == []


def test_incomplete_staged_version_is_not_installed(tmp_path: Path) -> None:
    with (
        repo_mod.staging(tmp_path, SPEC.name, 5) as stage,
        pytest.raises(RepositoryError, match="incomplete"),
    ):
        repo_mod.install_staged(stage, tmp_path, SPEC.name, 5)


def test_cleanup_staging_removes_leftovers(tmp_path: Path) -> None:
    leftover = tmp_path / repo_mod.STAGING_DIR / "churn-prediction-3-99999-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "model.onnx").write_text("x")
    old = 1_000_000_000
    os.utime(leftover, (old, old))
    assert repo_mod.cleanup_staging(tmp_path, older_than_s=3600) == 1
    assert not leftover.exists()


def test_remove_version(tmp_path: Path) -> None:
    _install(tmp_path, 3)
    assert repo_mod.remove_version(tmp_path, SPEC.name, 3)
    assert repo_mod.installed_versions(tmp_path, SPEC.name) == []
    assert not repo_mod.remove_version(tmp_path, SPEC.name, 3)


def test_update_routing_keeps_everything_else(tmp_path: Path) -> None:
    repo_mod.write_config(tmp_path, SPEC, get_flavor("onnxruntime"))
    updated = repo_mod.update_routing(
        tmp_path, SPEC.name, {"champion": "4", "challenger": "3"}, versions=[3, 4]
    )
    again = repo_mod.read_model_config(tmp_path, SPEC.name)
    assert again == updated
    assert again.routing == {"champion": "4", "challenger": "3"}
    assert again.versions == [3, 4]
    assert again.flavor == "onnxruntime"
    assert again.features == list(SPEC.features)


def test_routing_to_a_version_outside_the_policy_is_refused(tmp_path: Path) -> None:
    repo_mod.write_config(tmp_path, SPEC, get_flavor("python-ort"))
    with pytest.raises(RepositoryError, match=r"version\(s\) \[9\]"):
        repo_mod.update_routing(tmp_path, SPEC.name, {"champion": "9"})


def test_unwritable_repository_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RepositoryError, match="file/repo cannot be created"):
        repo_mod.ensure_writable(blocker / "repo")


def test_metadata_file_names_follow_the_contract(tmp_path: Path) -> None:
    path = _install(tmp_path, 3)
    assert (path / contract.VERSION_METADATA_FILE).is_file()
    assert (path / contract.VERSION_REFERENCE_FILE).is_file()


def _install_explainer(repo: Path, version: int) -> Path:
    companion = repo_mod.explainer_name(SPEC.name)
    with repo_mod.staging(repo, companion, version) as stage:
        (stage / repo_mod.EXPLAINER_FILE).write_text("{}")
        repo_mod.write_version_metadata(stage, {"model": companion, "version": str(version)})
        return repo_mod.install_staged(stage, repo, companion, version)


def test_explainer_config_follows_the_versions_that_have_an_explainer(tmp_path: Path) -> None:
    _install(tmp_path, 3)
    _install(tmp_path, 4)
    _install_explainer(tmp_path, 4)
    spec = SPEC.with_routing({"champion": "3", "challenger": "4"}, versions=(3, 4))
    repo_mod.write_config(tmp_path, spec, get_flavor("python-ort"))
    companion = repo_mod.explainer_name(SPEC.name)
    text = (tmp_path / companion / repo_mod.CONFIG_FILE).read_text()
    assert "versions: 4" in text and "versions: 3" not in text
    assert f'name: "{contract.OUTPUT_CONTRIBUTIONS}"' in text and "dims: 1\n  dims: 4" in text
    assert 'backend: "python"' in text and "dynamic_batching" in text
    assert repo_mod.list_models(tmp_path) == [SPEC.name]  # the companion is not a served model


def test_removing_a_version_removes_its_explainer_and_the_last_one_its_config(tmp_path: Path) -> None:
    _install(tmp_path, 3)
    _install_explainer(tmp_path, 3)
    repo_mod.write_config(tmp_path, SPEC, get_flavor("python-ort"))
    companion_dir = tmp_path / repo_mod.explainer_name(SPEC.name)
    assert (companion_dir / repo_mod.CONFIG_FILE).is_file()
    assert repo_mod.remove_version(tmp_path, SPEC.name, 3)
    assert repo_mod.explainer_versions(tmp_path, SPEC.name) == []
    repo_mod.update_routing(tmp_path, SPEC.name, {}, versions=())
    assert not companion_dir.exists()


def test_the_routing_generation_counts_routing_changes_exactly(tmp_path: Path) -> None:
    """Every write that changes the routing raises the counter by one; other writes keep it."""
    flavor = get_flavor("python-ort")

    def generation() -> int:
        return repo_mod.read_model_config(tmp_path, SPEC.name).routing_generation

    repo_mod.write_config(tmp_path, SPEC.with_routing({}), flavor)
    assert generation() == 0  # nothing routed yet
    repo_mod.write_config(tmp_path, SPEC, flavor)
    assert generation() == 1
    repo_mod.write_config(tmp_path, SPEC.with_routing({"champion": "3"}, versions=(3, 4)), flavor)
    assert generation() == 1, "a new version loaded beside the routing is not a routing change"
    repo_mod.write_config(tmp_path, replace(SPEC, routing_generation=99), flavor)
    assert generation() == 1, "the caller does not set the counter"
    repo_mod.update_routing(tmp_path, SPEC.name, {"champion": "4"}, versions=[3, 4])
    assert generation() == 2
    repo_mod.write_config(tmp_path, SPEC.with_routing({"champion": "3"}, versions=(3, 4)), flavor)
    assert generation() == 3  # a rollback is a change too
    text = (tmp_path / SPEC.name / repo_mod.CONFIG_FILE).read_text()
    assert f'key: "{contract.PARAM_ROUTING_GENERATION}"' in text and 'string_value: "3"' in text


def test_a_config_without_the_counter_reads_as_generation_0_and_counts_on(tmp_path: Path) -> None:
    """Configs written before the counter existed keep working; the first routing change makes it 1."""
    legacy = repo_mod.render_config(SPEC, get_flavor("python-ort"))  # no counter parameter
    assert contract.PARAM_ROUTING_GENERATION not in legacy
    (tmp_path / SPEC.name).mkdir()
    (tmp_path / SPEC.name / repo_mod.CONFIG_FILE).write_text(legacy)
    model = repo_mod.read_model_config(tmp_path, SPEC.name)
    assert model.routing_generation == 0 and model.routing == {"champion": "3"}
    repo_mod.update_routing(tmp_path, SPEC.name, {"champion": "3"})
    assert repo_mod.read_model_config(tmp_path, SPEC.name).routing_generation == 0
    repo_mod.update_routing(tmp_path, SPEC.name, {"champion": "4"}, versions=[3, 4])
    assert repo_mod.read_model_config(tmp_path, SPEC.name).routing_generation == 1


def test_a_malformed_counter_is_named(tmp_path: Path) -> None:
    text = repo_mod.render_config(replace(SPEC, routing_generation=5), get_flavor("python-ort"))
    (tmp_path / SPEC.name).mkdir()
    (tmp_path / SPEC.name / repo_mod.CONFIG_FILE).write_text(text.replace('"5"', '"five"'))
    with pytest.raises(RepositoryError, match="routing_generation is not a count"):
        repo_mod.read_model_config(tmp_path, SPEC.name)
