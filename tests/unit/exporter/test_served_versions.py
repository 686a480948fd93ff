"""No command modifies a served version in place: refused with the reason before anything is written."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import ServedVersionError
from exporter.flavors import get_flavor
from exporter.install import export, install_version
from treeserve import repository as repo_mod
from treeserve.repository import TritonModelSpec
from treeserve_app.settings import load_settings

MODEL = "churn-prediction"


class RegistryThatMayOnlyNameVersions:
    """An MLflow client for ``resolve_version``; anything further (reading artifacts) fails the test."""

    def get_model_version(self, name: str, version: str) -> Any:
        return type("MV", (), {"version": str(version)})()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the registry was read ({name}) although the export must be refused first")


def served_repository(repo: Path) -> Path:
    """Version 1 served as python-ort (champion), the way the exporter leaves it."""
    spec = TritonModelSpec(
        name=MODEL, task="binary", features=("a", "b"), versions=(1,), routing={"champion": "1"}
    )
    folder = repo / MODEL / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "model.py").write_text("# python backend")
    repo_mod.write_version_metadata(
        folder,
        {"model": MODEL, "version": "1", "task": "binary", "n_classes": 2, "features": ["a", "b"],
         "flavor": "python-ort", "files": ["model.onnx", "model.py"]},
    )  # fmt: skip
    repo_mod.write_config(repo, spec, get_flavor("python-ort"))
    return repo


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_a_flavour_change_of_the_served_version_is_refused_before_writing(tmp_path: Path) -> None:
    repo = served_repository(tmp_path / "repo")
    settings = load_settings(home=tmp_path)
    before = tree(repo)
    client: Any = RegistryThatMayOnlyNameVersions()
    with pytest.raises(ServedVersionError, match=r"version 1 is served \(routed as champion, python-ort\)"):
        export(settings, client, MODEL, version=1, repository=repo, flavor="fil")
    with pytest.raises(ServedVersionError, match="nothing was written"):
        install_version(settings, client, MODEL, 1, repository=repo, flavor="fil")
    with pytest.raises(ServedVersionError):
        install_version(settings, client, MODEL, 1, repository=repo, flavor="python-ort", force=True)
    assert tree(repo) == before


def test_a_new_version_in_a_flavour_the_served_ones_cannot_share_is_refused(tmp_path: Path) -> None:
    repo = served_repository(tmp_path / "repo")
    before = tree(repo)
    client: Any = RegistryThatMayOnlyNameVersions()
    with pytest.raises(
        ServedVersionError, match=r"served as python-ort \(versions 1\); a fil config could not run"
    ):
        export(load_settings(home=tmp_path), client, MODEL, version=2, repository=repo, flavor="fil")
    assert tree(repo) == before and not (repo / MODEL / "2").exists()
